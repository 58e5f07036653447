//! `[login]`, `[effects]`, `[state]`, `[resume]`, `[outbox]`: what the host accepts of
//! a login, where it keeps state, and how it delivers the outbox.

use std::collections::BTreeMap;

use serde::Deserialize;

/// What the host accepts of a login attempt.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginSettings {
    /// A login whose `time_ms` is further than this from the host's clock is refused.
    pub max_clock_skew_seconds: u64,
}

impl Default for LoginSettings {
    fn default() -> Self {
        Self {
            max_clock_skew_seconds: 300,
        }
    }
}

/// Invariants the host keeps whatever a rule returns.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EffectSettings {
    /// Top-level app-metadata keys that decide security (the bulk-import flag, the
    /// forced-reset marker, the migration flag): only rules that list a key in their
    /// `protected_keys` may write it, through `set-app-metadata` or `create-user`.
    pub protected_app_metadata: Vec<String>,
}

impl Default for EffectSettings {
    fn default() -> Self {
        Self {
            protected_app_metadata: ["bulkImported", "forcePasswordReset", "migrated"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// Where state lives: `sqlite://PATH` (relative to the config file) or, for several
/// gateway instances, `postgres://…`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSettings {
    /// The directory, outbox and resume tokens.
    pub directory: String,
    /// Each legacy product's own database, by product name.
    #[serde(default)]
    pub legacy: BTreeMap<String, String>,
    /// How often the bookkeeping of logins that changed nothing else (last login,
    /// login count, the transaction as applied) is written, in ms; 0 writes it with
    /// each login. A crash loses at most this much of it.
    #[serde(default = "default_login_stats_flush_ms")]
    pub login_stats_flush_ms: u64,
}

fn default_login_stats_flush_ms() -> u64 {
    100
}

/// Resume tokens: HMAC-SHA256 signed with `key` (or the environment variable named by
/// `key_env`), valid for `ttl_seconds`, single use.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeSettings {
    pub key: Option<String>,
    pub key_env: Option<String>,
    #[serde(default = "default_resume_ttl")]
    pub ttl_seconds: u64,
}

impl Default for ResumeSettings {
    fn default() -> Self {
        Self {
            key: None,
            key_env: None,
            ttl_seconds: default_resume_ttl(),
        }
    }
}

fn default_resume_ttl() -> u64 {
    900
}

/// Outbox delivery: each message goes to the endpoint of the product its key names
/// (`product:…`), with an `Idempotency-Key` header, retried with exponential backoff
/// and jitter, then dead-lettered.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxSettings {
    /// Product name → URL that receives its messages (HTTP POST, JSON body).
    pub endpoints: BTreeMap<String, String>,
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub timeout_ms: u64,
    /// How long a claimed message is reserved for the dispatcher that claimed it; a
    /// dispatcher that dies mid-delivery releases its messages when the lease ends.
    pub lease_ms: u64,
    /// Messages delivered at once by one dispatcher.
    pub concurrency: usize,
    /// How often an idle dispatcher looks for due messages.
    pub poll_ms: u64,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        Self {
            endpoints: BTreeMap::new(),
            max_attempts: 8,
            backoff_base_ms: 250,
            backoff_max_ms: 60_000,
            timeout_ms: 5_000,
            lease_ms: 30_000,
            concurrency: 16,
            poll_ms: 500,
        }
    }
}
