//! Every way a rule can misbehave is contained, named in the trace, and handled by the
//! rule's policy; the pipeline (and the process) keeps going.

use portcullis::{Decision, Effect, FaultKind, LoadError, RuleResult, Services, Verdict};

use crate::common::{Result, load, login, rule};

/// Runs `faulty` (with `extra` settings) under `skip` before a healthy rule, and
/// under `deny`; checks both policies and returns the fault seen.
fn contained(faulty: &str, extra: &str) -> Result<(FaultKind, Verdict)> {
    let fail_open = load(&[
        rule("faulty", faulty, &format!("on_error = \"skip\"\n{extra}")),
        rule("healthy", "add-claim", "grants = [\"log\", \"config\"]"),
    ])?;
    let verdict = fail_open.evaluate(&login("tx-open"), &Services::none());
    assert_eq!(verdict.decision, Decision::Allow, "{verdict:#?}");
    assert_eq!(
        verdict.trace.len(),
        2,
        "the healthy rule still ran: {verdict:#?}"
    );
    assert_eq!(verdict.trace[0].result, RuleResult::Fault);
    assert_eq!(verdict.trace[1].result, RuleResult::Continue);
    assert!(
        verdict
            .effects
            .iter()
            .all(|e| matches!(e, Effect::AddClaim { .. } | Effect::SetAppMetadata { .. })),
        "only the healthy rule's effects remain: {:?}",
        verdict.effects
    );
    assert_eq!(verdict.effects.len(), 2);
    let kind = verdict.trace[0]
        .fault
        .as_ref()
        .expect("fault recorded")
        .kind;

    let fail_closed = load(&[
        rule("faulty", faulty, &format!("on_error = \"deny\"\n{extra}")),
        rule("healthy", "add-claim", "grants = [\"log\", \"config\"]"),
    ])?;
    let denied = fail_closed.evaluate(&login("tx-closed"), &Services::none());
    assert!(
        matches!(&denied.decision, Decision::Deny { code, retryable: true, .. } if code == "rule_fault"),
        "{denied:#?}"
    );
    assert_eq!(denied.trace.len(), 1, "the pipeline stopped at the fault");
    assert!(denied.effects.is_empty(), "a denied login applies nothing");
    assert_eq!(
        denied.trace[0].fault.as_ref().unwrap().kind,
        kind,
        "same fault either way"
    );
    Ok((kind, verdict))
}

#[test]
fn infinite_loop_hits_the_deadline() -> Result {
    let (kind, _) = contained("infinite-loop", "deadline_ms = 20")?;
    assert_eq!(kind, FaultKind::Deadline);
    Ok(())
}

#[test]
fn memory_bomb_hits_the_memory_cap() -> Result {
    let (kind, verdict) = contained("memory-bomb", "memory_mb = 8")?;
    assert_eq!(kind, FaultKind::Memory);
    assert!(
        verdict.trace[0]
            .fault
            .as_ref()
            .unwrap()
            .message
            .contains("8 MiB")
    );
    Ok(())
}

#[test]
fn deep_recursion_overflows_the_wasm_stack() -> Result {
    let (kind, _) = contained("deep-recursion", "")?;
    assert_eq!(kind, FaultKind::StackOverflow);
    Ok(())
}

#[test]
fn panic_traps_and_its_message_is_captured() -> Result {
    // The panicking rule expects a directory user; a login without one panics.
    let pipeline = load(&[
        rule("faulty", "panic", "on_error = \"skip\""),
        rule("healthy", "add-claim", "grants = [\"log\", \"config\"]"),
    ])?;
    let login = portcullis::LoginAttempt::from_json(&crate::common::login_json("tx-p"))?;
    let verdict = pipeline.evaluate(&login, &Services::none());
    let trace = &verdict.trace[0];
    assert_eq!(trace.fault.as_ref().unwrap().kind, FaultKind::Trap);
    assert!(
        trace
            .output
            .contains("rule bug: assumed every login has a directory user"),
        "{trace:#?}"
    );
    assert_eq!(verdict.trace[1].result, RuleResult::Continue);
    Ok(())
}

#[test]
fn a_rule_without_wasi_reports_its_panic_through_log() -> Result {
    // Built like the migration rules (no WASI, no stderr): the panic hook logs the
    // message, the guest traps, and the fault carries the message.
    let component = crate::common::core_rule_component("guest-model-panic");
    let pipeline = load(&[
        format!(
            "[[rule]]\nname = \"faulty\"\ncomponent = \"{}\"\ngrants = [\"log\"]\non_error = \"skip\"\n",
            component.display()
        ),
        rule("healthy", "add-claim", "grants = [\"log\", \"config\"]"),
    ])?;
    let imports: Vec<String> = pipeline.rules()[0]
        .imports
        .iter()
        .map(|i| i.name.clone())
        .collect();
    assert!(
        imports.iter().all(|i| !i.starts_with("wasi:")),
        "a rule built without WASI imports none: {imports:?}"
    );
    let login = portcullis::LoginAttempt::from_json(&crate::common::login_json("tx-mp"))?;
    let verdict = pipeline.evaluate(&login, &Services::none());
    let fault = verdict.trace[0].fault.as_ref().unwrap();
    assert_eq!(fault.kind, FaultKind::Trap);
    assert!(
        fault
            .message
            .contains("rule bug: assumed every login has a directory user"),
        "{fault:?}"
    );
    assert!(fault.message.starts_with("panicked at "), "{fault:?}");
    assert_eq!(verdict.trace[1].result, RuleResult::Continue);
    Ok(())
}

#[test]
fn unreachable_traps() -> Result {
    let (kind, verdict) = contained("unreachable", "")?;
    assert_eq!(kind, FaultKind::Trap);
    assert!(
        verdict.trace[0]
            .fault
            .as_ref()
            .unwrap()
            .message
            .contains("unreachable")
    );
    Ok(())
}

#[test]
fn huge_output_is_refused() -> Result {
    // Enough memory to build the 10 MB claim: the output bound must catch it.
    let (kind, verdict) = contained(
        "bad-output",
        // A deadline by the clock, not by a ticker that lags under load: building
        // 10 MB on a busy machine takes longer than the default 100 ms.
        "memory_mb = 64\ndeadline_ms = 10000\ngrants = [\"config\"]\nconfig = { mode = \"huge\" }",
    )?;
    assert_eq!(kind, FaultKind::BadOutput);
    assert!(
        verdict.trace[0]
            .fault
            .as_ref()
            .unwrap()
            .message
            .contains("over the rule's limit")
    );
    Ok(())
}

#[test]
fn invalid_json_output_is_refused() -> Result {
    for mode in ["invalid-json", "not-an-object"] {
        let (kind, _) = contained(
            "bad-output",
            &format!("grants = [\"config\"]\nconfig = {{ mode = \"{mode}\" }}"),
        )?;
        assert_eq!(kind, FaultKind::BadOutput, "mode {mode}");
    }
    Ok(())
}

#[test]
fn ungranted_import_is_refused_at_load() {
    let err = load(&[rule("sneaky", "ungranted-import", "grants = [\"log\"]")])
        .err()
        .expect("the pipeline must not load");
    assert!(
        matches!(&err, LoadError::Ungranted { rule, interface } if rule == "sneaky" && interface == "legacy")
    );
    let message = err.to_string();
    assert!(
        message.contains("sneaky") && message.contains("legacy"),
        "{message}"
    );
}

#[test]
fn failing_capability_is_a_capability_fault() -> Result {
    // Granted, but no legacy stores are configured: the host answers `unavailable`
    // and the rule gives up.
    let (kind, verdict) = contained("ungranted-import", "grants = [\"legacy\"]")?;
    assert_eq!(kind, FaultKind::Capability);
    assert!(
        verdict.trace[0]
            .logs
            .iter()
            .any(|l| l.contains("legacy.find-accounts failed"))
    );
    Ok(())
}

#[test]
fn a_pipeline_survives_many_faults_in_a_row() -> Result {
    let pipeline = load(&[
        rule(
            "loop",
            "infinite-loop",
            "on_error = \"skip\"\ndeadline_ms = 5",
        ),
        rule("bomb", "memory-bomb", "on_error = \"skip\"\nmemory_mb = 4"),
        rule("recurse", "deep-recursion", "on_error = \"skip\""),
        rule("unreachable", "unreachable", "on_error = \"skip\""),
        rule("healthy", "add-claim", "grants = [\"log\", \"config\"]"),
    ])?;
    for round in 0..5 {
        let verdict = pipeline.evaluate(&login(&format!("tx-{round}")), &Services::none());
        let kinds: Vec<_> = verdict.faults().map(|(_, f)| f.kind).collect();
        assert_eq!(
            kinds,
            [
                FaultKind::Deadline,
                FaultKind::Memory,
                FaultKind::StackOverflow,
                FaultKind::Trap
            ]
        );
        assert_eq!(verdict.decision, Decision::Allow);
        assert_eq!(verdict.effects.len(), 2);
    }
    Ok(())
}
