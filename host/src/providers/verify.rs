//! The new provider (Verify-like): the phone number goes with every request, form
//! encoded; the account's SID and auth token authenticate (HTTP basic).

use crate::model::CodeCheck;
use secrecy::{ExposeSecret, SecretString};

use super::{ProviderError, error_of, http_client, transport_error};
use crate::config::VerifySettings;

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

    /// Starts a verification: the provider sends a code to `to` (E.164).
    pub fn start(&self, to: &str) -> Result<(), ProviderError> {
        let response = self.post("Verifications", &[("To", to), ("Channel", "sms")])?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(error_of(response))
        }
    }

    /// Checks the code the user typed against the pending verification for `to`.
    pub fn check(&self, to: &str, code: &SecretString) -> Result<CodeCheck, ProviderError> {
        let response = self.post(
            "VerificationCheck",
            &[("To", to), ("Code", code.expose_secret())],
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
