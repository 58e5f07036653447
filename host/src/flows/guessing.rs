//! Guessing second-factor codes over time: the host's answer to someone who holds
//! the password and tries codes challenge after challenge (`state::factor_failures`
//! counts them in the shared state).
//!
//! - below `[mfa] slow_after_failures` (10) consecutive wrong codes on a factor,
//!   nothing changes for anyone;
//! - from there, every code sent or checked for that factor waits a delay doubling
//!   from 1 s (at most `max_failure_delay_seconds`) on the host's clock; the owner is
//!   told once, on every channel, that someone has their password; and the next
//!   sign-in that passes the factor must change the password first (`challenge
//!   password_reset`, enforced by the host whatever the rules say), so even a right
//!   guess gets no further than a reset;
//! - at `max_factor_failures` (100) the factor takes no more codes and none is sent,
//!   until the password changes (the count belongs to the password it was made
//!   under) or support's `password-reset` lifts it (and requires the reset again);
//! - a right code starts the count again from zero.

use serde_json::json;

use super::Gateway;
use super::challenge::denied;
use crate::config::MfaSettings;
use crate::runtime::verdict::{ChallengeKind, Decision, Verdict};
use crate::state::StoreError;
use crate::state::audit::AuditEntry;
use crate::state::factor_failures::{self as store, Gate};
use crate::state::recovery::{Throttle, enqueue};
use crate::state::resume_tokens::ResumeRecord;

/// What every guessing notice says about disputing it.
const DISPUTE: &str = "If these codes were not yours, change your password now; \
    if you cannot, contact support.";

/// `[mfa]`'s bounds on consecutive wrong codes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GuessLimits {
    throttle: Throttle,
}

impl GuessLimits {
    pub(crate) fn new(settings: &MfaSettings) -> Self {
        let max = i64::from(settings.max_factor_failures.max(1));
        Self {
            throttle: Throttle {
                max_failures: max,
                free_failures: i64::from(settings.slow_after_failures).min(max),
                max_delay_ms: i64::try_from(
                    settings.max_failure_delay_seconds.saturating_mul(1000),
                )
                .unwrap_or(i64::MAX)
                .max(1000),
            },
        }
    }
}

/// An attempt during a delay: retryable once it is over.
pub(super) fn throttled(verdict: Verdict) -> Verdict {
    denied(
        verdict,
        "mfa_throttled",
        "Too many wrong codes were entered for this second factor; please wait before \
         trying again.",
        true,
    )
}

/// A factor stopped at `max_factor_failures`.
pub(super) fn locked(verdict: Verdict) -> Verdict {
    denied(
        verdict,
        "mfa_locked",
        "This second factor is locked after too many wrong codes; change your password \
         or contact support.",
        false,
    )
}

impl Gateway {
    /// Before a code is sent: whether the factor takes one now (nothing counted).
    pub(super) fn factor_gate(&self, user_id: &str, factor_id: &str) -> Result<Gate, StoreError> {
        store::gate(
            self.state.sql(),
            user_id,
            factor_id,
            self.clock.now_ms(),
            self.guesses.throttle,
        )
    }

    /// Before a code is checked: claims the attempt (counted as a failure until the
    /// code proves right).
    pub(super) fn claim_code_attempt(
        &self,
        user_id: &str,
        factor_id: &str,
    ) -> Result<Gate, StoreError> {
        store::claim(
            self.state.sql(),
            user_id,
            factor_id,
            self.clock.now_ms(),
            self.guesses.throttle,
        )
    }

    /// The code was right: the count starts again.
    pub(super) fn code_passed(&self, user_id: &str, factor_id: &str) -> Result<(), StoreError> {
        store::passed(self.state.sql(), user_id, factor_id)
    }

    /// The answer said nothing about the code: the claimed attempt is given back.
    pub(super) fn code_unknown(&self, user_id: &str, factor_id: &str) -> Result<(), StoreError> {
        store::give_back(self.state.sql(), user_id, factor_id)
    }

    /// A wrong code, claimed as the `failures`-th in a row: at the threshold the
    /// owner is told (once per streak) and must change the password; at the maximum
    /// the stop is audited. Returns whether the factor is now stopped.
    pub(super) fn code_failed(
        &self,
        record: &ResumeRecord,
        factor_id: &str,
        failures: i64,
    ) -> Result<bool, StoreError> {
        let user_id = &record.subject;
        let now_ms = self.clock.now_ms();
        let sql = self.state.sql();
        let throttle = self.guesses.throttle;
        let stopped = failures >= throttle.max_failures;
        let untold = || {
            store::count_of(sql, user_id, factor_id)
                .map(|row| row.is_some_and(|(_, _, told)| told.is_none()))
        };
        if failures >= throttle.free_failures && untold()? {
            let factors = self.state.factors_of(user_id)?;
            let streak = format!("guess_{}", crate::model::random_id());
            let told = record
                .login
                .user
                .as_ref()
                .map(|user| {
                    super::recovery::notices(
                        user,
                        &factors,
                        &streak,
                        "second-factor-guessing",
                        &format!(
                            "Someone who knows your password entered {failures} wrong codes \
                             in a row for your second factor. Change your password: your next \
                             sign-in will ask you to. Until then codes are slowed down, and \
                             after {} wrong ones this factor is locked.",
                            throttle.max_failures
                        ),
                        None,
                        DISPUTE,
                    )
                })
                .unwrap_or_default();
            crate::state::portable::transact(sql, |tx| {
                if !store::take_warning(tx, user_id, factor_id, throttle.free_failures, now_ms)? {
                    return Ok(());
                }
                enqueue(tx, &told, now_ms, &streak)?;
                store::require_reset(tx, user_id, "second-factor codes guessed", now_ms)?;
                crate::state::audit::append(
                    sql,
                    tx,
                    &AuditEntry::new(now_ms, "host", "second-factor-guessing", user_id).details(
                        json!({
                            "factor": factor_id,
                            "failures": failures,
                            "notices": told.len(),
                            "password_reset": "required",
                            "transaction": record.transaction_id,
                        }),
                    ),
                )?;
                Ok(())
            })?;
        }
        if failures == throttle.max_failures {
            crate::state::audit::record(
                sql,
                &AuditEntry::new(now_ms, "host", "second-factor-locked", user_id)
                    .outcome("locked")
                    .details(json!({"factor": factor_id, "failures": failures})),
            )?;
        }
        Ok(stopped)
    }

    /// After a resumed login's rules allowed it: a user who must change their
    /// password gets the reset challenge instead (nothing applied, no device token).
    pub(super) fn reset_before_allow(
        &self,
        verdict: Verdict,
        record: &ResumeRecord,
    ) -> Result<Result<Verdict, Verdict>, StoreError> {
        let must_reset = matches!(verdict.decision, Decision::Allow)
            && record.login.user.is_some()
            && store::reset_required(self.state.sql(), &record.subject)?;
        if !must_reset {
            return Ok(Ok(verdict));
        }
        let mut verdict = verdict;
        verdict.effects.clear();
        verdict.resume_token = None;
        verdict.decision = Decision::Challenge {
            kind: ChallengeKind::PasswordReset,
            factor_id: None,
            via: None,
            destination: None,
            attempts_left: None,
            state: String::new(),
            rule: String::new(),
        };
        Ok(Err(verdict))
    }
}
