//! A rule's settings: its capabilities, effect kinds, limits and failure policy, and
//! the engine's process-wide limits.

use std::collections::BTreeMap;

use serde::Deserialize;

use std::fmt;
use std::path::PathBuf;

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

crate::model::names!(OnError {
    Deny = "deny",
    Skip = "skip",
});

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
