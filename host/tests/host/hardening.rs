//! The defects an attacker's campaign found around the sandbox, each reproduced here
//! against real components, real stores and the real server.

use portcullis::state::outbox::OutboxStore;
use portcullis::state::{EffectBatch, SqliteState, StateStore};
use portcullis::{Decision, Effect, FaultKind, GatewayError, LoginAttempt, RuleResult, Services};

use crate::common::{Demo, Exposure, Result, creates_user, find_login, load, login, rule};

fn hostile(mode: &str, extra: &str) -> String {
    rule(
        "hostile",
        "hostile",
        &format!(
            "grants = [\"log\", \"config\", \"legacy\"]\nconfig = {{ mode = \"{mode}\" }}\n{extra}"
        ),
    )
}

/// The fault `mode` causes when the hostile rule runs alone (fail closed).
fn fault_of(mode: &str, extra: &str, login: &LoginAttempt) -> Result<(FaultKind, String)> {
    let pipeline = load(&[hostile(mode, extra)])?;
    let verdict = pipeline.evaluate(login, &Services::none());
    let trace = &verdict.trace[0];
    let fault = trace
        .fault
        .as_ref()
        .ok_or_else(|| format!("{mode}: no fault: {verdict:#?}"))?;
    assert!(
        matches!(verdict.decision, Decision::Deny { ref code, .. } if code == "rule_fault"),
        "{mode} fails closed"
    );
    assert!(verdict.effects.is_empty(), "{mode}: nothing to apply");
    Ok((fault.kind, fault.message.clone()))
}

fn without_user(transaction_id: &str) -> LoginAttempt {
    let mut attempt = login(transaction_id);
    attempt.user = None;
    attempt
}

// 1. One login must never poison a user.

#[test]
fn a_login_time_that_does_not_fit_the_store_is_refused() {
    let json =
        crate::common::login_json("tx-time").replace("1764403200000", "18446744073709551615");
    let error = LoginAttempt::from_json(&json).expect_err("refused at the boundary");
    assert!(error.to_string().contains("time_ms"), "{error}");
    // Bounded sizes too, before anything copies them.
    let long = crate::common::login_json("tx-ua")
        .replace("\"test\"", &format!("\"{}\"", "u".repeat(5000)));
    assert!(LoginAttempt::from_json(&long).is_err());
}

#[test]
fn rows_an_older_version_wrote_do_not_lock_the_user_out() -> Result {
    let demo = Demo::new(120, 60);
    let (attempt, _) = demo
        .logins()
        .into_iter()
        .find(|(a, _)| {
            demo.gateway
                .services()
                .directory
                .find_by_email(&a.email)
                .is_ok_and(|users| !users.is_empty())
        })
        .expect("a login of a directory user in the batch");
    // What an older version wrote for `time_ms: 18446744073709551615`: a negative
    // integer. Every read of that user failed, so every later login was denied.
    let db = rusqlite::Connection::open(demo.dir.path().join("directory.db"))?;
    let email = portcullis::model::normalize_email(&attempt.email);
    db.execute(
        "UPDATE users SET created_at_ms = -1, last_login_ms = -1, logins_count = -1 WHERE email_norm = ?1",
        [&email],
    )?;
    let users = demo
        .gateway
        .services()
        .directory
        .find_by_email(&attempt.email)?;
    assert_eq!(users.len(), 1, "the row reads back");
    assert_eq!(users[0].created_at_ms, 0);
    let verdict = demo.gateway.login(&attempt)?;
    assert!(
        !matches!(&verdict.decision, Decision::Deny { code, .. } if code == "state_unavailable"),
        "{verdict:?}"
    );
    Ok(())
}

// 2. Security decisions use the host's clock.

#[test]
fn a_login_far_from_the_hosts_clock_is_refused() -> Result {
    let demo = Demo::new(60, 5);
    let (attempt, _) = demo.logins().remove(0);
    let now = demo.clock_now();
    // The default bound is 300 s, either way: a login from the past (replayed) or
    // from the future (prepared ahead, or a gateway whose clock runs fast).
    for (n, (time_ms, refused)) in [
        (now - 3_600_000, true),
        (now + 3_600_000, true),
        (now - 301_000, true),
        (now + 301_000, true),
        (now - 299_000, false),
        (now + 299_000, false),
    ]
    .into_iter()
    .enumerate()
    {
        let mut attempt = attempt.clone();
        attempt.time_ms = time_ms;
        attempt.transaction_id = format!("{}-skew-{n}", attempt.transaction_id);
        let offset = time_ms as i64 - now as i64;
        match demo.gateway.login(&attempt) {
            Err(GatewayError::Login(e)) if refused => {
                assert!(e.to_string().contains("clock"), "{e}")
            }
            Ok(_) if !refused => {}
            other => panic!("a login {offset} ms from the host's clock: {other:?}"),
        }
    }
    Ok(())
}

// 4. Effects are checked against the login.

#[test]
fn effects_a_rule_is_not_granted_are_refused() -> Result {
    let (kind, message) = fault_of("protected", "effects = []", &login("tx-kind"))?;
    assert_eq!(kind, FaultKind::BadOutput);
    assert!(message.contains("set_app_metadata"), "{message}");
    Ok(())
}

#[test]
fn effects_that_break_the_logins_invariants_are_refused() -> Result {
    let all = "effects = [\"create_user\", \"link_legacy_account\", \"enqueue_outbox\", \"set_app_metadata\"]";
    for (mode, attempt, says) in [
        ("create-other", without_user("tx-c1"), "another email"),
        ("create-self", login("tx-c2"), "already holds"),
        ("link-unverified", without_user("tx-l"), "did not verify"),
        ("outbox-foreign", login("tx-o"), "outbox key"),
        ("protected", login("tx-p"), "protected"),
    ] {
        let (kind, message) = fault_of(mode, all, &attempt)?;
        assert_eq!(kind, FaultKind::BadOutput, "{mode}");
        assert!(message.contains(says), "{mode}: {message}");
    }
    // The same checks let the honest case through: its own email, no user yet.
    let pipeline = load(&[hostile("create-self", all)])?;
    let verdict = pipeline.evaluate(&without_user("tx-ok"), &Services::none());
    assert_eq!(verdict.decision, Decision::Allow, "{verdict:#?}");
    assert!(matches!(verdict.effects[0], Effect::CreateUser { .. }));
    Ok(())
}

#[test]
fn a_protected_key_may_be_written_by_a_rule_granted_it() -> Result {
    let pipeline = load(&[hostile(
        "protected",
        "effects = [\"set_app_metadata\"]\nprotected_keys = [\"bulkImported\"]",
    )])?;
    let verdict = pipeline.evaluate(&login("tx-granted"), &Services::none());
    assert_eq!(verdict.decision, Decision::Allow, "{verdict:#?}");
    Ok(())
}

// 6. A rule's output is bounded, not fatal.

#[test]
fn a_chatty_rule_is_truncated_not_faulted() -> Result {
    let pipeline = load(&[hostile("chatty", "")])?;
    let verdict = pipeline.evaluate(&login("tx-chatty"), &Services::none());
    assert_eq!(verdict.decision, Decision::Allow, "{verdict:#?}");
    let output = &verdict.trace[0].output;
    assert!(output.len() < 5 * 1024, "{} bytes kept", output.len());
    assert!(output.contains("[output truncated"), "marked as cut");
    Ok(())
}

#[test]
fn a_huge_rule_error_is_bad_output_not_a_10_mb_verdict() -> Result {
    let (kind, message) = fault_of("huge-error", "memory_mb = 64", &login("tx-err"))?;
    assert_eq!(kind, FaultKind::BadOutput);
    assert!(message.len() < 1024, "{} bytes in the trace", message.len());
    Ok(())
}

#[test]
fn a_huge_log_line_is_cut_before_it_is_copied_and_stays_redacted() -> Result {
    // This checks what is kept; what logging costs the host is measured in
    // `memory::a_huge_log_line_costs_the_host_no_copy_of_it` (this test could not see
    // the copies: they were made and freed before the verdict).
    let pipeline = load(&[hostile("huge-log", "memory_mb = 64\ndeadline_ms = 10000")])?;
    let verdict = pipeline.evaluate(&login("tx-log"), &Services::none());
    assert_eq!(
        verdict.trace[0].result,
        RuleResult::Continue,
        "{:?}",
        verdict.trace[0].fault
    );
    let line = &verdict.trace[0].logs[0];
    assert!(line.len() <= 1100, "{} bytes", line.len());
    assert!(!line.contains("carol@"), "no address survives a cut");
    Ok(())
}

#[test]
fn a_rule_returning_too_much_is_bad_output_not_a_trap() -> Result {
    // What the campaign sent: a 200 MB claim, and 2.5 million effects. Both once
    // exhausted wasmtime's own 128 MiB budget for lifting and were labelled `trap`.
    for (mode, size) in [
        ("claim-mb", "mb = \"200\""),
        ("many-effects", "count = \"2500000\""),
    ] {
        let pipeline = load(&[rule(
            "bad",
            "bad-output",
            &format!(
                "memory_mb = 256\ndeadline_ms = 10000\ngrants = [\"config\"]\nconfig = {{ mode = \"{mode}\", {size} }}"
            ),
        )])?;
        let verdict = pipeline.evaluate(&login(&format!("tx-{mode}")), &Services::none());
        let fault = verdict.trace[0]
            .fault
            .as_ref()
            .ok_or_else(|| format!("{mode}: no fault: {verdict:#?}"))?;
        assert!(
            matches!(verdict.decision, Decision::Deny { ref code, .. } if code == "rule_fault"),
            "{mode} fails closed"
        );
        assert!(verdict.effects.is_empty(), "{mode}: nothing to apply");
        assert_eq!(
            fault.kind,
            FaultKind::BadOutput,
            "{mode}: {}",
            fault.message
        );
        assert!(
            fault.message.contains("limit"),
            "{mode} names the bound: {}",
            fault.message
        );
    }
    Ok(())
}

#[test]
fn running_off_the_shadow_stack_is_a_stack_overflow() -> Result {
    let (kind, _) = fault_of("shadow-recursion", "", &login("tx-deep"))?;
    assert_eq!(kind, FaultKind::StackOverflow);
    Ok(())
}

// 7. Host-side work obeys limits.

#[test]
fn a_legacy_hash_over_the_work_limits_is_a_capability_fault() -> Result {
    let demo = Demo::new(200, 100);
    let attempt = find_login(&demo, |verdict, _| creates_user(verdict));
    // bcrypt cost 15 is ~2 s per check here: the host must refuse it, not run it.
    let costly = "$2b$15$7777777777777777777777uVYfu6iQsGFV1gN6zaqk7TKhRZBEVzC";
    for product in ["paste", "collect", "transfer"] {
        let db = rusqlite::Connection::open(demo.dir.path().join(format!("legacy-{product}.db")))?;
        db.execute(
            "UPDATE accounts SET password_hash = ?1 WHERE email_norm = ?2",
            [costly, &portcullis::model::normalize_email(&attempt.email)],
        )?;
    }
    let verdict = demo.gateway.login(&attempt)?;
    let fault = verdict
        .faults()
        .next()
        .map(|(_, f)| f.kind)
        .expect("a fault");
    assert_eq!(fault, FaultKind::Capability, "{verdict:#?}");
    assert!(matches!(verdict.decision, Decision::Deny { .. }));
    Ok(())
}

// 8. Outbox delivery: the lease fences updates.

#[test]
fn a_dispatcher_whose_lease_ran_out_cannot_record_a_result() -> Result {
    let state = SqliteState::in_memory()?;
    state.apply(&EffectBatch {
        transaction_id: "tx-fence".into(),
        time_ms: 1,
        user_id: None,
        new_user_id: "usr_f".into(),
        effects: vec![Effect::EnqueueOutbox {
            topic: "id-propagation".into(),
            key: "paste:P1".into(),
            payload: "{}".into(),
        }],
        password_hash: None,
    })?;
    let stale = state.claim_outbox(1_000, 100, 10)?.remove(0);
    // The lease ran out; another dispatcher holds the message now.
    let current = state.claim_outbox(2_000, 100_000, 10)?.remove(0);
    assert_eq!(stale.id, current.id);
    let lease = |m: &portcullis::state::outbox::OutboxMessage| m.lease.clone().unwrap();
    assert!(!state.outbox_failed(stale.id, &lease(&stale), "late", None)?);
    assert!(!state.outbox_delivered(stale.id, &lease(&stale))?);
    assert_eq!(
        state.outbox_messages()?[0].status.name(),
        "delivering",
        "untouched"
    );
    assert!(state.outbox_delivered(current.id, &lease(&current))?);
    assert_eq!(state.outbox_messages()?[0].status.name(), "delivered");
    Ok(())
}

// The invariants of `runtime::invariants` hold against a rule that tries to break them
// where the honest rules never do.

#[test]
fn a_rule_cannot_create_a_user_twice_in_one_login() -> Result {
    let all = "effects = [\"create_user\"]";
    // Twice in one outcome.
    let (kind, message) = fault_of("create-twice", all, &without_user("tx-twice"))?;
    assert_eq!(kind, FaultKind::BadOutput);
    assert!(message.contains("twice"), "{message}");
    // Once each in two rules of one pipeline: the second is refused.
    let pipeline = load(&[
        rule(
            "first",
            "hostile",
            &format!(
                "grants = [\"log\", \"config\", \"legacy\"]\nconfig = {{ mode = \"create-self\" }}\n{all}"
            ),
        ),
        rule(
            "second",
            "hostile",
            &format!(
                "grants = [\"log\", \"config\", \"legacy\"]\nconfig = {{ mode = \"create-self\" }}\n{all}"
            ),
        ),
    ])?;
    let verdict = pipeline.evaluate(&without_user("tx-two-rules"), &Services::none());
    assert_eq!(
        verdict.trace[0].fault, None,
        "the first create is the login's"
    );
    let fault = verdict.trace[1]
        .fault
        .as_ref()
        .ok_or_else(|| format!("no fault: {verdict:#?}"))?;
    assert_eq!(fault.kind, FaultKind::BadOutput);
    assert!(fault.message.contains("twice"), "{}", fault.message);
    assert!(
        matches!(verdict.decision, Decision::Deny { ref code, .. } if code == "rule_fault"),
        "{:?}",
        verdict.decision
    );
    assert!(verdict.effects.is_empty(), "nothing to apply");
    Ok(())
}

/// The seeded migration pipeline with the hostile rule last (after `ownership-check`
/// and its inbox proof), in mode `link-found` looking up `email` (the login's own when
/// `None`), on `demo`'s stores and clock.
fn linking_after_the_inbox_proof(demo: &Demo, email: Option<&str>) -> Result<portcullis::Gateway> {
    let config = match email {
        Some(email) => format!("{{ mode = \"link-found\", email = \"{email}\" }}"),
        None => "{ mode = \"link-found\" }".into(),
    };
    let text = format!(
        "{}\n{}",
        std::fs::read_to_string(&demo.config)?,
        rule(
            "linker",
            "hostile",
            &format!(
                "grants = [\"log\", \"config\", \"legacy\"]\neffects = [\"link_legacy_account\"]\non_error = \"deny\"\nconfig = {config}"
            ),
        )
    );
    let path = demo.dir.path().join("pipeline-linker.toml");
    std::fs::write(&path, text)?;
    Ok(portcullis::Gateway::open(
        &portcullis::PipelineConfig::load(&path)?,
        crate::common::runtime(),
    )?
    .with_clock(demo.clock.clone()))
}

#[test]
fn after_an_inbox_proof_a_rule_cannot_link_an_account_found_under_another_email() -> Result {
    let demo = Demo::new(300, 150);
    let several = |v: &portcullis::Verdict, _: &serde_json::Value| matches!(&v.decision, Decision::Redirect { reason, .. } if reason == "several_products");
    let login = find_login(&demo, several);
    let email = portcullis::model::normalize_email(&login.email);
    // Someone else's legacy account: another email, in the paste store.
    let paste = rusqlite::Connection::open(demo.dir.path().join("legacy-paste.db"))?;
    let (other_email, other_id): (String, String) = paste.query_row(
        "SELECT email, legacy_id FROM accounts WHERE email_norm != ?1 ORDER BY legacy_id LIMIT 1",
        [&email],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    let linked_to_anyone = |id: &str| -> i64 {
        demo.sql(&format!(
            "SELECT COUNT(*) FROM identities WHERE provider = 'paste' AND provider_user_id = '{id}'"
        ))
    };
    assert_eq!(linked_to_anyone(&other_id), 0);

    let gateway = linking_after_the_inbox_proof(&demo, Some(&other_email))?;
    let redirected = gateway.login(&login)?;
    assert!(
        several(&redirected, &serde_json::Value::Null),
        "{:?}",
        redirected.decision
    );
    let token = redirected.resume_token.clone().expect("a resume token");
    let users_before: i64 = demo.sql("SELECT COUNT(*) FROM users");
    // The inbox is proven; the rule links an account it found under another email.
    let resumed = gateway.resume(&token, &login.transaction_id, "{\"verified\":true}")?;
    let (rule, fault) = resumed
        .faults()
        .next()
        .ok_or_else(|| format!("the link was accepted: {:?}", resumed.effects))?;
    assert_eq!((rule, fault.kind), ("linker", FaultKind::BadOutput));
    assert!(
        fault.message.contains("did not verify"),
        "{}",
        fault.message
    );
    assert!(
        matches!(resumed.decision, Decision::Deny { ref code, .. } if code == "rule_fault"),
        "{:?}",
        resumed.decision
    );
    assert_eq!(
        linked_to_anyone(&other_id),
        0,
        "the other account stays unlinked"
    );
    assert_eq!(demo.sql::<i64>("SELECT COUNT(*) FROM users"), users_before);

    // The same rule looking up the login's own email links: the refusal above was
    // the email's.
    let demo = Demo::new(300, 150);
    let login = find_login(&demo, several);
    let gateway = linking_after_the_inbox_proof(&demo, None)?;
    let token = gateway.login(&login)?.resume_token.expect("a resume token");
    let resumed = gateway.resume(&token, &login.transaction_id, "{\"verified\":true}")?;
    assert_eq!(resumed.decision, Decision::Allow, "{resumed:#?}");
    Ok(())
}

// 3. The search for secrets at rest and in output (`common::Exposure`).

#[test]
fn the_search_for_secrets_finds_every_spelling_and_the_wal() -> Result {
    let phone = "+16502530000";
    for spelling in [
        "+16502530000",
        "16502530000",
        "6502530000",
        "(650) 253-0000",
        "650-253-0000",
        "650.253.0000",
        "650 253 0000",
        "+1 650 253 0000",
        "+1 (650) 253-0000",
        "1-650-253-0000",
        "\"to\":\"+1-650-253-0000\"",
    ] {
        let exposure = Exposure::new().text("a log line", format!("sent to {spelling}."));
        assert_eq!(exposure.phone_in(phone), Some("a log line"), "{spelling}");
    }
    let others = Exposure::new().text("a log line", "6502530001 650-253-000 +1 650 253 9000");
    assert_eq!(others.phone_in(phone), None);
    let code = "ABCDE-FGHJK-MNPQR";
    for spelling in ["ABCDE-FGHJK-MNPQR", "abcdefghjkmnpqr", "abcde fghjk mnpqr"] {
        let exposure = Exposure::new().text("a detail", format!("{{\"code\":\"{spelling}\"}}"));
        assert_eq!(exposure.code_in(code), Some("a detail"), "{spelling}");
    }
    assert_eq!(
        Exposure::new()
            .text("a detail", "ABCDE-FGHJK-MNPQS")
            .code_in(code),
        None
    );

    // A write that is still in the WAL: the main file alone does not hold it.
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("directory.db");
    let writer = rusqlite::Connection::open(&path)?;
    writer.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
         CREATE TABLE audit_log (details TEXT);",
    )?;
    writer.execute(
        "INSERT INTO audit_log VALUES (?1)",
        [format!("{{\"code\":\"{code}\",\"to\":\"{phone}\"}}")],
    )?;
    let main_file_only = Exposure::new().file(&path);
    assert_eq!(main_file_only.code_in(code), None, "still in the WAL");
    let exposure = Exposure::new().database(&path);
    assert_eq!(exposure.places(), 2, "the WAL and the main file");
    assert!(exposure.code_in(code).is_some());
    assert!(exposure.phone_in(phone).is_some());
    Ok(())
}
