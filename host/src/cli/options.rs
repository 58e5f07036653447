//! Options several commands take, declared once and flattened into each. (No doc
//! comments on the structs themselves: clap would take them for the command's about.)

use std::path::PathBuf;

use anyhow::{Context, Result};
use portcullis::PipelineConfig;

// `--config`, required (or PORTCULLIS_CONFIG).
#[derive(clap::Args)]
pub struct ConfigArg {
    /// The pipeline config (TOML): its rules, stores, providers and server settings.
    #[arg(long, env = "PORTCULLIS_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
}

impl ConfigArg {
    pub fn load(&self) -> Result<PipelineConfig> {
        Ok(PipelineConfig::load(&self.config)?)
    }
}

// `--config` for the commands that run recordings: the demo pipeline by default.
#[derive(clap::Args)]
pub struct RecordingConfigArg {
    /// The pipeline config recordings run in unless they name their own.
    #[arg(
        long,
        env = "PORTCULLIS_CONFIG",
        value_name = "FILE",
        default_value = "fixtures/pipeline.toml"
    )]
    pub config: PathBuf,
}

// `--report`: a job's JSON summary, also to a file.
#[derive(clap::Args)]
pub struct ReportArg {
    /// Also write the JSON summary to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

impl ReportArg {
    /// The summary as JSON on stdout, and also in `--report` when given.
    pub fn print(&self, summary: &impl serde::Serialize) -> Result<()> {
        let json = serde_json::to_string_pretty(summary)?;
        if let Some(path) = &self.report {
            std::fs::write(path, &json)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        println!("{json}");
        Ok(())
    }
}

// How verdicts are printed.
#[derive(clap::Args)]
pub struct VerdictFormat {
    /// Print emails and phone numbers in full (they are redacted by default).
    #[arg(long)]
    pub reveal_pii: bool,
    /// One verdict per line instead of pretty-printed JSON.
    #[arg(long)]
    pub compact: bool,
}

// `--json` for the commands that print text or a table by default.
#[derive(clap::Args)]
pub struct JsonArg {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}
