//! End to end against the SQLite stores: seed, run logins through the migration
//! pipeline, then look at the directory and the outbox.

use portcullis::flows::resume::ResumeRefusal;
use portcullis::state::EffectBatch;
use portcullis::{Decision, Effect, GatewayError};

use crate::common::{Demo, Result, creates_user, find_login};

#[test]
fn a_first_login_migrates_the_user_and_fills_the_outbox() -> Result {
    let mut demo = Demo::new(300, 120);
    // Only this test's own flush writes the statistics below: the writer's 100 ms timer
    // raced the assertions on a loaded machine (the flush found nothing left to write).
    let mut config = portcullis::PipelineConfig::load(&demo.config)?;
    if let Some(state) = config.state.as_mut() {
        state.login_stats_flush_ms = 3_600_000;
    }
    demo.gateway = portcullis::Gateway::open(&config, crate::common::runtime())?
        .with_clock(demo.clock.clone());
    let login = find_login(&demo, |v, _| {
        v.decision == Decision::Allow && creates_user(v)
    });
    let users_before: i64 = demo.sql("SELECT COUNT(*) FROM users");

    let verdict = demo.gateway.login(&login)?;
    assert_eq!(verdict.decision, Decision::Allow);
    let applied = verdict.applied.clone().expect("applied");
    assert!(applied.applied && applied.created_user);
    let user_id = applied.user_id.unwrap();
    assert_eq!(user_id, login.new_user_id());

    assert_eq!(
        demo.sql::<i64>("SELECT COUNT(*) FROM users"),
        users_before + 1
    );
    let hash: String = demo.sql(&format!(
        "SELECT password_hash FROM users WHERE id = '{user_id}'"
    ));
    assert!(
        hash.starts_with("$argon2id$"),
        "re-hashed into the directory: {hash}"
    );
    let password = login.password.as_ref().unwrap();
    assert!(portcullis::state::passwords::verify(
        &hash,
        secrecy::ExposeSecret::expose_secret(password)
    )?);
    let links: i64 = demo.sql(&format!(
        "SELECT COUNT(*) FROM identities WHERE user_id = '{user_id}'"
    ));
    let outbox = demo.gateway.state().outbox_messages()?;
    assert_eq!(
        links as usize,
        outbox.len(),
        "one message per linked product account"
    );
    for message in &outbox {
        assert_eq!(message.topic, "id-propagation");
        assert_eq!(message.transaction_id, login.transaction_id);
        let payload: serde_json::Value = serde_json::from_str(&message.payload)?;
        assert_eq!(payload["user_id"], user_id.as_str());
        assert_eq!(
            message.key,
            format!(
                "{}:{}",
                payload["product"].as_str().unwrap(),
                payload["legacy_id"].as_str().unwrap()
            )
        );
    }

    // The same user logs in again: the directory answers now, no legacy calls, and
    // nothing new in the outbox.
    let mut again = login.clone();
    again.transaction_id = "tx-again".into();
    let second = demo.gateway.login(&again)?;
    assert_eq!(second.decision, Decision::Allow);
    assert!(second.effects.is_empty(), "{:?}", second.effects);
    assert_eq!(demo.gateway.state().outbox_messages()?.len(), outbox.len());
    // A login that changes nothing but the statistics writes them behind: counted once
    // the writer flushes, not before.
    let count = |demo: &Demo| {
        demo.sql::<i64>(&format!(
            "SELECT logins_count FROM users WHERE id = '{user_id}'"
        ))
    };
    assert_eq!(count(&demo), 1);
    assert_eq!(demo.gateway.flush_login_stats()?, 1);
    assert_eq!(count(&demo), 2);
    // The same transaction again (a gateway's retry) is not counted twice.
    demo.gateway.login(&again)?;
    assert_eq!(demo.gateway.flush_login_stats()?, 0);
    assert_eq!(count(&demo), 2);
    Ok(())
}

#[test]
fn applying_a_transaction_twice_changes_nothing() -> Result {
    let demo = Demo::new(100, 0);
    let state = demo.gateway.state();
    let batch = EffectBatch {
        transaction_id: "tx-idem".into(),
        time_ms: 1,
        user_id: None,
        new_user_id: "usr_idem".into(),
        effects: vec![
            Effect::CreateUser {
                email: "idem@example.com".into(),
                email_verified: true,
                app_metadata: serde_json::json!({"migrated": true}),
                user_metadata: serde_json::json!({}),
                password_from_login: false,
            },
            Effect::LinkLegacyAccount {
                product: "paste".into(),
                legacy_id: "P-idem".into(),
            },
            Effect::EnqueueOutbox {
                topic: "id-propagation".into(),
                key: "paste:P-idem".into(),
                payload: "{}".into(),
            },
        ],
        password_hash: None,
    };
    let first = state.apply(&batch)?;
    let users = state.user_count()?;
    let second = state.apply(&batch)?;
    assert!(first.applied && first.created_user && first.outbox_messages == 1);
    assert!(!second.applied && !second.created_user && second.outbox_messages == 0);
    assert_eq!(state.user_count()?, users);
    assert_eq!(state.outbox_messages()?.len(), 1);
    assert_eq!(
        demo.sql::<i64>("SELECT logins_count FROM users WHERE id = 'usr_idem'"),
        1
    );
    Ok(())
}

#[test]
fn denied_and_faulted_logins_write_nothing() -> Result {
    let demo = Demo::new(200, 120);
    let wrong = find_login(&demo, |v, json| {
        matches!(&v.decision, Decision::Deny { code, .. } if code == "invalid_credentials")
            && json["password"].as_str().is_some_and(|p| p.ends_with('x'))
    });
    let count = |demo: &Demo| -> (i64, i64, i64) {
        (
            demo.sql("SELECT COUNT(*) FROM users"),
            demo.sql("SELECT COUNT(*) FROM outbox"),
            demo.sql("SELECT COUNT(*) FROM applied_transactions"),
        )
    };
    let before = count(&demo);
    let verdict = demo.gateway.login(&wrong)?;
    assert!(matches!(
        verdict.decision,
        Decision::Deny {
            retryable: false,
            ..
        }
    ));
    assert_eq!(count(&demo), before);

    // The same first login with every legacy store down: fail closed, retryable.
    let down_config = crate::common::migration_config(demo.dir.path(), "pipeline-legacy-down.toml");
    let down = portcullis::Gateway::open(
        &portcullis::PipelineConfig::load(&down_config)?,
        crate::common::runtime(),
    )?;
    let first = find_login(&demo, |v, _| creates_user(v));
    let verdict = down.login(&first)?;
    assert!(
        matches!(&verdict.decision, Decision::Deny { code, retryable: true, .. } if code == "rule_fault"),
        "{verdict:?}"
    );
    assert_eq!(
        verdict.faults().next().map(|(r, f)| (r, f.kind)),
        Some(("migrate-on-login", portcullis::FaultKind::Capability))
    );
    assert_eq!(count(&demo), before);
    Ok(())
}

#[test]
fn several_products_wait_for_inbox_proof_then_merge() -> Result {
    let demo = Demo::new(300, 150);
    let login = find_login(
        &demo,
        |v, _| matches!(&v.decision, Decision::Redirect { reason, .. } if reason == "several_products"),
    );
    let users_before: i64 = demo.sql("SELECT COUNT(*) FROM users");
    let redirected = demo.gateway.login(&login)?;
    let token = redirected
        .resume_token
        .clone()
        .expect("a redirect carries a resume token");
    assert_eq!(
        demo.sql::<i64>("SELECT COUNT(*) FROM users"),
        users_before,
        "no merge before the proof"
    );
    assert!(demo.gateway.state().outbox_messages()?.is_empty());

    let tx = &login.transaction_id;
    let refused = |r: std::result::Result<portcullis::Verdict, GatewayError>| match r {
        Err(GatewayError::Refused(refusal)) => refusal,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(
        refused(demo.gateway.resume(
            &portcullis::flows::resume::forge(&token),
            tx,
            "{\"verified\":true}",
        )),
        ResumeRefusal::Forged
    );
    assert!(matches!(
        refused(
            demo.gateway
                .resume(&token, "tx-other", "{\"verified\":true}")
        ),
        ResumeRefusal::Mismatch(_)
    ));
    // Expiry is the host's clock's to decide (ttl 900 s).
    demo.clock.advance(901_000);
    assert_eq!(
        refused(demo.gateway.resume(&token, tx, "{\"verified\":true}")),
        ResumeRefusal::Expired
    );
    demo.clock.set(login.time_ms + 60_000);

    let resumed = demo.gateway.resume(&token, tx, "{\"verified\":true}")?;
    assert_eq!(resumed.decision, Decision::Allow, "{resumed:?}");
    let user_id = resumed
        .applied
        .as_ref()
        .and_then(|a| a.user_id.clone())
        .unwrap();
    let metadata: String = demo.sql(&format!(
        "SELECT app_metadata FROM users WHERE id = '{user_id}'"
    ));
    let metadata: serde_json::Value = serde_json::from_str(&metadata)?;
    assert_eq!(metadata["migrated"], true);
    assert!(metadata["ownership_verified_at"].is_u64());
    let products: i64 = demo.sql(&format!(
        "SELECT COUNT(DISTINCT provider) FROM identities WHERE user_id = '{user_id}'"
    ));
    assert!(products >= 2, "every product account linked");
    assert_eq!(
        demo.gateway.state().outbox_messages()?.len() as i64,
        demo.sql::<i64>(&format!(
            "SELECT COUNT(*) FROM identities WHERE user_id = '{user_id}'"
        ))
    );
    let hash: String = demo.sql(&format!(
        "SELECT password_hash FROM users WHERE id = '{user_id}'"
    ));
    assert!(
        hash.starts_with("$argon2id$"),
        "the password was hashed at the redirect, never stored in clear"
    );

    assert_eq!(
        refused(demo.gateway.resume(&token, tx, "{\"verified\":true}")),
        ResumeRefusal::Replayed
    );
    Ok(())
}

#[test]
fn a_corrupt_legacy_hash_is_that_accounts_problem() -> Result {
    use portcullis::model::LegacyStores;
    let demo = Demo::new(300, 0);
    // Seeding leaves a few unreadable hashes, as real legacy tables have.
    let legacy = portcullis::state::SqliteLegacyStores::new(
        ["paste", "collect", "transfer"]
            .iter()
            .map(|p| {
                (
                    p.to_string(),
                    demo.dir.path().join(format!("legacy-{p}.db")),
                )
            })
            .collect(),
    );
    let mut corrupt = 0;
    for product in ["paste", "collect", "transfer"] {
        let db = rusqlite::Connection::open(demo.dir.path().join(format!("legacy-{product}.db")))?;
        let mut rows = db.prepare("SELECT legacy_id, password_hash FROM accounts")?;
        for row in rows.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
            let (id, hash) = row?;
            if portcullis::state::passwords::verify(&hash, "x").is_err() {
                let answer = legacy.verify_password(product, &id, &"anything".into());
                assert!(
                    matches!(answer, Err(ref e) if e.kind == portcullis::model::ServiceErrorKind::InvalidArgument),
                    "{answer:?}"
                );
                corrupt += 1;
            }
        }
    }
    assert!(corrupt > 0, "the seed holds corrupt hashes");
    Ok(())
}

#[test]
fn login_statistics_reach_the_store_without_a_flush() -> Result {
    // The writer thread flushes on its own (every 100 ms by default), and a dropped
    // gateway writes what is left.
    let demo = Demo::new(300, 120);
    // An already-migrated user's login: allowed, nothing to store but statistics.
    let login = find_login(&demo, |v, _| {
        v.decision == Decision::Allow
            && v.effects
                .iter()
                .all(|e| matches!(e, Effect::AddClaim { .. }))
    });
    let user = demo.gateway.state().find_by_email(&login.email)?.remove(0);
    let count = |demo: &Demo| {
        demo.sql::<i64>(&format!(
            "SELECT logins_count FROM users WHERE id = '{}'",
            user.id
        ))
    };
    let before = count(&demo);
    let verdict = demo.gateway.login(&login)?;
    assert_eq!(verdict.decision, Decision::Allow, "{verdict:?}");
    assert!(
        verdict
            .effects
            .iter()
            .all(|e| matches!(e, Effect::AddClaim { .. }))
    );
    let waited = std::time::Instant::now();
    while count(&demo) == before && waited.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(count(&demo), before + 1);
    Ok(())
}
