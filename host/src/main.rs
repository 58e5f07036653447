//! `portcullis`: check a pipeline, or run a login through it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use portcullis::record::{
    Expectation, RecordedLogin, RecordedResume, Recorder, Recording, Step, TokenChoice,
};
use portcullis::{Decision, Gateway, LoginAttempt, Pipeline, PipelineConfig, Runtime, Verdict};

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
    /// Evaluate login attempts against the configured stores, apply the effects of
    /// each allowed login, and print each verdict as JSON.
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
        /// Evaluate only; write nothing to the stores.
        #[arg(long)]
        dry_run: bool,
        /// After the verdicts, print counts (allowed, migrated, denied, …).
        #[arg(long)]
        summary: bool,
        /// Write a recording of this evaluation (one login) for `replay`.
        #[arg(long)]
        record: Option<PathBuf>,
    },
    /// Resume a redirected login with its token and what the redirect target reported.
    Continue {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        token: String,
        #[arg(long)]
        transaction_id: String,
        /// JSON from the redirect target, e.g. '{"verified": true}'.
        #[arg(long)]
        result: String,
        #[arg(long)]
        reveal_pii: bool,
        /// Append this resume as a step to the recording of the login it resumes.
        #[arg(long)]
        record: Option<PathBuf>,
    },
    /// Create the demo stores named in the config's [state] section, and a batch of
    /// login attempts.
    Seed {
        #[arg(long)]
        config: PathBuf,
        #[arg(long, default_value_t = 1000)]
        users: usize,
        #[arg(long, default_value_t = 200)]
        logins: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Where to write the login attempts (default: `logins/` beside the directory).
        #[arg(long)]
        logins_dir: Option<PathBuf>,
        /// Also this many users with only an old-provider SMS factor (the backfill's
        /// population; the config must set up [mfa]) …
        #[arg(long, default_value_t = 0)]
        sms_users: usize,
        /// … the first this many of them in the `internal` cohort.
        #[arg(long, default_value_t = 0)]
        sms_internal: usize,
    },
    /// Serve the pipeline over HTTP (JSON), with hot reload, metrics and the outbox
    /// dispatcher. SIGHUP reloads; SIGTERM finishes in-flight requests and stops.
    Serve {
        #[arg(long)]
        config: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
    },
    /// The keys that seal phone numbers.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The SMS provider migration: backfill phones from the old provider, revert users,
    /// see where everyone is.
    Mfa {
        #[command(subcommand)]
        command: MfaCommand,
    },
    /// The bulk import beside lazy migration.
    Import {
        #[command(subcommand)]
        command: ImportCommand,
    },
    /// The outbox: deliver pending messages to the products.
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
    },
    /// The audit log of support actions and recovery steps.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The support console, as one agent: a client of `serve`'s admin API. The
    /// agent's own token comes from the environment (`--token-env`).
    Support {
        /// Where `portcullis serve` listens, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        server: String,
        #[arg(long, default_value = "PORTCULLIS_AGENT_TOKEN")]
        token_env: String,
        #[command(subcommand)]
        command: SupportCommand,
    },
    /// Run recordings against the current rules; exit 1 if any verdict changed.
    Replay {
        /// Recording files or directories of them.
        #[arg(required = true)]
        recordings: Vec<PathBuf>,
        /// The pipeline recordings run in unless they name their own.
        #[arg(long, default_value = "fixtures/pipeline.toml")]
        config: PathBuf,
    },
    /// Measure a pipeline: latency p50/p99 per scenario and per rule, evaluations
    /// per second on every core, peak memory, and load time cold vs cached.
    Bench {
        #[arg(long, default_value = "fixtures/pipeline.toml")]
        config: PathBuf,
        /// Recordings to replay as scenarios, answers served from memory (default: an
        /// already-migrated user and a user migrated on this login).
        #[arg(long)]
        recording: Vec<PathBuf>,
        #[arg(long, default_value_t = 5000)]
        iterations: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Count instructions per evaluation instead of timing (callgrind; repeatable
        /// on a busy machine). Needs valgrind.
        #[arg(long)]
        instructions: bool,
        /// Run this many evaluations of the (one) recording and nothing else: what
        /// `--instructions` runs under valgrind.
        #[arg(long, hide = true)]
        count_only: Option<usize>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Re-seal every stored phone number with the ring's current (first) key, in
    /// chunks; safe to stop and run again.
    Rotate {
        #[arg(long)]
        config: PathBuf,
        #[arg(long, default_value_t = 500)]
        chunk: usize,
        /// Also write the summary as JSON to this file.
        #[arg(long)]
        report: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum MfaCommand {
    /// Export old-provider users' phones (throttled, resumable, quota-guarded) and
    /// store them sealed; their next login goes through the new provider.
    Backfill {
        #[arg(long)]
        config: PathBuf,
        /// Only this cohort (e.g. `internal` for the pilot).
        #[arg(long)]
        cohort: Option<String>,
        /// Take up at most this many users.
        #[arg(long)]
        limit: Option<u64>,
        #[arg(long, default_value_t = 1000)]
        chunk: usize,
        /// Export calls per second (0: unthrottled).
        #[arg(long, default_value_t = 5)]
        rate: u32,
        /// List who would be exported; no call, no write.
        #[arg(long)]
        dry_run: bool,
        /// Take up users that failed or were skipped in earlier runs.
        #[arg(long)]
        retry_failed: bool,
        /// How long a chunk is held before another run may take it up.
        #[arg(long, default_value_t = 600)]
        lease_seconds: u64,
        /// Also write the summary as JSON to this file.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Fault injection (tests): abort right after this many export answers.
        #[arg(long, hide = true)]
        abort_after_exports: Option<u64>,
    },
    /// Put a user (or a cohort) back on the old provider; audited.
    Revert {
        #[arg(long)]
        config: PathBuf,
        #[arg(long, conflicts_with = "cohort", required_unless_present = "cohort")]
        user: Option<String>,
        #[arg(long)]
        cohort: Option<String>,
        /// Who does this (the audit trail names them); default: $USER.
        #[arg(long)]
        actor: Option<String>,
    },
    /// Per cohort: SMS factors, at the new provider, exported, pending, failing,
    /// reverted; and how many still depend on the old provider.
    Status {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ImportCommand {
    /// Every legacy user the directory does not have yet, from all products, into
    /// Auth0 user-import JSON files (and a manifest) in a new directory.
    Export {
        #[arg(long)]
        config: PathBuf,
        /// A new or empty directory for the files.
        #[arg(long)]
        out: PathBuf,
        /// The most a file may hold, in KB (Auth0 takes 500).
        #[arg(long, default_value_t = 500)]
        max_file_kb: usize,
        /// Only accounts created at or after this time (ms since the epoch): for
        /// incremental runs.
        #[arg(long, default_value_t = 0)]
        since: i64,
        /// Accounts read per query.
        #[arg(long, default_value_t = 1000)]
        page: usize,
        /// Also write the report as JSON to this file.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Submit an export's files to an Auth0-compatible users-imports API (`serve`'s,
    /// or a tenant's), two jobs at a time, following each to its end. Resumable: each
    /// file's state is kept in the directory. The API token is read from
    /// PORTCULLIS_IMPORT_TOKEN or --token-file.
    Run {
        #[arg(long)]
        config: PathBuf,
        /// The export's directory (with its manifest.json).
        #[arg(long)]
        dir: PathBuf,
        /// The API's base URL, e.g. http://127.0.0.1:8080 or https://TENANT.auth0.com.
        #[arg(long)]
        target: String,
        #[arg(long)]
        token_file: Option<PathBuf>,
        #[arg(long, default_value = "con_portcullis")]
        connection_id: String,
        /// Merge into users that exist instead of reporting them as duplicates.
        #[arg(long)]
        upsert: bool,
        /// Jobs at once (Auth0 allows 2).
        #[arg(long, default_value_t = 2)]
        max_jobs: usize,
        /// Submissions per file before it is given up.
        #[arg(long, default_value_t = 3)]
        max_attempts: u32,
        /// First wait between polls, in ms (it doubles up to 10 s while nothing changes).
        #[arg(long, default_value_t = 500)]
        poll_ms: u64,
        /// Wait before a failed file is submitted again, in ms (times its attempts).
        #[arg(long, default_value_t = 60_000)]
        retry_after_ms: u64,
        /// List the files that would be submitted; no call, no write.
        #[arg(long)]
        dry_run: bool,
        /// Also write the report as JSON to this file.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Fault injection (tests): exit after this many accepted submissions, before
        /// their job ids are written.
        #[arg(long, hide = true)]
        abort_after_submissions: Option<u32>,
    },
    /// Where the migration stands: legacy people with and without a directory user,
    /// product rows with and without their unified id (and why).
    Verify {
        #[arg(long)]
        config: PathBuf,
    },
    /// Write each directory user's id into every product row linked to them (in
    /// chunks, throttled; a rerun changes nothing). `--pregenerate`, before the
    /// migration: ids derived from the email for people in several products.
    BackfillIds {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        pregenerate: bool,
        #[arg(long, default_value_t = 1000)]
        chunk: usize,
        /// Rows written per second (0: unthrottled).
        #[arg(long, default_value_t = 0)]
        rate: u32,
        /// Add the unified_id column to product tables that lack it.
        #[arg(long)]
        add_column: bool,
        /// Also write the report as JSON to this file.
        #[arg(long)]
        report: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the chain; exit 1 at the first edited, missing or inserted row, or when
    /// it no longer passes through a checkpoint of `[audit] checkpoint_file` or
    /// `--expect-head` (a `SEQ:HASH` head kept from an earlier run).
    Verify {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        expect_head: Option<String>,
        /// Publish the verified head as a checkpoint (the file and the outbox).
        #[arg(long)]
        checkpoint: bool,
    },
}

#[derive(Subcommand)]
enum SupportCommand {
    /// A user by email: masked data, factors, logins, recoveries, requests, audit.
    Lookup { email: String },
    /// Ask for a dangerous action; a second agent must approve it.
    Request {
        /// remove-factor, complete-recovery or change-email
        action: String,
        #[arg(long)]
        user: String,
        /// For remove-factor.
        #[arg(long)]
        factor: Option<String>,
        /// For change-email.
        #[arg(long)]
        email: Option<String>,
        /// An identity-verification reference, a ticket.
        #[arg(long)]
        evidence: String,
        #[arg(long)]
        reason: String,
        /// Why the waiting period may be skipped (both agents must give one).
        #[arg(long)]
        skip_wait_reason: Option<String>,
    },
    /// Approve another agent's request.
    Approve {
        id: String,
        #[arg(long)]
        evidence: String,
        #[arg(long)]
        skip_wait_reason: Option<String>,
    },
    /// Carry out an approved request once its waiting period is over.
    Execute { id: String },
    /// Withdraw a request.
    Cancel {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Unlink a legacy account from a user.
    Unlink {
        #[arg(long)]
        user: String,
        #[arg(long)]
        product: String,
        #[arg(long)]
        legacy_id: String,
        #[arg(long)]
        reason: String,
    },
    /// Make the user reset their password at the next sign-in.
    ResetPassword {
        #[arg(long)]
        user: String,
        #[arg(long)]
        reason: String,
    },
    /// Put the user's SMS factor back on the old provider.
    RevertMfa {
        #[arg(long)]
        user: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
enum OutboxCommand {
    /// Deliver messages until stopped (SIGTERM or Ctrl-C).
    Run {
        #[arg(long)]
        config: PathBuf,
        /// Stop once nothing is pending or being delivered.
        #[arg(long)]
        until_empty: bool,
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
            dry_run,
            summary,
            record,
        } => run(
            &config,
            &login,
            &RunOptions {
                reveal_pii,
                compact,
                dry_run,
                summary,
                record,
            },
        ),
        Command::Continue {
            config,
            token,
            transaction_id,
            result,
            reveal_pii,
            record,
        } => resume(
            &config,
            &token,
            &transaction_id,
            &result,
            reveal_pii,
            record.as_deref(),
        ),
        Command::Seed {
            config,
            users,
            logins,
            seed,
            logins_dir,
            sms_users,
            sms_internal,
        } => seed_stores(
            &config,
            users,
            logins,
            seed,
            logins_dir,
            (sms_users, sms_internal),
        ),
        Command::Replay { recordings, config } => replay(&recordings, &config),
        Command::Audit {
            command:
                AuditCommand::Verify {
                    config,
                    expect_head,
                    checkpoint,
                },
        } => audit_verify(&config, expect_head.as_deref(), checkpoint),
        Command::Support {
            server,
            token_env,
            command,
        } => support(&server, &token_env, command),
        Command::Serve { config, listen } => serve(&config, listen),
        Command::Keys {
            command:
                KeysCommand::Rotate {
                    config,
                    chunk,
                    report,
                },
        } => keys_rotate(&config, chunk, report.as_deref()),
        Command::Mfa { command } => mfa(command),
        Command::Import { command } => import(command),
        Command::Outbox {
            command:
                OutboxCommand::Run {
                    config,
                    until_empty,
                },
        } => outbox_run(&config, until_empty),
        Command::Bench {
            config,
            recording,
            iterations,
            json,
            instructions,
            count_only,
        } => match count_only {
            Some(n) => recording
                .first()
                .context("--count-only needs a --recording")
                .and_then(|r| Ok(portcullis::bench::count_only(&config, r, n)?)),
            None if instructions => bench_instructions(&config, &recording, json),
            None => bench(&config, &recording, iterations, json),
        },
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
            "{}. {} ({}) deadline {} ms, memory {} MiB, on_error {:?}, {} component, contract {}{}",
            position + 1,
            s.name,
            s.component.display(),
            s.deadline_ms,
            s.memory_mb,
            s.on_error,
            if rule.resumable { "resumable" } else { "plain" },
            rule.contract_version(),
            match rule.source {
                portcullis::CompileSource::Cache => " (from compile cache)",
                portcullis::CompileSource::Compiled => "",
            }
        );
        if let Some(condition) = s.only_when {
            println!("   only when: {condition:?} (skipped for other logins)");
        }
        println!(
            "   grants:  {}",
            if grants.is_empty() {
                "(none)".into()
            } else {
                grants.join(", ")
            }
        );
        let effects: Vec<&str> = s.effects.iter().map(|e| e.name()).collect();
        println!(
            "   effects: {}{}",
            if effects.is_empty() {
                "(none)".into()
            } else {
                effects.join(", ")
            },
            if s.protected_keys.is_empty() {
                String::new()
            } else {
                format!("; protected keys: {}", s.protected_keys.join(", "))
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
    // Whether the old SMS provider can be retired yet.
    let loaded = PipelineConfig::load(config)?;
    if loaded.mfa.legacy_sms.is_some() && loaded.state.is_some() {
        let depending = directory_of(&loaded)?.factors_depending_on_legacy()?;
        if depending > 0 {
            eprintln!(
                "warning: {depending} active SMS factors still depend on the old provider \
                 (no phone on file, or reverted): it cannot be retired yet"
            );
        } else {
            println!("the old SMS provider is no longer needed: no active factor depends on it");
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

struct RunOptions {
    reveal_pii: bool,
    compact: bool,
    dry_run: bool,
    summary: bool,
    record: Option<PathBuf>,
}

fn open_gateway(config_path: &Path) -> Result<Gateway> {
    let config = PipelineConfig::load(config_path)?;
    let runtime = Runtime::new(&config.engine)?;
    Ok(Gateway::open(&config, &runtime)?)
}

#[derive(Default)]
struct Summary {
    evaluated: usize,
    allowed: usize,
    migrated: usize,
    denied: usize,
    redirected: usize,
    challenged: usize,
    /// Second-factor codes sent, by provider.
    codes_via: std::collections::BTreeMap<&'static str, usize>,
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
}

fn run(config: &Path, logins: &[PathBuf], options: &RunOptions) -> Result<()> {
    let files = login_files(logins)?;
    anyhow::ensure!(
        options.record.is_none() || files.len() == 1,
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
    let mut gateway = open_gateway(config)?;
    if options.dry_run {
        gateway = gateway.without_applying();
    }
    let recorder = options
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
        print_verdict(&verdict, options.reveal_pii, options.compact)?;
        if n + 1 < attempts.len() {
            gateway.pipeline().prepare();
        }
        summary.count(&verdict);
        last = Some(Expectation::of(&verdict));
    }
    if let (Some(path), Some(recorder), Some(attempt)) =
        (&options.record, &recorder, attempts.first())
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
            portcullis::record::to_json(&recording, options.reveal_pii),
        )
        .with_context(|| format!("cannot write recording {}", path.display()))?;
        eprintln!("recorded {}", path.display());
    }
    if options.summary {
        let s = &summary;
        println!(
            "summary: {} logins: {} allowed ({} migrated on this login), {} denied, {} redirected, {} challenged{}; {} with rule faults",
            s.evaluated,
            s.allowed,
            s.migrated,
            s.denied,
            s.redirected,
            s.challenged,
            if s.codes_via.is_empty() {
                String::new()
            } else {
                format!(
                    " (SMS codes sent via {})",
                    s.codes_via
                        .iter()
                        .map(|(via, n)| format!("{via} {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            s.with_faults
        );
    }
    Ok(())
}

fn resume(
    config: &Path,
    token: &str,
    transaction_id: &str,
    result: &str,
    reveal_pii: bool,
    record: Option<&Path>,
) -> Result<()> {
    let result_json: serde_json::Value =
        serde_json::from_str(result).context("--result is not JSON")?;
    let mut existing = match record {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!("cannot read recording {} to append to", path.display())
            })?;
            Some(
                serde_json::from_str::<Recording>(&text)
                    .with_context(|| format!("{} is not a recording", path.display()))?,
            )
        }
        None => None,
    };
    let mut gateway = open_gateway(config)?;
    let recorder = Recorder::new(gateway.services().clone());
    if existing.is_some() {
        gateway = gateway.with_services(recorder.services());
    }
    // The host's clock decides expiry; the recording keeps the time it read.
    let now_ms = gateway.clock().now_ms();
    let mut enrolment = None;
    let expectation = match gateway.resume(token, transaction_id, &result_json.to_string()) {
        Ok(verdict) => {
            print_verdict(&verdict, reveal_pii, false)?;
            enrolment = verdict.enrolment.clone();
            Expectation::of(&verdict)
        }
        Err(portcullis::GatewayError::Refused(refusal)) if existing.is_some() => {
            eprintln!("portcullis: resume refused: {refusal}");
            Expectation::refused(refusal)
        }
        Err(other) => return Err(other.into()),
    };
    if let (Some(path), Some(recording)) = (record, existing.as_mut()) {
        recording.steps.push(Step {
            login: None,
            resume: Some(RecordedResume {
                token: TokenChoice::Issued,
                // A challenge's code is the user's secret: a recording keeps its place.
                result: portcullis::redact::without_codes(result_json),
                time_ms: now_ms,
                // What the host's own check of a recovery's enrolment resumed the rule
                // with: the replay has no state to check it again.
                enrolment,
            }),
            calls: recorder.take_calls(),
            expect: expectation,
        });
        std::fs::write(path, portcullis::record::to_json(recording, reveal_pii))
            .with_context(|| format!("cannot write recording {}", path.display()))?;
        eprintln!("appended to {}", path.display());
    }
    Ok(())
}

fn seed_stores(
    config_path: &Path,
    users: usize,
    logins: usize,
    seed: u64,
    logins_dir: Option<PathBuf>,
    (sms_users, sms_internal): (usize, usize),
) -> Result<()> {
    anyhow::ensure!(users > 0, "--users must be at least 1");
    let config = PipelineConfig::load(config_path)?;
    let (state, legacy) = portcullis::seed::open_for_seed(&config)?;
    let logins_dir = match logins_dir {
        Some(dir) => dir,
        None => portcullis::gateway::directory_path(&config)
            .ok()
            .flatten()
            .and_then(|p| p.parent().map(|d| d.join("logins")))
            .context(
                "name --logins-dir (the directory is not an SQLite file to put them beside)",
            )?,
    };
    let started = std::time::Instant::now();
    // A config that sets up SMS providers gets factors for its migrated users.
    let mfa_keys = if config.mfa.legacy_sms.is_some() || config.mfa.verify.is_some() {
        Some(std::sync::Arc::new(
            config.mfa.key_ring().context("[mfa] keys")?,
        ))
    } else {
        None
    };
    let options = portcullis::seed::SeedOptions {
        users,
        logins,
        seed,
        mfa_keys,
    };
    let report = portcullis::seed::seed(state.as_ref(), &legacy, &logins_dir, &options, |line| {
        eprintln!("seed: {line}")
    })?;
    if sms_users > 0 {
        anyhow::ensure!(
            options.mfa_keys.is_some(),
            "--sms-users needs a config with [mfa] providers"
        );
        portcullis::seed::seed_sms_users(
            state.as_ref(),
            report.legacy_sms_users,
            sms_users,
            sms_internal,
            |n| eprintln!("seed: {n} old-provider SMS users"),
        )?;
        println!(
            "seeded {sms_users} users with only an old-provider SMS factor (authy-{} to authy-{}; {} internal)",
            report.legacy_sms_users,
            report.legacy_sms_users + sms_users - 1,
            sms_internal.min(sms_users)
        );
    }
    let accounts: Vec<String> = report
        .legacy_accounts
        .iter()
        .map(|(p, n)| format!("{p} {n}"))
        .collect();
    let factors: Vec<String> = report
        .factors
        .iter()
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect();
    println!(
        "seeded {} people: legacy accounts {}; {} directory users{}; {} logins in {} ({:.1} s)",
        report.people,
        accounts.join(", "),
        report.directory_users,
        if factors.is_empty() {
            String::new()
        } else {
            format!(" (SMS factors: {})", factors.join(", "))
        },
        report.logins,
        report.logins_dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn replay(paths: &[PathBuf], config: &Path) -> Result<()> {
    let files = portcullis::replay::recording_files(paths).context("cannot list recordings")?;
    anyhow::ensure!(!files.is_empty(), "no recordings found");
    let mut replay = portcullis::replay::Replay::new(config)?;
    let (mut passed, mut failed) = (0, 0);
    println!(
        "{:<44} {:>4}  {:<34} {:<34} result",
        "recording", "step", "expected", "got"
    );
    for file in &files {
        let result = replay.run(file);
        let name = file
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
        if result.passed() {
            passed += 1
        } else {
            failed += 1
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
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

fn bench_recordings(recordings: &[PathBuf]) -> Vec<PathBuf> {
    if recordings.is_empty() {
        vec![
            PathBuf::from("fixtures/recordings/already-migrated.json"),
            PathBuf::from("fixtures/recordings/single-product-migrated.json"),
        ]
    } else {
        recordings.to_vec()
    }
}

fn bench_instructions(config: &Path, recordings: &[PathBuf], json: bool) -> Result<()> {
    let binary = std::env::current_exe().context("cannot find this binary")?;
    let mut report = Vec::new();
    for recording in bench_recordings(recordings) {
        let per_evaluation =
            portcullis::bench::instructions_per_evaluation(&binary, config, &recording)?;
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

fn bench(config: &Path, recordings: &[PathBuf], iterations: usize, json: bool) -> Result<()> {
    let recordings = bench_recordings(recordings);
    let report = portcullis::bench::run(config, &recordings, iterations)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
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
            let l = &rule.latency;
            println!(
                "  {:<22} {:>9.1} {:>9.1} {:>9.1}",
                rule.rule, l.p50_us, l.p99_us, l.mean_us
            );
        }
        let p = &s.pipeline;
        println!(
            "  {:<22} {:>9.1} {:>9.1} {:>9.1}",
            "pipeline", p.p50_us, p.p99_us, p.mean_us
        );
        let p = &s.pipeline_and_prepare;
        println!(
            "  {:<22} {:>9.1} {:>9.1} {:>9.1}",
            "pipeline + prepare", p.p50_us, p.p99_us, p.mean_us
        );
    }
    Ok(())
}

fn tokio_runtime() -> Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    tokio::runtime::Builder::new_multi_thread()
        // Evaluations and store calls run on blocking threads. Few of them, reused:
        // every thread that ever hashed a password keeps its allocator arena, so an
        // unbounded pool would let resident memory creep up under load.
        .max_blocking_threads(4 * cores)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Large transient buffers (argon2id's 19 MiB per password hash) go straight back to
/// the kernel. By default glibc raises its mmap threshold after the first such free and
/// then keeps them in per-thread arenas, so a busy server's resident memory creeps up
/// with every thread that ever hashed a password.
fn return_large_buffers_to_the_kernel() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before serving starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

fn serve(config: &Path, listen: std::net::SocketAddr) -> Result<()> {
    return_large_buffers_to_the_kernel();
    tokio_runtime()?.block_on(portcullis::server::serve(config, listen, |addr| {
        // The first stdout line says where: with port 0 the caller learns the port.
        println!("listening on {addr}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }))?;
    Ok(())
}

fn keys_rotate(config_path: &Path, chunk: usize, report_path: Option<&Path>) -> Result<()> {
    let config = PipelineConfig::load(config_path)?;
    let settings = config
        .state
        .as_ref()
        .context("the config has no [state] section: there are no stored factors")?;
    let keys = config.mfa.key_ring()?;
    let state = portcullis::state::open_state(&settings.directory, &config.base_dir)?;
    let bar =
        indicatif::ProgressBar::new_spinner().with_style(indicatif::ProgressStyle::with_template(
            "{spinner} {elapsed} re-sealed {pos} phone numbers ({per_sec}) {msg}",
        )?);
    let report = portcullis::jobs::keys::rotate(state.as_ref(), &keys, chunk, |so_far| {
        bar.set_position(so_far.resealed);
        let failed: u64 = so_far.failed.values().sum();
        if failed > 0 {
            bar.set_message(format!("{failed} failed"));
        }
    })?;
    bar.finish_and_clear();
    print_report(&report, report_path)
}

fn directory_of(
    config: &PipelineConfig,
) -> Result<std::sync::Arc<dyn portcullis::state::StateStore>> {
    let settings = config
        .state
        .as_ref()
        .context("the config has no [state] section: there are no stored factors")?;
    Ok(portcullis::state::open_state(
        &settings.directory,
        &config.base_dir,
    )?)
}

/// A job's JSON report: on stdout, and also in `path` when given.
fn print_report(summary: &impl serde::Serialize, path: Option<&Path>) -> Result<()> {
    let json = serde_json::to_string_pretty(summary)?;
    if let Some(path) = path {
        std::fs::write(path, &json).with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!("{json}");
    Ok(())
}

/// The legacy product stores a config names.
fn legacy_of(config: &PipelineConfig) -> Result<portcullis::state::LegacyProducts> {
    let settings = config
        .state
        .as_ref()
        .context("the config has no [state] section: there are no legacy stores")?;
    anyhow::ensure!(
        !settings.legacy.is_empty(),
        "the config's [state.legacy] names no product"
    );
    Ok(portcullis::state::LegacyProducts::open(
        &settings.legacy,
        &config.base_dir,
    )?)
}

fn import(command: ImportCommand) -> Result<()> {
    match command {
        ImportCommand::Export {
            config,
            out,
            max_file_kb,
            since,
            page,
            report,
        } => {
            let config = PipelineConfig::load(&config)?;
            anyhow::ensure!(since >= 0, "--since is a time in ms since the epoch");
            let legacy = legacy_of(&config)?;
            let directory = directory_of(&config)?;
            let mut options = portcullis::jobs::import::export::ExportOptions::new(out);
            options.max_file_bytes = max_file_kb.saturating_mul(1024);
            options.since_ms = since;
            options.page = page;
            // The flags the pipeline's rules read, if it renames them.
            for rule in &config.rules {
                if let Some(flag) = rule.config.get("bulk_flag") {
                    options.bulk_flag = flag.clone();
                }
                if let Some(flag) = rule.config.get("reset_flag") {
                    options.reset_flag = flag.clone();
                }
            }
            let total: u64 = legacy
                .product_names()
                .map(|p| legacy.count_accounts(p, since))
                .sum::<Result<u64, _>>()?;
            let bar = indicatif::ProgressBar::new(total).with_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} accounts, {per_sec}, ETA {eta} {msg}",
                )?,
            );
            let summary = portcullis::jobs::import::export::run(
                &legacy,
                directory.as_ref(),
                &options,
                |p| {
                    bar.set_position(p.accounts_read);
                    bar.set_message(format!(
                        "{} users in {} files, {} problems",
                        p.report.users_exported,
                        p.report.files.len(),
                        p.report.problems.len()
                    ));
                },
            )?;
            bar.finish_and_clear();
            print_report(&summary, report.as_deref())?;
            Ok(())
        }
        ImportCommand::Run {
            config,
            dir,
            target,
            token_file,
            connection_id,
            upsert,
            max_jobs,
            max_attempts,
            poll_ms,
            retry_after_ms,
            dry_run,
            report,
            abort_after_submissions,
        } => {
            let config = PipelineConfig::load(&config)?;
            let state = directory_of(&config)?;
            let token = portcullis::config::secret_from(
                "the import API token",
                token_file.is_none().then_some("PORTCULLIS_IMPORT_TOKEN"),
                token_file.as_deref(),
            )
            .map_err(anyhow::Error::msg)?;
            anyhow::ensure!(
                target.starts_with("http://") || target.starts_with("https://"),
                "--target is an http(s) URL"
            );
            let options = portcullis::jobs::import::run::RunOptions {
                dir,
                target,
                token,
                connection_id,
                upsert,
                max_jobs,
                max_attempts,
                poll: std::time::Duration::from_millis(poll_ms.max(10)),
                max_poll: std::time::Duration::from_secs(10),
                retry_after: std::time::Duration::from_millis(retry_after_ms),
                dry_run,
                abort_after_submissions,
                now_ms: || portcullis::clock::Clock::now_ms(&portcullis::clock::SystemClock),
            };
            let bar =
                indicatif::ProgressBar::new(0).with_style(indicatif::ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} files, {msg} [{elapsed}]",
                )?);
            let summary = portcullis::jobs::import::run::run(state.as_ref(), &options, |p| {
                bar.set_length(p.files as u64);
                bar.set_position(p.files_done as u64);
                bar.set_message(format!(
                    "{} users imported, {} refused",
                    p.inserted, p.errors
                ));
            });
            bar.finish_and_clear();
            let summary = summary?;
            print_report(&summary, report.as_deref())?;
            anyhow::ensure!(
                summary.files_failed.is_empty(),
                "{} file(s) could not be imported (see files_failed)",
                summary.files_failed.len()
            );
            Ok(())
        }
        ImportCommand::Verify { config } => {
            let config = PipelineConfig::load(&config)?;
            let legacy = legacy_of(&config)?;
            let state = directory_of(&config)?;
            let report = portcullis::jobs::import::verify::verify(state.as_ref(), &legacy)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        ImportCommand::BackfillIds {
            config,
            pregenerate,
            chunk,
            rate,
            add_column,
            report,
        } => {
            let config = PipelineConfig::load(&config)?;
            let legacy = legacy_of(&config)?;
            let options = portcullis::jobs::import::backfill_ids::IdOptions {
                chunk,
                rate_per_second: rate,
                add_column,
            };
            let bar = indicatif::ProgressBar::new_spinner().with_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {pos} rows, {per_sec} {msg} [{elapsed}]",
                )?,
            );
            let show = |r: &portcullis::jobs::import::backfill_ids::IdReport| {
                bar.set_position(r.rows_seen);
                bar.set_message(format!(
                    "written {}, repaired {}, conflicts {}",
                    r.written,
                    r.repaired,
                    r.conflicts.len()
                ));
            };
            let summary = if pregenerate {
                portcullis::jobs::import::backfill_ids::pregenerate(&legacy, &options, show)?
            } else {
                let state = directory_of(&config)?;
                portcullis::jobs::import::backfill_ids::backfill(
                    state.as_ref(),
                    &legacy,
                    &options,
                    show,
                )?
            };
            bar.finish_and_clear();
            print_report(&summary, report.as_deref())?;
            Ok(())
        }
    }
}

fn mfa(command: MfaCommand) -> Result<()> {
    match command {
        MfaCommand::Backfill {
            config,
            cohort,
            limit,
            chunk,
            rate,
            dry_run,
            retry_failed,
            lease_seconds,
            report,
            abort_after_exports,
        } => {
            let config = PipelineConfig::load(&config)?;
            let state = directory_of(&config)?;
            let legacy = config.mfa.legacy_sms.as_ref().context(
                "the config has no [mfa.legacy_sms]: there is no old provider to export from",
            )?;
            let export = portcullis::providers::legacy_sms::PhoneExport::new(legacy)
                .map_err(anyhow::Error::msg)?;
            let keys = config.mfa.key_ring()?;
            let policy = portcullis::mfa::phone::PhonePolicy {
                allowed_calling_codes: config.mfa.allowed_calling_codes.clone(),
            };
            let options = portcullis::jobs::backfill::BackfillOptions {
                cohort,
                limit,
                chunk,
                rate_per_second: rate,
                dry_run,
                retry_failed,
                lease_ms: lease_seconds * 1000,
                run_id: format!("run-{}", portcullis::resume::ResumeTokens::new_jti()),
                abort_after_exports,
            };
            // The users left, for the bar's length and ETA (failed and skipped ones
            // included: `--retry-failed` takes them up).
            let clock = portcullis::clock::SystemClock;
            let todo = state.backfill_left(options.cohort.as_deref())?;
            let bar = indicatif::ProgressBar::new(limit.map_or(todo, |l| l.min(todo))).with_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} users, {per_sec}, ETA {eta} {msg}",
                )?,
            );
            let job = portcullis::jobs::backfill::Backfill {
                state: state.as_ref(),
                export: &export,
                keys: &keys,
                policy: &policy,
                clock: &clock,
            };
            let summary = job.run(&options, |so_far| {
                bar.set_position(so_far.taken_up);
                let failed: u64 = so_far.failed.values().sum();
                bar.set_message(format!(
                    "exported {}, quota {}, failed {failed}",
                    so_far.exported,
                    so_far.skipped_by_quota.len()
                ));
            })?;
            bar.finish_and_clear();
            print_report(&summary, report.as_deref())?;
            Ok(())
        }
        MfaCommand::Revert {
            config,
            user,
            cohort,
            actor,
        } => {
            let config = PipelineConfig::load(&config)?;
            let state = directory_of(&config)?;
            let actor = actor
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "unknown".into());
            let now = portcullis::clock::Clock::now_ms(&portcullis::clock::SystemClock);
            let reverted = state.revert_factors(user.as_deref(), cohort.as_deref(), &actor, now)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "reverted": reverted.len(),
                    "factors": reverted,
                    "actor": actor,
                }))?
            );
            Ok(())
        }
        MfaCommand::Status { config, json } => {
            let config = PipelineConfig::load(&config)?;
            let state = directory_of(&config)?;
            let cohorts = state.mfa_status()?;
            let depending = state.factors_depending_on_legacy()?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "cohorts": cohorts,
                        "depending_on_old_provider": depending,
                    }))?
                );
                return Ok(());
            }
            println!(
                "{:<12} {:>8} {:>8} {:>9} {:>8} {:>8} {:>9}",
                "cohort", "factors", "new", "exported", "pending", "failing", "reverted"
            );
            for c in &cohorts {
                println!(
                    "{:<12} {:>8} {:>8} {:>9} {:>8} {:>8} {:>9}",
                    if c.cohort.is_empty() { "-" } else { &c.cohort },
                    c.factors,
                    c.new_provider,
                    c.exported,
                    c.pending,
                    c.failing,
                    c.reverted
                );
            }
            println!("{depending} active factors still depend on the old provider");
            Ok(())
        }
    }
}

fn outbox_run(config_path: &Path, until_empty: bool) -> Result<()> {
    let config = PipelineConfig::load(config_path)?;
    let settings = config
        .state
        .as_ref()
        .context("the config has no [state] section: there is no outbox")?;
    let state = portcullis::state::open_state(&settings.directory, &config.base_dir)?;
    let dispatcher = portcullis::outbox::Dispatcher::new(state, config.outbox.clone())
        .with_phone_keys(phone_keys(&config)?)
        .with_audit_checkpoints(config.audit.checkpoint_file.clone());
    let report = tokio_runtime()?
        .block_on(dispatcher.run(until_empty, portcullis::server::shutdown_signal()))?;
    println!(
        "outbox: {} claimed, {} delivered, {} to retry, {} dead-lettered",
        report.claimed, report.delivered, report.retried, report.dead
    );
    Ok(())
}

/// `portcullis audit verify`: exit 1 unless the chain holds and passes through every
/// checkpoint published and the head expected; with `--checkpoint`, publishes the
/// head it verified.
fn audit_verify(config: &Path, expect_head: Option<&str>, checkpoint: bool) -> Result<()> {
    use portcullis::state::audit::{self, Anchor, Checkpoint};
    let config = PipelineConfig::load(config)?;
    let (state, _) = portcullis::gateway::open_stores_of(&config)?;
    let mut anchors = Vec::new();
    if let Some(path) = &config.audit.checkpoint_file {
        let from = path.display().to_string();
        anchors.extend(
            audit::read_checkpoints(path)
                .map_err(anyhow::Error::msg)?
                .into_iter()
                .map(|checkpoint| Anchor {
                    checkpoint,
                    from: from.clone(),
                }),
        );
    }
    if let Some(head) = expect_head {
        anchors.push(Anchor {
            checkpoint: Checkpoint::parse(head).map_err(anyhow::Error::msg)?,
            from: "--expect-head".into(),
        });
    }
    let report = audit::verify_anchored(state.sql(), &anchors)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if !report.ok {
        std::process::exit(1);
    }
    if checkpoint && report.rows > 0 {
        let head = report.head();
        if config.audit.checkpoint_file.is_none() && !config.audit.checkpoint_endpoint {
            anyhow::bail!(
                "nowhere to publish a checkpoint: set [audit] checkpoint_file or an `audit` endpoint in [outbox.endpoints]"
            );
        }
        if let Some(path) = &config.audit.checkpoint_file {
            audit::write_checkpoint(path, &head)
                .with_context(|| format!("writing a checkpoint to {}", path.display()))?;
        }
        if config.audit.checkpoint_endpoint {
            let at = portcullis::clock::Clock::now_ms(&portcullis::clock::SystemClock);
            portcullis::state::portable::transact(state.sql(), |tx| {
                audit::queue_checkpoint(tx, &head, at)
            })?;
        }
        eprintln!("checkpoint {head} published");
    }
    Ok(())
}

/// `portcullis support …`: one call to the admin API; exit 1 when it refused.
fn support(server: &str, token_env: &str, command: SupportCommand) -> Result<()> {
    use portcullis::server::support_client::{ConsoleCall, send};
    let token =
        std::env::var(token_env).with_context(|| format!("the agent's token: set {token_env}"))?;
    let call = match command {
        SupportCommand::Lookup { email } => ConsoleCall::Lookup { email },
        SupportCommand::Request {
            action,
            user,
            factor,
            email,
            evidence,
            reason,
            skip_wait_reason,
        } => ConsoleCall::Request {
            body: serde_json::json!({
                "action": action, "user_id": user,
                "params": {"factor_id": factor, "email": email},
                "evidence": evidence, "reason": reason, "skip_wait_reason": skip_wait_reason,
            }),
        },
        SupportCommand::Approve {
            id,
            evidence,
            skip_wait_reason,
        } => ConsoleCall::Step {
            id,
            step: "approve",
            body: serde_json::json!({"evidence": evidence, "skip_wait_reason": skip_wait_reason}),
        },
        SupportCommand::Execute { id } => ConsoleCall::Step {
            id,
            step: "execute",
            body: serde_json::json!({}),
        },
        SupportCommand::Cancel { id, reason } => ConsoleCall::Step {
            id,
            step: "cancel",
            body: serde_json::json!({"reason": reason}),
        },
        SupportCommand::Unlink {
            user,
            product,
            legacy_id,
            reason,
        } => ConsoleCall::Act {
            user,
            action: "unlink",
            body: serde_json::json!({"product": product, "legacy_id": legacy_id, "reason": reason}),
        },
        SupportCommand::ResetPassword { user, reason } => ConsoleCall::Act {
            user,
            action: "password-reset",
            body: serde_json::json!({"reason": reason}),
        },
        SupportCommand::RevertMfa { user, reason } => ConsoleCall::Act {
            user,
            action: "mfa-revert",
            body: serde_json::json!({"reason": reason}),
        },
    };
    let (status, answer) = send(server, &token, call).map_err(anyhow::Error::msg)?;
    println!("{}", serde_json::to_string_pretty(&answer)?);
    if !(200..300).contains(&status) {
        eprintln!("refused ({status})");
        std::process::exit(1);
    }
    Ok(())
}

/// The keys that open stored phones, when the config has the new SMS provider.
fn phone_keys(
    config: &PipelineConfig,
) -> Result<Option<std::sync::Arc<portcullis::mfa::sealed::KeyRing>>> {
    match &config.mfa.verify {
        Some(_) => Ok(Some(std::sync::Arc::new(
            config.mfa.key_ring().context("[mfa] keys")?,
        ))),
        None => Ok(None),
    }
}
