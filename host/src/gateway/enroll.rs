//! SMS enrolment, new provider only: the number is validated and normalized, sealed
//! into a `pending` factor, and a code sent to it; the factor becomes active when the
//! code comes back. A bad number, a wrong, expired or exhausted code leave nothing
//! active behind (an expired or exhausted enrolment is deleted).

use std::sync::Arc;

use secrecy::SecretString;

use super::Gateway;
use crate::mfa::phone::{PhoneError, PhonePolicy};
use crate::mfa::sealed::KeyRing;
use crate::providers::CodeCheck;
use crate::services::{ServiceError, ServiceErrorKind};
use crate::state::StoreError;
use crate::state::factors::{Factor, FactorKind, FactorProvider, FactorStatus};

/// What enrolment needs beyond the gateway's stores: the number rules and the keys.
pub(crate) struct Enrolment {
    pub(crate) policy: PhonePolicy,
    pub(crate) keys: Option<Arc<KeyRing>>,
}

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
            Self::Unavailable(_) | Self::Store(_) => "unavailable",
        }
    }
}

fn unavailable(e: ServiceError) -> EnrollError {
    EnrollError::Unavailable(e.message)
}

impl Gateway {
    /// Whether an active factor stands in the way of enrolling one: one SMS factor per
    /// user, except while a recovery waits for a new one (the lost factor is still
    /// active then; the recovery disables it once the new one is confirmed).
    fn active_sms_factor(&self, user_id: &str) -> Result<bool, EnrollError> {
        let recovering_since =
            crate::state::recovery::open_recovery(self.state.sql(), user_id, self.clock.now_ms())?
                .filter(|r| r.status == "enrolling")
                .map(|r| r.ready_at_ms);
        Ok(self.state.factors_of(user_id)?.iter().any(|f| {
            f.kind == FactorKind::Sms
                && f.status == FactorStatus::Active
                && recovering_since.is_none_or(|since| f.enrolled_at_ms >= since)
        }))
    }

    /// Starts enrolling `phone` as the user's SMS factor: sends a code to it.
    pub fn enroll_sms(&self, user_id: &str, phone: &str) -> Result<EnrollStarted, EnrollError> {
        let phone = self.enrolment.policy.normalize(phone)?;
        if self.state.get_user(user_id).map_err(unavailable)?.is_none() {
            return Err(EnrollError::UnknownUser);
        }
        if self.active_sms_factor(user_id)? {
            return Err(EnrollError::AlreadyEnrolled);
        }
        let keys =
            self.enrolment.keys.as_ref().ok_or_else(|| {
                EnrollError::Unavailable("no new SMS provider is configured".into())
            })?;
        // An earlier enrolment that never finished gives way to this one.
        for stale in self.state.factors_of(user_id)? {
            if stale.status == FactorStatus::Pending {
                self.state
                    .delete_factor(user_id, &stale.id, FactorStatus::Pending)?;
            }
        }
        let id = format!("fac_{}", crate::gateway::resume::ResumeTokens::new_jti());
        let now_ms = self.clock.now_ms();
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
        match self.services.sms.send_enrolment_code(user_id, &id) {
            Ok(sent) => Ok(EnrollStarted {
                enrollment_id: id,
                destination: sent.destination,
            }),
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

    /// Confirms an enrolment with the code the user received.
    pub fn confirm_sms(
        &self,
        user_id: &str,
        enrollment_id: &str,
        code: &str,
    ) -> Result<Enrolled, EnrollError> {
        let pending = self
            .state
            .factors_of(user_id)?
            .into_iter()
            .find(|f| f.id == enrollment_id && f.status == FactorStatus::Pending)
            .ok_or(EnrollError::UnknownEnrollment)?;
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
        match self
            .services
            .sms
            .check_enrolment_code(user_id, enrollment_id, &code)
        {
            Ok(CodeCheck::Approved) => {
                // Another enrolment may have finished meanwhile: one active factor.
                if self.active_sms_factor(user_id)? {
                    return drop_pending(EnrollError::AlreadyEnrolled);
                }
                let now_ms = self.clock.now_ms();
                self.state.put_factor(&Factor {
                    status: FactorStatus::Active,
                    enrolled_at_ms: now_ms,
                    updated_at_ms: now_ms,
                    ..pending
                })?;
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
}
