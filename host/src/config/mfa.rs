//! `[mfa]`: the second factor's phone numbers, sealing keys and SMS providers.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The second factor: which phone numbers are accepted, and the keys that seal them
/// (`ID:BASE64,…`, the first seals; see `mfa::sealed`), from the environment or a file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MfaSettings {
    pub allowed_calling_codes: Vec<u16>,
    pub keys_env: Option<String>,
    pub keys_file: Option<PathBuf>,
    /// Wrong codes one challenge takes before the login is denied.
    pub max_attempts_per_challenge: u32,
    /// Challenges (codes sent) per user per hour, by this process.
    pub max_challenges_per_hour: u32,
    /// Enrolment codes texted per user, per destination number, and in all, per hour
    /// of the host's clock (shared by every instance on the directory).
    pub max_enrolments_per_user_per_hour: u32,
    pub max_enrolments_per_number_per_hour: u32,
    pub max_enrolment_sends_per_hour: u32,
    /// The regions (CLDR ids) whose numbers may be enrolled as a new factor; empty:
    /// any region of `allowed_calling_codes`.
    pub enrolment_regions: Vec<String>,
    /// Consecutive wrong codes on one factor (across challenges) after which every
    /// attempt waits a delay doubling from 1 s, the owner is told on every channel
    /// and must change the password at the next sign-in.
    pub slow_after_failures: u32,
    /// Consecutive wrong codes after which the factor takes no more codes until the
    /// password changes or support resets it (NIST SP 800-63B: at most 100).
    pub max_factor_failures: u32,
    /// The longest of those delays.
    pub max_failure_delay_seconds: u64,
    /// How long a device that completed a sign-in stays recognised (its own
    /// allowance of codes and recovery attempts).
    pub device_token_days: u64,
    /// The old SMS provider (Authy-like); without it, its users cannot be challenged.
    pub legacy_sms: Option<LegacySmsSettings>,
    /// The new SMS provider (Verify-like).
    pub verify: Option<VerifySettings>,
}

impl Default for MfaSettings {
    fn default() -> Self {
        Self {
            allowed_calling_codes: vec![1],
            keys_env: None,
            keys_file: None,
            max_attempts_per_challenge: 5,
            max_challenges_per_hour: 10,
            max_enrolments_per_user_per_hour: 5,
            max_enrolments_per_number_per_hour: 3,
            max_enrolment_sends_per_hour: 1000,
            enrolment_regions: vec!["US".into(), "CA".into()],
            slow_after_failures: 10,
            max_factor_failures: 100,
            max_failure_delay_seconds: 3600,
            device_token_days: 90,
            legacy_sms: None,
            verify: None,
        }
    }
}

/// The old provider's API: its base URL and the API key, from the environment
/// (`api_key_env`) or a file (`api_key_file`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacySmsSettings {
    pub url: String,
    pub api_key_env: Option<String>,
    pub api_key_file: Option<PathBuf>,
    #[serde(default = "default_provider_timeout_ms")]
    pub timeout_ms: u64,
}

/// The new provider's API: base URL, verification service, the account SID, and its
/// auth token from the environment or a file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySettings {
    pub url: String,
    pub service_sid: String,
    pub account_sid: String,
    pub auth_token_env: Option<String>,
    pub auth_token_file: Option<PathBuf>,
    #[serde(default = "default_provider_timeout_ms")]
    pub timeout_ms: u64,
}

/// A credential from exactly one of an environment variable and a file (without the
/// file's trailing line break): callers' tokens, the SMS providers' secrets.
pub fn secret_from(
    what: &str,
    env: Option<&str>,
    file: Option<&Path>,
) -> Result<secrecy::SecretString, String> {
    match (env, file) {
        (Some(name), None) => std::env::var(name)
            .map(Into::into)
            .map_err(|_| format!("{what}: the environment variable {name} is not set")),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map(|text| text.trim_end_matches(['\n', '\r']).to_owned().into())
            .map_err(|e| format!("{what}: cannot read {}: {}", path.display(), e.kind())),
        _ => Err(format!(
            "{what}: name exactly one of the _env and _file settings"
        )),
    }
}

fn default_provider_timeout_ms() -> u64 {
    3_000
}

impl MfaSettings {
    pub fn key_ring(&self) -> Result<crate::mfa::sealed::KeyRing, crate::mfa::sealed::SealError> {
        use crate::mfa::sealed::{KeyRing, SealError};
        match (&self.keys_env, &self.keys_file) {
            (Some(name), None) => KeyRing::from_env(name),
            (None, Some(path)) => KeyRing::from_file(path),
            _ => Err(SealError::Keys(
                "[mfa] needs exactly one of keys_env and keys_file".into(),
            )),
        }
    }
}
