//! Portcullis runs the rules of a login pipeline as sandboxed WebAssembly components.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use portcullis::{Gateway, LoginAttempt, PipelineConfig, Runtime};
//! let config = PipelineConfig::load(std::path::Path::new("fixtures/pipeline.toml"))?;
//! let gateway = Gateway::open(&config, &Runtime::new(&config.engine)?)?;
//! let login = LoginAttempt::from_json(&std::fs::read_to_string("target/demo-state/logins/login-00000.json")?)?;
//! let verdict = gateway.login(&login)?; // evaluates, and applies the effects of an allow
//! println!("{:?}", verdict.decision);
//! # Ok(()) }
//! ```

pub mod bench;
mod bindings;
mod cache;
mod capabilities;
pub mod clock;
pub mod config;
mod engine;
pub mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
mod grants;
mod invariants;
pub mod login;
pub mod outbox;
mod outcome;
mod output;
pub mod passwords;
mod pipeline;
pub mod record;
pub mod redact;
pub mod replay;
pub mod resume;
mod sandbox;
pub mod seed;
pub mod server;
pub mod services;
pub mod state;
pub mod verdict;

pub use cache::CompileSource;
pub use config::{Capability, EffectKind, EngineSettings, OnError, PipelineConfig, RuleSettings};
pub use engine::Runtime;
pub use error::{ConfigError, LoadError, LoginError};
pub use gateway::{Gateway, GatewayError};
pub use grants::Import;
pub use invariants::AccountEvidence;
pub use login::LoginAttempt;
pub use pipeline::{LoadedRule, Pipeline, ResumePoint};
pub use services::Services;
pub use verdict::{Decision, Effect, Fault, FaultKind, RuleResult, RuleTrace, Verdict};

impl Pipeline {
    /// Reads a pipeline config, starts an engine for it and loads its rules.
    pub fn load(path: &std::path::Path) -> Result<Self, LoadError> {
        let config = PipelineConfig::load(path)?;
        Runtime::new(&config.engine)?.load(&config)
    }
}
