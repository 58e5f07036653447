//! The old provider (Authy-like): it keeps the phone number; we know the user by its
//! id. `X-Authy-API-Key` authenticates every call.

use crate::model::CodeCheck;
use secrecy::{ExposeSecret, SecretString};

use super::{ProviderError, error_of, http_client, transport_error};
use crate::config::LegacySmsSettings;

/// Sends and checks codes. It has no way to read a phone number.
pub struct LegacySmsClient {
    http: reqwest::blocking::Client,
    base: String,
    api_key: SecretString,
}

impl LegacySmsClient {
    pub fn new(settings: &LegacySmsSettings) -> Result<Self, String> {
        let api_key = crate::config::secret_from(
            "[mfa.legacy_sms] api_key",
            settings.api_key_env.as_deref(),
            settings.api_key_file.as_deref(),
        )?;
        Ok(Self {
            http: http_client(settings.timeout_ms)?,
            base: settings.url.trim_end_matches('/').to_owned(),
            api_key,
        })
    }

    fn get(&self, path: &str) -> Result<reqwest::blocking::Response, ProviderError> {
        self.http
            .get(format!("{}{path}", self.base))
            .header("X-Authy-API-Key", self.api_key.expose_secret())
            .send()
            .map_err(transport_error)
    }

    /// Sends a code to the user's phone; returns where it went, as the provider masks
    /// it (`+1-XXX-XXX-XX34`).
    pub fn send(&self, user_id: &str) -> Result<String, ProviderError> {
        let response = self.get(&format!(
            "/protected/json/sms/{}?force=true",
            path_segment(user_id)?
        ))?;
        if !response.status().is_success() {
            return Err(error_of(response));
        }
        let body: serde_json::Value = response
            .json()
            .map_err(|e| ProviderError::Unavailable(format!("unreadable answer: {e}")))?;
        Ok(body["cellphone"].as_str().unwrap_or_default().to_owned())
    }

    /// Whether the provider still knows the user (`users/{id}/status`): `false` for a
    /// user deleted there (60026), whose export could only fail.
    pub fn exists(&self, user_id: &str) -> Result<bool, ProviderError> {
        let response = self.get(&format!(
            "/protected/json/users/{}/status",
            path_segment(user_id)?
        ))?;
        if response.status().is_success() {
            return Ok(true);
        }
        match error_of(response) {
            ProviderError::Rejected { code: 60026, .. } => Ok(false),
            other => Err(other),
        }
    }

    /// Checks a code the user typed.
    pub fn verify(&self, user_id: &str, code: &SecretString) -> Result<CodeCheck, ProviderError> {
        let code = code.expose_secret();
        if code.is_empty() || code.len() > 10 || !code.chars().all(|c| c.is_ascii_digit()) {
            return Ok(CodeCheck::Wrong);
        }
        let response = self.get(&format!(
            "/protected/json/verify/{code}/{}",
            path_segment(user_id)?
        ))?;
        match response.status().as_u16() {
            200 => Ok(CodeCheck::Approved),
            // 60020: the token is invalid (wrong, expired or used): the old API does
            // not tell them apart.
            401 => Ok(CodeCheck::Wrong),
            _ => Err(error_of(response)),
        }
    }
}

/// An id as one URL path segment: the provider's ids are plain; anything else is
/// refused rather than escaped into another path.
pub(crate) fn path_segment(id: &str) -> Result<&str, ProviderError> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ProviderError::Rejected {
            code: 0,
            message: "not a provider user id".into(),
        });
    }
    Ok(id)
}

/// The old provider's phone export, 3 calls per user per 30 days. Only the backfill job
/// builds one (`jobs::phone_export`): the login path holds a [`LegacySmsClient`], which
/// cannot export.
pub struct PhoneExport {
    client: LegacySmsClient,
}

impl PhoneExport {
    pub fn new(settings: &LegacySmsSettings) -> Result<Self, String> {
        Ok(Self {
            client: LegacySmsClient::new(settings)?,
        })
    }

    /// Whether the provider still knows the user: asking costs no export.
    pub fn exists(&self, user_id: &str) -> Result<bool, ProviderError> {
        self.client.exists(user_id)
    }

    /// The user's phone as the provider returns it (`e164`, or the country code and
    /// the national number); validate it before use.
    pub fn export(&self, user_id: &str) -> Result<zeroize::Zeroizing<String>, ProviderError> {
        let response = self.client.get(&format!(
            "/protected/json/users/{}/phone_number",
            path_segment(user_id)?
        ))?;
        if !response.status().is_success() {
            return Err(error_of(response));
        }
        let body: zeroize::Zeroizing<Vec<u8>> = zeroize::Zeroizing::new(
            response
                .bytes()
                .map_err(|e| ProviderError::Unavailable(format!("unreadable answer: {e}")))?
                .to_vec(),
        );
        #[derive(serde::Deserialize)]
        struct Exported {
            e164: Option<String>,
            phone_number: Option<String>,
            country_code: Option<String>,
        }
        let mut exported: Exported = serde_json::from_slice(&body)
            .map_err(|_| ProviderError::Unavailable("the export answer is not the API's".into()))?;
        let phone = match (
            exported.e164.take(),
            exported.phone_number.take(),
            exported.country_code.take(),
        ) {
            (Some(e164), mut national, _) => {
                national.as_mut().map(zeroize::Zeroize::zeroize);
                e164
            }
            (None, Some(national), Some(code)) => format!("+{code} {national}"),
            _ => {
                return Err(ProviderError::Unavailable(
                    "the export answer has no phone number".into(),
                ));
            }
        };
        Ok(zeroize::Zeroizing::new(phone))
    }
}
