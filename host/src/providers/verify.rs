//! The new provider (Verify-like): the phone number goes with every request, form
//! encoded; the account's SID and auth token authenticate (HTTP basic).

use crate::model::CodeCheck;
use secrecy::{ExposeSecret, SecretString};

use super::{ProviderError, error_of, http_client, transport_error};
use crate::config::VerifySettings;

/// How the new provider delivers a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Sms,
    /// A voice call that reads the code out.
    Call,
}

impl Channel {
    fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Call => "call",
        }
    }
}

pub struct VerifyClient {
    http: reqwest::blocking::Client,
    /// `{url}/v2/Services/{service_sid}`
    service: String,
    account_sid: String,
    auth_token: SecretString,
}

impl VerifyClient {
    pub fn new(settings: &VerifySettings) -> Result<Self, String> {
        Ok(Self {
            http: http_client(settings.timeout_ms)?,
            service: format!(
                "{}/v2/Services/{}",
                settings.url.trim_end_matches('/'),
                settings.service_sid
            ),
            account_sid: settings.account_sid.clone(),
            auth_token: crate::config::secret_from(
                "[mfa.verify] auth_token",
                settings.auth_token_env.as_deref(),
                settings.auth_token_file.as_deref(),
            )?,
        })
    }

    fn post(
        &self,
        path: &str,
        form: &[(&str, &str)],
    ) -> Result<reqwest::blocking::Response, ProviderError> {
        self.http
            .post(format!("{}/{path}", self.service))
            .basic_auth(&self.account_sid, Some(self.auth_token.expose_secret()))
            .form(form)
            .send()
            .map_err(transport_error)
    }

    /// Starts a verification: the provider texts a code to `to` (E.164). Returns the
    /// verification's SID (to cancel it with).
    pub fn start(&self, to: &str) -> Result<String, ProviderError> {
        self.start_via(to, Channel::Sms)
    }

    /// Starts a verification over `channel`; returns its SID.
    pub fn start_via(&self, to: &str, channel: Channel) -> Result<String, ProviderError> {
        let response = self.post(
            "Verifications",
            &[("To", to), ("Channel", channel.as_str())],
        )?;
        if !response.status().is_success() {
            return Err(error_of(response));
        }
        let body: serde_json::Value = response
            .json()
            .map_err(|e| ProviderError::Unavailable(format!("unreadable answer: {e}")))?;
        Ok(body["sid"].as_str().unwrap_or_default().to_owned())
    }

    /// Cancels a pending verification (a login abandoned, a recovery that replaces
    /// it), so its code stops working. One already approved, canceled or expired is
    /// gone at the provider (20404): nothing is left to cancel.
    pub fn cancel(&self, verification_sid: &str) -> Result<(), ProviderError> {
        let sid = super::legacy_sms::path_segment(verification_sid)?;
        let response = self.post(&format!("Verifications/{sid}"), &[("Status", "canceled")])?;
        if response.status().is_success() {
            return Ok(());
        }
        match error_of(response) {
            ProviderError::Rejected { code: 20404, .. } => Ok(()),
            other => Err(other),
        }
    }

    /// Checks the code the user typed against the pending verification for `to`.
    pub fn check(&self, to: &str, code: &SecretString) -> Result<CodeCheck, ProviderError> {
        self.check_by("To", to, code)
    }

    /// Checks the code against one verification, by its SID: a verification
    /// cancelled or replaced since is expired for this check, whatever is pending for
    /// the same number now.
    pub fn check_sid(&self, sid: &str, code: &SecretString) -> Result<CodeCheck, ProviderError> {
        self.check_by("VerificationSid", sid, code)
    }

    fn check_by(
        &self,
        key: &str,
        value: &str,
        code: &SecretString,
    ) -> Result<CodeCheck, ProviderError> {
        let response = self.post(
            "VerificationCheck",
            &[(key, value), ("Code", code.expose_secret())],
        )?;
        if !response.status().is_success() {
            return match error_of(response) {
                // 20404: no pending verification: approved already, or expired.
                ProviderError::Rejected { code: 20404, .. } => Ok(CodeCheck::Expired),
                // 60202: more than 5 wrong codes for this verification.
                ProviderError::RateLimited { code: 60202, .. } => Ok(CodeCheck::TooManyAttempts),
                // 60200: a code that is not a code is simply wrong.
                ProviderError::Rejected { code: 60200, .. } => Ok(CodeCheck::Wrong),
                other => Err(other),
            };
        }
        let body: serde_json::Value = response
            .json()
            .map_err(|e| ProviderError::Unavailable(format!("unreadable answer: {e}")))?;
        Ok(match body["status"].as_str() {
            Some("approved") => CodeCheck::Approved,
            Some("pending") => CodeCheck::Wrong,
            Some("max_attempts_reached") => CodeCheck::TooManyAttempts,
            Some("canceled" | "expired") => CodeCheck::Expired,
            _ => {
                return Err(ProviderError::Unavailable(
                    "unexpected verification status".into(),
                ));
            }
        })
    }
}
