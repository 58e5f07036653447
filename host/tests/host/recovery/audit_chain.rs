//! The audit chain against someone with a copy of the database (and write access to
//! it) but not the `[audit]` key: an edited row with every later hash recomputed,
//! rows cut off the end, the whole chain rewritten unkeyed. Rows come from the real
//! flows (recovery codes issued through the gateway); checkpoints reach the file
//! through the real dispatcher (`outbox run`) and `audit verify --checkpoint`; the
//! verdicts are `portcullis audit verify`'s. On a real SQLite file, and on
//! PostgreSQL when PORTCULLIS_TEST_POSTGRES is set.

use portcullis::state::StateStore;
use portcullis::state::portable::{SqlStore, Val, transact};
use sha2::{Digest, Sha256};

use super::{Env, cli};
use crate::common::Result;

/// Where the chain lives.
#[derive(Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// A recovery environment on this backend (`None`: PostgreSQL not asked for),
    /// checkpoints every `every` rows.
    fn env(self, name: &str, every: u64) -> Option<Env> {
        let url = match self {
            Backend::Sqlite => None,
            Backend::Postgres => Some(crate::postgres::fresh_database(name)?),
        };
        Some(Env::new(move |t| {
            let t = t.replace(
                "checkpoint_every = 100",
                &format!("checkpoint_every = {every}"),
            );
            match &url {
                Some(url) => crate::common::directory_at(&t, url),
                None => t,
            }
        }))
    }
}

/// The database as someone who copied it, without the key, would open it.
fn attackers_copy(env: &Env) -> Result<std::sync::Arc<dyn StateStore>> {
    let config = portcullis::PipelineConfig::load(&env.config)?;
    let url = &config.state.as_ref().unwrap().directory;
    Ok(portcullis::state::open_state(url, &config.base_dir)?)
}

/// `n` more rows, each through a real flow (recovery codes issued to the owner).
fn write_rows(env: &Env, n: usize) -> Result {
    let (login, _) = env.owner(0);
    let user = env.user_id(&login);
    for _ in 0..n {
        env.gateway.recovery().issue_codes(&user)?.unwrap();
    }
    Ok(())
}

fn verify(env: &Env, extra: &[&str]) -> (serde_json::Value, String, bool) {
    let mut args = vec!["audit", "verify"];
    args.extend_from_slice(extra);
    let (out, status) = cli(&env.config, &args);
    // The report is the first JSON value printed.
    let json = out.find('{').and_then(|start| {
        serde_json::Deserializer::from_str(&out[start..])
            .into_iter::<serde_json::Value>()
            .next()?
            .ok()
    });
    (json.unwrap_or_default(), out, status.success())
}

fn deliver_outbox(env: &Env) {
    let (out, status) = cli(&env.config, &["outbox", "run", "--until-empty"]);
    assert!(status.success(), "{out}");
}

/// The hash an older version gave a row: plain SHA-256 over the length-prefixed
/// fields, what anyone can compute.
fn plain_hash(prev: &str, seq: i64, fields: &[String]) -> String {
    let mut hasher = Sha256::new();
    let seq = seq.to_string();
    for field in [prev, seq.as_str()]
        .into_iter()
        .chain(fields.iter().map(String::as_str))
    {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// The attacker's rewrite: from row `from` on, `edit` each row's fields (at_ms,
/// actor, action, subject, reason, outcome, details) and recompute every hash and
/// link with plain SHA-256; with `unkeyed`, the rows also stop naming a key.
fn rewrite(
    store: &dyn SqlStore,
    from: i64,
    unkeyed: bool,
    edit: impl Fn(i64, &mut Vec<String>),
) -> Result {
    transact(store, |tx| {
        let rows = tx.query(
            "SELECT seq, at_ms, actor, action, subject, reason, outcome, details, prev_hash, hash FROM audit_log ORDER BY seq",
            &[],
        )?;
        let mut prev = None::<String>;
        for row in rows {
            let seq = row[0].as_int().unwrap();
            let hash = row[9].as_text().unwrap().to_owned();
            if seq < from {
                prev = Some(hash);
                continue;
            }
            let mut fields = vec![row[1].as_int().unwrap().to_string()];
            fields.extend(row[2..8].iter().map(|v| v.as_text().unwrap().to_owned()));
            edit(seq, &mut fields);
            let link = prev.clone().unwrap_or_else(|| "0".repeat(64));
            let new_hash = plain_hash(&link, seq, &fields);
            tx.execute(
                &format!(
                    "UPDATE audit_log SET at_ms = $1, actor = $2, action = $3, subject = $4, reason = $5,
                     outcome = $6, details = $7, prev_hash = $8, hash = $9{} WHERE seq = $10",
                    if unkeyed { ", key_id = NULL" } else { "" }
                ),
                &[
                    Val::int(fields[0].parse().unwrap()),
                    Val::text(&fields[1]),
                    Val::text(&fields[2]),
                    Val::text(&fields[3]),
                    Val::text(&fields[4]),
                    Val::text(&fields[5]),
                    Val::text(&fields[6]),
                    Val::text(link),
                    Val::text(&new_hash),
                    Val::int(seq),
                ],
            )?;
            prev = Some(new_hash);
        }
        Ok(())
    })?;
    Ok(())
}

fn cut_from(store: &dyn SqlStore, seq: i64) -> Result {
    transact(store, |tx| {
        tx.execute("DELETE FROM audit_log WHERE seq >= $1", &[Val::int(seq)])
    })?;
    Ok(())
}

fn edited_row_recomputed_without_the_key_fails(backend: Backend) -> Result {
    let Some(env) = backend.env("audit_edit", 100) else {
        return Ok(());
    };
    write_rows(&env, 5)?;
    let (report, out, ok) = verify(&env, &[]);
    assert!(ok, "{out}");
    assert_eq!(report["rows"], 5, "{out}");
    let copy = attackers_copy(&env)?;
    // Row 3 now says something else, and rows 3 to 5 are re-linked and re-hashed
    // the way anyone without the key can.
    rewrite(copy.sql(), 3, false, |seq, fields| {
        if seq == 3 {
            fields[4] = "routine check, nothing to see".into();
        }
    })?;
    let (report, out, ok) = verify(&env, &[]);
    assert!(!ok, "an edited, re-hashed chain passed: {out}");
    assert_eq!(report["first_bad_seq"], 3, "{out}");
    // A host without the key cannot append after keyed rows.
    let refused = portcullis::state::audit::record(
        copy.sql(),
        &portcullis::state::audit::AuditEntry::new(1, "agent:mallory", "x", "y"),
    );
    assert!(
        refused.is_err(),
        "an unkeyed append after keyed rows: {refused:?}"
    );
    // Passing the rows off as unkeyed ones an older version wrote is a downgrade.
    rewrite(copy.sql(), 3, true, |_, _| {})?;
    let (report, out, ok) = verify(&env, &[]);
    assert!(!ok, "a downgraded chain passed: {out}");
    assert_eq!(report["first_bad_seq"], 3, "{out}");
    assert!(out.contains("unkeyed row after keyed"), "{out}");
    Ok(())
}

#[test]
fn audit_row_edited_and_rehashed_without_the_key_fails_verify() -> Result {
    edited_row_recomputed_without_the_key_fails(Backend::Sqlite)
}

#[test]
fn audit_row_edited_and_rehashed_without_the_key_fails_verify_in_postgres() -> Result {
    edited_row_recomputed_without_the_key_fails(Backend::Postgres)
}

fn anchor_stays_valid_while_the_log_grows(backend: Backend) -> Result {
    let Some(env) = backend.env("audit_anchor", 100) else {
        return Ok(());
    };
    write_rows(&env, 3)?;
    let (report, out, ok) = verify(&env, &[]);
    assert!(ok, "{out}");
    let anchor = report["head"].as_str().unwrap().to_owned();
    assert!(
        anchor.starts_with("3:"),
        "the head names its position: {out}"
    );
    // More legitimate writes, then the key rotates: new rows under the new key, the
    // old one kept to verify older rows.
    write_rows(&env, 2)?;
    let rotated = env.dir.path().join("demo-audit.key");
    let old = std::fs::read_to_string(&rotated)?;
    std::fs::write(
        &rotated,
        format!("demo-2027:a-new-audit-key-for-the-next-year-0000002,{old}"),
    )?;
    let gateway = portcullis::Gateway::open(
        &portcullis::PipelineConfig::load(&env.config)?,
        crate::common::runtime(),
    )?;
    let (login, _) = env.owner(0);
    gateway
        .recovery()
        .issue_codes(&env.user_id(&login))?
        .unwrap();
    let (report, out, ok) = verify(&env, &["--expect-head", &anchor]);
    assert!(
        ok,
        "an anchor saved earlier failed after legitimate writes: {out}"
    );
    assert_eq!(report["rows"], 6, "{out}");
    // The anchor must be the chain's own: another hash at that position fails.
    let forged = format!("3:{}", "ab".repeat(32));
    let (_, out, ok) = verify(&env, &["--expect-head", &forged]);
    assert!(!ok, "{out}");
    // Without the old key, the rows it signed cannot be checked.
    std::fs::write(
        &rotated,
        "demo-2027:a-new-audit-key-for-the-next-year-0000002",
    )?;
    let (report, out, ok) = verify(&env, &[]);
    assert!(!ok, "{out}");
    assert_eq!(report["first_bad_seq"], 1, "{out}");
    Ok(())
}

#[test]
fn audit_anchor_taken_earlier_verifies_after_more_writes() -> Result {
    anchor_stays_valid_while_the_log_grows(Backend::Sqlite)
}

#[test]
fn audit_anchor_taken_earlier_verifies_after_more_writes_in_postgres() -> Result {
    anchor_stays_valid_while_the_log_grows(Backend::Postgres)
}

fn checkpoint_lines(env: &Env) -> Vec<String> {
    std::fs::read_to_string(env.dir.path().join("recovery/audit-checkpoints.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn truncation_after_an_anchor_fails(backend: Backend) -> Result {
    let Some(env) = backend.env("audit_cut", 4) else {
        return Ok(());
    };
    write_rows(&env, 5)?;
    let (report, out, ok) = verify(&env, &["--checkpoint"]);
    assert!(ok, "{out}");
    let anchor = report["head"].as_str().unwrap().to_owned();
    write_rows(&env, 5)?;
    // The dispatcher publishes the checkpoints queued with the rows (the first keyed
    // row, then every 4th) to the file.
    deliver_outbox(&env);
    let lines = checkpoint_lines(&env);
    assert!(lines.len() >= 3, "{lines:?}");
    let (_, out, ok) = verify(&env, &["--expect-head", &anchor]);
    assert!(ok, "{out}");
    let copy = attackers_copy(&env)?;
    // Cut after the anchor, before the last checkpoint (row 8): the file tells.
    cut_from(copy.sql(), 7)?;
    let (report, out, ok) = verify(&env, &[]);
    assert!(!ok, "a chain cut short passed: {out}");
    assert_eq!(report["first_bad_seq"], 8, "{out}");
    assert!(out.contains("cut off"), "{out}");
    // Cut below the anchor kept elsewhere: the anchor tells too.
    cut_from(copy.sql(), 4)?;
    let (report, out, ok) = verify(&env, &["--expect-head", &anchor]);
    assert!(!ok, "{out}");
    assert_eq!(report["first_bad_seq"], 4, "{out}");
    Ok(())
}

#[test]
fn audit_chain_cut_after_an_anchor_fails_verify() -> Result {
    truncation_after_an_anchor_fails(Backend::Sqlite)
}

#[test]
fn audit_chain_cut_after_an_anchor_fails_verify_in_postgres() -> Result {
    truncation_after_an_anchor_fails(Backend::Postgres)
}

fn whole_chain_rewritten_unkeyed_fails(backend: Backend) -> Result {
    let Some(env) = backend.env("audit_rewrite", 100) else {
        return Ok(());
    };
    write_rows(&env, 4)?;
    deliver_outbox(&env);
    assert!(
        !checkpoint_lines(&env).is_empty(),
        "the first keyed row is checkpointed"
    );
    // Every row rewritten as an older, unkeyed version would have written it: a
    // chain that holds on its own.
    let copy = attackers_copy(&env)?;
    rewrite(copy.sql(), 1, true, |seq, fields| {
        if seq == 2 {
            fields[4] = "routine".into();
        }
    })?;
    let (report, out, ok) = verify(&env, &[]);
    assert!(!ok, "a chain rewritten unkeyed passed: {out}");
    assert_eq!(report["first_bad_seq"], 1, "{out}");
    assert!(out.contains("rewritten"), "{out}");
    Ok(())
}

#[test]
fn audit_chain_rewritten_unkeyed_fails_verify() -> Result {
    whole_chain_rewritten_unkeyed_fails(Backend::Sqlite)
}

#[test]
fn audit_chain_rewritten_unkeyed_fails_verify_in_postgres() -> Result {
    whole_chain_rewritten_unkeyed_fails(Backend::Postgres)
}
