//! Account recovery when the second factor is lost. The `recovery-guard` rule decides
//! the path (`recover` decision); the host performs it and checks everything again,
//! so no rule can shorten a wait or skip a code:
//!
//! - **a recovery code** (with the password, which the pipeline checked first): the
//!   code is checked in constant time, throttled, and burnt; every session is
//!   revoked, every channel on file notified; the login waits for a new factor's
//!   enrolment (`mfa_enrollment` challenge), which completes the recovery (the old
//!   factors are disabled) and resumes the pipeline;
//! - **no code**: a waiting period (at least `[recovery] wait_hours`, longer on risk)
//!   starts, every channel is told at once with a cancel link; a second request
//!   changes nothing; the owner's cancel link, or a sign-in with the old factor, ends
//!   it; once it is over, the same login enrols a new factor.
//!
//! Recovery state, notices (outbox) and the audit log change together, in one
//! transaction each step. Answers say the same whatever the account: a recovery
//! request is answered `recovery_pending` for users with and without factors.

use crate::model::{
    DirectoryUser, FactorStatus, LoginAttempt, RecoveryAsk, RecoveryPath, RecoveryRequest,
    RecoveryStage,
};

use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use subtle::ConstantTimeEq;

mod enrolment;
mod policy;

pub(crate) use policy::RecoveryPolicy;
pub(in crate::flows) use policy::notices;

use super::challenge::denied;
use super::clock::Clock;
use super::{Gateway, GatewayError};
use crate::mfa::recovery_codes;
use crate::runtime::verdict::{ChallengeKind, Decision, RecoveryStep, Verdict};
use crate::state::StateStore;
use crate::state::audit::AuditEntry;
use crate::state::factors::Factor;
use crate::state::recovery::{self as store, CodeCheck, Recovery, Started};
use crate::state::resume_tokens::{PendingEnrolment, ResumeRecord, StoredLogin};

const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;

/// What every notice says about disputing it.
const DISPUTE: &str = "If this was not you, use the cancel link or contact support at once: \
    nobody gets in without your second factor before the waiting period ends.";

/// The proof an enrolment's parked login gets: a new one for the recovery's path, or
/// the one it already holds.
enum EnrolProof<'a> {
    Issue(super::proof::Shown),
    Held(Option<&'a str>),
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", crate::model::random_id())
}

fn pending_answer(verdict: Verdict) -> Verdict {
    denied(
        verdict,
        "recovery_pending",
        "If this account can be recovered, a recovery is under way: every address on file \
         has been told, and you can finish it once the waiting period is over.",
        true,
    )
}

/// What every recovery step reads: the login, its user and their factors, the policy.
#[derive(Clone, Copy)]
struct RecoveryCx<'a> {
    attempt: &'a LoginAttempt,
    user: &'a DirectoryUser,
    policy: &'a RecoveryPolicy,
    factors: &'a [Factor],
    login: &'a StoredLogin,
    actor: &'a str,
    now_ms: u64,
    rule: &'a str,
    state: &'a str,
}

/// The recovery flow over the gateway's state, clock and `[recovery]` policy: the
/// steps a login's `recover` decision asks for, the owner's cancel link, recovery
/// codes. (`Gateway::recovery` lends one.)
pub struct AccountRecovery<'g> {
    state: &'g dyn StateStore,
    clock: &'g dyn Clock,
    /// `None`: the config has no `[recovery]`, and nothing is performed.
    policy: Option<&'g RecoveryPolicy>,
    /// What a recovery shares with the login it is part of: parking that login behind
    /// a resume token, issuing the proof its enrolment needs, cancelling open codes.
    login: &'g Gateway,
}

impl Gateway {
    /// The recovery flow over this gateway's state, clock and policy.
    pub fn recovery(&self) -> AccountRecovery<'_> {
        AccountRecovery {
            state: self.state.as_ref(),
            clock: self.clock.as_ref(),
            policy: self.recovery.as_ref(),
            login: self,
        }
    }
}

impl AccountRecovery<'_> {
    /// Before the pipeline: what the `recovery` capability will answer from.
    /// (Without `[recovery]` the facts still come from the directory, or from a
    /// recording in a replay; the host then performs nothing.)
    pub(super) fn prepare(&self, attempt: &mut LoginAttempt, now_ms: u64) {
        if attempt.user.is_none() || !RecoveryRequest::asked(&attempt.recovery) {
            return;
        }
        let known_for = self.policy.map_or(90, |p| p.settings.known_for_days);
        attempt.recovery_ask = Some(RecoveryAsk {
            has_code: RecoveryRequest::code(&attempt.recovery).is_some(),
            sightings: self
                .policy
                .map(|p| p.sightings(&attempt.request))
                .unwrap_or_default(),
            known_since_ms: now_ms.saturating_sub(known_for * DAY_MS),
            now_ms,
        });
    }

    /// Where an allowed login came from, for the statistics written behind.
    pub(super) fn sightings_of(&self, login: &StoredLogin) -> Vec<(&'static str, String)> {
        match (&self.policy, &login.user) {
            (Some(policy), Some(_)) => policy.sightings(&login.request),
            _ => Vec::new(),
        }
    }

    /// After an allowed login whose effects were applied now: its device, network and
    /// country become known.
    pub(super) fn remember_sightings(&self, login: &StoredLogin) {
        let (Some(policy), Some(user)) = (&self.policy, &login.user) else {
            return;
        };
        let sightings = policy.sightings(&login.request);
        if let Err(e) =
            store::record_sightings(self.state.sql(), &user.id, &sightings, self.clock.now_ms())
        {
            tracing::warn!(user = %user.id, "recording where the login came from failed: {e}");
        }
    }

    /// A rule decided `recover`: perform it.
    pub(super) fn perform(
        &self,
        mut verdict: Verdict,
        attempt: &LoginAttempt,
    ) -> Result<Verdict, GatewayError> {
        let Decision::Recover { step, rule, state } = verdict.decision.clone() else {
            return Ok(verdict);
        };
        verdict.recovery = Some(step.clone());
        let (Some(policy), Some(user)) = (&self.policy, &attempt.user) else {
            // Without [recovery] the host has nothing to perform: the same answer as a
            // recovery under way, so it says nothing about the account.
            return Ok(pending_answer(verdict));
        };
        if !policy.allow(
            self.state.sql(),
            &user.id,
            attempt.device.as_deref(),
            &attempt.request.ip,
            self.clock.now_ms(),
        )? {
            return Ok(denied(
                verdict,
                "recovery_rate_limited",
                "Too many recovery attempts; please try again later.",
                true,
            ));
        }
        let now_ms = self.clock.now_ms();
        let factors = self.state.factors_of(&user.id)?;
        if !factors.iter().any(|f| f.status == FactorStatus::Active) {
            return Ok(pending_answer(verdict));
        }
        let login = StoredLogin::from_attempt(attempt);
        let actor = format!("user:{}", user.id);
        let cx = RecoveryCx {
            attempt,
            user,
            policy,
            factors: &factors,
            login: &login,
            actor: &actor,
            now_ms,
            rule: &rule,
            state: &state,
        };
        match step {
            RecoveryStep::UseCode => self.recover_with_code(verdict, &cx),
            RecoveryStep::Wait { wait_ms, reasons } => {
                self.start_wait(verdict, &cx, wait_ms, &reasons)
            }
            RecoveryStep::Enrol => self.enrol_after_wait(verdict, &cx),
        }
    }

    /// A recovery code: checked, throttled and burnt; a wait under way is superseded,
    /// sessions are revoked, every channel is told, and the login enrols.
    fn recover_with_code(
        &self,
        verdict: Verdict,
        cx: &RecoveryCx<'_>,
    ) -> Result<Verdict, GatewayError> {
        let RecoveryCx {
            attempt,
            user,
            policy,
            factors,
            login,
            actor,
            now_ms,
            rule,
            state,
        } = *cx;
        let sql = self.state.sql();
        let Some(code) = RecoveryRequest::code(&attempt.recovery) else {
            return Ok(pending_answer(verdict));
        };
        let digest = policy.code_digest(&user.id, code);
        let checked = store::check_code(sql, &user.id, &digest, now_ms, policy.throttle())?;
        let outcome = audited_outcome(&checked);
        if !matches!(checked, CodeCheck::Burnt { .. }) {
            crate::state::audit::record(
                sql,
                &AuditEntry::new(now_ms, actor, "recovery-code-attempt", &user.id)
                    .outcome(outcome)
                    .details(json!({"transaction": attempt.transaction_id})),
            )?;
        }
        match checked {
            CodeCheck::Wrong { .. } => Ok(denied(
                verdict,
                "recovery_code_invalid",
                "That recovery code is not valid.",
                false,
            )),
            CodeCheck::Throttled { .. } => Ok(denied(
                verdict,
                "recovery_throttled",
                "Too many wrong recovery codes; please wait before trying again.",
                true,
            )),
            CodeCheck::Disabled => Ok(denied(
                verdict,
                "recovery_codes_disabled",
                "Recovery codes are disabled for this account after too many wrong \
                 ones; please contact support.",
                false,
            )),
            CodeCheck::Burnt { left } => {
                let recovery = code_recovery(&user.id, now_ms, policy);
                let told = notices(
                    user,
                    factors,
                    &recovery.id,
                    "recovery-code-used",
                    "A recovery code was used to sign in to your account; every \
                     session was signed out and a new second factor is being set up.",
                    None,
                    DISPUTE,
                );
                crate::state::portable::transact(sql, |tx| {
                    // A code supersedes a wait under way.
                    if let Some(open) = store::open_in(tx, &user.id, now_ms)? {
                        store::set_status(
                            tx,
                            &open.id,
                            open.status,
                            RecoveryStage::Cancelled,
                            "superseded by a recovery code",
                            now_ms,
                        )?;
                        store::disable_enrolled_by(tx, &open.id, now_ms)?;
                    }
                    store::insert(tx, &recovery)?;
                    store::revoke_sessions(tx, &user.id, now_ms)?;
                    store::enqueue(tx, &told, now_ms, &recovery.id)?;
                    crate::state::audit::append(
                        sql,
                        tx,
                        &AuditEntry::new(now_ms, actor, "recovery-code-used", &user.id).details(
                            json!({
                                "recovery": recovery.id,
                                "codes_left": left,
                                "sessions": "revoked",
                                "notices": told.len(),
                            }),
                        ),
                    )?;
                    Ok(())
                })?;
                // Proofs went with the sessions: enrolments under way are dead, codes too.
                self.login
                    .cancel_open_codes(&user.id, crate::state::open_codes::ENROL);
                self.enrol(
                    verdict,
                    login,
                    &recovery.id,
                    now_ms,
                    rule,
                    state,
                    EnrolProof::Issue(super::proof::Shown::RecoveryCode),
                )
            }
        }
    }

    /// No code: a waiting period starts (or the one under way is kept), and every
    /// channel is told at once with a cancel link.
    fn start_wait(
        &self,
        verdict: Verdict,
        cx: &RecoveryCx<'_>,
        wait_ms: u64,
        reasons: &[String],
    ) -> Result<Verdict, GatewayError> {
        let RecoveryCx {
            user,
            policy,
            factors,
            actor,
            now_ms,
            ..
        } = *cx;
        let sql = self.state.sql();
        let floor = policy.settings.wait_hours * HOUR_MS;
        let wait = wait_ms.max(floor);
        let ready_at_ms = now_ms.saturating_add(wait);
        let mut token = [0u8; 16];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut token);
        let token = hex::encode(token);
        let recovery = Recovery {
            id: new_id("rcv"),
            user_id: user.id.clone(),
            path: RecoveryPath::Wait,
            status: RecoveryStage::Waiting,
            requested_at_ms: now_ms,
            ready_at_ms,
            expires_at_ms: ready_at_ms.saturating_add(policy.settings.enrol_window_hours * HOUR_MS),
            reasons: reasons.to_vec(),
            cancel_digest: crate::state::token_digest(&token),
            finished_at_ms: None,
            outcome: None,
        };
        let cancel_url = format!(
            "{}?recovery={}&token={token}",
            policy.settings.cancel_url, recovery.id
        );
        let told = notices(
            user,
            factors,
            &recovery.id,
            "recovery-requested",
            &format!(
                "Someone who knows your password asked to recover your account without \
                 your second factor. Unless you cancel, they can set up a new second \
                 factor after {} hours.",
                wait / HOUR_MS
            ),
            Some(&cancel_url),
            DISPUTE,
        );
        let entry = AuditEntry::new(now_ms, actor, "recovery-requested", &user.id)
            .reason(&reasons.join("; "))
            .details(json!({
                "recovery": recovery.id,
                "wait_ms": wait,
                "ready_at_ms": ready_at_ms,
                "notices": told.len(),
            }));
        match store::start_recovery(sql, &recovery, now_ms, &told, &entry)? {
            Started::New(_) => {}
            Started::Existing(open) => {
                crate::state::audit::record(
                    sql,
                    &AuditEntry::new(now_ms, actor, "recovery-requested-again", &user.id)
                        .outcome("kept")
                        .details(json!({"recovery": open.id})),
                )?;
            }
        }
        Ok(pending_answer(verdict))
    }

    /// After a served wait: the host's clock decides whether it is over; then the
    /// login enrols a new factor.
    fn enrol_after_wait(
        &self,
        verdict: Verdict,
        cx: &RecoveryCx<'_>,
    ) -> Result<Verdict, GatewayError> {
        let RecoveryCx {
            user,
            login,
            actor,
            now_ms,
            rule,
            state,
            ..
        } = *cx;
        let sql = self.state.sql();
        let Some(open) = store::open_recovery(sql, &user.id, now_ms)? else {
            return Ok(pending_answer(verdict));
        };
        // The host's clock decides whether the wait is over, not the rule.
        let ready = match open.status {
            RecoveryStage::Waiting if now_ms >= open.ready_at_ms => store::finish_recovery(
                sql,
                &open.id,
                &[RecoveryStage::Waiting],
                RecoveryStage::Enrolling,
                "waiting period over",
                now_ms,
                &[],
                &AuditEntry::new(now_ms, actor, "recovery-wait-over", &user.id)
                    .details(json!({"recovery": open.id})),
            )?,
            // A served wait is any password login's to finish; a code's
            // enrolment is the code-holder's login's alone, and an assisted
            // one is reached only through support's link.
            RecoveryStage::Enrolling => open.path == RecoveryPath::Wait,
            _ => false,
        };
        if !ready {
            return Ok(pending_answer(verdict));
        }
        self.enrol(
            verdict,
            login,
            &open.id,
            now_ms,
            rule,
            state,
            EnrolProof::Issue(super::proof::Shown::WaitServed),
        )
    }

    /// The owner's cancel link: the recovery id and the token from the notice.
    pub fn cancel(&self, recovery_id: &str, token: &str) -> Result<bool, GatewayError> {
        let sql = self.state.sql();
        let Some(recovery) = store::recovery_by_id(sql, recovery_id)? else {
            return Ok(false);
        };
        let presented = crate::state::token_digest(token);
        let matches: bool = presented
            .as_bytes()
            .ct_eq(recovery.cancel_digest.as_bytes())
            .into();
        if !matches || recovery.cancel_digest.is_empty() {
            return Ok(false);
        }
        self.end(&recovery, "cancelled by the owner (cancel link)", "user")
    }

    /// The owner signed in with their factor: a recovery under way is not theirs to
    /// need, so it ends, and the code failures start again from zero.
    pub(super) fn factor_passed(&self, user_id: &str) {
        let Some(_) = &self.policy else {
            return;
        };
        let sql = self.state.sql();
        let ended = store::open_recovery(sql, user_id, self.clock.now_ms())
            .and_then(|open| match open {
                Some(open) => self
                    .end(
                        &open,
                        "cancelled: the owner signed in with their second factor",
                        "user",
                    )
                    .map_err(|e| crate::state::StoreError::Backend(e.to_string())),
                None => Ok(false),
            })
            .and_then(|_| store::reset_failures(sql, user_id));
        if let Err(e) = ended {
            tracing::warn!(user = %user_id, "ending a recovery after a factor sign-in failed: {e}");
        }
    }

    pub(crate) fn end(
        &self,
        recovery: &Recovery,
        outcome: &str,
        actor_kind: &str,
    ) -> Result<bool, GatewayError> {
        let now_ms = self.clock.now_ms();
        let sql = self.state.sql();
        let user = self.state.get_user(&recovery.user_id).ok().flatten();
        let factors = self.state.factors_of(&recovery.user_id)?;
        let told = user
            .as_ref()
            .map(|u| {
                notices(
                    u,
                    &factors,
                    &recovery.id,
                    "recovery-cancelled",
                    "The recovery of your account was cancelled; nothing changed.",
                    None,
                    DISPUTE,
                )
            })
            .unwrap_or_default();
        Ok(store::finish_recovery(
            sql,
            &recovery.id,
            &[RecoveryStage::Waiting, RecoveryStage::Enrolling],
            RecoveryStage::Cancelled,
            outcome,
            now_ms,
            &told,
            &AuditEntry::new(
                now_ms,
                format!("{actor_kind}:{}", recovery.user_id),
                "recovery-cancelled",
                &recovery.user_id,
            )
            .reason(outcome)
            .details(json!({"recovery": recovery.id})),
        )?)
    }

    /// `POST /v1/mfa/recovery-codes`: ten new codes for a signed-in user, shown once;
    /// every earlier code stops working; every channel is told.
    pub fn issue_codes(&self, user_id: &str) -> Result<Option<Vec<SecretString>>, GatewayError> {
        let Some(policy) = &self.policy else {
            return Err(GatewayError::Config(
                "recovery codes need [recovery] in the config".into(),
            ));
        };
        let Some(user) = self
            .state
            .get_user(user_id)
            .map_err(|e| GatewayError::Store(crate::state::StoreError::Backend(e.message)))?
        else {
            return Ok(None);
        };
        let now_ms = self.clock.now_ms();
        let codes = recovery_codes::generate().map_err(GatewayError::Config)?;
        let digests: Vec<String> = codes
            .iter()
            .map(|code| {
                let normalized = recovery_codes::normalize(code.expose_secret())
                    .expect("a generated code is well formed");
                hex::encode(recovery_codes::digest(&policy.key, &user.id, &normalized))
            })
            .collect();
        let factors = self.state.factors_of(&user.id)?;
        let batch = new_id("codes");
        let told = notices(
            &user,
            &factors,
            &batch,
            "recovery-codes-issued",
            "New recovery codes were created for your account; the earlier ones no longer work.",
            None,
            DISPUTE,
        );
        store::replace_codes(
            self.state.sql(),
            &user.id,
            &digests,
            now_ms,
            &told,
            &AuditEntry::new(
                now_ms,
                format!("user:{}", user.id),
                "recovery-codes-issued",
                &user.id,
            )
            .details(json!({"codes": digests.len(), "batch": batch})),
        )?;
        Ok(Some(codes))
    }
}

/// A recovery code check as the audit log names it.
fn audited_outcome(checked: &CodeCheck) -> &'static str {
    match checked {
        CodeCheck::Burnt { .. } => "accepted",
        CodeCheck::Wrong { .. } => "wrong",
        CodeCheck::Throttled { .. } => "throttled",
        CodeCheck::Disabled => "disabled",
    }
}

/// The recovery a burnt recovery code starts: enrolling at once, for the enrolment
/// window.
fn code_recovery(user_id: &str, now_ms: u64, policy: &RecoveryPolicy) -> Recovery {
    Recovery {
        id: new_id("rcv"),
        user_id: user_id.to_owned(),
        path: RecoveryPath::Code,
        status: RecoveryStage::Enrolling,
        requested_at_ms: now_ms,
        ready_at_ms: now_ms,
        expires_at_ms: now_ms.saturating_add(policy.settings.enrol_window_hours * HOUR_MS),
        reasons: Vec::new(),
        cancel_digest: String::new(),
        finished_at_ms: None,
        outcome: None,
    }
}
