//! `portcullis import`: the bulk import beside lazy migration.

use std::path::PathBuf;

use anyhow::Result;
use portcullis::jobs::import::{backfill_ids, directory_export, export, run, verify};

use super::options::{ConfigArg, JsonArg, ReportArg, TokenArgs};
use super::stores::{directory_of, legacy_of};
use super::{Exit, progress};

/// The bulk import beside lazy migration.
#[derive(clap::Args)]
pub struct Import {
    #[command(subcommand)]
    command: ImportCommand,
}

#[derive(clap::Subcommand)]
enum ImportCommand {
    Export(Export),
    Run(Run),
    Verify(Verify),
    BackfillIds(BackfillIds),
}

impl Import {
    pub fn execute(self) -> Result<Exit> {
        match self.command {
            ImportCommand::Export(c) => c.execute(),
            ImportCommand::Run(c) => c.execute(),
            ImportCommand::Verify(c) => c.execute(),
            ImportCommand::BackfillIds(c) => c.execute(),
        }
    }
}

/// Every legacy user the directory does not have yet, from all products, into
/// Auth0 user-import JSON files (and a manifest) in a new directory. With
/// `--from-directory`: the directory's own users, their second factors' phone numbers
/// included. The files are as sensitive as the database (mode 0600).
#[derive(clap::Args)]
pub struct Export {
    #[command(flatten)]
    config: ConfigArg,
    /// Export the directory's users (with their SMS factors' phones, unsealed with the
    /// `[mfa]` keys) instead of the legacy users it lacks: to move them to another
    /// directory.
    #[arg(long)]
    from_directory: bool,
    /// A new or empty directory for the files.
    #[arg(long, value_name = "DIR")]
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
    #[command(flatten)]
    report: ReportArg,
}

impl Export {
    pub fn execute(self) -> Result<Exit> {
        let config = self.config.load()?;
        anyhow::ensure!(self.since >= 0, "--since is a time in ms since the epoch");
        let directory = directory_of(&config)?;
        let mut options = export::ExportOptions::new(self.out.clone());
        options.max_file_bytes = self.max_file_kb.saturating_mul(1024);
        options.since_ms = self.since;
        options.page = self.page;
        // The flags the pipeline's rules read, if it renames them.
        for rule in &config.rules {
            if let Some(flag) = rule.config.get("bulk_flag") {
                options.bulk_flag = flag.clone();
            }
            if let Some(flag) = rule.config.get("reset_flag") {
                options.reset_flag = flag.clone();
            }
        }
        if self.from_directory {
            return self.export_directory(&config, directory.as_ref(), &options);
        }
        let legacy = legacy_of(&config)?;
        let total: u64 = legacy
            .product_names()
            .map(|p| legacy.count_accounts(p, self.since))
            .sum::<Result<u64, _>>()?;
        let bar = progress::accounts(total)?;
        let summary = export::run(&legacy, directory.as_ref(), &options, |p| {
            bar.set_position(p.accounts_read);
            bar.set_message(format!(
                "{} users in {} files, {} problems",
                p.report.users_exported,
                p.report.files.len(),
                p.report.problems.len()
            ));
        })?;
        bar.finish_and_clear();
        self.report.print(&summary)?;
        Ok(Exit::Done)
    }
}

impl Export {
    fn export_directory(
        &self,
        config: &portcullis::PipelineConfig,
        directory: &dyn portcullis::state::StateStore,
        options: &export::ExportOptions,
    ) -> Result<Exit> {
        let keys = if config.mfa.keys_env.is_some() || config.mfa.keys_file.is_some() {
            Some(
                config
                    .mfa
                    .key_ring()
                    .map_err(|e| anyhow::anyhow!("[mfa] keys: {e}"))?,
            )
        } else {
            None
        };
        let bar = progress::accounts(directory.user_count()?)?;
        let summary = directory_export::run(directory, keys.as_ref(), options, |r| {
            bar.set_position(r.users_read);
            bar.set_message(format!(
                "{} users in {} files, {} held back",
                r.users_exported,
                r.files.len(),
                r.held_back
            ));
        })?;
        bar.finish_and_clear();
        self.report.print(&summary)?;
        Ok(Exit::Done)
    }
}

/// Submit an export's files to an Auth0-compatible users-imports API (`serve`'s,
/// or a tenant's), two jobs at a time, following each to its end. Resumable: each
/// file's state is kept in the directory. The API token is read from the variable
/// `--token-env` names (by default PORTCULLIS_IMPORT_TOKEN) or from `--token-file`.
#[derive(clap::Args)]
#[command(mut_arg("token_env", |a| a.default_value("PORTCULLIS_IMPORT_TOKEN")))]
pub struct Run {
    #[command(flatten)]
    config: ConfigArg,
    /// The export's directory (with its manifest.json).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// The API's base URL, e.g. http://127.0.0.1:8080 or https://TENANT.auth0.com.
    #[arg(long, value_name = "URL")]
    target: String,
    #[command(flatten)]
    token: TokenArgs,
    /// The connection the users are imported into.
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
    /// Submit again the files an earlier run gave up on (its attempts start over),
    /// e.g. after fixing the target or its token.
    #[arg(long)]
    retry_failed: bool,
    #[command(flatten)]
    report: ReportArg,
    /// Fault injection (tests): exit after this many accepted submissions, before
    /// their job ids are written.
    #[arg(long, hide = true)]
    abort_after_submissions: Option<u32>,
}

impl Run {
    pub fn execute(self) -> Result<Exit> {
        let config = self.config.load()?;
        let state = directory_of(&config)?;
        let token = self.token.read("the import API token")?;
        anyhow::ensure!(
            self.target.starts_with("http://") || self.target.starts_with("https://"),
            "--target is an http(s) URL"
        );
        let options = run::RunOptions {
            dir: self.dir,
            target: self.target,
            token,
            connection_id: self.connection_id,
            upsert: self.upsert,
            max_jobs: self.max_jobs,
            max_attempts: self.max_attempts,
            poll: std::time::Duration::from_millis(self.poll_ms.max(10)),
            max_poll: std::time::Duration::from_secs(10),
            retry_after: std::time::Duration::from_millis(self.retry_after_ms),
            dry_run: self.dry_run,
            retry_failed: self.retry_failed,
            abort_after_submissions: self.abort_after_submissions,
            now_ms: || {
                portcullis::flows::clock::Clock::now_ms(&portcullis::flows::clock::SystemClock)
            },
        };
        let bar = progress::files()?;
        let summary = run::run(state.as_ref(), &options, |p| {
            bar.set_length(p.files as u64);
            bar.set_position(p.files_done as u64);
            bar.set_message(format!(
                "{} users imported, {} refused",
                p.inserted, p.errors
            ));
        });
        bar.finish_and_clear();
        let summary = summary?;
        self.report.print(&summary)?;
        Ok(Exit::failures_if(!summary.files_failed.is_empty(), || {
            format!(
                "{} file(s) could not be imported (see files_failed)",
                summary.files_failed.len()
            )
        }))
    }
}

/// Where the migration stands: legacy people with and without a directory user,
/// product rows with and without their unified id (and why).
#[derive(clap::Args)]
pub struct Verify {
    #[command(flatten)]
    config: ConfigArg,
    #[command(flatten)]
    _json: JsonArg,
}

impl Verify {
    pub fn execute(self) -> Result<Exit> {
        let config = self.config.load()?;
        let legacy = legacy_of(&config)?;
        let state = directory_of(&config)?;
        let report = verify::verify(state.as_ref(), &legacy)?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        Ok(Exit::Done)
    }
}

/// Write each directory user's id into every product row linked to them (in
/// chunks, throttled; a rerun changes nothing). `--pregenerate`, before the
/// migration: ids derived from the email for people in several products.
#[derive(clap::Args)]
pub struct BackfillIds {
    #[command(flatten)]
    config: ConfigArg,
    /// Before the migration: write ids derived from the email for people with
    /// accounts in several products (no directory needed).
    #[arg(long)]
    pregenerate: bool,
    /// Rows written per transaction.
    #[arg(long, default_value_t = 1000)]
    chunk: usize,
    /// Rows written per second (0: unthrottled).
    #[arg(long, default_value_t = 0)]
    rate: u32,
    /// Add the unified_id column to product tables that lack it.
    #[arg(long)]
    add_column: bool,
    #[command(flatten)]
    report: ReportArg,
}

impl BackfillIds {
    pub fn execute(self) -> Result<Exit> {
        let config = self.config.load()?;
        let legacy = legacy_of(&config)?;
        let options = backfill_ids::IdOptions {
            chunk: self.chunk,
            rate_per_second: self.rate,
            add_column: self.add_column,
        };
        let bar = progress::rows()?;
        let show = |r: &backfill_ids::IdReport| {
            bar.set_position(r.rows_seen);
            bar.set_message(format!(
                "written {}, repaired {}, conflicts {}",
                r.written,
                r.repaired,
                r.conflicts.len()
            ));
        };
        let summary = if self.pregenerate {
            backfill_ids::pregenerate(&legacy, &options, show)?
        } else {
            let state = directory_of(&config)?;
            backfill_ids::backfill(state.as_ref(), &legacy, &options, show)?
        };
        bar.finish_and_clear();
        self.report.print(&summary)?;
        Ok(Exit::Done)
    }
}
