//! The long jobs' progress bars, all here: on stderr, and drawn only on a terminal
//! (indicatif hides them otherwise), cleared when the job ends.

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};

fn bar(len: u64, template: &str) -> Result<ProgressBar> {
    Ok(ProgressBar::new(len).with_style(ProgressStyle::with_template(template)?))
}

fn spinner(template: &str) -> Result<ProgressBar> {
    Ok(ProgressBar::new_spinner().with_style(ProgressStyle::with_template(template)?))
}

/// `mfa backfill`: users taken up of those left.
pub fn users(len: u64) -> Result<ProgressBar> {
    bar(
        len,
        "{bar:30} {pos}/{len} users, {per_sec}, ETA {eta} {msg}",
    )
}

/// `import export`: legacy accounts read of all there are.
pub fn accounts(len: u64) -> Result<ProgressBar> {
    bar(
        len,
        "{bar:30} {pos}/{len} accounts, {per_sec}, ETA {eta} {msg}",
    )
}

/// `import run`: files done (the length is set as the manifest is read).
pub fn files() -> Result<ProgressBar> {
    bar(0, "{bar:30} {pos}/{len} files, {msg} [{elapsed}]")
}

/// `import backfill-ids`: product rows seen.
pub fn rows() -> Result<ProgressBar> {
    spinner("{spinner} {pos} rows, {per_sec} {msg} [{elapsed}]")
}

/// `keys rotate`: phone numbers re-sealed.
pub fn resealed() -> Result<ProgressBar> {
    spinner("{spinner} {elapsed} re-sealed {pos} phone numbers ({per_sec}) {msg}")
}
