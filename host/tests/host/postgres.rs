//! The state stores: PostgreSQL against the server on 127.0.0.1:5432 when
//! PORTCULLIS_TEST_POSTGRES is set (.ci/run sets it; each test gets its own schema),
//! and the checks both backends share, run on SQLite too. Two gateways on one
//! database stand for two sidecar instances.

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};

use portcullis::state::factors::FactorStore;
use portcullis::state::outbox::OutboxStore;
use portcullis::state::{EffectBatch, PostgresState, SqlBacked, StateStore};
use portcullis::{Decision, Effect, Gateway, PipelineConfig};

use crate::common::{Result, migration_config, runtime};

/// A fresh schema on the test server, as a store URL; None when not asked to test
/// against PostgreSQL.
pub(crate) fn fresh_database(name: &str) -> Option<String> {
    let base = std::env::var("PORTCULLIS_TEST_POSTGRES").ok()?;
    let base = if base.starts_with("postgres") {
        base
    } else {
        "postgres://postgres@127.0.0.1:5432/test".into()
    };
    let schema = format!("pc_{name}_{}", std::process::id());
    let mut admin =
        postgres::Client::connect(&base, postgres::NoTls).expect("PostgreSQL is reachable");
    admin
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .unwrap();
    let separator = if base.contains('?') { '&' } else { '?' };
    Some(format!(
        "{base}{separator}options=-c%20search_path%3D{schema}"
    ))
}

fn skipped(_test: &str) -> Result {
    crate::common::not_run("PORTCULLIS_TEST_POSTGRES is not set");
    Ok(())
}

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
    let text = std::fs::read_to_string(&config_path)?;
    let line = text
        .lines()
        .find(|l| l.starts_with("directory = "))
        .unwrap()
        .to_owned();
    std::fs::write(
        &config_path,
        text.replace(&line, &format!("directory = \"{url}\"")),
    )?;
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

/// Login statistics written behind: each transaction counted once, the latest login
/// kept, on both stores.
fn records_logins_once(state: &dyn StateStore) -> Result {
    use portcullis::state::login_stats::LoginMark;
    crate::common::create_user(state, "usr_stats", "stats@example.com")?;
    let mark = |tx: &str, time_ms| LoginMark {
        transaction_id: tx.into(),
        user_id: Some("usr_stats".into()),
        time_ms,
        sightings: Vec::new(),
    };
    // Out of order, with a repeat inside the batch and one of an applied transaction.
    let counted = state.record_logins(&[
        mark("tx-stats-2", 3_000),
        mark("tx-stats-1", 2_000),
        mark("tx-stats-2", 3_000),
        mark("tx-usr_stats", 1_000),
    ])?;
    assert_eq!(counted, 2);
    assert_eq!(state.record_logins(&[mark("tx-stats-1", 2_000)])?, 0);
    let user = state.find_by_email("stats@example.com")?.remove(0);
    assert_eq!(user.logins_count, 3);
    assert_eq!(user.last_login_ms, Some(3_000));
    Ok(())
}

#[test]
fn login_statistics_are_counted_once_in_sqlite() -> Result {
    let dir = tempfile::tempdir()?;
    let state = portcullis::state::SqliteState::open(&dir.path().join("directory.db"))?;
    records_logins_once(&state)
}

#[test]
fn login_statistics_are_counted_once_in_postgres() -> Result {
    let Some(url) = fresh_database("stats") else {
        return skipped("login_statistics_are_counted_once_in_postgres");
    };
    records_logins_once(&PostgresState::connect(&url)?)
}

/// Factors: stored and read back with their sealed phone (never plaintext), replaced
/// by id, and never moved to another user by a replace.
fn keeps_factors(state: &dyn StateStore) -> Result {
    use portcullis::mfa::sealed::KeyRing;
    use portcullis::model::{FactorKind, FactorProvider, FactorStatus};
    use portcullis::state::factors::Factor;
    for (id, email) in [("usr_f1", "f1@example.com"), ("usr_f2", "f2@example.com")] {
        crate::common::create_user(state, id, email)?;
    }
    let keys = KeyRing::parse("k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")?;
    let legacy = Factor {
        id: "fac_legacy".into(),
        user_id: "usr_f1".into(),
        kind: FactorKind::Sms,
        provider: FactorProvider::LegacySms,
        legacy_provider_user_id: Some("1000123".into()),
        phone: None,
        status: FactorStatus::Active,
        enrolled_at_ms: 1_000,
        updated_at_ms: 1_000,
        last_used_ms: None,
        cohort: None,
        reverted: false,
    };
    state.put_factor(&legacy)?;
    assert_eq!(state.factors_of("usr_f1")?, vec![legacy.clone()]);
    // Exported: the phone arrives, sealed for this user and factor.
    let moved = Factor {
        provider: FactorProvider::Verify,
        phone: Some(keys.seal("+14155552671", "usr_f1", "fac_legacy")),
        updated_at_ms: 2_000,
        last_used_ms: Some(1_500),
        cohort: Some("internal".into()),
        reverted: true,
        ..legacy.clone()
    };
    state.put_factor(&moved)?;
    let read = state.factors_of("usr_f1")?;
    assert_eq!(read, vec![moved.clone()]);
    assert_eq!(
        &*keys.open(read[0].phone.as_ref().unwrap(), "usr_f1", "fac_legacy")?,
        "+14155552671"
    );
    // A replace naming another user does not move the factor.
    state.put_factor(&Factor {
        user_id: "usr_f2".into(),
        status: FactorStatus::Disabled,
        ..moved.clone()
    })?;
    assert_eq!(state.factors_of("usr_f1")?, vec![moved]);
    assert!(state.factors_of("usr_f2")?.is_empty());
    Ok(())
}

#[test]
fn factors_are_kept_in_sqlite() -> Result {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("directory.db");
    keeps_factors(&portcullis::state::SqliteState::open(&path)?)?;
    // No plaintext phone, in any format, in the database file or its WAL.
    crate::common::Exposure::new()
        .database(&path)
        .assert_no_phone("+14155552671");
    Ok(())
}

#[test]
fn factors_are_kept_in_postgres() -> Result {
    let Some(url) = fresh_database("factors") else {
        return skipped("factors_are_kept_in_postgres");
    };
    keeps_factors(&PostgresState::connect(&url)?)
}

#[test]
fn an_older_directory_is_upgraded_in_place() -> Result {
    // A directory as the first release wrote it (no factors, no lease token): opened,
    // it gains what is new and keeps its users.
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("directory.db");
    {
        let db = rusqlite::Connection::open(&path)?;
        db.execute_batch(
            "CREATE TABLE users (id TEXT PRIMARY KEY, email TEXT NOT NULL, email_norm TEXT NOT NULL UNIQUE,
                 email_verified INTEGER NOT NULL, app_metadata TEXT NOT NULL, user_metadata TEXT NOT NULL,
                 password_hash TEXT, created_at_ms INTEGER NOT NULL, last_login_ms INTEGER,
                 logins_count INTEGER NOT NULL DEFAULT 0);
             CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, key TEXT NOT NULL,
                 payload TEXT NOT NULL, transaction_id TEXT NOT NULL, created_at_ms INTEGER NOT NULL,
                 status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
                 next_attempt_at_ms INTEGER NOT NULL, last_error TEXT, claimed_until_ms INTEGER,
                 UNIQUE (topic, key));
             INSERT INTO users VALUES ('usr_old', 'old@example.com', 'old@example.com', 1, '{}', '{}', NULL, 5, NULL, 3);",
        )?;
    }
    let state = portcullis::state::SqliteState::open(&path)?;
    use portcullis::model::Directory;
    let users = state.find_by_email("old@example.com")?;
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].logins_count, 3);
    assert!(state.factors_of("usr_old")?.is_empty());
    Ok(())
}

#[test]
fn a_directory_with_the_first_factors_table_gains_cohorts_in_place() -> Result {
    // A directory as the commit that brought factors made it (no cohort, no revert;
    // tests/host/schemas), with a factor in it.
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("directory.db");
    {
        let db = rusqlite::Connection::open(&path)?;
        db.execute_batch(&std::fs::read_to_string(
            crate::common::workspace_root().join("host/tests/host/schemas/sqlite-04-adf7076.sql"),
        )?)?;
        db.execute_batch(
            "INSERT INTO users (id, email, email_norm, email_verified, app_metadata, user_metadata, created_at_ms)
                 VALUES ('usr_f', 'f@example.com', 'f@example.com', 1, '{}', '{}', 5);
             INSERT INTO factors VALUES ('fac_f', 'usr_f', 'sms', 'legacy-sms', '1000009', NULL, NULL, NULL,
                 'active', 10, 10, NULL);",
        )?;
    }
    let state = portcullis::state::SqliteState::open(&path)?;
    let factors = state.factors_of("usr_f")?;
    assert_eq!(factors.len(), 1);
    assert_eq!(
        factors[0].legacy_provider_user_id.as_deref(),
        Some("1000009")
    );
    assert_eq!(
        (factors[0].cohort.as_deref(), factors[0].reverted),
        (None, false)
    );
    // And it takes the new columns.
    state.put_factor(&portcullis::state::factors::Factor {
        cohort: Some("internal".into()),
        reverted: true,
        ..factors[0].clone()
    })?;
    let again = state.factors_of("usr_f")?;
    assert_eq!(
        (again[0].cohort.as_deref(), again[0].reverted),
        (Some("internal"), true)
    );
    Ok(())
}

/// The backfill's store: chunk leases, the ledger's quota and lease check, the
/// conditional phone write, revert with its audit, the status counts.
fn keeps_backfill_state(state: &dyn StateStore) -> Result {
    use portcullis::mfa::sealed::KeyRing;
    use portcullis::state::phone_export::{BackfillStatus, ExportOutcome, ExportPermit, Lease};
    let keys = KeyRing::parse("k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")?;
    portcullis::jobs::seed::seed_sms_users(state, 100, 4, 2, |_| {})?;
    let lease = |token: &str, now_ms: u64, until_ms: u64| Lease {
        token: token.into(),
        until_ms,
        run_id: format!("run-{token}"),
        now_ms,
    };
    assert_eq!(
        (
            state.backfill_left(Some("internal"))?,
            state.backfill_left(None)?
        ),
        (2, 4)
    );
    let ids = state.backfill_candidates(Some("internal"), 1_000, false, 10, "run-a")?;
    assert_eq!(ids, ["fac_sms000000", "fac_sms000001"]);
    let a = lease("a", 1_000, 5_000);
    assert_eq!(state.claim_backfill(&ids, &a, false)?, ids);
    // Held: another run gets nothing, until the lease runs out.
    assert!(
        state
            .claim_backfill(&ids, &lease("b", 2_000, 9_000), false)?
            .is_empty()
    );
    assert!(
        state
            .backfill_candidates(Some("internal"), 2_000, false, 10, "run-b")?
            .is_empty()
    );
    assert_eq!(
        state
            .backfill_candidates(None, 2_000, false, 10, "run-b")?
            .len(),
        2
    );

    // The ledger: three counted attempts per user, each renewing the lease.
    let since = 0;
    for n in 0..3 {
        let permit = state.begin_export(
            "fac_sms000000",
            "1000100",
            &lease("a", 1_000 + n, 5_000),
            since,
            3,
        )?;
        let ExportPermit::Go(id) = permit else {
            panic!("{permit:?}")
        };
        state.finish_export(
            id,
            if n == 0 {
                ExportOutcome::Throttled
            } else {
                ExportOutcome::Failed
            },
        )?;
    }
    // The throttled one does not count; a call whose result was lost does.
    let ExportPermit::Go(_lost) = state.begin_export(
        "fac_sms000000",
        "1000100",
        &lease("a", 1_010, 5_000),
        since,
        3,
    )?
    else {
        panic!("the third counted attempt")
    };
    assert_eq!(
        state.begin_export(
            "fac_sms000000",
            "1000100",
            &lease("a", 1_020, 5_000),
            since,
            3
        )?,
        ExportPermit::Quota
    );
    // Another run's token is not a lease on it.
    assert_eq!(
        state.begin_export(
            "fac_sms000001",
            "1000101",
            &lease("b", 1_020, 5_000),
            since,
            3
        )?,
        ExportPermit::LostLease
    );
    assert!(state.finish_backfill(
        "fac_sms000000",
        "a",
        BackfillStatus::Skipped,
        Some("export quota reached"),
        1_030
    )?);
    assert!(!state.finish_backfill("fac_sms000001", "b", BackfillStatus::Exported, None, 1_030)?);

    // The phone is stored only over the factor as it was read.
    let read = state
        .factors_by_ids(&["fac_sms000001".to_owned()])?
        .remove(0);
    let sealed = keys.seal("+12015550101", &read.user_id, &read.id);
    let changed = portcullis::state::factors::Factor {
        updated_at_ms: read.updated_at_ms + 1,
        ..read.clone()
    };
    state.put_factor(&changed)?;
    assert!(
        !state.store_exported_phone(&read, &sealed, 1_040)?,
        "changed meanwhile"
    );
    assert!(state.store_exported_phone(&changed, &sealed, 1_040)?);
    assert!(state.factors_of(&read.user_id)?[0].phone.is_some());

    let status = state.mfa_status()?;
    let internal = status.iter().find(|c| c.cohort == "internal").unwrap();
    assert_eq!(
        (
            internal.factors,
            internal.exported,
            internal.pending,
            internal.failing
        ),
        (2, 1, 1, 1)
    );
    assert_eq!(state.factors_depending_on_legacy()?, 3);
    assert_eq!(
        state.revert_factors(Some("usr_sms000001"), None, "ops", 1_050)?,
        ["fac_sms000001"]
    );
    assert_eq!(state.factors_depending_on_legacy()?, 4);
    assert!(state.factors_of("usr_sms000001")?[0].reverted);
    assert!(
        state
            .revert_factors(None, Some("nobody"), "ops", 1_060)?
            .is_empty()
    );
    Ok(())
}

#[test]
fn backfill_state_is_kept_in_sqlite() -> Result {
    let dir = tempfile::tempdir()?;
    keeps_backfill_state(&portcullis::state::SqliteState::open(
        &dir.path().join("directory.db"),
    )?)
}

#[test]
fn backfill_state_is_kept_in_postgres() -> Result {
    let Some(url) = fresh_database("backfill") else {
        return skipped("backfill_state_is_kept_in_postgres");
    };
    keeps_backfill_state(&PostgresState::connect(&url)?)
}

/// The import's state in the directory: which emails it holds (a page at once), the
/// files' states, the legacy links by product.
fn keeps_import_state(state: &dyn StateStore) -> Result {
    use portcullis::state::import_files::FileStatus;
    crate::common::create_user(state, "usr_i1", "one@example.com")?;
    crate::common::create_user(state, "usr_i2", "two@example.com")?;
    let known =
        state.emails_in_directory(&["one@example.com", "nobody@example.com", "two@example.com"])?;
    assert_eq!(
        known,
        ["one@example.com", "two@example.com"]
            .map(String::from)
            .into_iter()
            .collect()
    );
    state.import_files_register(&[("aa".into(), "users-1.json".into(), 3)], 1)?;
    // Registering again keeps what is known.
    let mut file = state.import_files()?.remove(0);
    file.status = FileStatus::Submitted;
    file.job_id = Some("job_1".into());
    file.attempts = 1;
    state.import_file_update(&file, 2)?;
    state.import_files_register(&[("aa".into(), "users-1.json".into(), 3)], 3)?;
    assert_eq!(state.import_files()?, vec![file]);
    Ok(())
}

#[test]
fn import_state_is_kept_in_sqlite() -> Result {
    let dir = tempfile::tempdir()?;
    keeps_import_state(&portcullis::state::SqliteState::open(
        &dir.path().join("directory.db"),
    )?)
}

#[test]
fn import_state_is_kept_in_postgres() -> Result {
    let Some(url) = fresh_database("import") else {
        return skipped("import_state_is_kept_in_postgres");
    };
    keeps_import_state(&PostgresState::connect(&url)?)
}

/// Recovery codes, recoveries, session revocations, support requests and the audit
/// chain: the portable SQL both backends run.
fn keeps_recovery_state(state: &dyn StateStore) -> Result {
    use portcullis::state::audit::{self, AuditEntry};
    use portcullis::state::recovery::{self, CodeCheck, Recovery, Started, Throttle};
    use portcullis::state::support;
    let sql = state.sql();
    crate::common::create_user(state, "usr_r1", "r1@example.com")?;
    let entry = |action: &str| AuditEntry::new(1_000, "user:usr_r1", action, "usr_r1");
    let digests: Vec<String> = (0u8..10).map(|i| hex::encode([i; 32])).collect();
    recovery::replace_codes(sql, "usr_r1", &digests, 1_000, &[], &entry("codes"))?;
    assert_eq!(recovery::codes_left(sql, "usr_r1")?, 10);
    let throttle = Throttle {
        max_failures: 4,
        free_failures: 2,
        max_delay_ms: 60_000,
    };
    assert_eq!(
        recovery::check_code(sql, "usr_r1", &[3; 32], 2_000, throttle)?,
        CodeCheck::Burnt { left: 9 }
    );
    assert_eq!(
        recovery::check_code(sql, "usr_r1", &[3; 32], 2_000, throttle)?,
        CodeCheck::Wrong { failures: 1 }
    );
    recovery::check_code(sql, "usr_r1", &[99; 32], 2_000, throttle)?;
    assert_eq!(
        recovery::check_code(sql, "usr_r1", &[4; 32], 2_500, throttle)?,
        CodeCheck::Throttled { retry_at_ms: 3_000 }
    );
    // New codes: the failures stay.
    recovery::replace_codes(sql, "usr_r1", &digests, 3_000, &[], &entry("codes"))?;
    recovery::check_code(sql, "usr_r1", &[99; 32], 3_000, throttle)?;
    recovery::check_code(sql, "usr_r1", &[99; 32], 10_000, throttle)?;
    assert_eq!(
        recovery::check_code(sql, "usr_r1", &[4; 32], 100_000, throttle)?,
        CodeCheck::Disabled
    );
    recovery::reset_failures(sql, "usr_r1")?;
    assert!(matches!(
        recovery::check_code(sql, "usr_r1", &[4; 32], 100_000, throttle)?,
        CodeCheck::Burnt { .. }
    ));

    let wait = Recovery {
        id: "rcv_1".into(),
        user_id: "usr_r1".into(),
        path: portcullis::model::RecoveryPath::Wait,
        status: portcullis::model::RecoveryStage::Waiting,
        requested_at_ms: 5_000,
        ready_at_ms: 10_000,
        expires_at_ms: 20_000,
        reasons: vec!["new device".into()],
        cancel_digest: "ab".into(),
        finished_at_ms: None,
        outcome: None,
    };
    assert!(matches!(
        recovery::start_recovery(sql, &wait, 5_000, &[], &entry("requested"))?,
        Started::New(_)
    ));
    let second = Recovery {
        id: "rcv_2".into(),
        ready_at_ms: 6_000,
        ..wait.clone()
    };
    match recovery::start_recovery(sql, &second, 5_500, &[], &entry("requested"))? {
        Started::Existing(open) => assert_eq!(open.ready_at_ms, 10_000, "not shortened"),
        Started::New(_) => panic!("a second recovery started"),
    }
    assert!(recovery::finish_recovery(
        sql,
        "rcv_1",
        &[portcullis::model::RecoveryStage::Waiting],
        portcullis::model::RecoveryStage::Cancelled,
        "owner",
        7_000,
        &[],
        &entry("cancelled")
    )?);
    assert!(!recovery::finish_recovery(
        sql,
        "rcv_1",
        &[portcullis::model::RecoveryStage::Waiting],
        portcullis::model::RecoveryStage::Completed,
        "late",
        8_000,
        &[],
        &entry("completed")
    )?);
    assert_eq!(
        recovery::recovery_by_id(sql, "rcv_1")?
            .unwrap()
            .status
            .name(),
        "cancelled"
    );
    // A waiting one past its window is expired when read.
    recovery::start_recovery(sql, &second, 9_000, &[], &entry("requested"))?;
    assert!(recovery::open_recovery(sql, "usr_r1", 30_000)?.is_none());
    assert_eq!(
        recovery::recovery_by_id(sql, "rcv_2")?
            .unwrap()
            .status
            .name(),
        "expired"
    );
    portcullis::state::portable::transact(sql, |tx| {
        recovery::revoke_sessions(tx, "usr_r1", 31_000)
    })?;
    assert_eq!(recovery::sessions_revoked_at(sql, "usr_r1")?, Some(31_000));

    let request = support::SupportRequest {
        id: "req_1".into(),
        action: portcullis::model::SupportAction::RemoveFactor,
        user_id: "usr_r1".into(),
        params: serde_json::json!({"factor_id": "fac_1"}),
        requested_by: "alice".into(),
        evidence: "IDV-1".into(),
        reason: "lost".into(),
        skip_wait_reason: None,
        approved_by: None,
        approval_evidence: None,
        approval_skip_reason: None,
        status: portcullis::model::SupportStatus::AwaitingApproval,
        created_at_ms: 1,
        ready_at_ms: None,
        finished_at_ms: None,
    };
    portcullis::state::portable::transact(sql, |tx| {
        support::insert(tx, &request)?;
        // The database itself refuses the requester as approver.
        assert!(!support::approve(tx, "req_1", "alice", "IDV-1", None, 5)?);
        assert!(support::approve(tx, "req_1", "bob", "IDV-1b", None, 5)?);
        assert!(support::finish(
            tx,
            "req_1",
            portcullis::model::SupportStatus::Approved,
            portcullis::model::SupportStatus::Done,
            6,
        )?);
        let read = support::get(tx, "req_1")?.unwrap();
        assert_eq!(
            (
                read.approved_by.as_deref(),
                read.status.name(),
                read.ready_at_ms
            ),
            (Some("bob"), "done", Some(5))
        );
        Ok(())
    })?;

    let report = audit::verify(sql)?;
    // codes twice, requested, cancelled, requested again: a kept request and a
    // refused move write nothing.
    assert!(report.ok && report.rows == 5, "{report:?}");
    assert_eq!(audit::rows_about(sql, "usr_r1")?.len() as u64, report.rows);
    Ok(())
}

#[test]
fn recovery_state_is_kept_in_sqlite() -> Result {
    let dir = tempfile::tempdir()?;
    keeps_recovery_state(&portcullis::state::SqliteState::open(
        &dir.path().join("d.db"),
    )?)
}

#[test]
fn recovery_state_is_kept_in_postgres() -> Result {
    let Some(url) = fresh_database("recovery") else {
        return skipped("recovery_state_is_kept_in_postgres");
    };
    let state = PostgresState::connect(&url)?;
    keeps_recovery_state(&state)?;
    // Two writers append to the audit chain at once: it never forks.
    let state = Arc::new(state);
    let barrier = Arc::new(Barrier::new(4));
    let writers: Vec<_> = (0..4)
        .map(|i| {
            let (state, barrier) = (state.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for n in 0..25 {
                    portcullis::state::audit::record(
                        state.sql(),
                        &portcullis::state::audit::AuditEntry::new(
                            n,
                            format!("agent:{i}"),
                            "x",
                            "y",
                        ),
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let report = portcullis::state::audit::verify(state.sql())?;
    assert!(report.ok, "{report:?}");
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
