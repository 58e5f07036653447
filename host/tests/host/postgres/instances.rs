//! Several instances over one PostgreSQL: each login applied once, each claim exclusive,
//! the import's guards as on SQLite.

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};

use portcullis::state::outbox::OutboxStore;
use portcullis::state::{EffectBatch, PostgresState, StateStore};
use portcullis::{Decision, Effect, Gateway, PipelineConfig};

use crate::common::{Result, migration_config, runtime};

use super::{fresh_database, skipped};

#[test]
fn postgres_applies_once_and_resumes_once() -> Result {
    let Some(url) = fresh_database("basics") else {
        return skipped("postgres_applies_once_and_resumes_once");
    };
    let state = PostgresState::connect(&url)?;
    let batch = EffectBatch {
        transaction_id: "tx-pg-1".into(),
        time_ms: 1,
        user_id: None,
        new_user_id: "usr_pg_1".into(),
        effects: vec![
            Effect::CreateUser {
                email: "Pg@Example.com".into(),
                email_verified: true,
                app_metadata: serde_json::json!({"migrated": true}),
                user_metadata: serde_json::json!({}),
                password_from_login: false,
            },
            Effect::SetAppMetadata {
                patch: serde_json::json!({"tier": "gold"}),
            },
            Effect::LinkLegacyAccount {
                product: "paste".into(),
                legacy_id: "P1".into(),
            },
            Effect::LinkLegacyAccount {
                product: "billing".into(),
                legacy_id: "B7".into(),
            },
            Effect::EnqueueOutbox {
                topic: "id-propagation".into(),
                key: "paste:P1".into(),
                payload: "{}".into(),
            },
        ],
        password_hash: None,
    };
    let first = state.apply(&batch)?;
    let second = state.apply(&batch)?;
    assert!(first.applied && first.created_user && first.outbox_messages == 1);
    assert!(!second.applied && second.user_id.as_deref() == Some("usr_pg_1"));
    use portcullis::model::Directory;
    let users = state.find_by_email("pg@example.com")?;
    assert_eq!(users.len(), 1);
    assert_eq!(
        users[0].app_metadata,
        serde_json::json!({"migrated": true, "tier": "gold"})
    );
    // The identities come with the user, in one statement, ordered.
    let identity = |provider: &str, user_id: &str| portcullis::model::Identity {
        provider: provider.into(),
        user_id: user_id.into(),
        connection: provider.into(),
    };
    assert_eq!(
        users[0].identities,
        vec![identity("billing", "B7"), identity("paste", "P1")]
    );
    assert_eq!(state.get_user("usr_pg_1")?.as_ref(), Some(&users[0]));
    assert!(state.get_user("usr_pg_nobody")?.is_none());
    assert!(state.find_by_email("nobody@example.com")?.is_empty());
    assert_eq!(state.outbox_backlog()?, 1);

    let record = portcullis::state::resume_tokens::ResumeRecord {
        jti: "jti-1".into(),
        transaction_id: "tx-pg-2".into(),
        subject: "usr_pg_1".into(),
        rule: "ownership-check".into(),
        rule_index: 2,
        state: "{}".into(),
        login: portcullis::state::resume_tokens::StoredLogin::from_attempt(&crate::common::login(
            "tx-pg-2",
        )),
        pending: Vec::new(),
        password_hash: None,
        expires_at_ms: 10,
        evidence: Default::default(),
        challenge: None,
        enrolment: None,
    };
    state.save_resume(&record)?;
    use portcullis::state::resume_tokens::TakenResume;
    assert!(
        matches!(state.take_resume("jti-1", 5)?, TakenResume::Taken(r) if r.transaction_id == "tx-pg-2")
    );
    assert!(matches!(
        state.take_resume("jti-1", 6)?,
        TakenResume::AlreadyUsed
    ));
    assert!(matches!(
        state.take_resume("jti-2", 6)?,
        TakenResume::Unknown
    ));
    Ok(())
}

#[test]
fn two_instances_migrate_a_user_exactly_once() -> Result {
    let Some(url) = fresh_database("twins") else {
        return skipped("two_instances_migrate_a_user_exactly_once");
    };
    let dir = tempfile::tempdir()?;
    let config_path = migration_config(dir.path(), "pipeline.toml");
    crate::common::move_directory_to(&config_path, &url)?;
    let config = PipelineConfig::load(&config_path)?;
    crate::common::seed_stores(&config, dir.path(), 200, 80)?;

    // Two gateways, two connection pools: two sidecar instances on one database.
    let a = Arc::new(Gateway::open(&config, runtime())?);
    let b = Arc::new(Gateway::open(&config, runtime())?);
    let dry = Gateway::open(&config, runtime())?.without_applying();
    let first_logins: Vec<_> = crate::common::login_files(dir.path())
        .iter()
        .map(|f| portcullis::LoginAttempt::from_json(&std::fs::read_to_string(f).unwrap()).unwrap())
        .filter(|attempt| {
            let verdict = dry.login(attempt).unwrap();
            verdict.decision == Decision::Allow
                && verdict
                    .effects
                    .iter()
                    .any(|e| matches!(e, Effect::CreateUser { .. }))
        })
        .take(8)
        .collect();
    assert!(first_logins.len() >= 4, "enough first logins in the batch");

    let mut raced = 0;
    for attempt in &first_logins {
        let barrier = Arc::new(Barrier::new(2));
        let racers: Vec<_> = [(a.clone(), "a"), (b.clone(), "b")]
            .into_iter()
            .map(|(gateway, side)| {
                let (barrier, mut attempt) = (barrier.clone(), attempt.clone());
                attempt.transaction_id = format!("{}-{side}", attempt.transaction_id);
                std::thread::spawn(move || {
                    barrier.wait();
                    gateway.login(&attempt).unwrap()
                })
            })
            .collect();
        let mut creators = 0;
        for racer in racers {
            let verdict = racer.join().unwrap();
            assert_eq!(
                verdict.decision,
                Decision::Allow,
                "both racers get in: {verdict:?}"
            );
            creators += verdict
                .effects
                .iter()
                .any(|e| matches!(e, Effect::CreateUser { .. })) as usize;
        }
        // Both evaluated before either committed: the database had to settle it.
        raced += (creators == 2) as usize;
        let users = a.services().directory.find_by_email(&attempt.email)?;
        assert_eq!(
            users.len(),
            1,
            "exactly one directory user for {}",
            attempt.transaction_id
        );
        let messages: Vec<_> = a
            .state()
            .outbox_messages()?
            .into_iter()
            .filter(|m| m.transaction_id.starts_with(&attempt.transaction_id))
            .collect();
        let keys: BTreeSet<_> = messages.iter().map(|m| &m.key).collect();
        assert_eq!(
            keys.len(),
            messages.len(),
            "one message per product account"
        );
        assert_eq!(messages.len(), users[0].identities.len());
        for message in &messages {
            assert!(
                message.payload.contains(&users[0].id),
                "payload names the user that exists"
            );
        }
    }
    eprintln!(
        "{raced} of {} logins raced to create the same user",
        first_logins.len()
    );
    assert!(raced > 0, "the test raced at least once");
    Ok(())
}

#[test]
fn outbox_claims_are_exclusive_across_instances() -> Result {
    let Some(url) = fresh_database("claims") else {
        return skipped("outbox_claims_are_exclusive_across_instances");
    };
    let first = Arc::new(PostgresState::connect(&url)?);
    let second = Arc::new(PostgresState::connect(&url)?);
    for i in 0..300 {
        first.apply(&EffectBatch {
            transaction_id: format!("tx-claim-{i}"),
            time_ms: 1,
            user_id: None,
            new_user_id: format!("usr_{i}"),
            effects: vec![Effect::EnqueueOutbox {
                topic: "t".into(),
                key: format!("paste:{i}"),
                payload: "{}".into(),
            }],
            password_hash: None,
        })?;
    }
    let barrier = Arc::new(Barrier::new(2));
    let claimers: Vec<_> = [first.clone(), second.clone()]
        .into_iter()
        .map(|state| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let mut ids = Vec::new();
                loop {
                    let claimed = state.claim_outbox(2, 600_000, 7).unwrap();
                    if claimed.is_empty() {
                        return ids;
                    }
                    ids.extend(claimed.iter().map(|m| m.id));
                }
            })
        })
        .collect();
    let claimed: Vec<Vec<i64>> = claimers.into_iter().map(|c| c.join().unwrap()).collect();
    let (x, y): (BTreeSet<i64>, BTreeSet<i64>) = (
        claimed[0].iter().copied().collect(),
        claimed[1].iter().copied().collect(),
    );
    assert!(x.is_disjoint(&y), "no message claimed by both");
    assert_eq!(x.len() + y.len(), 300, "every message claimed once");
    assert!(!x.is_empty() && !y.is_empty(), "both instances took part");
    Ok(())
}

#[test]
fn an_upsert_leaves_a_signed_in_users_flags_alone_on_postgres() -> Result {
    let Some(url) = fresh_database("import_flags") else {
        return skipped("an_upsert_leaves_a_signed_in_users_flags_alone_on_postgres");
    };
    crate::import::attacks::an_upsert_leaves_a_signed_in_users_flags_alone(Some(&url))
}

#[test]
fn an_imported_link_to_someone_elses_account_is_refused_on_postgres() -> Result {
    let Some(url) = fresh_database("import_links") else {
        return skipped("an_imported_link_to_someone_elses_account_is_refused_on_postgres");
    };
    crate::import::attacks::an_imported_link_to_someone_elses_account_is_refused(Some(&url))
}
