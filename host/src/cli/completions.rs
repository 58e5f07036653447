//! `portcullis completions`: shell completions, generated from the commands' own
//! definitions (so they never fall behind).

use std::io::Write;

use anyhow::{Context, Result};
use clap::CommandFactory;

use super::{Cli, Exit};

/// Print shell completions for portcullis, e.g. `portcullis completions bash >
/// /etc/bash_completion.d/portcullis`.
#[derive(clap::Args)]
pub struct Completions {
    /// The shell to complete in.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

impl Completions {
    pub fn execute(self) -> Result<Exit> {
        // Into a buffer first: clap_complete panics when its writer fails.
        let mut script = Vec::new();
        clap_complete::generate(self.shell, &mut Cli::command(), "portcullis", &mut script);
        match std::io::stdout().write_all(&script) {
            // `portcullis completions bash | head` is fine.
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                Err(e).context("cannot write the completions")
            }
            _ => Ok(Exit::Done),
        }
    }
}
