//! Errors of the host library. Rule faults are not errors: they are part of a verdict.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read pipeline config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid pipeline config{}: {message}", at(path))]
    Syntax {
        path: Option<PathBuf>,
        message: String,
    },
    #[error("invalid pipeline config{}: {message}", at(path))]
    Invalid {
        path: Option<PathBuf>,
        message: String,
    },
}

fn at(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!(" {}", p.display()))
        .unwrap_or_default()
}

impl ConfigError {
    pub(crate) fn in_file(self, file: &Path) -> Self {
        match self {
            ConfigError::Syntax { message, .. } => ConfigError::Syntax {
                path: Some(file.to_owned()),
                message,
            },
            ConfigError::Invalid { message, .. } => ConfigError::Invalid {
                path: Some(file.to_owned()),
                message,
            },
            other => other,
        }
    }
}

/// Why a pipeline could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "rule {rule:?}: cannot read component {}: {source}{}",
        path.display(),
        build_hint(source)
    )]
    ReadComponent {
        rule: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("rule {rule:?}: {} is not a valid WebAssembly component: {message}", path.display())]
    InvalidComponent {
        rule: String,
        path: PathBuf,
        message: String,
    },
    #[error(
        "rule {rule:?} imports the `{interface}` capability but is not granted it \
         (add \"{interface}\" to its grants if it should have it)"
    )]
    Ungranted { rule: String, interface: String },
    #[error("rule {rule:?} imports `{import}`, which Portcullis does not provide to rules")]
    Unsupported { rule: String, import: String },
    #[error("rule {rule:?} does not fit the portcullis:rule@0.1.0 contract: {message}")]
    Contract { rule: String, message: String },
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
}

/// What to do about a component that is not there: the repository's rules are built
/// by `cargo xtask build-rules`.
fn build_hint(error: &std::io::Error) -> &'static str {
    if error.kind() == std::io::ErrorKind::NotFound {
        " (build the rules with `cargo xtask build-rules`, or correct the rule's component path)"
    } else {
        ""
    }
}

/// A time in ms since the epoch as people read it in a message: RFC 3339, UTC, to
/// the second (`2026-12-06T19:30:00Z`).
pub fn utc_time(ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    // Far past what a date can show (a time that never comes): say so.
    if ms >= 253_402_300_800_000 {
        return "never".into();
    }
    humantime::format_rfc3339_seconds(at).to_string()
}
