//! A notice's cancel link is a secret only until the notice is out: once the outbox
//! delivered it (or gave up on it), the link is scrubbed from the message, and a copy
//! of the database taken afterwards — the main file, its WAL, after a checkpoint —
//! holds no cancel token. The dispatcher is the real one (`outbox run`) and the
//! notification endpoint the simulator's.

use std::path::Path;

use super::{Env, asked, cancel_link, cli};
use crate::common::Result;

/// Which of the database's files (the main file, the WAL) hold `needle`.
fn files_holding(db: &Path, needle: &str) -> Vec<String> {
    ["", "-wal"]
        .iter()
        .filter_map(|suffix| {
            let path = format!("{}{suffix}", db.display());
            let bytes = std::fs::read(&path).ok()?;
            bytes
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
                .then_some(path)
        })
        .collect()
}

/// No cancel token in the files as the host left them, nor after a checkpoint
/// copies the WAL into the main file.
fn assert_no_token(db: &Path, token: &str) -> Result {
    assert_eq!(
        files_holding(db, token),
        Vec::<String>::new(),
        "a cancel token at rest"
    );
    let conn = rusqlite::Connection::open(db)?;
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
    assert_eq!(
        files_holding(db, token),
        Vec::<String>::new(),
        "a cancel token at rest after a checkpoint"
    );
    Ok(())
}

/// Starts a recovery for the first seeded owner; its cancel link's token.
fn recovery_with_link(env: &Env) -> Result<(String, String)> {
    let (login, _) = env.owner(0);
    let user = env.user_id(&login);
    env.gateway
        .login(&env.again(&login, "attacker-laptop", asked()))?;
    let (_, token) = cancel_link(env);
    let db = env.dir.path().join("recovery/directory.db");
    // Before delivery the link is on file where the dispatcher needs it (and the
    // search below can find it).
    assert!(
        !files_holding(&db, &token).is_empty(),
        "the search finds the token"
    );
    Ok((user, token))
}

#[test]
fn cancel_tokens_are_scrubbed_from_delivered_notices() -> Result {
    let env = Env::new(|t| t);
    let (user, token) = recovery_with_link(&env)?;
    let (out, status) = cli(&env.config, &["outbox", "run", "--until-empty"]);
    assert!(status.success(), "{out}");
    // The notices reached the endpoint with their links.
    let delivered = env.sim.get(&format!("/sim/notices?user_id={user}"));
    let links = delivered["notices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["cancel_url"].as_str().is_some_and(|u| u.contains(&token)))
        .count();
    assert!(links >= 2, "{delivered}");
    for message in env.gateway.state().outbox_messages()? {
        assert_eq!(message.status.name(), "delivered", "{message:?}");
        assert_link_removed(&message);
    }
    assert_no_token(&env.dir.path().join("recovery/directory.db"), &token)
}

#[test]
fn cancel_tokens_are_scrubbed_from_dead_lettered_notices() -> Result {
    // The notification endpoint refuses connections; one attempt, then dead.
    let env = Env::new(|t| {
        let notify = t
            .lines()
            .find(|l| l.starts_with("notify = "))
            .unwrap()
            .to_owned();
        t.replace(&notify, "notify = \"http://127.0.0.1:9/notify\"")
            .replace(
                "[outbox.endpoints]",
                "[outbox]\nmax_attempts = 1\n\n[outbox.endpoints]",
            )
    });
    let (_, token) = recovery_with_link(&env)?;
    let (out, status) = cli(&env.config, &["outbox", "run", "--until-empty"]);
    // Done, with failures: messages were given up on.
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("dead-lettered: given up"), "{out}");
    let notices: Vec<_> = env
        .gateway
        .state()
        .outbox_messages()?
        .into_iter()
        .filter(|m| m.topic == "notify")
        .collect();
    assert!(notices.len() >= 2, "{notices:?}");
    for message in &notices {
        assert_eq!(message.status.name(), "dead", "{message:?}");
        assert_link_removed(message);
    }
    assert_no_token(&env.dir.path().join("recovery/directory.db"), &token)?;
    // Sent again, a notice goes without its link, and the operator is told so.
    let (out, status) = cli(&env.config, &["outbox", "requeue", "--topic", "notify"]);
    assert!(status.success(), "{out}");
    assert!(
        out.contains(&format!(
            "warning: message {} goes again without its cancel_url",
            notices[0].id
        )),
        "{out}"
    );
    assert!(!out.contains(&token), "{out}");
    Ok(())
}

/// The secret link is gone from the stored payload, which says it was removed.
fn assert_link_removed(message: &portcullis::state::outbox::OutboxMessage) {
    let payload: serde_json::Value = serde_json::from_str(&message.payload).unwrap();
    if message.topic == "notify" && payload["event"] == "recovery-requested" {
        assert_eq!(
            payload["links_removed"],
            serde_json::json!(["cancel_url"]),
            "{message:?}"
        );
    }
    assert!(payload.get("cancel_url").is_none(), "{message:?}");
}

#[test]
fn cancel_tokens_are_scrubbed_in_postgres() -> Result {
    let Some(url) = crate::postgres::fresh_database("scrub") else {
        crate::common::not_run("PORTCULLIS_TEST_POSTGRES is not set");
        return Ok(());
    };
    let env = Env::new(|t| crate::common::directory_at(&t, &url));
    let (login, _) = env.owner(0);
    env.gateway
        .login(&env.again(&login, "attacker-laptop", asked()))?;
    let (_, token) = cancel_link(&env);
    let (out, status) = cli(&env.config, &["outbox", "run", "--until-empty"]);
    assert!(status.success(), "{out}");
    let messages = env.gateway.state().outbox_messages()?;
    assert!(messages.iter().any(|m| m.topic == "notify"), "{messages:?}");
    for message in messages {
        assert_eq!(message.status.name(), "delivered", "{message:?}");
        assert!(!message.payload.contains(&token), "{message:?}");
    }
    Ok(())
}
