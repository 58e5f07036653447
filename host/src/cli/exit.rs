//! What a command's exit code means, the same for every command (README, "Exit
//! codes"):
//!
//! | code | meaning |
//! | ---- | ------- |
//! | 0 | done |
//! | 1 | done, with failures or differences (the output says which) |
//! | 2 | not done: bad input or configuration |
//!
//! A command returns `Ok(Exit)` when it ran to its end; any error it returns stopped
//! it before that — a flag, a file, the config, or a store or service the config
//! names that cannot be read, opened or reached — and is exit 2, as is a usage error
//! (clap's own exit code for one).

use std::process::ExitCode;

/// How a command that ran to its end came out.
#[derive(Debug)]
pub enum Exit {
    /// 0: everything asked was done.
    Done,
    /// 1: the command ran to its end, and something in it failed or differed; the
    /// message says what (its output has the details).
    Failures(String),
    /// 2: bad input found once the command had started printing (its output says
    /// so too, e.g. `audit verify`'s `"ok": false`); the message says what.
    Usage(String),
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

    pub fn code(&self) -> u8 {
        match self {
            Exit::Done => 0,
            Exit::Failures(_) => 1,
            Exit::Usage(_) => 2,
        }
    }
}

/// Any error that stopped a command: bad input or configuration.
impl From<anyhow::Error> for Exit {
    fn from(error: anyhow::Error) -> Exit {
        Exit::Usage(causes(&error))
    }
}

/// An error and its causes, each said once: a message that already quotes its source
/// (`#[error("…: {0}")]` over a `#[from]`, or a context naming the error) is not
/// followed by it again.
pub fn causes(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// The process's exit code for a command's outcome, with one line on stderr for
/// anything but `Done`.
pub fn finish(outcome: anyhow::Result<Exit>) -> ExitCode {
    let exit = outcome.unwrap_or_else(Exit::from);
    if let Exit::Failures(message) | Exit::Usage(message) = &exit {
        // One line that names what is wrong.
        eprintln!(
            "portcullis: {}",
            message.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }
    ExitCode::from(exit.code())
}
