//! `portcullis run`: evaluate login attempts, apply their effects, print the verdicts.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use portcullis::record::{Expectation, RecordedLogin, Recorder, Recording, Step};
use portcullis::{Decision, LoginAttempt, Verdict};

use super::Exit;
use super::options::{ConfigArg, VerdictFormat};
use super::output::print_verdict;
use super::stores::open_gateway;

/// Evaluate login attempts against the configured stores, apply the effects of each
/// allowed login, and print each verdict as JSON.
#[derive(clap::Args)]
pub struct Run {
    #[command(flatten)]
    config: ConfigArg,
    /// A login JSON file, or a directory of them (evaluated in name order).
    #[arg(long, required = true, value_name = "PATH")]
    login: Vec<PathBuf>,
    #[command(flatten)]
    format: VerdictFormat,
    /// Evaluate only; write nothing to the stores.
    #[arg(long)]
    dry_run: bool,
    /// After the verdicts, print counts (allowed, migrated, denied, …).
    #[arg(long)]
    summary: bool,
    /// Write a recording of this evaluation (one login) for `replay`.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
}

impl Run {
    pub fn execute(self) -> Result<Exit> {
        let files = login_files(&self.login)?;
        anyhow::ensure!(
            self.record.is_none() || files.len() == 1,
            "--record takes exactly one login file (got {})",
            files.len()
        );
        // Read every login before running any, so bad input fails before any output.
        let attempts = files
            .iter()
            .map(|file| {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read login {}", file.display()))?;
                LoginAttempt::from_json(&text).with_context(|| format!("login {}", file.display()))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut gateway = open_gateway(&self.config.config)?;
        if self.dry_run {
            gateway = gateway.without_applying();
        }
        let recorder = self
            .record
            .as_ref()
            .map(|_| Recorder::new(gateway.services().clone()));
        if let Some(recorder) = &recorder {
            gateway = gateway.with_services(recorder.services());
        }
        let mut summary = Summary::default();
        let mut last = None;
        for (n, attempt) in attempts.iter().enumerate() {
            let verdict = gateway.login(attempt)?;
            print_verdict(&verdict, &self.format)?;
            if n + 1 < attempts.len() {
                gateway.pipeline().prepare();
            }
            summary.count(&verdict);
            last = Some(Expectation::of(&verdict));
        }
        if let (Some(path), Some(recorder), Some(attempt)) =
            (&self.record, &recorder, attempts.first())
        {
            let recording = Recording {
                recording: portcullis::record::FORMAT_VERSION,
                description: String::new(),
                pipeline: None,
                steps: vec![Step {
                    login: Some(RecordedLogin::of(attempt)),
                    resume: None,
                    calls: recorder.take_calls(),
                    expect: last.context("no verdict to record")?,
                }],
            };
            std::fs::write(
                path,
                portcullis::record::to_json(&recording, self.format.reveal_pii),
            )
            .with_context(|| format!("cannot write recording {}", path.display()))?;
            eprintln!("recorded {}", path.display());
        }
        if self.summary {
            println!("{}", summary.line());
        }
        Ok(Exit::Done)
    }
}

/// The login files under `paths` (files, or directories of `*.json`), in name order.
fn login_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("cannot read login directory {}", path.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect();
            found.sort();
            anyhow::ensure!(!found.is_empty(), "no .json logins in {}", path.display());
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// `--summary`: the verdicts counted.
#[derive(Default)]
struct Summary {
    evaluated: usize,
    allowed: usize,
    migrated: usize,
    denied: usize,
    redirected: usize,
    challenged: usize,
    /// Second-factor codes sent, by provider.
    codes_via: BTreeMap<&'static str, usize>,
    with_faults: usize,
}

impl Summary {
    fn count(&mut self, verdict: &Verdict) {
        self.evaluated += 1;
        match verdict.decision {
            Decision::Allow => self.allowed += 1,
            Decision::Deny { .. } => self.denied += 1,
            Decision::Redirect { .. } => self.redirected += 1,
            Decision::Recover { .. } => self.denied += 1,
            Decision::Challenge {
                via,
                ref destination,
                ..
            } => {
                self.challenged += 1;
                if let (Some(via), Some(_)) = (via, destination) {
                    *self.codes_via.entry(via.name()).or_default() += 1;
                }
            }
        }
        if verdict.applied.as_ref().is_some_and(|a| a.created_user) {
            self.migrated += 1;
        }
        if verdict.faults().next().is_some() {
            self.with_faults += 1;
        }
    }

    fn line(&self) -> String {
        format!(
            "summary: {} logins: {} allowed ({} migrated on this login), {} denied, {} redirected, {} challenged{}; {} with rule faults",
            self.evaluated,
            self.allowed,
            self.migrated,
            self.denied,
            self.redirected,
            self.challenged,
            if self.codes_via.is_empty() {
                String::new()
            } else {
                format!(
                    " (SMS codes sent via {})",
                    self.codes_via
                        .iter()
                        .map(|(via, n)| format!("{via} {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            self.with_faults
        )
    }
}
