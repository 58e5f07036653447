//! `portcullis run`: evaluate login attempts, apply their effects, print the verdicts.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use portcullis::replay::record::{Expectation, RecordedLogin, Recorder, Recording, Step};
use portcullis::{Decision, LoginAttempt, Verdict};

use super::Exit;
use super::options::{ConfigArg, VerdictFormat};
use super::output::print_verdict;
use super::stores::{missing_directory, missing_legacy, open_gateway};

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
    /// Evaluate only: write nothing to the stores, send no code, issue no resume
    /// token (the output says what would have been sent).
    #[arg(long)]
    dry_run: bool,
    /// Stamp every login with the host's clock instead of its own `time_ms` (demo
    /// logins written a while ago).
    #[arg(long)]
    now: bool,
    /// After the verdicts, print counts (allowed, migrated, denied, …): a line of
    /// text, or with --json an object `{"summary": {…}}`.
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
        let attempts = read_logins(&files, self.now)?;
        let config = self.config.load()?;
        // `serve` treats a legacy store that is not there as one that is down (each
        // login that needs it is denied, retryable, until it is back); a batch run
        // would print a denial per login and exit 0, the wrong path never named.
        if let Some((product, path)) = missing_legacy(&config)?.into_iter().next() {
            anyhow::bail!(
                "there is no legacy store for {product} at {}: is the config's path right? (`seed` creates the demo's; `run` only reads a product's database)",
                path.display()
            );
        }
        if self.dry_run
            && let Some(path) = missing_directory(&config)?
        {
            anyhow::bail!(
                "there is no store at {}: a dry run creates nothing (`seed`, `run` without --dry-run or `serve` create it)",
                path.display()
            );
        }
        let mut gateway = open_gateway(&self.config.config)?;
        if self.dry_run {
            gateway = gateway.dry_run();
        }
        let recorder = self
            .record
            .as_ref()
            .map(|_| Recorder::new(gateway.services().clone()));
        if let Some(recorder) = &recorder {
            gateway = gateway.with_services(recorder.services());
        }
        let mut summary = Summary::default();
        let mut refused = Vec::new();
        let mut last = None;
        for (n, (attempt, file)) in attempts.iter().zip(&files).enumerate() {
            let verdict = match gateway.login(attempt) {
                Ok(verdict) => verdict,
                // This login cannot be evaluated as given: the others still can.
                Err(portcullis::GatewayError::Login(e)) => {
                    eprintln!("refused {}: {e}", file.display());
                    refused.push(file.display().to_string());
                    continue;
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!("login {}", file.display())));
                }
            };
            print_verdict(&verdict, &self.format)?;
            if self.dry_run {
                say_what_would_happen(&verdict, file);
            }
            if n + 1 < attempts.len() {
                gateway.pipeline().prepare();
            }
            summary.count(&verdict);
            last = Some(Expectation::of(&verdict));
        }
        if let (Some(path), Some(recorder), Some(attempt)) =
            (&self.record, &recorder, attempts.first())
        {
            let expect = last.context("no verdict to record: the login was refused")?;
            write_recording(path, recorder, attempt, expect, self.format.reveal_pii)?;
        }
        if self.summary {
            summary.refused = refused.len();
            if self.format.json.json {
                let json = serde_json::json!({ "summary": &summary });
                println!(
                    "{}",
                    if self.format.compact {
                        serde_json::to_string(&json)?
                    } else {
                        serde_json::to_string_pretty(&json)?
                    }
                );
            } else {
                println!("{}", summary.line());
            }
        }
        Ok(Exit::failures_if(!refused.is_empty(), || {
            format!(
                "{} of {} login(s) refused: {}",
                refused.len(),
                attempts.len(),
                refused.join(", ")
            )
        }))
    }
}

/// Every login read before any runs, so bad input fails before any output; `now`
/// dates them all by this machine's clock.
fn read_logins(files: &[PathBuf], now: bool) -> Result<Vec<LoginAttempt>> {
    let mut attempts = files
        .iter()
        .map(|file| {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read login {}", file.display()))?;
            LoginAttempt::from_json(&text).with_context(|| format!("login {}", file.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    if now {
        let now = portcullis::flows::clock::Clock::now_ms(&portcullis::flows::clock::SystemClock);
        for attempt in &mut attempts {
            attempt.time_ms = now;
        }
    }
    Ok(attempts)
}

/// `--record`: the one login, every capability call and its answer, and the verdict.
fn write_recording(
    path: &std::path::Path,
    recorder: &Recorder,
    attempt: &LoginAttempt,
    expect: Expectation,
    reveal_pii: bool,
) -> Result<()> {
    let recording = Recording {
        recording: portcullis::replay::record::FORMAT_VERSION,
        description: String::new(),
        pipeline: None,
        steps: vec![Step {
            login: Some(RecordedLogin::of(attempt)),
            resume: None,
            calls: recorder.take_calls(),
            expect,
        }],
    };
    std::fs::write(
        path,
        portcullis::replay::record::to_json(&recording, reveal_pii),
    )
    .with_context(|| format!("cannot write recording {}", path.display()))?;
    eprintln!("recorded {}", path.display());
    Ok(())
}

/// `--dry-run`: what a real run would have done beyond the verdict printed.
fn say_what_would_happen(verdict: &Verdict, file: &std::path::Path) {
    match &verdict.decision {
        Decision::Challenge {
            factor_id: Some(factor),
            via: Some(via),
            ..
        } => eprintln!(
            "dry run: {}: would send a code for factor {factor} through {} and issue a resume token; nothing sent",
            file.display(),
            via.name()
        ),
        Decision::Redirect { .. } => eprintln!(
            "dry run: {}: would issue a resume token for the redirect; none issued",
            file.display()
        ),
        _ => {}
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
#[derive(Default, serde::Serialize)]
struct Summary {
    evaluated: usize,
    allowed: usize,
    migrated: usize,
    denied: usize,
    redirected: usize,
    challenged: usize,
    /// Challenges by kind (`mfa`, `password_reset`, ...): the line says what they were.
    challenged_as: BTreeMap<&'static str, usize>,
    /// Second-factor codes sent, by provider.
    codes_via: BTreeMap<&'static str, usize>,
    with_faults: usize,
    /// Logins that could not be evaluated as given.
    refused: usize,
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
                kind,
                via,
                ref destination,
                ..
            } => {
                self.challenged += 1;
                *self.challenged_as.entry(kind.name()).or_default() += 1;
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

    /// What the challenges were: " (mfa 4, password_reset 2; SMS codes sent via
    /// legacy-sms 2, verify 1)", or nothing when there were none.
    fn challenges(&self) -> String {
        let list = |counts: &BTreeMap<&'static str, usize>| {
            counts
                .iter()
                .map(|(name, n)| format!("{name} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match (self.challenged_as.is_empty(), self.codes_via.is_empty()) {
            (true, _) => String::new(),
            (false, true) => format!(" ({})", list(&self.challenged_as)),
            (false, false) => format!(
                " ({}; SMS codes sent via {})",
                list(&self.challenged_as),
                list(&self.codes_via)
            ),
        }
    }

    fn line(&self) -> String {
        format!(
            "summary: {} logins: {} allowed ({} migrated on this login), {} denied, {} redirected, {} challenged{}; {} with rule faults{}",
            self.evaluated,
            self.allowed,
            self.migrated,
            self.denied,
            self.redirected,
            self.challenged,
            self.challenges(),
            self.with_faults,
            if self.refused > 0 {
                format!("; {} refused", self.refused)
            } else {
                String::new()
            }
        )
    }
}
