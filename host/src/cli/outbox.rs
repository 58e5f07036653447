//! `portcullis outbox`: deliver pending messages to the products.

use anyhow::Result;

use super::Exit;
use super::options::ConfigArg;
use super::stores::{directory_of, phone_keys, tokio_runtime};

/// The outbox: deliver pending messages to the products.
#[derive(clap::Args)]
pub struct Outbox {
    #[command(subcommand)]
    command: OutboxCommand,
}

#[derive(clap::Subcommand)]
enum OutboxCommand {
    Run(Run),
}

impl Outbox {
    pub fn execute(self) -> Result<Exit> {
        match self.command {
            OutboxCommand::Run(c) => c.execute(),
        }
    }
}

/// Deliver messages until stopped (SIGTERM or Ctrl-C).
#[derive(clap::Args)]
pub struct Run {
    #[command(flatten)]
    config: ConfigArg,
    /// Stop once nothing is pending or being delivered.
    #[arg(long)]
    until_empty: bool,
}

impl Run {
    pub fn execute(self) -> Result<Exit> {
        let config = self.config.load()?;
        anyhow::ensure!(
            config.state.is_some(),
            "the config has no [state] section: there is no outbox"
        );
        let state = directory_of(&config)?;
        let dispatcher = portcullis::jobs::outbox::Dispatcher::new(state, config.outbox.clone())
            .with_phone_keys(phone_keys(&config)?)
            .with_audit_checkpoints(config.audit.checkpoint_file.clone());
        let report = tokio_runtime()?
            .block_on(dispatcher.run(self.until_empty, portcullis::server::shutdown_signal()))?;
        println!(
            "outbox: {} claimed, {} delivered, {} to retry, {} dead-lettered",
            report.claimed, report.delivered, report.retried, report.dead
        );
        Ok(Exit::failures_if(report.dead > 0, || {
            format!(
                "{} message(s) dead-lettered: given up after their last attempt",
                report.dead
            )
        }))
    }
}
