//! `recovery-guard`: how a login that asks to recover an account whose second factor
//! is lost goes on (contract 0.2.0). It runs before `mfa-route`.
//!
//! The rule decides the path; the host performs it and checks it again (a rule
//! cannot skip a code or shorten a wait below `[recovery] wait_hours`):
//! - the login carries a recovery code → `use-code`;
//! - the user's waiting period is over → `enrol`;
//! - otherwise → `wait`: `wait_hours`, or `risky_wait_hours` when the request comes
//!   from a device, network or country the user has not signed in from lately (facts
//!   the host supplies; the rule never sees an address). A wait under way is kept as
//!   it is by the host.
//!
//! A login that does not ask to recover, or a user with no factor to recover from,
//! goes on unchanged. Once the user has enrolled a new factor, `on-continue` adds the
//! claim `recovery` (which `mfa-route` takes as the second factor just proven).
//!
//! Config: `wait_hours` (default 72), `risky_wait_hours` (default 168).

use rule_model::v0_2::{
    Claim, Decision, DenyInfo, Effect, Host, LogLevel, LoginContext, Outcome, RecoveryFacts,
    RecoveryInfo, RecoveryStatus, RecoveryStep, Resume, RuleError, WaitRequest, json_flag,
};

const HOUR_MS: u64 = 3_600_000;

fn rule_error(code: &str, message: String) -> RuleError {
    RuleError {
        code: code.into(),
        message,
    }
}

fn hours(host: &mut impl Host, key: &str, default: u64) -> Result<u64, RuleError> {
    match host.config(key) {
        None => Ok(default),
        Some(text) => text.parse().map_err(|_| {
            rule_error(
                "bad_config",
                format!("{key} must be a whole number of hours"),
            )
        }),
    }
}

fn recover(step: RecoveryStep) -> Result<Outcome, RuleError> {
    Ok(Outcome {
        decision: Decision::Recover(RecoveryInfo {
            step,
            state: String::new(),
        }),
        effects: Vec::new(),
    })
}

/// The reasons a request looks risky, from the host's facts.
pub fn risk_reasons(facts: &RecoveryFacts) -> Vec<String> {
    [
        (facts.new_device, "new device"),
        (facts.new_network, "new network"),
        (facts.new_country, "new country"),
    ]
    .into_iter()
    .filter(|(signal, _)| *signal)
    .map(|(_, reason)| reason.to_owned())
    .collect()
}

pub fn on_login(ctx: &LoginContext, host: &mut impl Host) -> Result<Outcome, RuleError> {
    let go_on = || {
        Ok(Outcome {
            decision: Decision::Continue,
            effects: Vec::new(),
        })
    };
    let Some(user) = &ctx.user else {
        return go_on();
    };
    let facts = host.recovery_facts(&user.id).map_err(|e| {
        rule_error(
            "recovery_unavailable",
            format!("cannot read the recovery facts: {}", e.message),
        )
    })?;
    let Some(facts) = facts else {
        return go_on();
    };
    if !facts.has_factors {
        // Nothing to recover from: the login goes on as any other.
        return go_on();
    }
    if facts.has_code {
        host.log(LogLevel::Info, "recovery with a code");
        return recover(RecoveryStep::UseCode);
    }
    match facts.status {
        RecoveryStatus::Ready => {
            host.log(LogLevel::Info, "recovery: the wait is over, enrol");
            recover(RecoveryStep::Enrol)
        }
        RecoveryStatus::Waiting | RecoveryStatus::None => {
            let reasons = risk_reasons(&facts);
            let wait_hours = if reasons.is_empty() {
                hours(host, "wait_hours", 72)?
            } else {
                hours(host, "risky_wait_hours", 168)?
            };
            host.log(
                LogLevel::Info,
                &format!("recovery: wait {wait_hours} h ({})", reasons.join(", ")),
            );
            recover(RecoveryStep::Wait(WaitRequest {
                wait_ms: wait_hours.saturating_mul(HOUR_MS),
                reasons,
            }))
        }
    }
}

/// The host resumes the rule once a new factor is enrolled (it checked the factor).
pub fn on_continue(
    _ctx: &LoginContext,
    resume: &Resume,
    _host: &mut impl Host,
) -> Result<Outcome, RuleError> {
    if !json_flag(&resume.outcome_json, "enrolled") {
        return Ok(Outcome {
            decision: Decision::Deny(DenyInfo {
                code: "recovery_incomplete".into(),
                message: "A new second factor must be set up to finish the recovery.".into(),
                retryable: true,
            }),
            effects: Vec::new(),
        });
    }
    Ok(Outcome {
        decision: Decision::Continue,
        effects: vec![Effect::AddClaim(Claim {
            name: "recovery".into(),
            value: resume.outcome_json.clone(),
        })],
    })
}

rule_model::export_rule!(contract: "0.2.0", on_login: crate::on_login, on_continue: crate::on_continue);
