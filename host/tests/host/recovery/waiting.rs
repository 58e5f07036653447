//! The waiting period: a password alone waits it out, denied meanwhile, every channel
//! told; the owner cancels; a rule cannot shorten it.

use portcullis::Decision;

use crate::common::{Exposure, Result};

use super::{
    Env, HOUR_MS, asked, cancel_link, cli, denied_code, enrolment_asked,
    password_only_then_back_in_after_the_wait,
};

#[test]
fn with_the_password_only_nobody_gets_in_before_the_wait_ends_and_the_owner_is_told() -> Result {
    password_only_then_back_in_after_the_wait(&Env::new(|t| t))
}

#[test]
fn the_same_recovery_with_the_directory_on_postgres() -> Result {
    let Some(url) = crate::postgres::fresh_database("recovery_flow") else {
        crate::common::not_run("PORTCULLIS_TEST_POSTGRES is not set");
        return Ok(());
    };
    let env = Env::new(|text| crate::common::directory_at(&text, &url));
    password_only_then_back_in_after_the_wait(&env)
}

#[test]
fn a_request_from_a_new_device_and_network_waits_longer() -> Result {
    let env = Env::new(|t| t);
    let (login, factor) = env.owner(0);
    let user = env.user_id(&login);
    assert!(matches!(
        env.sign_in_with_factor(&login, &factor).decision,
        Decision::Allow
    ));
    env.gateway
        .login(&env.again(&login, "attacker-laptop", asked()))?;
    let recovery = &env.recoveries(&user)[0];
    assert_eq!(
        recovery.ready_at_ms - recovery.requested_at_ms,
        168 * HOUR_MS
    );
    assert_eq!(recovery.reasons, ["new device", "new network"]);
    Ok(())
}

#[test]
fn the_owner_cancels_and_the_attackers_recovery_is_dead() -> Result {
    let env = Env::new(|t| t);
    let (login, factor) = env.owner(0);
    let user = env.user_id(&login);
    env.gateway
        .login(&env.again(&login, "attacker-laptop", asked()))?;
    let (id, token) = cancel_link(&env);
    assert!(
        !env.gateway
            .recovery()
            .cancel(&id, "0123456789abcdef0123456789abcdef")?
    );
    assert!(!env.gateway.recovery().cancel("rcv_unknown", &token)?);
    assert!(env.gateway.recovery().cancel(&id, &token)?);
    assert!(!env.gateway.recovery().cancel(&id, &token)?, "once");
    assert_eq!(env.recoveries(&user)[0].status.name(), "cancelled");
    // Long after the wait would have ended, the attacker's next request starts a new
    // wait (and tells the owner again); it never reaches enrolment.
    env.clock.advance(200 * HOUR_MS);
    let told_before = env.notices().len();
    let later = env
        .gateway
        .login(&env.again(&login, "attacker-laptop", asked()))?;
    assert_eq!(denied_code(&later), "recovery_pending");
    assert!(env.notices().len() > told_before);
    let recoveries = env.recoveries(&user);
    assert_eq!(recoveries.len(), 2);
    assert_eq!(recoveries[0].status.name(), "waiting");

    // A sign-in with the old factor ends a recovery under way too.
    assert!(matches!(
        env.sign_in_with_factor(&login, &factor).decision,
        Decision::Allow
    ));
    let recoveries = env.recoveries(&user);
    assert_eq!(recoveries[0].status.name(), "cancelled");
    assert!(
        recoveries[0]
            .outcome
            .as_deref()
            .unwrap()
            .contains("second factor")
    );
    env.clock.advance(200 * HOUR_MS);
    let after = env
        .gateway
        .login(&env.again(&login, "attacker-laptop", asked()))?;
    assert!(!enrolment_asked(&after));
    Ok(())
}

#[test]
fn notices_reach_the_notification_endpoint_and_an_edited_audit_row_fails_verify() -> Result {
    let env = Env::new(|t| t);
    let (login, factor) = env.owner(0);
    let user = env.user_id(&login);
    env.gateway.recovery().issue_codes(&user)?.unwrap();
    env.gateway
        .login(&env.again(&login, "attacker-laptop", asked()))?;
    env.gateway
        .login(&env.again(&login, "attacker-laptop", asked()))?;
    let (outbox_out, status) = cli(&env.config, &["outbox", "run", "--until-empty"]);
    assert!(status.success(), "{outbox_out}");
    let delivered = env.sim.get(&format!("/sim/notices?user_id={user}"));
    let events: Vec<&str> = delivered["notices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["event"].as_str().unwrap())
        .collect();
    assert!(
        events.contains(&"recovery-codes-issued") && events.contains(&"recovery-requested"),
        "{events:?}"
    );
    // An SMS notice reaches the phone: opened for the delivery only, never stored in
    // the outbox.
    let phone = env.phone_of(&factor);
    let texted: Vec<&serde_json::Value> = delivered["notices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["channel"] == "sms")
        .collect();
    assert_eq!(texted.len(), 2, "{delivered}");
    for notice in texted {
        assert_eq!(notice["to"], phone.as_str());
        assert_eq!(notice["factor_id"], factor.id.as_str());
    }
    let (out, status) = cli(&env.config, &["audit", "verify"]);
    assert!(status.success(), "{out}");
    let report: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(
        (report["ok"].as_bool(), report["rows"].as_u64()),
        (Some(true), Some(3)),
        "{out}"
    );
    let head = report["head"].as_str().unwrap().to_owned();
    // Someone with write access to the database rewrites why a recovery started.
    let db = rusqlite::Connection::open(env.dir.path().join("recovery/directory.db"))?;
    db.execute("UPDATE audit_log SET reason = 'routine' WHERE seq = 2", [])?;
    let (out, status) = cli(&env.config, &["audit", "verify"]);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("\"first_bad_seq\": 2"), "{out}");
    // Deleting the row instead is caught as well.
    db.execute("DELETE FROM audit_log WHERE seq = 2", [])?;
    let (out, status) = cli(&env.config, &["audit", "verify"]);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("row 2 is missing"), "{out}");
    // Cutting the end off leaves a valid, shorter chain: the head kept from the
    // earlier run tells.
    db.execute("DELETE FROM audit_log WHERE seq >= 2", [])?;
    let (out, status) = cli(&env.config, &["audit", "verify"]);
    assert!(status.success(), "{out}");
    let (out, status) = cli(&env.config, &["audit", "verify", "--expect-head", &head]);
    assert_eq!(status.code(), Some(1), "{out}");
    // The phone is nowhere at rest either (the outbox rows, the directory's WAL, the
    // legacy stores), nor in what the dispatcher and the simulator printed. Checked
    // last: closing the files it reads drops this process's SQLite locks on them
    // (POSIX locks are per process), and a `portcullis` exiting after that would take
    // itself for the last connection and remove the WAL `db` above writes to.
    Exposure::new()
        .databases_under(&env.dir.path().join("recovery"))
        .text("portcullis outbox run", &outbox_out)
        .text("portcullis-sim", env.sim.output())
        .assert_no_phone(&phone);
    for message in env.gateway.state().outbox_messages()? {
        // Keys are logged when a delivery fails: no address in them.
        assert!(
            !message.key.contains(&login.email),
            "an email in an outbox key"
        );
    }
    Ok(())
}

#[test]
fn a_rule_cannot_shorten_the_hosts_waiting_period() -> Result {
    // A guard configured (or written) to wait an hour: the host's minimum stands.
    let env = Env::new(|t| {
        t.replace(
            "wait_hours = 72\nrisky_wait_hours = 168",
            "wait_hours = 1\nrisky_wait_hours = 1",
        )
    });
    let (login, _) = env.owner(0);
    let user = env.user_id(&login);
    env.gateway
        .login(&env.again(&login, "attacker-laptop", asked()))?;
    let recovery = &env.recoveries(&user)[0];
    assert_eq!(
        recovery.ready_at_ms - recovery.requested_at_ms,
        72 * HOUR_MS
    );
    env.clock.advance(2 * HOUR_MS);
    let early = env
        .gateway
        .login(&env.again(&login, "attacker-laptop", asked()))?;
    assert_eq!(denied_code(&early), "recovery_pending");
    Ok(())
}
