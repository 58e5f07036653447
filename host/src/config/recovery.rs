//! `[recovery]`, `[support]`, `[audit]`: account recovery, the support console and the
//! audit chain's keys.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::*;

/// `[recovery]`: recovery codes and the waiting period (see `flows::recovery`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoverySettings {
    /// The key of the codes' keyed hash (HMAC-SHA256), 32+ characters, from the
    /// environment or a file.
    pub key_env: Option<String>,
    pub key_file: Option<PathBuf>,
    /// The shortest waiting period without a code; a rule may ask for longer (risk).
    pub wait_hours: u64,
    /// After the wait, how long the user has to come back and enrol a new factor.
    pub enrol_window_hours: u64,
    /// The page a notice's cancel link opens (`?recovery=ID&token=…` is appended).
    pub cancel_url: String,
    /// The page support's enrolment link opens (`?token=…` is appended): it enrols a
    /// new factor with that token (`POST /v1/mfa/enroll`).
    pub enrol_url: String,
    /// Consecutive wrong codes before the codes are disabled until the user signs in
    /// with their factor (NIST SP 800-63B-4: at most 100).
    pub max_code_failures: u32,
    /// Wrong codes allowed back to back before delays (doubling from 1 s) start.
    pub free_code_failures: u32,
    pub max_code_delay_seconds: u64,
    /// Recovery attempts (logins asking to recover) per user and per IP address per hour.
    pub max_attempts_per_user_per_hour: u32,
    pub max_attempts_per_ip_per_hour: u32,
    /// How far back a device, network or country counts as known.
    pub known_for_days: u64,
}

impl Default for RecoverySettings {
    fn default() -> Self {
        Self {
            key_env: None,
            key_file: None,
            wait_hours: 72,
            enrol_window_hours: 72,
            cancel_url: "https://accounts.example.invalid/recovery/cancel".into(),
            enrol_url: "https://accounts.example.invalid/recovery/enrol".into(),
            max_code_failures: 100,
            free_code_failures: 5,
            max_code_delay_seconds: 3600,
            max_attempts_per_user_per_hour: 10,
            max_attempts_per_ip_per_hour: 30,
            known_for_days: 90,
        }
    }
}

impl RecoverySettings {
    pub(super) fn validated(self, base: &Path) -> Result<Self, String> {
        if self.key_env.is_none() && self.key_file.is_none() {
            return Err(
                "[recovery] needs key_env or key_file (the recovery codes' hash key)".into(),
            );
        }
        if self.max_code_failures == 0 || self.max_code_failures > 100 {
            return Err("recovery.max_code_failures must be between 1 and 100".into());
        }
        if self.wait_hours == 0 || self.enrol_window_hours == 0 {
            return Err("recovery.wait_hours and enrol_window_hours must be positive".into());
        }
        if self.max_attempts_per_user_per_hour == 0 || self.max_attempts_per_ip_per_hour == 0 {
            return Err("recovery attempt limits must be positive".into());
        }
        url::Url::parse(&self.cancel_url).map_err(|e| format!("recovery.cancel_url: {e}"))?;
        url::Url::parse(&self.enrol_url).map_err(|e| format!("recovery.enrol_url: {e}"))?;
        Ok(Self {
            key_file: self.key_file.map(|f| base.join(f)),
            ..self
        })
    }

    /// The codes' hash key.
    pub fn key(&self) -> Result<secrecy::SecretString, String> {
        let key = secret_from(
            "[recovery]",
            self.key_env.as_deref(),
            self.key_file.as_deref(),
        )?;
        if secrecy::ExposeSecret::expose_secret(&key).len() < 32 {
            return Err("the [recovery] key must hold at least 32 characters".into());
        }
        Ok(key)
    }
}

/// `[support]`: the agents of the support console, each with their own token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupportSettings {
    #[serde(rename = "agent")]
    pub agents: Vec<CallerSettings>,
    /// The waiting period of an approved dangerous action (unless both agents give a
    /// reason to skip it).
    pub wait_hours: u64,
}

impl Default for SupportSettings {
    fn default() -> Self {
        Self {
            agents: Vec::new(),
            wait_hours: 72,
        }
    }
}

/// Strings are served as written; anything else as JSON text, so a rule can tell
/// `"42"` from `42` if it cares.
pub(super) fn config_value_text(value: toml::Value) -> String {
    match value {
        toml::Value::String(text) => text,
        other => serde_json::to_string(&other).unwrap_or_default(),
    }
}

/// `[audit]`: the audit chain's MAC keys (`ID:SECRET`, 32+ characters each, comma
/// separated; the first signs new rows, the others still verify older ones), from the
/// environment or a file, and where checkpoints of the chain go: a file appended to
/// (`checkpoint_file`) and the outbox topic `audit-checkpoint` (the product `audit`
/// in `[outbox.endpoints]`), every `checkpoint_every` rows.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    pub key_env: Option<String>,
    pub key_file: Option<PathBuf>,
    pub checkpoint_file: Option<PathBuf>,
    pub checkpoint_every: u64,
    /// Whether an `audit` outbox endpoint exists (set on load): with no file and no
    /// endpoint, nothing is published by itself.
    #[serde(skip)]
    pub checkpoint_endpoint: bool,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            key_env: None,
            key_file: None,
            checkpoint_file: None,
            checkpoint_every: 100,
            checkpoint_endpoint: false,
        }
    }
}

impl AuditSettings {
    pub(super) fn validated(self, base: &Path, outbox: &OutboxSettings) -> Result<Self, String> {
        if self.key_env.is_some() && self.key_file.is_some() {
            return Err("[audit]: set key_env or key_file, not both".into());
        }
        if self.checkpoint_every == 0 {
            return Err("audit.checkpoint_every must be positive".into());
        }
        Ok(Self {
            key_file: self.key_file.map(|f| base.join(f)),
            checkpoint_file: self.checkpoint_file.map(|f| base.join(f)),
            checkpoint_endpoint: outbox.endpoints.contains_key("audit"),
            ..self
        })
    }

    /// The chain's keys, `None` when `[audit]` names none (rows are then unkeyed, as
    /// an older version wrote them).
    pub fn keys(&self) -> Result<Option<crate::state::audit::ChainKeys>, String> {
        if self.key_env.is_none() && self.key_file.is_none() {
            return Ok(None);
        }
        let spec = secret_from("[audit]", self.key_env.as_deref(), self.key_file.as_deref())?;
        let publish = self.checkpoint_file.is_some() || self.checkpoint_endpoint;
        crate::state::audit::ChainKeys::parse(
            secrecy::ExposeSecret::expose_secret(&spec),
            publish.then_some(self.checkpoint_every),
        )
        .map(Some)
    }
}
