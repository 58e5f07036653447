//! The state stores: PostgreSQL against the server on 127.0.0.1:5432 when
//! PORTCULLIS_TEST_POSTGRES is set (.ci/run sets it; each test gets its own schema),
//! and the checks both backends share, run on SQLite too. Two gateways on one
//! database stand for two sidecar instances.
//! A module per part; here, what they share.

use portcullis::state::StateStore;

use crate::common::Result;

mod instances;
mod kept;
mod upgrades;

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
