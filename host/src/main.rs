//! `portcullis`: check a pipeline, run logins through it, serve it, and the jobs of a
//! migration. Each command is a module of `cli`; this file only starts one.

use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PORTCULLIS_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // A usage error is clap's to report: exit 2, as for any other bad input.
    let cli = cli::Cli::parse();
    cli::exit::finish(cli.execute())
}
