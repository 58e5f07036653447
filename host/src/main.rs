//! `portcullis`: check a pipeline, or run a login through it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use portcullis::{LoginAttempt, Pipeline, Services, Verdict};

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Login rules as sandboxed WebAssembly components"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load and validate a pipeline; print each rule with its imports and grants.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Evaluate login attempts and print each verdict as JSON.
    Run {
        #[arg(long)]
        config: PathBuf,
        /// A login JSON file, or a directory of them (evaluated in name order).
        #[arg(long, required = true)]
        login: Vec<PathBuf>,
        /// Print emails and phone numbers in full (they are redacted by default).
        #[arg(long)]
        reveal_pii: bool,
        /// One verdict per line instead of pretty-printed JSON.
        #[arg(long)]
        compact: bool,
    },
    /// Measure a pipeline: per-rule latency p50/p99, and load time cold vs cached.
    Bench {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        login: PathBuf,
        #[arg(long, default_value_t = 2000)]
        iterations: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PORTCULLIS_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Check { config } => check(&config),
        Command::Run {
            config,
            login,
            reveal_pii,
            compact,
        } => run(&config, &login, reveal_pii, compact),
        Command::Bench {
            config,
            login,
            iterations,
            json,
        } => bench(&config, &login, iterations, json),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line that names what is wrong; bad input is exit 2.
            let message = format!("{error:#}");
            eprintln!(
                "portcullis: {}",
                message.split_whitespace().collect::<Vec<_>>().join(" ")
            );
            ExitCode::from(2)
        }
    }
}

fn check(config: &Path) -> Result<()> {
    let pipeline = Pipeline::load(config)?;
    for (position, rule) in pipeline.rules().iter().enumerate() {
        let s = &rule.settings;
        let grants: Vec<String> = s.grants.iter().map(|g| g.to_string()).collect();
        println!(
            "{}. {} ({}) deadline {} ms, memory {} MiB, on_error {:?}, {} component{}",
            position + 1,
            s.name,
            s.component.display(),
            s.deadline_ms,
            s.memory_mb,
            s.on_error,
            if rule.resumable { "resumable" } else { "plain" },
            match rule.source {
                portcullis::CompileSource::Cache => " (from compile cache)",
                portcullis::CompileSource::Compiled => "",
            }
        );
        println!(
            "   grants:  {}",
            if grants.is_empty() {
                "(none)".into()
            } else {
                grants.join(", ")
            }
        );
        for import in &rule.imports {
            let note = import
                .capability
                .map(|c| format!("  [capability: {c}]"))
                .unwrap_or_default();
            println!("   imports: {}{note}", import.name);
        }
    }
    println!("ok: {} rule(s)", pipeline.rules().len());
    Ok(())
}

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

fn run(config: &Path, logins: &[PathBuf], reveal_pii: bool, compact: bool) -> Result<()> {
    let files = login_files(logins)?;
    // Read every login before running any, so bad input fails before any output.
    let attempts = files
        .iter()
        .map(|file| {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read login {}", file.display()))?;
            LoginAttempt::from_json(&text).with_context(|| format!("login {}", file.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let pipeline = Pipeline::load(config)?;
    let services = Services::none();
    for attempt in &attempts {
        let verdict = pipeline.evaluate(attempt, &services);
        print_verdict(&verdict, reveal_pii, compact)?;
    }
    Ok(())
}

fn print_verdict(verdict: &Verdict, reveal_pii: bool, compact: bool) -> Result<()> {
    let mut json = serde_json::to_value(verdict)?;
    if !reveal_pii {
        portcullis::redact::redact_json(&mut json);
    }
    let text = if compact {
        serde_json::to_string(&json)?
    } else {
        serde_json::to_string_pretty(&json)?
    };
    println!("{text}");
    Ok(())
}

fn bench(config: &Path, login: &Path, iterations: usize, json: bool) -> Result<()> {
    let text = std::fs::read_to_string(login)
        .with_context(|| format!("cannot read login {}", login.display()))?;
    let attempt =
        LoginAttempt::from_json(&text).with_context(|| format!("login {}", login.display()))?;
    let report = portcullis::bench::run(config, &attempt, iterations)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "load: cold {:.1} ms, from compile cache {:.1} ms",
        report.load_cold_ms, report.load_cached_ms
    );
    println!(
        "{:<24} {:>10} {:>10} {:>10}",
        "rule", "p50 µs", "p99 µs", "mean µs"
    );
    for rule in &report.rules {
        let l = &rule.latency;
        println!(
            "{:<24} {:>10.1} {:>10.1} {:>10.1}",
            rule.rule, l.p50_us, l.p99_us, l.mean_us
        );
    }
    let p = &report.pipeline;
    println!(
        "{:<24} {:>10.1} {:>10.1} {:>10.1}",
        "(pipeline)", p.p50_us, p.p99_us, p.mean_us
    );
    println!("{} evaluations", report.iterations);
    Ok(())
}
