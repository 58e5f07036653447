//! SMS enrolment, new provider only: the number is validated and normalized, sealed
//! into a `pending` factor, and a code sent to it; the factor becomes active when the
//! code comes back. A bad number, a wrong, expired or exhausted code leave nothing
//! active behind (an expired or exhausted enrolment is deleted).
//!
//! Who may enrol is the proof model's to say ([`Need::Enrol`]): every call carries a
//! [`Grant`], and an enrolment belongs to the proof that started it. Only that proof
//! confirms it, and only an enrolment started by a recovery's own proof completes that
//! recovery. Sends are limited per user, per number and overall in the shared state,
//! and only numbers that can be a person's phone are texted.

use crate::model::{
    CodeCheck, FactorKind, FactorProvider, FactorStatus, RecoveryStage, ServiceError,
    ServiceErrorKind,
};
use std::sync::Arc;

use secrecy::SecretString;

use serde_json::json;

use super::Gateway;
use super::clock::Clock;
use super::proof::Grant;
use crate::mfa::phone::{PhoneError, PhonePolicy};
use crate::mfa::sealed::KeyRing;
use crate::model::Services;
use crate::state::StateStore;
use crate::state::StoreError;
use crate::state::factors::Factor;

/// What enrolment needs beyond the gateway's stores: the number rules and the keys.
pub(crate) struct Enrolment {
    pub(crate) policy: PhonePolicy,
    pub(crate) keys: Option<Arc<KeyRing>>,
    pub(crate) limits: EnrolmentLimits,
}

/// Codes texted by enrolments per hour of the host's clock, counted in the shared
/// state: per user, per destination number and for the whole deployment.
#[derive(Debug, Clone)]
pub(crate) struct EnrolmentLimits {
    pub(crate) per_user: u32,
    pub(crate) per_number: u32,
    pub(crate) overall: u32,
    /// The regions whose numbers may be enrolled.
    pub(crate) regions: Vec<String>,
}

impl EnrolmentLimits {
    pub(crate) fn new(settings: &crate::config::MfaSettings) -> Self {
        Self {
            per_user: settings.max_enrolments_per_user_per_hour,
            per_number: settings.max_enrolments_per_number_per_hour,
            overall: settings.max_enrolment_sends_per_hour,
            regions: settings.enrolment_regions.clone(),
        }
    }
}

/// Pending enrolments older than this are gone: the provider's codes live 10 minutes.
const STALE_PENDING_MS: u64 = 3_600_000;

#[derive(Debug, Clone, serde::Serialize)]
pub struct EnrollStarted {
    /// Names this enrolment when the code comes back.
    pub enrollment_id: String,
    /// Where the code went, masked.
    pub destination: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Enrolled {
    pub factor_id: String,
    pub provider: FactorProvider,
}

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error(transparent)]
    InvalidPhone(#[from] PhoneError),
    #[error("the SMS provider refused the number")]
    RefusedPhone,
    #[error("no such user")]
    UnknownUser,
    #[error("the user already has an active SMS factor")]
    AlreadyEnrolled,
    #[error("no such enrolment in progress")]
    UnknownEnrollment,
    #[error("the code is wrong")]
    WrongCode,
    #[error("the code has expired; start the enrolment again")]
    Expired,
    #[error("too many wrong codes; start the enrolment again")]
    TooManyAttempts,
    #[error("too many enrolment codes were sent; please try again later")]
    RateLimited,
    #[error("SMS enrolment is unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl EnrollError {
    /// A stable machine-readable code for API answers.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidPhone(_) | Self::RefusedPhone => "invalid_phone",
            Self::UnknownUser => "unknown_user",
            Self::AlreadyEnrolled => "already_enrolled",
            Self::UnknownEnrollment => "unknown_enrollment",
            Self::WrongCode => "wrong_code",
            Self::Expired => "code_expired",
            Self::TooManyAttempts => "too_many_attempts",
            Self::RateLimited => "rate_limited",
            Self::Unavailable(_) | Self::Store(_) => "unavailable",
        }
    }
}

fn unavailable(e: ServiceError) -> EnrollError {
    EnrollError::Unavailable(e.message)
}

/// The enrolment flow over the gateway's state, clock, providers and enrolment
/// settings: start (a code texted to the number) and confirm (the code back).
/// (`Gateway::enrolment` lends one.)
pub struct PhoneEnrolment<'g> {
    state: &'g dyn StateStore,
    clock: &'g dyn Clock,
    settings: &'g Enrolment,
    services: &'g Services,
    /// The codes a provider holds open, which the login's challenges share.
    codes: &'g Gateway,
}

impl Gateway {
    /// The enrolment flow over this gateway's state, clock and settings.
    pub fn enrolment(&self) -> PhoneEnrolment<'_> {
        PhoneEnrolment {
            state: self.state.as_ref(),
            clock: self.clock.as_ref(),
            settings: &self.enrolment,
            services: &self.services,
            codes: self,
        }
    }
}

impl PhoneEnrolment<'_> {
    /// Whether an active factor stands in the way of enrolling one: one SMS factor per
    /// user, except for an enrolment that completes a recovery (the lost factor is
    /// still active then; the recovery disables it once the new one is confirmed).
    fn active_sms_factor(&self, grant: &Grant) -> Result<bool, EnrollError> {
        let recovering_since = match &grant.recovery_id {
            Some(id) => crate::state::recovery::recovery_by_id(self.state.sql(), id)?
                .filter(|r| r.status == RecoveryStage::Enrolling && r.user_id == grant.user_id)
                .map(|r| r.ready_at_ms),
            None => None,
        };
        Ok(self.state.factors_of(&grant.user_id)?.iter().any(|f| {
            f.kind == FactorKind::Sms
                && f.status == FactorStatus::Active
                && recovering_since.is_none_or(|since| f.enrolled_at_ms >= since)
        }))
    }

    /// One send against every limit, the number's and the user's first, so a stranger
    /// hammering one number spends that number's allowance before anyone else's.
    fn allow_enrolment_send(&self, user_id: &str, blinded: &str) -> Result<bool, EnrollError> {
        let limits = &self.settings.limits;
        let number = format!("enrol-number:{blinded}");
        let user = format!("enrol-user:{user_id}");
        Ok(crate::state::rate_windows::hit(
            self.state.sql(),
            &[
                crate::state::rate_windows::Limit {
                    key: &number,
                    max: limits.per_number,
                },
                crate::state::rate_windows::Limit {
                    key: &user,
                    max: limits.per_user,
                },
                crate::state::rate_windows::Limit {
                    key: "enrol-all",
                    max: limits.overall,
                },
            ],
            self.clock.now_ms(),
        )?)
    }

    /// Starts enrolling `phone` as the user's SMS factor: sends a code to it. The
    /// grant comes from [`Gateway::authorize`] with `Need::Enrol`.
    pub fn start(&self, grant: &Grant, phone: &str) -> Result<EnrollStarted, EnrollError> {
        let user_id = grant.user_id.as_str();
        let phone = self.settings.policy.normalize(phone)?;
        crate::mfa::phone::check_can_receive_codes(&phone, &self.settings.limits.regions)?;
        if self.state.get_user(user_id).map_err(unavailable)?.is_none() {
            return Err(EnrollError::UnknownUser);
        }
        if self.active_sms_factor(grant)? {
            return Err(EnrollError::AlreadyEnrolled);
        }
        let keys =
            self.settings.keys.as_ref().ok_or_else(|| {
                EnrollError::Unavailable("no new SMS provider is configured".into())
            })?;
        if !self.allow_enrolment_send(user_id, &keys.blind("enrol-number", phone.e164()))? {
            return Err(EnrollError::RateLimited);
        }
        let now_ms = self.clock.now_ms();
        // An earlier enrolment of this same proof gives way to this one; pending ones
        // of other proofs are not this caller's to remove, except long dead ones.
        for stale in self.state.factors_of(user_id)? {
            if stale.status != FactorStatus::Pending {
                continue;
            }
            let mine = crate::state::proofs::enrolled_by(self.state.sql(), &stale.id)?
                .is_some_and(|by| by == grant.proof_id);
            if mine || now_ms.saturating_sub(stale.enrolled_at_ms) > STALE_PENDING_MS {
                self.state
                    .delete_factor(user_id, &stale.id, FactorStatus::Pending)?;
                // Its code stops working: this enrolment replaces it.
                self.codes.cancel_factor_codes(user_id, &stale.id);
            }
        }
        let id = format!("fac_{}", crate::model::random_id());
        self.state.put_factor(&Factor {
            id: id.clone(),
            user_id: user_id.to_owned(),
            kind: FactorKind::Sms,
            provider: FactorProvider::Verify,
            legacy_provider_user_id: None,
            phone: Some(keys.seal(phone.e164(), user_id, &id)),
            status: FactorStatus::Pending,
            enrolled_at_ms: now_ms,
            updated_at_ms: now_ms,
            last_used_ms: None,
            cohort: None,
            reverted: false,
        })?;
        crate::state::proofs::record_enrolment(
            self.state.sql(),
            &id,
            user_id,
            &grant.proof_id,
            now_ms,
        )?;
        match self.services.sms.send_enrolment_code(user_id, &id) {
            Ok(sent) => {
                self.codes.note_open_code(
                    user_id,
                    &id,
                    crate::state::open_codes::ENROL,
                    FactorProvider::Verify,
                    sent.reference.as_deref(),
                    now_ms.saturating_add(STALE_PENDING_MS),
                );
                Ok(EnrollStarted {
                    enrollment_id: id,
                    destination: sent.destination,
                })
            }
            Err(e) => {
                // Nothing stays behind a code that was never sent.
                self.state
                    .delete_factor(user_id, &id, FactorStatus::Pending)?;
                Err(match e.kind {
                    ServiceErrorKind::InvalidArgument => EnrollError::RefusedPhone,
                    _ => unavailable(e),
                })
            }
        }
    }

    /// Confirms an enrolment with the code the user received. Only the proof that
    /// started the enrolment confirms it; an enrolment that support's link started
    /// completes that assisted recovery here. Under the code and wait paths the factor
    /// is `confirmed`, and becomes active when the login continues and completes its
    /// recovery.
    pub fn confirm(
        &self,
        grant: &Grant,
        enrollment_id: &str,
        code: &str,
    ) -> Result<Enrolled, EnrollError> {
        let user_id = grant.user_id.as_str();
        let pending = self
            .state
            .factors_of(user_id)?
            .into_iter()
            .find(|f| f.id == enrollment_id && f.status == FactorStatus::Pending)
            .ok_or(EnrollError::UnknownEnrollment)?;
        let started_by = crate::state::proofs::enrolled_by(self.state.sql(), enrollment_id)?;
        if started_by.as_deref() != Some(grant.proof_id.as_str()) {
            return Err(EnrollError::UnknownEnrollment);
        }
        // A code is a few digits; anything else is wrong without asking the provider.
        if code.is_empty() || code.len() > 10 || !code.chars().all(|c| c.is_ascii_digit()) {
            return Err(EnrollError::WrongCode);
        }
        let code = SecretString::from(code);
        let drop_pending = |error: EnrollError| -> Result<Enrolled, EnrollError> {
            self.state
                .delete_factor(user_id, enrollment_id, FactorStatus::Pending)?;
            Err(error)
        };
        let checked = self
            .services
            .sms
            .check_enrolment_code(user_id, enrollment_id, &code);
        if let Ok(CodeCheck::Approved | CodeCheck::Expired | CodeCheck::TooManyAttempts) = &checked
        {
            // Closed at the provider: nothing left to cancel.
            self.codes.forget_factor_codes(user_id, enrollment_id);
        }
        match checked {
            Ok(CodeCheck::Approved) => {
                let now_ms = self.clock.now_ms();
                if grant.has(super::proof::Shown::SupportVerified) {
                    let factor = Factor {
                        status: FactorStatus::Active,
                        ..pending
                    };
                    self.complete_assisted(grant, &factor)?;
                } else {
                    // Under a code's or a wait's recovery the factor waits for the
                    // login to finish that recovery (`check_enrolment`).
                    let status = if grant.recovery_id.is_some() {
                        FactorStatus::Confirmed
                    } else {
                        FactorStatus::Active
                    };
                    let dialect = self.state.sql().dialect();
                    // One transaction under the user's factor lock: another enrolment
                    // finishing at the same moment is seen, and the pending row must
                    // still be there (a second enrolment of this proof replaces it).
                    let settled = crate::state::portable::transact(self.state.sql(), |tx| {
                        use crate::state::factors::rows;
                        rows::lock_factor_set(tx, dialect, user_id)?;
                        if status == FactorStatus::Active
                            && rows::active_sms_count(tx, user_id, enrollment_id)? > 0
                        {
                            return Ok(Err(EnrollError::AlreadyEnrolled));
                        }
                        if rows::settle_pending(tx, user_id, enrollment_id, status, now_ms)? != 1 {
                            return Ok(Err(EnrollError::UnknownEnrollment));
                        }
                        Ok(Ok(()))
                    })?;
                    match settled {
                        Ok(()) => {}
                        Err(EnrollError::AlreadyEnrolled) => {
                            return drop_pending(EnrollError::AlreadyEnrolled);
                        }
                        Err(e) => return Err(e),
                    }
                    if grant.recovery_id.is_none() {
                        self.tell_of_enrolment(user_id, enrollment_id, now_ms)?;
                    }
                }
                Ok(Enrolled {
                    factor_id: enrollment_id.to_owned(),
                    provider: FactorProvider::Verify,
                })
            }
            Ok(CodeCheck::Wrong) => Err(EnrollError::WrongCode),
            Ok(CodeCheck::Expired) => drop_pending(EnrollError::Expired),
            Ok(CodeCheck::TooManyAttempts) => drop_pending(EnrollError::TooManyAttempts),
            Err(e) if e.kind == ServiceErrorKind::NotFound => Err(EnrollError::UnknownEnrollment),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// A factor enrolled outside a recovery (whose own notices say so) is told on every
    /// channel, the email on file included: if someone with the password enrolled it,
    /// the owner learns at once, and how to dispute it.
    fn tell_of_enrolment(
        &self,
        user_id: &str,
        factor_id: &str,
        now_ms: u64,
    ) -> Result<(), EnrollError> {
        let Some(user) = self.state.get_user(user_id).map_err(unavailable)? else {
            return Ok(());
        };
        let told = super::recovery::notices(
            &user,
            &self.state.factors_of(user_id)?,
            factor_id,
            "factor-enrolled",
            "A new second factor was set up on your account.",
            None,
            "If this was not you, someone has your password: contact support at once and \
             change your password.",
        );
        crate::state::portable::transact(self.state.sql(), |tx| {
            crate::state::recovery::enqueue(tx, &told, now_ms, factor_id)
        })?;
        Ok(())
    }

    /// Support's link was used to enrol: the factor becomes active, the assisted
    /// recovery completes (old factors disabled, sessions revoked, every channel told)
    /// and the link is spent, all in one transaction; a link spent meanwhile changes
    /// nothing.
    fn complete_assisted(&self, grant: &Grant, factor: &Factor) -> Result<(), EnrollError> {
        let Some(recovery_id) = &grant.recovery_id else {
            return Err(EnrollError::UnknownEnrollment);
        };
        let user = self
            .state
            .get_user(&grant.user_id)
            .map_err(unavailable)?
            .ok_or(EnrollError::UnknownUser)?;
        let now_ms = self.clock.now_ms();
        let factors = self.state.factors_of(&user.id)?;
        let told = super::recovery::notices(
            &user,
            &factors,
            recovery_id,
            "recovery-completed",
            "Your account was recovered with support's help: a new second factor was set \
             up, the old one no longer works, and every session was signed out.",
            None,
            "If you did not ask support for this, contact support at once.",
        );
        let sql = self.state.sql();
        let dialect = sql.dialect();
        let done = crate::state::portable::transact(sql, |tx| {
            use crate::state::recovery as store;
            crate::state::factors::rows::lock_factor_set(tx, dialect, &user.id)?;
            if !crate::state::proofs::spend(tx, &grant.proof_id, now_ms)?
                || !store::set_status(
                    tx,
                    recovery_id,
                    RecoveryStage::Enrolling,
                    RecoveryStage::Completed,
                    "new factor enrolled through support's link",
                    now_ms,
                )?
            {
                return Ok(false);
            }
            // The enrolment must still be there (a second one of this link replaces
            // it): otherwise nothing happened, the old factor included.
            if crate::state::factors::rows::settle_pending(
                tx,
                &user.id,
                &factor.id,
                FactorStatus::Active,
                now_ms,
            )? != 1
            {
                return Err(StoreError::Conflict("the enrolment was replaced".into()));
            }
            let disabled = store::disable_other_factors(tx, &user.id, &factor.id, now_ms)?;
            store::revoke_sessions(tx, &user.id, now_ms)?;
            store::enqueue(tx, &told, now_ms, recovery_id)?;
            crate::state::audit::append(
                sql,
                tx,
                &crate::state::audit::AuditEntry::new(
                    now_ms,
                    format!("user:{}", user.id),
                    "recovery-completed",
                    &user.id,
                )
                .details(json!({
                    "recovery": recovery_id,
                    "path": "assisted",
                    "new_factor": factor.id,
                    "factors_disabled": disabled,
                    "notices": told.len(),
                })),
            )?;
            Ok(true)
        });
        let done = match done {
            Err(StoreError::Conflict(_)) => false,
            other => other?,
        };
        if done {
            Ok(())
        } else {
            self.state
                .delete_factor(&user.id, &factor.id, FactorStatus::Pending)?;
            Err(EnrollError::UnknownEnrollment)
        }
    }
}
