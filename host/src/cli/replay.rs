//! `portcullis replay`: recordings against the current rules.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::Exit;
use super::options::{JsonArg, RecordingConfigArg};

/// Run recordings against the current rules; exit 1 if any verdict changed, 2 if a
/// recording could not be replayed at all.
#[derive(clap::Args)]
pub struct Replay {
    /// Recording files or directories of them.
    #[arg(required = true, value_name = "PATH")]
    recordings: Vec<PathBuf>,
    #[command(flatten)]
    config: RecordingConfigArg,
    #[command(flatten)]
    json: JsonArg,
}

impl Replay {
    pub fn execute(self) -> Result<Exit> {
        // A path that is not there is bad input, not a recording whose verdict changed.
        for path in &self.recordings {
            anyhow::ensure!(
                path.exists(),
                "no recording or directory of recordings at {}",
                path.display()
            );
        }
        let files = portcullis::replay::recording_files(&self.recordings)
            .context("cannot list recordings")?;
        anyhow::ensure!(!files.is_empty(), "no recordings found");
        let mut replay = portcullis::replay::Replay::new(&self.config.config)?;
        let (mut passed, mut failed, mut unreadable) = (0, 0, 0);
        let json = self.json.json;
        let mut results = Vec::new();
        if !json {
            println!(
                "{:<44} {:>4}  {:<34} {:<34} result",
                "recording", "step", "expected", "got"
            );
        }
        for file in &files {
            let result = replay.run(file);
            if json {
                results.push(result_json(&result));
            } else {
                print_result(&result);
            }
            if result.error.is_some() {
                unreadable += 1;
            }
            if result.passed() {
                passed += 1
            } else {
                failed += 1
            }
        }
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "recordings": results,
                    "passed": passed,
                    "failed": failed,
                }))?
            );
        } else {
            println!("{passed} passed, {failed} failed");
        }
        if unreadable > 0 {
            // Unreadable, not a recording, or its pipeline does not load.
            return Ok(Exit::Usage(format!(
                "{unreadable} recording(s) could not be replayed (see their error lines)"
            )));
        }
        Ok(Exit::failures_if(failed > 0, || {
            format!("{failed} of {} recordings differ", passed + failed)
        }))
    }
}

/// A recording's rows of the table: each step, its diff when it failed.
/// One recording's result as `--json` prints it: what the table's lines say.
fn result_json(result: &portcullis::replay::RecordingResult) -> serde_json::Value {
    serde_json::json!({
        "recording": result.path,
        "passed": result.passed(),
        "error": result.error,
        "steps": result.steps.iter().map(|step| serde_json::json!({
            "step": step.step,
            "passed": step.passed(),
            "expected": step.expected,
            "got": step.got,
            "unexpected_calls": step.unexpected_calls,
        })).collect::<Vec<_>>(),
    })
}

fn print_result(result: &portcullis::replay::RecordingResult) {
    let name = result
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(error) = &result.error {
        println!("{name:<44} {:>4}  {:<34} {:<34} FAIL", "-", "-", "-");
        println!("    error: {error}");
    }
    for step in &result.steps {
        let verdict = if step.passed() { "pass" } else { "FAIL" };
        println!(
            "{name:<44} {:>4}  {:<34} {:<34} {verdict}",
            step.step,
            step.expected.summary(),
            step.got.summary()
        );
        if !step.passed() {
            for line in step.diff().lines() {
                println!("    {line}");
            }
        }
        for call in &step.unexpected_calls {
            println!("    note: {call} is not in the recording");
        }
    }
}
