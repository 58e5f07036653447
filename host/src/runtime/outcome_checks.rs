//! Checks what a rule returned before the pipeline trusts it: bounded in size, JSON
//! where the contract says JSON, URLs that are URLs.

use crate::model::{Effect, FactorProvider};
use serde_json::Value;

use crate::runtime::bindings::wit;
use crate::runtime::verdict::{ChallengeKind, Decision, RecoveryStep};

/// A rule's outcome after validation.
pub(crate) struct RuleOutcome {
    pub decision: Decision,
    pub effects: Vec<Effect>,
}

const MAX_EFFECTS: usize = 256;
const MAX_REASONS: usize = 16;

/// What one lift out of a rule's guest may copy into the host (wasmtime's hostcall
/// fuel, counted per call): the rule's output bound in text, plus the records that
/// hold it (as many effects and wait reasons as an outcome may have), plus room for
/// the records' fixed parts. A result over it stops being read where the budget runs
/// out, and is the rule's bad output; the same budget bounds each capability call's
/// arguments. `validate` still applies the exact bounds to what was read.
pub(crate) fn lift_budget(max_bytes: usize) -> usize {
    const SLACK: usize = 64 * 1024;
    max_bytes
        .saturating_add((MAX_EFFECTS + 1) * std::mem::size_of::<wit::Effect>())
        .saturating_add(MAX_REASONS * std::mem::size_of::<String>())
        .saturating_add(SLACK)
}

/// Bytes of text in an outcome: what it costs the host to hold and pass on.
fn outcome_size(outcome: &wit::Outcome) -> usize {
    let decision = match &outcome.decision {
        wit::Decision::Continue => 0,
        wit::Decision::Challenge(c) => c.factor_id.as_ref().map_or(0, String::len) + c.state.len(),
        wit::Decision::Deny(d) => d.code.len() + d.message.len(),
        wit::Decision::Redirect(r) => r.url.len() + r.reason.len() + r.state.len(),
        wit::Decision::Recover(r) => {
            r.state.len()
                + match &r.step {
                    wit::RecoveryStep::Wait(w) => w.reasons.iter().map(String::len).sum(),
                    _ => 0,
                }
        }
    };
    decision + outcome.effects.iter().map(effect_size).sum::<usize>()
}

fn effect_size(effect: &wit::Effect) -> usize {
    match effect {
        wit::Effect::SetAppMetadata(p) | wit::Effect::SetUserMetadata(p) => p.len(),
        wit::Effect::AddClaim(c) => c.name.len() + c.value.len(),
        wit::Effect::CreateUser(u) => u.email.len() + u.app_metadata.len() + u.user_metadata.len(),
        wit::Effect::LinkLegacyAccount(l) => l.product.len() + l.legacy_id.len(),
        wit::Effect::EnqueueOutbox(m) => m.topic.len() + m.key.len() + m.payload.len(),
        wit::Effect::RequirePasswordReset => 0,
    }
}

fn within_limit(what: &str, size: usize, max_bytes: usize) -> Result<(), String> {
    if size > max_bytes {
        return Err(format!(
            "{what} is {size} bytes, over the rule's limit of {max_bytes}"
        ));
    }
    Ok(())
}

/// A rule's own error, as its fault message: bounded like an outcome (a bigger one is
/// `Err`, a `bad_output`), then cut to what a trace line needs.
pub(crate) fn error_message(error: &wit::RuleError, max_bytes: usize) -> Result<String, String> {
    within_limit(
        "rule-error",
        error.code.len() + error.message.len(),
        max_bytes,
    )?;
    let mut message = format!("{}: {}", error.code, error.message);
    crate::runtime::sandbox::cut_guest_text(&mut message, MAX_FAULT_MESSAGE);
    Ok(message)
}

/// A fault's message in traces and logs: enough to say what went wrong.
const MAX_FAULT_MESSAGE: usize = 1024;

/// A fault's message may quote what the rule returned (a claim's name, a URL's
/// scheme): it is cut like a rule's own error's.
pub(crate) fn validate(
    rule: &str,
    outcome: wit::Outcome,
    max_bytes: usize,
) -> Result<RuleOutcome, String> {
    checked(rule, outcome, max_bytes).map_err(|mut message| {
        crate::runtime::sandbox::cut_guest_text(&mut message, MAX_FAULT_MESSAGE);
        message
    })
}

fn checked(rule: &str, outcome: wit::Outcome, max_bytes: usize) -> Result<RuleOutcome, String> {
    within_limit("outcome", outcome_size(&outcome), max_bytes)?;
    if outcome.effects.len() > MAX_EFFECTS {
        return Err(format!(
            "outcome has {} effects, over the limit of {MAX_EFFECTS}",
            outcome.effects.len()
        ));
    }
    let decision = match outcome.decision {
        wit::Decision::Continue => Decision::Allow,
        wit::Decision::Deny(d) => {
            non_empty("deny code", &d.code)?;
            Decision::Deny {
                code: d.code,
                message: d.message,
                retryable: d.retryable,
            }
        }
        wit::Decision::Redirect(r) => {
            let url = url::Url::parse(&r.url).map_err(|e| format!("redirect url: {e}"))?;
            if !matches!(url.scheme(), "https" | "http") {
                return Err(format!(
                    "redirect url must be http(s), not {}",
                    url.scheme()
                ));
            }
            Decision::Redirect {
                url: r.url,
                reason: r.reason,
                state: r.state,
                rule: rule.to_owned(),
            }
        }
        wit::Decision::Challenge(info) => {
            let kind = match info.kind {
                wit::ChallengeKind::Mfa => ChallengeKind::Mfa,
                wit::ChallengeKind::PasswordReset => ChallengeKind::PasswordReset,
                wit::ChallengeKind::EmailVerification => ChallengeKind::EmailVerification,
                wit::ChallengeKind::Captcha => ChallengeKind::Captcha,
            };
            // A challenge the host performs names both the factor and who sends its
            // code; one naming neither (all 0.1.0 had) is the gateway's to perform.
            let named = (info.factor_id.is_some(), info.via.is_some());
            if named == (true, false) || named == (false, true) {
                return Err("a challenge names both factor-id and via, or neither".into());
            }
            if named == (true, true) && kind != ChallengeKind::Mfa {
                return Err("only an mfa challenge names a factor".into());
            }
            if info.factor_id.as_deref() == Some("") {
                return Err("challenge factor-id is empty".into());
            }
            Decision::Challenge {
                kind,
                factor_id: info.factor_id,
                via: info.via.map(|via| match via {
                    wit::FactorProvider::LegacySms => FactorProvider::LegacySms,
                    wit::FactorProvider::Verify => FactorProvider::Verify,
                }),
                destination: None,
                attempts_left: None,
                state: info.state,
                rule: rule.to_owned(),
            }
        }
        wit::Decision::Recover(info) => Decision::Recover {
            step: match info.step {
                wit::RecoveryStep::UseCode => RecoveryStep::UseCode,
                wit::RecoveryStep::Enrol => RecoveryStep::Enrol,
                wit::RecoveryStep::Wait(w) => {
                    if w.reasons.len() > MAX_REASONS || w.reasons.iter().any(|r| r.len() > 200) {
                        return Err(format!(
                            "a wait gives at most {MAX_REASONS} reasons of 200 bytes"
                        ));
                    }
                    RecoveryStep::Wait {
                        wait_ms: w.wait_ms,
                        reasons: w.reasons,
                    }
                }
            },
            state: info.state,
            rule: rule.to_owned(),
        },
    };
    let effects = outcome
        .effects
        .into_iter()
        .map(validate_effect)
        .collect::<Result<_, _>>()?;
    Ok(RuleOutcome { decision, effects })
}

fn validate_effect(effect: wit::Effect) -> Result<Effect, String> {
    Ok(match effect {
        wit::Effect::SetAppMetadata(p) => Effect::SetAppMetadata {
            patch: object("app-metadata patch", &p)?,
        },
        wit::Effect::SetUserMetadata(p) => Effect::SetUserMetadata {
            patch: object("user-metadata patch", &p)?,
        },
        wit::Effect::AddClaim(c) => {
            non_empty("claim name", &c.name)?;
            let value = serde_json::from_str(&c.value)
                .map_err(|e| format!("claim {:?} value is not JSON: {e}", c.name))?;
            Effect::AddClaim {
                name: c.name,
                value,
            }
        }
        wit::Effect::CreateUser(u) => {
            if !u.email.contains('@') {
                return Err("create-user email is not an address".into());
            }
            Effect::CreateUser {
                app_metadata: object("create-user app-metadata", &u.app_metadata)?,
                user_metadata: object("create-user user-metadata", &u.user_metadata)?,
                email: u.email,
                email_verified: u.email_verified,
                password_from_login: u.password_from_login,
            }
        }
        wit::Effect::LinkLegacyAccount(l) => {
            non_empty("legacy product", &l.product)?;
            non_empty("legacy id", &l.legacy_id)?;
            Effect::LinkLegacyAccount {
                product: l.product,
                legacy_id: l.legacy_id,
            }
        }
        wit::Effect::EnqueueOutbox(m) => {
            non_empty("outbox topic", &m.topic)?;
            non_empty("outbox key", &m.key)?;
            Effect::EnqueueOutbox {
                topic: m.topic,
                key: m.key,
                payload: m.payload,
            }
        }
        wit::Effect::RequirePasswordReset => Effect::RequirePasswordReset,
    })
}

fn non_empty(what: &str, text: &str) -> Result<(), String> {
    if text.is_empty() {
        Err(format!("{what} is empty"))
    } else {
        Ok(())
    }
}

fn object(what: &str, text: &str) -> Result<Value, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("{what} is not JSON: {e}"))?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(format!("{what} is not a JSON object"))
    }
}

/// Effects as the next rules see them in `pending`.
pub(crate) fn effect_to_wit(effect: &Effect) -> wit::Effect {
    match effect {
        Effect::SetAppMetadata { patch } => wit::Effect::SetAppMetadata(patch.to_string()),
        Effect::SetUserMetadata { patch } => wit::Effect::SetUserMetadata(patch.to_string()),
        Effect::AddClaim { name, value } => wit::Effect::AddClaim(wit::Claim {
            name: name.clone(),
            value: value.to_string(),
        }),
        Effect::CreateUser {
            email,
            email_verified,
            app_metadata,
            user_metadata,
            password_from_login,
        } => wit::Effect::CreateUser(wit::NewUser {
            email: email.clone(),
            email_verified: *email_verified,
            app_metadata: app_metadata.to_string(),
            user_metadata: user_metadata.to_string(),
            password_from_login: *password_from_login,
        }),
        Effect::LinkLegacyAccount { product, legacy_id } => {
            wit::Effect::LinkLegacyAccount(wit::LegacyLink {
                product: product.clone(),
                legacy_id: legacy_id.clone(),
            })
        }
        Effect::EnqueueOutbox {
            topic,
            key,
            payload,
        } => wit::Effect::EnqueueOutbox(wit::OutboxMessage {
            topic: topic.clone(),
            key: key.clone(),
            payload: payload.clone(),
        }),
        Effect::RequirePasswordReset => wit::Effect::RequirePasswordReset,
    }
}
