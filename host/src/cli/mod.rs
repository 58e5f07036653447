//! The `portcullis` command line: one module per command, each a clap `Args` struct
//! (or a `Subcommand` enum) with `execute`, as wasmtime and Spin lay theirs out. The
//! options several commands share are in [`options`], the progress bars in
//! [`progress`], and what an exit code means in [`exit`].

use clap::{Parser, Subcommand};

mod audit;
mod bench;
mod check;
mod completions;
mod continue_;
pub mod exit;
mod import;
mod keys;
mod mfa;
mod options;
mod outbox;
mod output;
mod progress;
mod replay;
mod run;
mod seed;
mod serve;
mod stores;
mod support;

pub use exit::Exit;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Login rules as sandboxed WebAssembly components"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Check(check::Check),
    Run(run::Run),
    Continue(continue_::Continue),
    Seed(seed::Seed),
    Serve(serve::Serve),
    Keys(keys::Keys),
    Mfa(mfa::Mfa),
    Import(import::Import),
    Outbox(outbox::Outbox),
    Audit(audit::Audit),
    Support(support::Support),
    Replay(replay::Replay),
    Bench(bench::Bench),
    Completions(completions::Completions),
}

impl Cli {
    pub fn execute(self) -> anyhow::Result<Exit> {
        match self.command {
            Command::Check(c) => c.execute(),
            Command::Run(c) => c.execute(),
            Command::Continue(c) => c.execute(),
            Command::Seed(c) => c.execute(),
            Command::Serve(c) => c.execute(),
            Command::Keys(c) => c.execute(),
            Command::Mfa(c) => c.execute(),
            Command::Import(c) => c.execute(),
            Command::Outbox(c) => c.execute(),
            Command::Audit(c) => c.execute(),
            Command::Support(c) => c.execute(),
            Command::Replay(c) => c.execute(),
            Command::Bench(c) => c.execute(),
            Command::Completions(c) => c.execute(),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every command, subcommand, flag and argument says what it is for.
    #[test]
    fn everything_has_help() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", command.get_name());
            if command.get_about().is_none() && !path.ends_with(" help") {
                missing.push(path.clone());
            }
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.get_help().is_none() && !["help", "version"].contains(&id) {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in command.get_subcommands() {
                walk(sub, &path, missing);
            }
        }
        let command = super::Cli::command();
        command.clone().debug_assert();
        let mut missing = Vec::new();
        walk(&command, "", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }
}
