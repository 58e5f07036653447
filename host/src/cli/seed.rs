//! `portcullis seed`: demo stores and a batch of login attempts.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::Exit;
use super::options::{ConfigArg, JsonArg};

/// Create the demo stores named in the config's [state] section, and a batch of
/// login attempts.
#[derive(clap::Args)]
pub struct Seed {
    #[command(flatten)]
    config: ConfigArg,
    /// People to create, with their legacy accounts (and directory users for some).
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Login attempts to write.
    #[arg(long, default_value_t = 200)]
    logins: usize,
    /// The random seed: the same seed makes the same data.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Where to write the login attempts (default: `logins/` beside the directory).
    #[arg(long, value_name = "DIR")]
    logins_dir: Option<PathBuf>,
    /// Also this many users with only an old-provider SMS factor (the backfill's
    /// population; the config must set up [mfa]) …
    #[arg(long, default_value_t = 0)]
    sms_users: usize,
    /// … the first this many of them in the `internal` cohort.
    #[arg(long, default_value_t = 0)]
    sms_internal: usize,
    /// Replace what the stores hold even when it is not seed's own (rows whose
    /// addresses are not seed's example ones): everything in them is deleted.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    json: JsonArg,
}

impl Seed {
    pub fn execute(self) -> Result<Exit> {
        anyhow::ensure!(self.users > 0, "--users must be at least 1");
        let config = self.config.load()?;
        let (state, legacy) = portcullis::jobs::seed::open_for_seed(&config, self.force)?;
        let logins_dir = match self.logins_dir {
            Some(dir) => dir,
            None => portcullis::flows::directory_path(&config)
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
        let options = portcullis::jobs::seed::SeedOptions {
            users: self.users,
            logins: self.logins,
            seed: self.seed,
            mfa_keys,
        };
        let report =
            portcullis::jobs::seed::seed(state.as_ref(), &legacy, &logins_dir, &options, |line| {
                eprintln!("seed: {line}")
            })?;
        let (sms_users, sms_internal) = (self.sms_users, self.sms_internal);
        if sms_users > 0 {
            anyhow::ensure!(
                options.mfa_keys.is_some(),
                "--sms-users needs a config with [mfa] providers"
            );
            portcullis::jobs::seed::seed_sms_users(
                state.as_ref(),
                report.legacy_sms_users,
                sms_users,
                sms_internal,
                |n| eprintln!("seed: {n} old-provider SMS users"),
            )?;
            if !self.json.json {
                println!(
                    "seeded {sms_users} users with only an old-provider SMS factor (ids {} to {}; {} internal)",
                    portcullis::jobs::seed::legacy_sms_id(report.legacy_sms_users),
                    portcullis::jobs::seed::legacy_sms_id(report.legacy_sms_users + sms_users - 1),
                    sms_internal.min(sms_users)
                );
            }
        }
        if self.json.json {
            let mut json = serde_json::to_value(&report)?;
            json["sms_only_users"] = sms_users.into();
            json["sms_only_internal"] = sms_internal.min(sms_users).into();
            json["elapsed_ms"] = (started.elapsed().as_millis() as u64).into();
            println!("{}", serde_json::to_string_pretty(&json)?);
            return Ok(Exit::Done);
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
        Ok(Exit::Done)
    }
}
