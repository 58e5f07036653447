//! `portcullis bench`: what a pipeline costs per login.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use portcullis::bench::{BenchReport, Percentiles};

use super::Exit;
use super::options::{JsonArg, RecordingConfigArg};

/// Measure a pipeline: latency p50/p99 per scenario and per rule, evaluations
/// per second on every core, peak memory, and load time cold vs cached.
#[derive(clap::Args)]
pub struct Bench {
    #[command(flatten)]
    config: RecordingConfigArg,
    /// Recordings to replay as scenarios, answers served from memory (default: an
    /// already-migrated user and a user migrated on this login).
    #[arg(long, value_name = "FILE")]
    recording: Vec<PathBuf>,
    /// Evaluations timed per scenario.
    #[arg(long, default_value_t = 5000)]
    iterations: usize,
    #[command(flatten)]
    json: JsonArg,
    /// Count instructions per evaluation instead of timing (callgrind; repeatable
    /// on a busy machine). Needs valgrind.
    #[arg(long)]
    instructions: bool,
    /// Run this many evaluations of the (one) recording and nothing else: what
    /// `--instructions` runs under valgrind.
    #[arg(long, hide = true)]
    count_only: Option<usize>,
}

impl Bench {
    pub fn execute(self) -> Result<Exit> {
        let config = &self.config.config;
        if let Some(n) = self.count_only {
            let recording = self
                .recording
                .first()
                .context("--count-only needs a --recording")?;
            portcullis::bench::count_only(config, recording, n)?;
            return Ok(Exit::Done);
        }
        let recordings = if self.recording.is_empty() {
            vec![
                PathBuf::from("fixtures/recordings/already-migrated.json"),
                PathBuf::from("fixtures/recordings/single-product-migrated.json"),
            ]
        } else {
            self.recording
        };
        if self.instructions {
            instructions(config, &recordings, self.json.json)?;
            return Ok(Exit::Done);
        }
        let report = portcullis::bench::run(config, &recordings, self.iterations)?;
        if self.json.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print_report(&report);
        }
        let differ = report
            .scenarios
            .iter()
            .filter(|s| !s.verdict_as_recorded)
            .count();
        Ok(Exit::failures_if(differ > 0, || {
            format!("{differ} scenario(s) gave another verdict than their recording's")
        }))
    }
}

fn instructions(config: &Path, recordings: &[PathBuf], json: bool) -> Result<()> {
    let binary = std::env::current_exe().context("cannot find this binary")?;
    let mut report = Vec::new();
    for recording in recordings {
        let per_evaluation =
            portcullis::bench::instructions_per_evaluation(&binary, config, recording)?;
        let scenario = recording
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !json {
            println!("scenario {scenario}: {per_evaluation} instructions per evaluation");
        }
        report.push(serde_json::json!({
            "scenario": scenario,
            "instructions_per_evaluation": per_evaluation,
        }));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

fn print_report(report: &BenchReport) {
    println!(
        "load: cold {:.1} ms, from compile cache {:.1} ms",
        report.load_cold_ms, report.load_cached_ms
    );
    for s in &report.scenarios {
        println!();
        println!(
            "scenario {}{}: {:.0} evaluations/s on {} threads, peak guest memory {} KiB per evaluation",
            s.scenario,
            if s.verdict_as_recorded {
                ""
            } else {
                " (VERDICT DIFFERS FROM THE RECORDING)"
            },
            s.evaluations_per_second,
            s.threads,
            s.peak_memory_kib_per_evaluation
        );
        println!(
            "  {:<22} {:>9} {:>9} {:>9}",
            "", "p50 µs", "p99 µs", "mean µs"
        );
        for rule in &s.rules {
            print_row(&rule.rule, &rule.latency);
        }
        print_row("pipeline", &s.pipeline);
        print_row("pipeline + prepare", &s.pipeline_and_prepare);
    }
}

fn print_row(name: &str, l: &Percentiles) {
    println!(
        "  {:<22} {:>9.1} {:>9.1} {:>9.1}",
        name, l.p50_us, l.p99_us, l.mean_us
    );
}
