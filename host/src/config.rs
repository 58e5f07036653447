//! The pipeline config (TOML): which rules run, in which order, with which limits,
//! grants and failure policy.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::ConfigError;
use crate::state::passwords::PasswordLimits;

/// A capability interface a rule may import, granted per rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    Log,
    Config,
    Directory,
    Legacy,
    /// Second factors' summaries (contract 0.2.0).
    Mfa,
    /// Facts about a login asking to recover its account (contract 0.2.0).
    Recovery,
}

impl Capability {
    pub const ALL: [Capability; 6] = [
        Capability::Log,
        Capability::Config,
        Capability::Directory,
        Capability::Legacy,
        Capability::Mfa,
        Capability::Recovery,
    ];

    /// The interface name in the `portcullis:rule` package.
    pub fn interface(self) -> &'static str {
        match self {
            Capability::Log => "log",
            Capability::Config => "config",
            Capability::Directory => "directory",
            Capability::Legacy => "legacy",
            Capability::Mfa => "mfa",
            Capability::Recovery => "recovery",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.interface())
    }
}

/// A kind of effect a rule may return, granted per rule (`effects = [...]`), as
/// imports are: an effect of a kind the rule is not granted is a `bad_output` fault.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum EffectKind {
    SetAppMetadata,
    SetUserMetadata,
    AddClaim,
    CreateUser,
    LinkLegacyAccount,
    EnqueueOutbox,
    RequirePasswordReset,
}

impl EffectKind {
    /// The name in the pipeline config (`effects = ["create_user"]`).
    pub fn name(self) -> &'static str {
        match self {
            EffectKind::SetAppMetadata => "set_app_metadata",
            EffectKind::SetUserMetadata => "set_user_metadata",
            EffectKind::AddClaim => "add_claim",
            EffectKind::CreateUser => "create_user",
            EffectKind::LinkLegacyAccount => "link_legacy_account",
            EffectKind::EnqueueOutbox => "enqueue_outbox",
            EffectKind::RequirePasswordReset => "require_password_reset",
        }
    }
}

impl fmt::Display for EffectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the pipeline does when a rule faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Fail closed: the login is denied (retryable).
    #[default]
    Deny,
    /// Fail open: the rule's outcome is dropped and the next rule runs.
    Skip,
}

/// Process-wide sandbox settings, shared by every rule of every pipeline the engine
/// loads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSettings {
    /// Where compiled components are kept between runs; relative to the config file.
    /// Unset: no disk cache.
    pub cache_dir: Option<PathBuf>,
    /// The largest `memory_mb` any rule may ask for (sizes the instance pool).
    pub max_memory_mb: u64,
    /// Rule instances alive at once across all in-flight evaluations.
    pub max_instances: u32,
    /// Native stack the wasm code of one rule may use.
    pub max_wasm_stack_kb: usize,
    /// Per rule, fresh instances made ahead of the logins that will use them, when a
    /// gateway has a moment between logins (`Pipeline::prepare`): each still serves
    /// one login only, and holds no login data until then. Rules that import WASI are
    /// always instantiated with their login. 0: every instance is made in its login.
    pub warm_instances: u32,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            cache_dir: None,
            max_memory_mb: 256,
            max_instances: 128,
            max_wasm_stack_kb: 512,
            warm_instances: 1,
        }
    }
}

/// One rule as configured.
#[derive(Debug, Clone)]
pub struct RuleSettings {
    pub name: String,
    pub component: PathBuf,
    pub deadline_ms: u64,
    pub memory_mb: u64,
    pub grants: Vec<Capability>,
    pub on_error: OnError,
    pub max_output_bytes: usize,
    /// The rule's settings as the `config` capability serves them.
    pub config: BTreeMap<String, String>,
    /// The effect kinds it may return; none by default.
    pub effects: Vec<EffectKind>,
    /// Protected app-metadata keys (see [`EffectSettings`]) it may write.
    pub protected_keys: Vec<String>,
    /// Run the rule only for logins that need it (`only_when = "recovery"`: the login
    /// asks to recover); otherwise it is skipped and costs no sandbox.
    pub only_when: Option<RuleCondition>,
}

/// When a rule with `only_when` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleCondition {
    /// The login asks to recover an account (`"recovery"` in the login).
    Recovery,
}

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub engine: EngineSettings,
    pub rules: Vec<RuleSettings>,
    pub state: Option<StateSettings>,
    pub resume: ResumeSettings,
    pub outbox: OutboxSettings,
    pub server: ServerSettings,
    pub login: LoginSettings,
    pub effects: EffectSettings,
    pub passwords: PasswordLimits,
    pub mfa: MfaSettings,
    /// Account recovery when a second factor is lost; `None`: no recovery codes and
    /// no recovery path (a login asking to recover is handled as any other).
    pub recovery: Option<RecoverySettings>,
    /// Support agents and the guardrails on what they may do.
    pub support: SupportSettings,
    /// The audit chain's keys and where its checkpoints are published.
    pub audit: AuditSettings,
    /// The config file's directory: relative store paths are taken from here.
    pub base_dir: PathBuf,
}

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

/// `portcullis serve` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Environment variable holding the bearer token for /admin endpoints (32+
    /// characters). Unset: the admin endpoints answer 404.
    pub admin_token_env: Option<String>,
    /// Largest request body accepted.
    pub max_body_kb: usize,
    /// Run the outbox dispatcher inside the server.
    pub dispatch_outbox: bool,
    /// Evaluations running at once; more requests wait their turn. Bounds memory
    /// (each first login hashes a password with argon2id, ~19 MiB) and the instance
    /// pool. Default: four per core.
    pub max_concurrent_evaluations: Option<usize>,
    /// The gateways allowed to call /v1/login and /v1/continue. None: the login
    /// endpoints refuse every request.
    #[serde(rename = "caller")]
    pub callers: Vec<CallerSettings>,
    /// Connections open at once. At the cap a new connection closes the oldest one
    /// that has not shown a token; with none, it is answered 503 and closed.
    pub max_connections: usize,
    /// A client must send a request's headers within this (slow-loris). A connection
    /// that has not shown a token closes this long after its last request, and twice
    /// this long after it opened.
    pub header_timeout_ms: u64,
    /// A request must be answered within this, body included.
    pub request_timeout_ms: u64,
    /// An idle keep-alive connection that has shown a token is closed after this.
    pub idle_timeout_ms: u64,
    /// Requests served on one connection before it is closed.
    pub max_requests_per_connection: u64,
    /// The Auth0-compatible bulk user-import API (`/api/v2/jobs/…`) on the directory.
    /// Unset: those endpoints answer 404.
    pub import_api: Option<ImportApiSettings>,
}

/// `[server.import_api]`: Auth0's users-imports endpoints with Auth0's limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportApiSettings {
    /// The API token (bearer), from an environment variable or a file.
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    /// The one connection users are imported into.
    #[serde(default = "default_import_connection")]
    pub connection_id: String,
    /// Largest users file (Auth0: 500 KB).
    #[serde(default = "default_import_file_kb")]
    pub max_file_kb: usize,
    /// Jobs pending or processing at once (Auth0: 2); one more is a 429.
    #[serde(default = "default_import_jobs")]
    pub max_concurrent_jobs: usize,
    /// Requests per minute to these endpoints, a burst of that many at most; over it,
    /// 429 with `x-ratelimit-*` headers.
    #[serde(default = "default_import_rate")]
    pub requests_per_minute: u32,
    /// How long a job and its errors are kept after it was created (Auth0: 24 h).
    #[serde(default = "default_import_retention")]
    pub job_retention_seconds: u64,
    /// A job still running after this stops and is `expired` (Auth0: 2 h).
    #[serde(default = "default_import_job_seconds")]
    pub max_job_seconds: u64,
    /// Users imported per second per job (0: as fast as the directory takes them).
    #[serde(default)]
    pub users_per_second: u32,
}

fn default_import_connection() -> String {
    "con_portcullis".into()
}
fn default_import_file_kb() -> usize {
    500
}
fn default_import_jobs() -> usize {
    2
}
fn default_import_rate() -> u32 {
    120
}
fn default_import_retention() -> u64 {
    24 * 3600
}
fn default_import_job_seconds() -> u64 {
    2 * 3600
}

/// One gateway allowed to send logins: its bearer token comes from an environment
/// variable or a file (never the config itself).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerSettings {
    pub name: String,
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    /// May send logins without a password: the caller vouches that it authenticated
    /// the user (a session, SSO, a passkey).
    #[serde(default)]
    pub vouches: bool,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            admin_token_env: None,
            max_body_kb: 64,
            dispatch_outbox: true,
            max_concurrent_evaluations: None,
            callers: Vec::new(),
            max_connections: 1024,
            header_timeout_ms: 5_000,
            request_timeout_ms: 30_000,
            idle_timeout_ms: 30_000,
            max_requests_per_connection: 10_000,
            import_api: None,
        }
    }
}

impl ServerSettings {
    fn with_token_files_from(mut self, base: &Path) -> Self {
        if let Some(api) = &mut self.import_api {
            api.token_file = api.token_file.take().map(|f| base.join(f));
        }
        for caller in &mut self.callers {
            caller.token_file = caller.token_file.take().map(|f| base.join(f));
        }
        self
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineFile {
    #[serde(default)]
    engine: EngineSettings,
    #[serde(default, rename = "rule")]
    rules: Vec<RuleFile>,
    state: Option<StateSettings>,
    #[serde(default)]
    resume: ResumeSettings,
    #[serde(default)]
    outbox: OutboxSettings,
    #[serde(default)]
    server: ServerSettings,
    #[serde(default)]
    login: LoginSettings,
    #[serde(default)]
    effects: EffectSettings,
    #[serde(default)]
    passwords: PasswordLimits,
    #[serde(default)]
    mfa: MfaSettings,
    recovery: Option<RecoverySettings>,
    #[serde(default)]
    support: SupportSettings,
    #[serde(default)]
    audit: AuditSettings,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    name: String,
    component: PathBuf,
    #[serde(default = "default_deadline_ms")]
    deadline_ms: u64,
    #[serde(default = "default_memory_mb")]
    memory_mb: u64,
    #[serde(default)]
    grants: Vec<Capability>,
    #[serde(default)]
    on_error: OnError,
    #[serde(default = "default_max_output_kb")]
    max_output_kb: usize,
    #[serde(default)]
    config: toml::Table,
    #[serde(default)]
    effects: Vec<EffectKind>,
    #[serde(default)]
    protected_keys: Vec<String>,
    #[serde(default)]
    only_when: Option<RuleCondition>,
}

fn default_deadline_ms() -> u64 {
    100
}
fn default_memory_mb() -> u64 {
    16
}
fn default_max_output_kb() -> usize {
    64
}

const MAX_DEADLINE_MS: u64 = 60_000;

impl PipelineConfig {
    /// Reads and validates a pipeline file. Relative paths in it are taken from the
    /// file's own directory, so a pipeline works from any working directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).map_err(|e| e.in_file(path))
    }

    /// Parses a pipeline from TOML text; relative paths are resolved against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self, ConfigError> {
        let file: PipelineFile = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: None,
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        let invalid = |message: String| ConfigError::Invalid {
            path: None,
            message,
        };

        let mut engine = file.engine;
        engine.cache_dir = engine.cache_dir.map(|dir| base.join(dir));
        if engine.max_memory_mb == 0 || engine.max_memory_mb > 4096 {
            return Err(invalid(
                "engine.max_memory_mb must be between 1 and 4096".into(),
            ));
        }
        if engine.max_instances == 0 {
            return Err(invalid("engine.max_instances must be at least 1".into()));
        }
        if !(64..=8192).contains(&engine.max_wasm_stack_kb) {
            return Err(invalid(
                "engine.max_wasm_stack_kb must be between 64 and 8192".into(),
            ));
        }
        if file.rules.is_empty() {
            return Err(invalid("the pipeline has no [[rule]] entries".into()));
        }

        let mut rules: Vec<RuleSettings> = Vec::with_capacity(file.rules.len());
        for rule in file.rules {
            let name = rule.name;
            let bad = |what: String| invalid(format!("rule {name:?}: {what}"));
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
            {
                return Err(bad("a name is letters, digits, '-' and '_'".into()));
            }
            if rules.iter().any(|r| r.name == name) {
                return Err(bad("the name is used twice".into()));
            }
            if rule.deadline_ms == 0 || rule.deadline_ms > MAX_DEADLINE_MS {
                return Err(bad(format!(
                    "deadline_ms must be between 1 and {MAX_DEADLINE_MS}"
                )));
            }
            if rule.memory_mb == 0 || rule.memory_mb > engine.max_memory_mb {
                return Err(bad(format!(
                    "memory_mb must be between 1 and engine.max_memory_mb ({})",
                    engine.max_memory_mb
                )));
            }
            if rule.max_output_kb == 0 || rule.max_output_kb > 16 * 1024 {
                return Err(bad("max_output_kb must be between 1 and 16384".into()));
            }
            let mut grants = rule.grants;
            grants.sort();
            grants.dedup();
            let mut effects = rule.effects;
            effects.sort();
            effects.dedup();
            if let Some(key) = rule
                .protected_keys
                .iter()
                .find(|k| !file.effects.protected_app_metadata.contains(k))
            {
                return Err(bad(format!(
                    "protected_keys names {key:?}, which is not in effects.protected_app_metadata"
                )));
            }
            let config = rule
                .config
                .into_iter()
                .map(|(key, value)| (key, config_value_text(value)))
                .collect();
            rules.push(RuleSettings {
                component: base.join(rule.component),
                deadline_ms: rule.deadline_ms,
                memory_mb: rule.memory_mb,
                grants,
                on_error: rule.on_error,
                max_output_bytes: rule.max_output_kb * 1024,
                config,
                effects,
                protected_keys: rule.protected_keys,
                only_when: rule.only_when,
                name,
            });
        }
        if file.resume.key.is_some() && file.resume.key_env.is_some() {
            return Err(invalid("resume: set key or key_env, not both".into()));
        }
        if file.resume.key.as_ref().is_some_and(|k| k.len() < 32) {
            return Err(invalid("resume.key must be at least 32 characters".into()));
        }
        if file.resume.ttl_seconds == 0 || file.resume.ttl_seconds > 86_400 {
            return Err(invalid(
                "resume.ttl_seconds must be between 1 and 86400".into(),
            ));
        }
        let outbox = file.outbox;
        if outbox.max_attempts == 0
            || outbox.concurrency == 0
            || outbox.timeout_ms == 0
            || outbox.lease_ms <= outbox.timeout_ms
        {
            return Err(invalid(
                "outbox: max_attempts, concurrency and timeout_ms must be positive, and lease_ms longer than timeout_ms".into(),
            ));
        }
        for (product, url) in &outbox.endpoints {
            let parsed = url::Url::parse(url)
                .map_err(|e| invalid(format!("outbox.endpoints.{product}: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(invalid(format!(
                    "outbox.endpoints.{product}: must be an http(s) URL"
                )));
            }
        }
        if file.server.max_body_kb == 0 || file.server.max_body_kb > 16 * 1024 {
            return Err(invalid(
                "server.max_body_kb must be between 1 and 16384".into(),
            ));
        }
        let server = &file.server;
        if server.max_connections == 0
            || server.header_timeout_ms == 0
            || server.request_timeout_ms == 0
            || server.idle_timeout_ms == 0
            || server.max_requests_per_connection == 0
        {
            return Err(invalid(
                "server: max_connections, header_timeout_ms, request_timeout_ms, idle_timeout_ms and max_requests_per_connection must be positive".into(),
            ));
        }
        for (i, caller) in server.callers.iter().enumerate() {
            if caller.name.is_empty() || server.callers[..i].iter().any(|c| c.name == caller.name) {
                return Err(invalid(format!(
                    "server.caller {}: each caller needs a name of its own",
                    i + 1
                )));
            }
            if caller.token_env.is_some() == caller.token_file.is_some() {
                return Err(invalid(format!(
                    "server.caller {:?}: set token_env or token_file (one of them)",
                    caller.name
                )));
            }
        }
        if file.login.max_clock_skew_seconds == 0 || file.login.max_clock_skew_seconds > 86_400 {
            return Err(invalid(
                "login.max_clock_skew_seconds must be between 1 and 86400".into(),
            ));
        }
        let limits = &file.passwords;
        if !(4..=31).contains(&limits.max_bcrypt_cost)
            || limits.max_pbkdf2_iterations == 0
            || limits.max_argon2_memory_kib == 0
            || limits.max_argon2_iterations == 0
            || limits.max_argon2_parallelism == 0
            || limits.max_concurrent == Some(0)
        {
            return Err(invalid(
                "passwords: max_bcrypt_cost is 4 to 31, and every other limit must be positive"
                    .into(),
            ));
        }
        let audit = file.audit.validated(base, &outbox).map_err(invalid)?;
        Ok(Self {
            engine,
            rules,
            state: file.state,
            resume: file.resume,
            outbox,
            server: file.server.with_token_files_from(base),
            login: file.login,
            effects: file.effects,
            passwords: file.passwords,
            mfa: MfaSettings {
                keys_file: file.mfa.keys_file.map(|f| base.join(f)),
                legacy_sms: file.mfa.legacy_sms.map(|l| LegacySmsSettings {
                    api_key_file: l.api_key_file.map(|f| base.join(f)),
                    ..l
                }),
                verify: file.mfa.verify.map(|v| VerifySettings {
                    auth_token_file: v.auth_token_file.map(|f| base.join(f)),
                    ..v
                }),
                ..file.mfa
            },
            recovery: match file.recovery {
                Some(r) => Some(r.validated(base).map_err(invalid)?),
                None => None,
            },
            support: SupportSettings {
                agents: file
                    .support
                    .agents
                    .into_iter()
                    .map(|a| CallerSettings {
                        token_file: a.token_file.map(|f| base.join(f)),
                        ..a
                    })
                    .collect(),
                ..file.support
            },
            audit,
            base_dir: base.to_owned(),
        })
    }
}

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
    fn validated(self, base: &Path) -> Result<Self, String> {
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
fn config_value_text(value: toml::Value) -> String {
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
    fn validated(self, base: &Path, outbox: &OutboxSettings) -> Result<Self, String> {
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
