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
pub mod config;
pub mod error;
pub mod flows;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod jobs;
pub mod mfa;
pub mod model;
pub mod providers;
pub mod replay;
pub mod runtime;
pub mod server;
pub mod state;

// The embedding API at the crate root (each also has its one module path).
pub use config::{Capability, EffectKind, EngineSettings, OnError, PipelineConfig, RuleSettings};
pub use error::{ConfigError, LoadError};
pub use flows::{Gateway, GatewayError};
pub use model::{AccountEvidence, Effect, LoginAttempt, LoginError, Services};
pub use runtime::cache::CompileSource;
pub use runtime::engine::Runtime;
pub use runtime::grants::Import;
pub use runtime::pipeline::{LoadedRule, Pipeline, ResumePoint};
pub use runtime::verdict::{Decision, Fault, FaultKind, RuleResult, RuleTrace, Verdict};

impl Pipeline {
    /// Reads a pipeline config, starts an engine for it and loads its rules.
    pub fn load(path: &std::path::Path) -> Result<Self, LoadError> {
        let config = PipelineConfig::load(path)?;
        Runtime::new(&config.engine)?.load(&config)
    }
}
