//! What a command's exit code means, the same for every command (README, "Exit
//! codes"): 0 done; 1 done, with failures or differences; 2 not done, for bad input
//! or configuration.

use std::process::ExitCode;

/// How a command that ran to its end came out.
#[derive(Debug)]
pub enum Exit {
    /// 0: everything asked was done.
    Done,
    /// 1: the command ran to its end, and something in it failed or differed; the
    /// message says what (its output has the details).
    Failures(String),
}

impl Exit {
    /// `Failures(message())` when `failed`, else `Done`.
    pub fn failures_if(failed: bool, message: impl FnOnce() -> String) -> Exit {
        if failed {
            Exit::Failures(message())
        } else {
            Exit::Done
        }
    }
}

/// The process's exit code for a command's outcome, with one line on stderr for
/// anything but `Done`. An error stopped the command before its end: bad input or
/// configuration (a flag, a file, the config, a store or service it names), exit 2,
/// as for a usage error clap reports.
pub fn finish(outcome: anyhow::Result<Exit>) -> ExitCode {
    let (code, message) = match outcome {
        Ok(Exit::Done) => return ExitCode::SUCCESS,
        Ok(Exit::Failures(message)) => (1, message),
        Err(error) => (2, format!("{error:#}")),
    };
    // One line that names what is wrong.
    eprintln!(
        "portcullis: {}",
        message.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    ExitCode::from(code)
}
