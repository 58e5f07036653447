//! `cargo xtask fuzz`: builds the libFuzzer targets in `fuzz/` on stable Rust and runs
//! them from a seed corpus made of the fixtures.
//!
//! cargo-fuzz needs nightly for `-Zsanitizer`; coverage alone needs only LLVM's
//! `sancov-module` pass, which stable rustc runs when asked. The flags (and overflow
//! checks and debug assertions) go through this binary as a rustc wrapper, to the
//! project's own crates only: wasmtime and cranelift are not what is being fuzzed (a
//! panic anywhere still fails a run), and left alone they are the release build's
//! own artifacts, reused. The host is built with its `fuzzing` feature here, which
//! gives it artifacts of its own beside the release build's.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{build_rules, cargo, run, workspace_root};

/// Set in the environment when cargo calls this binary as its rustc wrapper.
pub const WRAPPER_ENV: &str = "PORTCULLIS_XTASK_RUSTC_WRAPPER";

/// The packages whose code is instrumented for coverage. Cargo does not see flags a
/// wrapper adds: after changing these, `cargo clean --release -p portcullis -p
/// portcullis-fuzz` so the next build takes them.
const INSTRUMENTED: &[&str] = &["portcullis", "portcullis-fuzz"];

const TARGETS: &[&str] = &[
    "login_json",
    "pipeline_config",
    "resume_token",
    "outcome",
    "recording",
];

const SANCOV_FLAGS: &[&str] = &[
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "-Cdebug-assertions=yes",
    "-Coverflow-checks=yes",
    "--cfg",
    "fuzzing",
];

/// Runs rustc as cargo asked, adding the coverage flags for the instrumented crates.
pub fn rustc_wrapper() -> Result<()> {
    let mut args = std::env::args_os().skip(1);
    let rustc = args
        .next()
        .context("the rustc wrapper needs rustc's path")?;
    let mut command = Command::new(rustc);
    command.args(args);
    let package = std::env::var("CARGO_PKG_NAME").unwrap_or_default();
    if INSTRUMENTED.contains(&package.as_str()) {
        command.args(SANCOV_FLAGS);
    }
    let status = command.status().context("cannot run rustc")?;
    std::process::exit(status.code().unwrap_or(1));
}

struct Options {
    /// libFuzzer's `-runs`: executions per target.
    runs: Option<u64>,
    /// libFuzzer's `-max_total_time`, seconds per target.
    seconds: u64,
    targets: Vec<String>,
}

fn options(extra: &[String]) -> Result<Options> {
    let mut options = Options {
        runs: None,
        seconds: 30,
        targets: Vec::new(),
    };
    let mut args = extra.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> Result<u64> {
            args.next()
                .with_context(|| format!("{name} needs a number"))?
                .parse()
                .with_context(|| format!("{name} needs a number"))
        };
        match arg.as_str() {
            "--runs" => options.runs = Some(value("--runs")?),
            "--seconds" => options.seconds = value("--seconds")?,
            target if TARGETS.contains(&target) => options.targets.push(target.to_owned()),
            other => bail!(
                "usage: cargo xtask fuzz [--seconds N | --runs N] [TARGET...]; \
                 {other:?} is not one of {TARGETS:?}"
            ),
        }
    }
    if options.targets.is_empty() {
        options.targets = TARGETS.iter().map(|t| t.to_string()).collect();
    }
    Ok(options)
}

pub fn fuzz(extra: &[String]) -> Result<()> {
    let options = options(extra)?;
    // The recording target replays through the fixtures' pipeline and its rules.
    build_rules()?;
    let mut build = cargo();
    build
        .args(["build", "--release", "-p", "portcullis-fuzz"])
        .env("RUSTC_WRAPPER", std::env::current_exe()?)
        .env(WRAPPER_ENV, "1");
    run(build)?;

    let root = workspace_root();
    let mut report = Vec::new();
    for target in &options.targets {
        let seeds = seed_corpus(&root, target)?;
        let corpus = root.join("target/fuzz-corpus").join(target);
        let artifacts = root.join("target/fuzz-artifacts").join(target);
        std::fs::create_dir_all(&corpus)?;
        std::fs::create_dir_all(&artifacts)?;
        let mut fuzzer = Command::new(root.join("target/release").join(target));
        fuzzer.current_dir(&root).arg(&corpus).arg(&seeds).args([
            "-timeout=10",
            "-rss_limit_mb=4096",
            "-print_final_stats=1",
        ]);
        fuzzer.arg(format!("-artifact_prefix={}/", artifacts.display()));
        match options.runs {
            Some(runs) => fuzzer.arg(format!("-runs={runs}")),
            None => fuzzer.arg(format!("-max_total_time={}", options.seconds)),
        };
        eprintln!("xtask: fuzzing {target}");
        let started = std::time::Instant::now();
        let output = fuzzer
            .stderr(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start the {target} fuzzer"))?
            .wait_with_output()?;
        let log = String::from_utf8_lossy(&output.stderr);
        let log_file = artifacts.join("last-run.log");
        std::fs::write(&log_file, log.as_bytes())?;
        if !output.status.success() {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
            bail!(
                "the {target} fuzzer found a failure ({}); its input is under {} and the \
                 whole log in {}",
                output.status,
                artifacts.display(),
                log_file.display()
            );
        }
        let executions = stat(&log, "stat::number_of_executed_units").unwrap_or(0);
        let seconds = started.elapsed().as_secs_f64();
        eprintln!(
            "xtask: {target}: {executions} executions in {seconds:.0} s, no failure \
             (coverage: {})",
            log.lines()
                .rev()
                .find(|l| l.contains(" cov: "))
                .and_then(|l| l.split(" cov: ").nth(1))
                .and_then(|l| l.split_whitespace().next())
                .unwrap_or("?")
        );
        report.push(serde_json::json!({
            "target": target,
            "executions": executions,
            "seconds": (seconds * 10.0).round() / 10.0,
            "failures": 0,
            "corpus_files": std::fs::read_dir(&corpus)?.count(),
        }));
    }
    let report_path = root.join("target/fuzz-report.json");
    std::fs::write(&report_path, serde_json::to_string_pretty(&report)? + "\n")?;
    eprintln!("xtask: report in {}", report_path.display());
    Ok(())
}

fn stat(log: &str, name: &str) -> Option<u64> {
    log.lines().find_map(|l| {
        l.strip_prefix(name)?
            .trim_start_matches(':')
            .trim()
            .parse()
            .ok()
    })
}

/// The seed corpus of a target: its committed seeds under `fuzz/seeds`, plus the
/// fixtures a target reads (pipelines for the config, recordings for replays).
fn seed_corpus(root: &Path, target: &str) -> Result<PathBuf> {
    let seeds = root.join("target/fuzz-seeds").join(target);
    let _ = std::fs::remove_dir_all(&seeds);
    std::fs::create_dir_all(&seeds)?;
    let mut sources = vec![root.join("fuzz/seeds").join(target)];
    match target {
        "pipeline_config" => sources.push(root.join("fixtures")),
        "recording" => sources.push(root.join("fixtures/recordings")),
        _ => {}
    }
    for source in sources.iter().filter(|s| s.is_dir()) {
        for entry in std::fs::read_dir(source)? {
            let path = entry?.path();
            let wanted = match target {
                "pipeline_config" => path.extension().is_some_and(|e| e == "toml"),
                "recording" => path.extension().is_some_and(|e| e == "json"),
                _ => path.is_file(),
            };
            if wanted && let Some(name) = path.file_name() {
                std::fs::copy(&path, seeds.join(name))?;
            }
        }
    }
    Ok(seeds)
}
