//! The pipeline config (TOML): which rules run, in which order, with which limits,
//! grants and failure policy.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::ConfigError;
use crate::state::passwords::PasswordLimits;

mod mfa;
mod recovery;
mod rules;
mod server;
mod stores;

pub use mfa::*;
pub use recovery::*;
pub use rules::*;
pub use server::*;
pub use stores::*;

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
        Self::validated(file, base).map_err(|message| ConfigError::Invalid {
            path: None,
            message,
        })
    }

    /// Every section checked in the file's order (the first problem is the one told),
    /// relative paths resolved against `base`.
    fn validated(file: PipelineFile, base: &Path) -> Result<Self, String> {
        let mut engine = file.engine;
        engine.cache_dir = engine.cache_dir.map(|dir| base.join(dir));
        check_engine(&engine)?;
        if file.rules.is_empty() {
            return Err("the pipeline has no [[rule]] entries".into());
        }
        let mut rules: Vec<RuleSettings> = Vec::with_capacity(file.rules.len());
        for rule in file.rules {
            let rule = rule_settings(rule, &engine, &file.effects, base, &rules)?;
            rules.push(rule);
        }
        check_resume(&file.resume)?;
        let outbox = file.outbox;
        check_outbox(&outbox)?;
        check_server(&file.server)?;
        if file.login.max_clock_skew_seconds == 0 || file.login.max_clock_skew_seconds > 86_400 {
            return Err("login.max_clock_skew_seconds must be between 1 and 86400".into());
        }
        check_password_limits(&file.passwords)?;
        let audit = file.audit.validated(base, &outbox)?;
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
            recovery: file.recovery.map(|r| r.validated(base)).transpose()?,
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

fn check_engine(engine: &EngineSettings) -> Result<(), String> {
    if engine.max_memory_mb == 0 || engine.max_memory_mb > 4096 {
        return Err("engine.max_memory_mb must be between 1 and 4096".into());
    }
    if engine.max_instances == 0 {
        return Err("engine.max_instances must be at least 1".into());
    }
    if !(64..=8192).contains(&engine.max_wasm_stack_kb) {
        return Err("engine.max_wasm_stack_kb must be between 64 and 8192".into());
    }
    Ok(())
}

/// One `[[rule]]`, checked against the engine's limits and the rules before it.
fn rule_settings(
    rule: RuleFile,
    engine: &EngineSettings,
    effects: &EffectSettings,
    base: &Path,
    earlier: &[RuleSettings],
) -> Result<RuleSettings, String> {
    let name = rule.name;
    let bad = |what: String| format!("rule {name:?}: {what}");
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
    {
        return Err(bad("a name is letters, digits, '-' and '_'".into()));
    }
    if earlier.iter().any(|r| r.name == name) {
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
    if let Some(key) = rule
        .protected_keys
        .iter()
        .find(|k| !effects.protected_app_metadata.contains(k))
    {
        return Err(bad(format!(
            "protected_keys names {key:?}, which is not in effects.protected_app_metadata"
        )));
    }
    let mut grants = rule.grants;
    grants.sort();
    grants.dedup();
    let mut effects = rule.effects;
    effects.sort();
    effects.dedup();
    Ok(RuleSettings {
        component: base.join(rule.component),
        deadline_ms: rule.deadline_ms,
        memory_mb: rule.memory_mb,
        grants,
        on_error: rule.on_error,
        max_output_bytes: rule.max_output_kb * 1024,
        config: rule
            .config
            .into_iter()
            .map(|(key, value)| (key, config_value_text(value)))
            .collect(),
        effects,
        protected_keys: rule.protected_keys,
        only_when: rule.only_when,
        name,
    })
}

fn check_resume(resume: &ResumeSettings) -> Result<(), String> {
    if resume.key.is_some() && resume.key_env.is_some() {
        return Err("resume: set key or key_env, not both".into());
    }
    if resume.key.as_ref().is_some_and(|k| k.len() < 32) {
        return Err("resume.key must be at least 32 characters".into());
    }
    if resume.ttl_seconds == 0 || resume.ttl_seconds > 86_400 {
        return Err("resume.ttl_seconds must be between 1 and 86400".into());
    }
    Ok(())
}

fn check_outbox(outbox: &OutboxSettings) -> Result<(), String> {
    if outbox.max_attempts == 0
        || outbox.concurrency == 0
        || outbox.timeout_ms == 0
        || outbox.lease_ms <= outbox.timeout_ms
    {
        return Err(
            "outbox: max_attempts, concurrency and timeout_ms must be positive, and lease_ms longer than timeout_ms".into(),
        );
    }
    for (product, url) in &outbox.endpoints {
        let parsed =
            url::Url::parse(url).map_err(|e| format!("outbox.endpoints.{product}: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!(
                "outbox.endpoints.{product}: must be an http(s) URL"
            ));
        }
    }
    Ok(())
}

fn check_server(server: &ServerSettings) -> Result<(), String> {
    if server.max_body_kb == 0 || server.max_body_kb > 16 * 1024 {
        return Err("server.max_body_kb must be between 1 and 16384".into());
    }
    if server.max_connections == 0
        || server.header_timeout_ms == 0
        || server.request_timeout_ms == 0
        || server.idle_timeout_ms == 0
        || server.max_requests_per_connection == 0
    {
        return Err(
            "server: max_connections, header_timeout_ms, request_timeout_ms, idle_timeout_ms and max_requests_per_connection must be positive".into(),
        );
    }
    for (i, caller) in server.callers.iter().enumerate() {
        if caller.name.is_empty() || server.callers[..i].iter().any(|c| c.name == caller.name) {
            return Err(format!(
                "server.caller {}: each caller needs a name of its own",
                i + 1
            ));
        }
        if caller.token_env.is_some() == caller.token_file.is_some() {
            return Err(format!(
                "server.caller {:?}: set token_env or token_file (one of them)",
                caller.name
            ));
        }
    }
    Ok(())
}

fn check_password_limits(limits: &PasswordLimits) -> Result<(), String> {
    if !(4..=31).contains(&limits.max_bcrypt_cost)
        || limits.max_pbkdf2_iterations == 0
        || limits.max_argon2_memory_kib == 0
        || limits.max_argon2_iterations == 0
        || limits.max_argon2_parallelism == 0
        || limits.max_concurrent == Some(0)
    {
        return Err(
            "passwords: max_bcrypt_cost is 4 to 31, and every other limit must be positive".into(),
        );
    }
    Ok(())
}
