//! `portcullis keys`: the keys that seal phone numbers.

use anyhow::Result;

use super::options::{ConfigArg, ReportArg};
use super::stores::directory_of;
use super::{Exit, progress};

/// The keys that seal phone numbers.
#[derive(clap::Args)]
pub struct Keys {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(clap::Subcommand)]
enum KeysCommand {
    Rotate(Rotate),
}

impl Keys {
    pub fn execute(self) -> Result<Exit> {
        match self.command {
            KeysCommand::Rotate(c) => c.execute(),
        }
    }
}

/// Re-seal every stored phone number with the ring's current (first) key, in
/// chunks; safe to stop and run again.
#[derive(clap::Args)]
pub struct Rotate {
    #[command(flatten)]
    config: ConfigArg,
    /// Factors re-sealed per store round trip.
    #[arg(long, default_value_t = 500)]
    chunk: usize,
    #[command(flatten)]
    report: ReportArg,
}

impl Rotate {
    pub fn execute(self) -> Result<Exit> {
        let config = self.config.load()?;
        let keys = config.mfa.key_ring()?;
        let state = directory_of(&config)?;
        let bar = progress::resealed()?;
        let report = portcullis::jobs::keys::rotate(state.as_ref(), &keys, self.chunk, |so_far| {
            bar.set_position(so_far.resealed);
            let failed: u64 = so_far.failed.values().sum();
            if failed > 0 {
                bar.set_message(format!("{failed} failed"));
            }
        })?;
        bar.finish_and_clear();
        self.report.print(&report)?;
        let failed: u64 = report.failed.values().sum();
        Ok(Exit::failures_if(failed > 0, || {
            format!("{failed} phone number(s) could not be re-sealed (see failed)")
        }))
    }
}
