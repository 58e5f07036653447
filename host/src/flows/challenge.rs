//! The second-factor challenges the host performs for a rule: send the code through
//! the provider the rule chose, park the login behind a resume token, check the code
//! the user sends back with the same provider, and only then resume the rule.
//!
//! Limits are the host's: wrong codes per challenge (kept with the parked login, so
//! any process enforces them) and challenges per user per hour (counted in the shared
//! state on the host's clock, so every process shares them; a recognised device has
//! its own); consecutive wrong codes per factor across challenges (`guessing`). A
//! provider that is down
//! denies with `retryable`; nothing here exports a phone, deletes a factor or locks an
//! account.

use secrecy::SecretString;
use serde_json::json;

use super::{Gateway, GatewayError, guessing};
use crate::config::MfaSettings;
use crate::model::{CodeCheck, ServiceErrorKind};
use crate::runtime::verdict::{ChallengeKind, Decision, Verdict};
use crate::state::StoreError;
use crate::state::factor_failures::Gate;
use crate::state::open_codes;
use crate::state::portable::SqlStore;
use crate::state::rate_windows::{self, Limit};
use crate::state::resume_tokens::{PendingChallenge, ResumeRecord, StoredLogin};

/// The longest code a user may send back: providers send 6 or 7 digits.
const MAX_CODE_LEN: usize = 10;

pub(crate) struct ChallengeLimits {
    max_wrong_codes: u32,
    per_hour: u32,
}

impl ChallengeLimits {
    pub(crate) fn new(settings: &MfaSettings) -> Self {
        Self {
            max_wrong_codes: settings.max_attempts_per_challenge.max(1),
            per_hour: settings.max_challenges_per_hour.max(1),
        }
    }

    /// Whether another code may be sent to this user this hour; counts it if so.
    /// A recognised device (`device`: its id) has an allowance of its own, so codes
    /// others asked for with the password do not use it up.
    fn allow(
        &self,
        store: &dyn SqlStore,
        user_id: &str,
        device: Option<&str>,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let key = match device {
            Some(device) => format!("mfa-send-device:{device}"),
            None => format!("mfa-send:{user_id}"),
        };
        rate_windows::hit(
            store,
            &[Limit {
                key: &key,
                max: self.per_hour,
            }],
            now_ms,
        )
    }
}

/// What a code check means for the parked login.
pub(crate) enum Checked {
    /// The code is right: resume the rule with this result.
    Passed(String),
    /// The login's answer without resuming (a wrong code, an expired one, an outage).
    Answer(Box<Verdict>),
}

/// A denied verdict that keeps the trace of what ran.
pub(super) fn denied(mut verdict: Verdict, code: &str, message: &str, retryable: bool) -> Verdict {
    verdict.decision = Decision::Deny {
        code: code.into(),
        message: message.into(),
        retryable,
    };
    verdict.effects.clear();
    verdict.resume_token = None;
    verdict
}

pub(super) fn answer_only(record: &ResumeRecord) -> Verdict {
    Verdict {
        transaction_id: record.transaction_id.clone(),
        decision: Decision::Allow,
        effects: Vec::new(),
        trace: Vec::new(),
        applied: None,
        resume_token: None,
        proof_token: None,
        device_token: None,
        error: None,
        evidence: Default::default(),
        recovery: None,
        enrolment: None,
    }
}

/// A provider failure, as the user is told: retry later, or ask for help.
fn provider_failed(verdict: Verdict, kind: ServiceErrorKind) -> Verdict {
    if kind == ServiceErrorKind::Unavailable {
        denied(
            verdict,
            "mfa_provider_unavailable",
            "We could not reach the SMS service; please try again in a few minutes.",
            true,
        )
    } else {
        denied(
            verdict,
            "mfa_unavailable",
            "Your second factor cannot be used; please contact support.",
            false,
        )
    }
}

impl Gateway {
    /// A rule asked for an `mfa` challenge: send the code and park the login.
    pub(super) fn challenge(
        &self,
        mut verdict: Verdict,
        login: &StoredLogin,
        new_user_id: &str,
        password_hash: Option<String>,
    ) -> Result<Verdict, GatewayError> {
        let Decision::Challenge {
            factor_id: Some(factor_id),
            via: Some(via),
            rule,
            state,
            ..
        } = verdict.decision.clone()
        else {
            return Ok(verdict);
        };
        // A factor belongs to a directory user; a login creating one has none yet.
        let Some(user) = &login.user else {
            return Ok(denied(
                verdict,
                "mfa_unavailable",
                "Your second factor cannot be used; please contact support.",
                false,
            ));
        };
        // A factor past its guesses sends nothing (and spends no allowance).
        match self.factor_gate(&user.id, &factor_id)? {
            Gate::Open { .. } => {}
            Gate::Wait { .. } => return Ok(guessing::throttled(verdict)),
            Gate::Stopped => return Ok(guessing::locked(verdict)),
        }
        if !self.challenges.allow(
            self.state.sql(),
            &user.id,
            login.device.as_deref(),
            self.clock.now_ms(),
        )? {
            return Ok(denied(
                verdict,
                "mfa_rate_limited",
                "Too many codes were sent; please try again later.",
                true,
            ));
        }
        // Another login's code still open for this user is left alone: that login may
        // be the owner's, and this one may be whoever has the password (cancelling
        // would let them kill the owner's code at will). A Verify send then reuses
        // the pending verification (the same code, texted again); each login checks
        // against its own verification's SID. Only codes whose login has expired
        // are cancelled here.
        self.sweep_expired_codes();
        let sent = match self.services.sms.send_code(&user.id, &factor_id, via) {
            Ok(sent) => sent,
            Err(e) => {
                tracing::warn!(transaction = %login.transaction_id, ?via, "sending a code failed: {}", e.message);
                return Ok(provider_failed(verdict, e.kind));
            }
        };
        self.note_open_code(
            &user.id,
            &factor_id,
            open_codes::LOGIN,
            via,
            sent.reference.as_deref(),
            self.parked_until(),
        );
        let pending = PendingChallenge {
            factor_id,
            via,
            destination: sent.destination.clone(),
            wrong_codes: 0,
            reference: sent.reference.clone(),
        };
        let token = self.park(
            &verdict,
            login,
            new_user_id,
            password_hash,
            &rule,
            &state,
            Some(pending),
            None,
        )?;
        if let Decision::Challenge { destination, .. } = &mut verdict.decision {
            *destination = Some(sent.destination);
        }
        verdict.resume_token = Some(token);
        Ok(verdict)
    }

    /// Notes when the factor last passed a challenge (what `list-factors` shows as
    /// last used). Best effort: the login goes on if the write fails.
    fn mark_factor_used(&self, user_id: &str, factor_id: &str) {
        // One column, not the row: a backfill may be storing the phone meanwhile.
        if let Err(e) = self
            .state
            .mark_factor_used(user_id, factor_id, self.clock.now_ms())
        {
            tracing::warn!(factor = %factor_id, "recording the factor's use failed: {e}");
        }
    }

    /// What a code check leaves of the code at the provider: approved, expired or out
    /// of attempts there, nothing (forgotten); a wrong code that spends the host's last
    /// attempt ends the login, so its code is cancelled. Otherwise it stays open.
    fn settle_open_code(
        &self,
        record: &ResumeRecord,
        challenge: &PendingChallenge,
        checked: &Result<CodeCheck, crate::model::ServiceError>,
    ) {
        let Some(reference) = challenge.reference.as_deref() else {
            return;
        };
        let user = record.subject.as_str();
        match checked {
            Ok(CodeCheck::Approved | CodeCheck::Expired | CodeCheck::TooManyAttempts) => {
                self.close_code(user, challenge.via, reference, false);
            }
            Ok(CodeCheck::Wrong)
                if challenge.wrong_codes + 1 >= self.challenges.max_wrong_codes =>
            {
                self.close_code(user, challenge.via, reference, true);
            }
            _ => {}
        }
    }

    /// Checks the code sent back for a parked challenge (`result`: `{"code": "…"}`).
    pub(super) fn check_challenge(
        &self,
        record: &ResumeRecord,
        challenge: &PendingChallenge,
        result: &str,
    ) -> Result<Checked, GatewayError> {
        // Anything but a short string of digits is a wrong code, never sent on.
        let code = serde_json::from_str::<serde_json::Value>(result)
            .ok()
            .and_then(|v| v["code"].as_str().map(str::to_owned))
            .filter(|c| {
                !c.is_empty() && c.len() <= MAX_CODE_LEN && c.chars().all(|c| c.is_ascii_digit())
            })
            .map(SecretString::from);
        // Each attempt is claimed in the shared count first: a factor past its
        // guesses checks nothing, whichever challenge the code came with.
        let base = answer_only(record);
        let failures = match self.claim_code_attempt(&record.subject, &challenge.factor_id)? {
            Gate::Open { failures } => failures,
            Gate::Wait { .. } => return Ok(Checked::Answer(Box::new(guessing::throttled(base)))),
            Gate::Stopped => return Ok(Checked::Answer(Box::new(guessing::locked(base)))),
        };
        let checked = match &code {
            None => Ok(CodeCheck::Wrong),
            Some(code) => self.services.sms.check_sent_code(
                &record.subject,
                &challenge.factor_id,
                challenge.via,
                challenge.reference.as_deref(),
                code,
            ),
        };
        match &checked {
            Ok(CodeCheck::Approved) => self.code_passed(&record.subject, &challenge.factor_id)?,
            Ok(CodeCheck::Wrong | CodeCheck::TooManyAttempts) => {
                if self.code_failed(record, &challenge.factor_id, failures)? {
                    return Ok(Checked::Answer(Box::new(guessing::locked(base))));
                }
            }
            Ok(CodeCheck::Expired) | Err(_) => {
                self.code_unknown(&record.subject, &challenge.factor_id)?
            }
        }
        self.settle_open_code(record, challenge, &checked);
        let answer = match checked {
            Ok(CodeCheck::Approved) => {
                self.mark_factor_used(&record.subject, &challenge.factor_id);
                return Ok(Checked::Passed(
                    json!({
                        "verified": true,
                        "factor-id": challenge.factor_id,
                        "provider": challenge.via.name(),
                    })
                    .to_string(),
                ));
            }
            Ok(CodeCheck::Wrong) => {
                let wrong_codes = challenge.wrong_codes + 1;
                if wrong_codes >= self.challenges.max_wrong_codes {
                    denied(
                        base,
                        "mfa_too_many_attempts",
                        "Too many wrong codes; please sign in again.",
                        false,
                    )
                } else {
                    self.challenge_again(base, record, challenge, wrong_codes)?
                }
            }
            Ok(CodeCheck::Expired) => denied(
                base,
                "mfa_code_expired",
                "The code has expired; please sign in again for a new one.",
                true,
            ),
            Ok(CodeCheck::TooManyAttempts) => denied(
                base,
                "mfa_too_many_attempts",
                "Too many wrong codes; please sign in again.",
                false,
            ),
            Err(e) => {
                tracing::warn!(transaction = %record.transaction_id, via = ?challenge.via, "checking a code failed: {}", e.message);
                provider_failed(base, e.kind)
            }
        };
        Ok(Checked::Answer(Box::new(answer)))
    }

    /// The same challenge under a new token after a wrong code (the used one is
    /// spent), its code open as long as the new token is.
    fn challenge_again(
        &self,
        base: Verdict,
        record: &ResumeRecord,
        challenge: &PendingChallenge,
        wrong_codes: u32,
    ) -> Result<Verdict, GatewayError> {
        let pending = PendingChallenge {
            wrong_codes,
            ..challenge.clone()
        };
        let mut verdict = base;
        verdict.effects = record.pending.clone();
        verdict.evidence = record.evidence.clone();
        let token = self.park(
            &verdict,
            &record.login,
            &record.subject,
            record.password_hash.clone(),
            &record.rule,
            &record.state,
            Some(pending),
            None,
        )?;
        verdict.effects.clear();
        verdict.decision = Decision::Challenge {
            kind: ChallengeKind::Mfa,
            factor_id: Some(challenge.factor_id.clone()),
            via: Some(challenge.via),
            destination: Some(challenge.destination.clone()),
            attempts_left: Some(self.challenges.max_wrong_codes - wrong_codes),
            state: String::new(),
            rule: record.rule.clone(),
        };
        verdict.resume_token = Some(token);
        self.note_open_code(
            &record.subject,
            &challenge.factor_id,
            open_codes::LOGIN,
            challenge.via,
            challenge.reference.as_deref(),
            self.parked_until(),
        );
        Ok(verdict)
    }
}
