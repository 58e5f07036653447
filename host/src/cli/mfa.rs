//! `portcullis mfa`: the SMS provider migration.

use anyhow::{Context, Result};

use super::options::{ConfigArg, JsonArg, ReportArg};
use super::stores::directory_of;
use super::{Exit, progress};

/// The SMS provider migration: backfill phones from the old provider, revert users,
/// see where everyone is.
#[derive(clap::Args)]
pub struct Mfa {
    #[command(subcommand)]
    command: MfaCommand,
}

#[derive(clap::Subcommand)]
enum MfaCommand {
    Backfill(Backfill),
    Revert(Revert),
    Status(Status),
}

impl Mfa {
    pub fn execute(self) -> Result<Exit> {
        match self.command {
            MfaCommand::Backfill(c) => c.execute(),
            MfaCommand::Revert(c) => c.execute(),
            MfaCommand::Status(c) => c.execute(),
        }
    }
}

/// Export old-provider users' phones (throttled, resumable, quota-guarded) and
/// store them sealed; their next login goes through the new provider.
#[derive(clap::Args)]
pub struct Backfill {
    #[command(flatten)]
    config: ConfigArg,
    /// Only this cohort (e.g. `internal` for the pilot).
    #[arg(long)]
    cohort: Option<String>,
    /// Take up at most this many users.
    #[arg(long)]
    limit: Option<u64>,
    /// Users taken up (and leased) at a time.
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
    #[command(flatten)]
    report: ReportArg,
    /// Fault injection (tests): abort right after this many export answers.
    #[arg(long, hide = true)]
    abort_after_exports: Option<u64>,
}

impl Backfill {
    pub fn execute(self) -> Result<Exit> {
        let config = self.config.load()?;
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
        let options = portcullis::jobs::phone_export::BackfillOptions {
            cohort: self.cohort,
            limit: self.limit,
            chunk: self.chunk,
            rate_per_second: self.rate,
            dry_run: self.dry_run,
            retry_failed: self.retry_failed,
            lease_ms: self.lease_seconds * 1000,
            run_id: format!("run-{}", portcullis::model::random_id()),
            abort_after_exports: self.abort_after_exports,
        };
        // The users left, for the bar's length and ETA (failed and skipped ones
        // included: `--retry-failed` takes them up).
        let clock = portcullis::flows::clock::SystemClock;
        let todo = state.backfill_left(options.cohort.as_deref())?;
        let bar = progress::users(self.limit.map_or(todo, |l| l.min(todo)))?;
        let job = portcullis::jobs::phone_export::Backfill {
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
        self.report.print(&summary)?;
        // Not this run's to take: say so, or an empty report reads as "nothing left".
        if let Some(until) = summary.held_until_ms {
            eprintln!(
                "portcullis: {} users are held by another run (one still going, or one that \
                 was stopped) until {}; run again after that (--lease-seconds sets how long a \
                 claim lasts)",
                summary.held_by_other_runs,
                portcullis::error::utc_time(until)
            );
        }
        // Users at their export quota were skipped by design and are listed: not a
        // failure of this run.
        let failed: u64 = summary.failed.values().sum();
        Ok(Exit::failures_if(failed > 0, || {
            format!(
                "{failed} of {} users failed (see failures; --retry-failed takes them up again)",
                summary.taken_up
            )
        }))
    }
}

/// Put a user (or a cohort) back on the old provider; audited.
#[derive(clap::Args)]
pub struct Revert {
    #[command(flatten)]
    config: ConfigArg,
    /// The directory user to revert.
    #[arg(long, conflicts_with = "cohort", required_unless_present = "cohort")]
    user: Option<String>,
    /// Every user of this cohort.
    #[arg(long)]
    cohort: Option<String>,
    /// Who does this (the audit trail names them); default: $USER.
    #[arg(long)]
    actor: Option<String>,
    #[command(flatten)]
    _json: JsonArg,
}

impl Revert {
    pub fn execute(self) -> Result<Exit> {
        let config = self.config.load()?;
        let state = directory_of(&config)?;
        let actor = self
            .actor
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "unknown".into());
        // Someone the directory does not know is bad input, not "nothing to do".
        if let Some(user) = &self.user {
            anyhow::ensure!(
                !state.factors_of(user)?.is_empty(),
                "no user {user:?} with a second factor in the directory"
            );
        }
        if let Some(cohort) = &self.cohort {
            anyhow::ensure!(
                state.mfa_status()?.iter().any(|c| &c.cohort == cohort),
                "no cohort {cohort:?} among the SMS factors"
            );
        }
        let now = portcullis::flows::clock::Clock::now_ms(&portcullis::flows::clock::SystemClock);
        let reverted =
            state.revert_factors(self.user.as_deref(), self.cohort.as_deref(), &actor, now)?;
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "reverted": reverted.len(),
                "factors": reverted,
                "actor": actor,
            }))?
        );
        Ok(Exit::failures_if(reverted.is_empty(), || {
            "nothing reverted: no active old-provider SMS factor left to revert".into()
        }))
    }
}

/// Per cohort: SMS factors, at the new provider, exported, pending, failing,
/// reverted; and how many still depend on the old provider.
#[derive(clap::Args)]
pub struct Status {
    #[command(flatten)]
    config: ConfigArg,
    #[command(flatten)]
    json: JsonArg,
}

impl Status {
    pub fn execute(self) -> Result<Exit> {
        let config = self.config.load()?;
        let state = directory_of(&config)?;
        let cohorts = state.mfa_status()?;
        let depending = state.factors_depending_on_legacy()?;
        if self.json.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "cohorts": cohorts,
                    "depending_on_old_provider": depending,
                }))?
            );
            return Ok(Exit::Done);
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
        Ok(Exit::Done)
    }
}
