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

// `--report`: a job's JSON summary, also to a file; and `--json`, which it prints anyway.
#[derive(clap::Args)]
pub struct ReportArg {
    /// Also write the JSON summary to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub json: JsonArg,
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
    #[command(flatten)]
    pub json: JsonArg,
}

// `--json`: every command that prints results takes it (here, in `ReportArg` or in
// `VerdictFormat`). Text stays the default where a command prints text or a table;
// where its results are JSON already the flag changes nothing, so a script can pass it
// to any command.
#[derive(clap::Args)]
pub struct JsonArg {
    /// Print the results as JSON (on a command whose results are JSON anyway, a no-op).
    #[arg(long)]
    pub json: bool,
}

// `--token-env NAME` or `--token-file PATH`: where a client command's bearer token is
// (`support`, `import run`). Each command names its variable's default with
// `mut_arg("token_env", …)`.
#[derive(clap::Args)]
pub struct TokenArgs {
    /// The environment variable holding the token.
    #[arg(long, value_name = "NAME", conflicts_with = "token_file")]
    pub token_env: Option<String>,
    /// A file holding the token (a final newline is ignored), instead of a variable.
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
}

impl TokenArgs {
    /// The token, from the file when one is named, else from the variable.
    pub fn read(&self, what: &str) -> Result<secrecy::SecretString> {
        let env = match &self.token_file {
            Some(_) => None,
            None => Some(
                self.token_env
                    .as_deref()
                    .context("name --token-env or --token-file")?,
            ),
        };
        portcullis::config::secret_from(what, env, self.token_file.as_deref())
            .map_err(anyhow::Error::msg)
    }
}
