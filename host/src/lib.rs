//! Portcullis runs the rules of a login pipeline as sandboxed WebAssembly components.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use portcullis::{LoginAttempt, Pipeline, Services};
//! let pipeline = Pipeline::load(std::path::Path::new("fixtures/pipeline.toml"))?;
//! let login = LoginAttempt::from_json(&std::fs::read_to_string("fixtures/logins/returning-user.json")?)?;
//! let verdict = pipeline.evaluate(&login, &Services::none());
//! println!("{:?}", verdict.decision);
//! # Ok(()) }
//! ```

pub mod bench;
mod bindings;
mod cache;
mod capabilities;
pub mod config;
mod engine;
pub mod error;
mod grants;
pub mod login;
mod outcome;
mod pipeline;
pub mod redact;
mod sandbox;
pub mod services;
pub mod verdict;

pub use cache::CompileSource;
pub use config::{Capability, EngineSettings, OnError, PipelineConfig, RuleSettings};
pub use engine::Runtime;
pub use error::{ConfigError, LoadError, LoginError};
pub use grants::Import;
pub use login::LoginAttempt;
pub use pipeline::{LoadedRule, Pipeline};
pub use services::Services;
pub use verdict::{Decision, Effect, Fault, FaultKind, RuleResult, RuleTrace, Verdict};

impl Pipeline {
    /// Reads a pipeline config, starts an engine for it and loads its rules.
    pub fn load(path: &std::path::Path) -> Result<Self, LoadError> {
        let config = PipelineConfig::load(path)?;
        Runtime::new(&config.engine)?.load(&config)
    }
}
