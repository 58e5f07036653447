//! Pipeline semantics: order, pending effects, what stops the pipeline, determinism,
//! and what never leaks into a verdict.

use portcullis::{Decision, Effect, LoginAttempt, RuleResult, Services};
use serde_json::{Value, json};

use crate::common::{Result, load, login, login_json, rule};

fn scripted(name: &str, decision: &str) -> String {
    rule(
        name,
        "scripted",
        &format!(
            "grants = [\"log\", \"config\"]\nconfig = {{ name = \"{name}\", decision = \"{decision}\" }}"
        ),
    )
}

/// The report the scripted rule named `name` left in its claim.
fn report(effects: &[Effect], name: &str) -> Value {
    effects
        .iter()
        .find_map(|e| match e {
            Effect::AddClaim { name: n, value } if n == name => Some(value.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no claim from {name} in {effects:?}"))
}

#[test]
fn rules_run_in_order_and_see_the_pending_effects_before_them() -> Result {
    let pipeline = load(&[
        scripted("first", "continue"),
        scripted("second", "continue"),
        scripted("third", "continue"),
    ])?;
    let verdict = pipeline.evaluate(&login("tx-order"), &Services::none());
    assert_eq!(verdict.decision, Decision::Allow);
    let names: Vec<_> = verdict.trace.iter().map(|t| t.rule.as_str()).collect();
    assert_eq!(names, ["first", "second", "third"]);
    assert_eq!(report(&verdict.effects, "first")["pending"], 0);
    assert_eq!(report(&verdict.effects, "second")["pending"], 1);
    assert_eq!(report(&verdict.effects, "third")["pending"], 2);
    assert_eq!(report(&verdict.effects, "first")["user"], "usr_1");
    Ok(())
}

#[test]
fn deny_stops_the_pipeline_and_drops_all_effects() -> Result {
    let pipeline = load(&[
        scripted("first", "continue"),
        scripted("gate", "deny"),
        scripted("after", "continue"),
    ])?;
    let verdict = pipeline.evaluate(&login("tx-deny"), &Services::none());
    assert_eq!(
        verdict.decision,
        Decision::Deny {
            code: "scripted_deny".into(),
            message: "denied by script".into(),
            retryable: false
        }
    );
    assert_eq!(verdict.trace.len(), 2);
    assert_eq!(verdict.trace[1].result, RuleResult::Deny);
    assert!(verdict.effects.is_empty());
    Ok(())
}

#[test]
fn redirect_and_challenge_stop_the_pipeline_and_hold_effects() -> Result {
    for (decision, expected) in [
        ("redirect", RuleResult::Redirect),
        ("challenge", RuleResult::Challenge),
    ] {
        let pipeline = load(&[
            scripted("first", "continue"),
            scripted("gate", decision),
            scripted("after", "continue"),
        ])?;
        let verdict = pipeline.evaluate(&login("tx-stop"), &Services::none());
        assert_eq!(verdict.trace.len(), 2, "{decision}");
        assert_eq!(verdict.trace[1].result, expected);
        assert_eq!(
            verdict.effects.len(),
            2,
            "effects held for the resume: {decision}"
        );
        if decision == "redirect" {
            assert!(
                matches!(&verdict.decision, Decision::Redirect { url, rule, .. }
                if url == "https://verify.example/reset" && rule == "gate")
            );
        }
    }
    Ok(())
}

#[test]
fn the_same_login_evaluates_identically() -> Result {
    let pipeline = load(&[scripted("probe", "continue")])?;
    let a = pipeline.evaluate(&login("tx-same"), &Services::none());
    let b = pipeline.evaluate(&login("tx-same"), &Services::none());
    let c = pipeline.evaluate(&login("tx-other"), &Services::none());
    let (ra, rb, rc) = (
        report(&a.effects, "probe"),
        report(&b.effects, "probe"),
        report(&c.effects, "probe"),
    );
    assert_eq!(ra, rb, "clock, randomness and ids derive from the login");
    assert_eq!(
        ra["wall_ms"], 1764403200000u64,
        "the guest's wall clock is the login's time"
    );
    assert_ne!(
        ra["hash_probe"], rc["hash_probe"],
        "a different login gets different randomness"
    );
    assert_ne!(ra["new_user_id"], rc["new_user_id"]);
    Ok(())
}

#[test]
fn logs_are_redacted_and_the_password_never_appears() -> Result {
    let pipeline = load(&[scripted("probe", "continue")])?;
    let attempt = login("tx-secret");
    let verdict = pipeline.evaluate(&attempt, &Services::none());
    let logs = &verdict.trace[0].logs;
    assert!(
        logs.iter().any(|l| l.contains("c***@example.com")),
        "{logs:?}"
    );
    let everything = format!(
        "{} {verdict:?} {attempt:?}",
        serde_json::to_string(&verdict)?
    );
    assert!(
        !everything.contains("carol@example.com"),
        "no full email in logs"
    );
    assert!(
        !everything.contains("s3cret-Passw0rd!"),
        "no password anywhere"
    );
    Ok(())
}

#[test]
fn malformed_logins_are_refused_with_a_reason() {
    let cases = [
        ("{", "EOF"),
        (r#"{"transaction_id": "t"}"#, "missing field"),
        (&login_json(""), "transaction_id"),
        (
            &login_json("t").replace("carol@example.com", "carol"),
            "email",
        ),
        (
            &login_json("t").replace("\"connection\"", "\"conection\""),
            "unknown field `conection`",
        ),
    ];
    for (text, expected) in cases {
        let err = LoginAttempt::from_json(text)
            .err()
            .unwrap_or_else(|| panic!("accepted {text}"));
        assert!(
            err.to_string().contains(expected),
            "{err} should mention {expected}"
        );
    }
    let with_bad_metadata = json!({
        "transaction_id": "t", "time_ms": 1, "connection": "c", "client_id": "a",
        "email": "a@example.com", "user": {"id": "u", "app_metadata": [1]}
    });
    assert!(LoginAttempt::from_json(&with_bad_metadata.to_string()).is_err());
}

#[test]
fn fault_messages_are_redacted() -> Result {
    // The scripted rule quotes its (bad) config in its error: here, an email.
    let pipeline = load(&[scripted("probe", "ask carol@example.com")])?;
    let verdict = pipeline.evaluate(&login("tx-fault-text"), &Services::none());
    let fault = verdict.trace[0].fault.as_ref().expect("a rule error");
    assert!(
        fault.message.contains("c***@example.com"),
        "{}",
        fault.message
    );
    assert!(!serde_json::to_string(&verdict)?.contains("carol@example.com"));
    Ok(())
}
