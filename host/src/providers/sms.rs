//! `SecondFactors` over the real providers: the factor is read from the directory, the
//! phone (new provider) unsealed for the one call and wiped after it.

use crate::model::{
    CodeCheck, FactorProvider, FactorStatus, SecondFactors, SentCode, ServiceError,
};
use std::sync::Arc;

use secrecy::SecretString;

use super::legacy_sms::LegacySmsClient;
use super::verify::VerifyClient;
use super::{ProviderError, mask_phone};
use crate::config::MfaSettings;
use crate::mfa::sealed::KeyRing;
use crate::state::StateStore;
use crate::state::factors::Factor;

pub struct SmsProviders {
    state: Arc<dyn StateStore>,
    keys: Option<Arc<KeyRing>>,
    legacy: Option<LegacySmsClient>,
    verify: Option<VerifyClient>,
}

impl SmsProviders {
    /// The providers `[mfa]` configures; `None` when it configures neither. `keys`
    /// unseal the phone numbers the new provider needs.
    pub fn from_settings(
        settings: &MfaSettings,
        state: Arc<dyn StateStore>,
        keys: Option<Arc<KeyRing>>,
    ) -> Result<Option<Self>, String> {
        if settings.legacy_sms.is_none() && settings.verify.is_none() {
            return Ok(None);
        }
        let verify = settings
            .verify
            .as_ref()
            .map(VerifyClient::new)
            .transpose()?;
        if verify.is_some() && keys.is_none() {
            return Err("[mfa.verify] needs the keys that seal phone numbers".into());
        }
        Ok(Some(Self {
            state,
            keys,
            legacy: settings
                .legacy_sms
                .as_ref()
                .map(LegacySmsClient::new)
                .transpose()?,
            verify,
        }))
    }

    fn factor(&self, user_id: &str, factor_id: &str) -> Result<Factor, ServiceError> {
        self.factor_in(user_id, factor_id, FactorStatus::Active)
    }

    fn factor_in(
        &self,
        user_id: &str,
        factor_id: &str,
        status: FactorStatus,
    ) -> Result<Factor, ServiceError> {
        self.state
            .factors_of(user_id)
            .map_err(|e| ServiceError::unavailable(e.to_string()))?
            .into_iter()
            .find(|f| f.id == factor_id && f.status == status)
            .ok_or_else(|| {
                ServiceError::not_found(format!("the user has no such {} factor", status.name()))
            })
    }

    fn legacy_client(&self) -> Result<&LegacySmsClient, ServiceError> {
        self.legacy
            .as_ref()
            .ok_or_else(|| ServiceError::unavailable("the old SMS provider is not configured"))
    }

    fn verify_client(&self) -> Result<&VerifyClient, ServiceError> {
        self.verify
            .as_ref()
            .ok_or_else(|| ServiceError::unavailable("the new SMS provider is not configured"))
    }

    /// Runs `call` with the factor's phone number, unsealed for this call only (the
    /// buffer is zeroed when it returns).
    fn with_phone<T>(
        &self,
        factor: &Factor,
        call: impl FnOnce(&str) -> Result<T, ServiceError>,
    ) -> Result<T, ServiceError> {
        let sealed = factor.phone.as_ref().ok_or_else(|| {
            ServiceError::invalid_argument("the factor has no phone on file for the new provider")
        })?;
        let keys = self
            .keys
            .as_ref()
            .ok_or_else(|| ServiceError::unavailable("no keys to unseal phone numbers"))?;
        let phone = keys
            .open(sealed, &factor.user_id, &factor.id)
            .map_err(|e| ServiceError::unavailable(format!("cannot unseal the phone: {e}")))?;
        call(&phone)
    }

    fn legacy_id(factor: &Factor) -> Result<&str, ServiceError> {
        factor.legacy_provider_user_id.as_deref().ok_or_else(|| {
            ServiceError::invalid_argument("the factor has no id at the old provider")
        })
    }
}

/// A provider's failure as the gateway sees it: everything but a refusal of the
/// request itself is worth retrying later.
fn provider_error(error: ProviderError) -> ServiceError {
    match error {
        ProviderError::Rejected { .. } => ServiceError::invalid_argument(error.to_string()),
        _ => ServiceError::unavailable(error.to_string()),
    }
}

impl SecondFactors for SmsProviders {
    fn send_code(
        &self,
        user_id: &str,
        factor_id: &str,
        via: FactorProvider,
    ) -> Result<SentCode, ServiceError> {
        let factor = self.factor(user_id, factor_id)?;
        match via {
            FactorProvider::LegacySms => {
                let id = Self::legacy_id(&factor)?;
                let shown = self.legacy_client()?.send(id).map_err(provider_error)?;
                // The old provider shows the last two digits; say it our way.
                let last: String = shown.chars().filter(char::is_ascii_digit).collect();
                let last = &last[last.len().saturating_sub(2)..];
                Ok(SentCode {
                    destination: format!("+1 ***-***-**{last}"),
                    reference: None,
                })
            }
            FactorProvider::Verify => {
                let client = self.verify_client()?;
                self.with_phone(&factor, |phone| {
                    let sid = client.start(phone).map_err(provider_error)?;
                    Ok(SentCode {
                        destination: mask_phone(phone),
                        reference: Some(sid).filter(|sid| !sid.is_empty()),
                    })
                })
            }
        }
    }

    fn check_sent_code(
        &self,
        user_id: &str,
        factor_id: &str,
        via: FactorProvider,
        reference: Option<&str>,
        code: &SecretString,
    ) -> Result<CodeCheck, ServiceError> {
        match (via, reference) {
            (FactorProvider::Verify, Some(sid)) => {
                // Still the user's active factor; the phone is not needed.
                self.factor(user_id, factor_id)?;
                self.verify_client()?
                    .check_sid(sid, code)
                    .map_err(provider_error)
            }
            _ => self.check_code(user_id, factor_id, via, code),
        }
    }

    fn cancel_code(&self, via: FactorProvider, reference: &str) -> Result<(), ServiceError> {
        match via {
            FactorProvider::LegacySms => Ok(()),
            FactorProvider::Verify => self
                .verify_client()?
                .cancel(reference)
                .map_err(provider_error),
        }
    }

    fn check_code(
        &self,
        user_id: &str,
        factor_id: &str,
        via: FactorProvider,
        code: &SecretString,
    ) -> Result<CodeCheck, ServiceError> {
        let factor = self.factor(user_id, factor_id)?;
        let checked = match via {
            FactorProvider::LegacySms => self
                .legacy_client()?
                .verify(Self::legacy_id(&factor)?, code)
                .map_err(provider_error)?,
            FactorProvider::Verify => {
                let client = self.verify_client()?;
                self.with_phone(&factor, |phone| {
                    client.check(phone, code).map_err(provider_error)
                })?
            }
        };
        Ok(checked)
    }

    fn send_enrolment_code(
        &self,
        user_id: &str,
        factor_id: &str,
    ) -> Result<SentCode, ServiceError> {
        let factor = self.factor_in(user_id, factor_id, FactorStatus::Pending)?;
        let client = self.verify_client()?;
        self.with_phone(&factor, |phone| {
            let sid = client.start(phone).map_err(provider_error)?;
            Ok(SentCode {
                destination: mask_phone(phone),
                reference: Some(sid).filter(|sid| !sid.is_empty()),
            })
        })
    }

    fn check_enrolment_code(
        &self,
        user_id: &str,
        factor_id: &str,
        code: &SecretString,
    ) -> Result<CodeCheck, ServiceError> {
        let factor = self.factor_in(user_id, factor_id, FactorStatus::Pending)?;
        let client = self.verify_client()?;
        self.with_phone(&factor, |phone| {
            client.check(phone, code).map_err(provider_error)
        })
    }
}
