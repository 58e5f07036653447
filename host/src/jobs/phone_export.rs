//! `portcullis mfa backfill`: moves old-provider users' phones to the directory, sealed,
//! in the background, so their next login goes through the new provider.
//!
//! The export is precious (3 per user per 30 days), so the ledger comes first: every
//! attempt is recorded, with the quota checked in the same transaction, *before* the
//! call (see `state::phone_export`). A job killed between the call and writing its result
//! has counted the call; a user at quota is skipped and listed, never called.
//!
//! Work is taken up a chunk at a time under a lease: two runs never hold one factor,
//! and a killed run's chunk is taken up again once its lease runs out (a factor whose
//! phone was stored is never taken up again). The phone is stored only if the factor
//! is still what was read (its user may enrol, disable or be reverted meanwhile), in
//! one conditional write. Calls are throttled to a rate (token bucket); a 429 waits for
//! its `Retry-After`, a 5xx or timeout backs off exponentially.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Serialize;

use crate::flows::clock::Clock;
use crate::mfa::phone::PhonePolicy;
use crate::mfa::sealed::KeyRing;
use crate::providers::ProviderError;
use crate::providers::legacy_sms::PhoneExport;
use crate::state::factors::Factor;
use crate::state::phone_export::{BackfillStatus, ExportOutcome, ExportPermit, Lease};
use crate::state::{StateStore, StoreError};

/// The old provider's export quota.
pub const EXPORT_QUOTA: u64 = 3;
pub const EXPORT_WINDOW_MS: u64 = 30 * 24 * 3600 * 1000;
/// Attempts per factor per run when the provider fails (a 5xx, a timeout). Each is
/// counted against the user's quota (the provider may have counted it), so a failed
/// user waits for a later run (`--retry-failed`) rather than spending the quota now;
/// the backoff still slows the run down while the provider is failing.
const MAX_FAILURES_PER_FACTOR: u32 = 1;
/// 429s in a row for one factor before it is left for a later run.
const MAX_THROTTLES_PER_FACTOR: u32 = 20;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Longest wait the job honours from a `Retry-After` before giving up on the run.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
pub struct BackfillOptions {
    pub cohort: Option<String>,
    /// Factors to take up in this run at most.
    pub limit: Option<u64>,
    pub chunk: usize,
    /// Export calls per second (0: no throttle).
    pub rate_per_second: u32,
    /// List what would be exported; no call, no write.
    pub dry_run: bool,
    /// Take up factors that failed or were skipped in an earlier run.
    pub retry_failed: bool,
    pub lease_ms: u64,
    pub run_id: String,
    /// Fault injection for the crash tests: abort the process right after this many
    /// export answers, before their results are written.
    pub abort_after_exports: Option<u64>,
}

/// A user the job did not export, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Passed {
    pub user_id: String,
    pub factor_id: String,
    pub reason: String,
}

#[derive(Debug, Default, Serialize)]
pub struct BackfillReport {
    pub run_id: String,
    pub dry_run: bool,
    pub cohort: Option<String>,
    pub taken_up: u64,
    pub exported: u64,
    /// Users at their export quota: skipped, never called.
    pub skipped_by_quota: Vec<Passed>,
    /// Changed by their users meanwhile (enrolled, disabled, reverted): not touched.
    pub changed_meanwhile: u64,
    /// Factors another run took over after this run's lease on them ran out.
    pub lost_to_other_runs: u64,
    /// By reason.
    pub failed: BTreeMap<String, u64>,
    pub failures: Vec<Passed>,
    pub export_calls: u64,
    pub throttled_calls: u64,
    pub chunks: u64,
    pub elapsed_seconds: f64,
    pub users_per_second: f64,
    /// With `--dry-run`: who would be exported.
    pub would_export: Vec<Passed>,
    /// Users another run holds at the end of this one (a run still going, or one that
    /// was stopped: its claim lasts until its lease runs out): not taken up here.
    pub held_by_other_runs: u64,
    /// When the last of those claims runs out (ms since the epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_until_ms: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The provider refuses exports for the whole account (60154): stop, nothing to
    /// gain from trying every user.
    #[error("the old provider has phone export disabled (60154); the run stopped")]
    ExportDisabled,
    #[error("the old provider asked to wait {0} s, longer than the job waits")]
    TooLongToWait(u64),
}

/// What one factor came to.
enum Done {
    Exported,
    /// This run's lease ran out and another run took the factor: its business now.
    LostLease,
    Quota,
    Changed,
    Failed(String),
}

pub struct Backfill<'a> {
    pub state: &'a dyn StateStore,
    pub export: &'a PhoneExport,
    pub keys: &'a KeyRing,
    pub policy: &'a PhonePolicy,
    pub clock: &'a dyn Clock,
}

impl Backfill<'_> {
    /// Runs until no factor is left to take up (or `limit` were); `progress` hears the
    /// running report after each factor.
    pub fn run(
        &self,
        options: &BackfillOptions,
        mut progress: impl FnMut(&BackfillReport),
    ) -> Result<BackfillReport, BackfillError> {
        let started = Instant::now();
        let mut report = BackfillReport {
            run_id: options.run_id.clone(),
            dry_run: options.dry_run,
            cohort: options.cohort.clone(),
            ..Default::default()
        };
        let limiter: Option<DefaultDirectRateLimiter> = NonZeroU32::new(options.rate_per_second)
            .map(|rate| RateLimiter::direct(Quota::per_second(rate)));
        let cohort = options.cohort.as_deref();
        let chunk = options.chunk.max(1);
        // Grows with provider failures in a row, back to zero on a success.
        let mut backoff = Duration::ZERO;
        loop {
            let left = options
                .limit
                .map_or(u64::MAX, |l| l.saturating_sub(report.taken_up));
            if left == 0 {
                break;
            }
            let now_ms = self.clock.now_ms();
            let want = chunk.min(usize::try_from(left).unwrap_or(usize::MAX));
            if options.dry_run {
                if !self.dry_chunk(options, now_ms, want, &mut report)? {
                    break;
                }
                progress(&report);
                continue;
            }
            let ids = self.state.backfill_candidates(
                cohort,
                now_ms,
                options.retry_failed,
                want,
                &options.run_id,
            )?;
            if ids.is_empty() {
                break;
            }
            let lease = Lease {
                token: crate::model::random_id(),
                until_ms: now_ms + options.lease_ms,
                run_id: options.run_id.clone(),
                now_ms,
            };
            let taken = self
                .state
                .claim_backfill(&ids, &lease, options.retry_failed)?;
            if taken.is_empty() {
                // Another run took these first: look again.
                continue;
            }
            report.chunks += 1;
            for factor in self.state.factors_by_ids(&taken)? {
                report.taken_up += 1;
                let done = self.one(
                    &factor,
                    &lease,
                    options,
                    limiter.as_ref(),
                    &mut backoff,
                    &mut report,
                )?;
                self.record(&factor, &lease, done, &mut report)?;
                report.elapsed_seconds = started.elapsed().as_secs_f64();
                progress(&report);
            }
        }
        let (held, until) =
            self.state
                .backfill_held(cohort, self.clock.now_ms(), &options.run_id)?;
        report.held_by_other_runs = held;
        report.held_until_ms = (held > 0).then_some(until);
        report.elapsed_seconds = started.elapsed().as_secs_f64();
        report.users_per_second = if report.elapsed_seconds > 0.0 {
            report.exported as f64 / report.elapsed_seconds
        } else {
            0.0
        };
        Ok(report)
    }

    /// A dry run's chunk: reads only, the candidates after those listed so far; false
    /// when none is left.
    fn dry_chunk(
        &self,
        options: &BackfillOptions,
        now_ms: u64,
        want: usize,
        report: &mut BackfillReport,
    ) -> Result<bool, BackfillError> {
        let ids = self.state.backfill_candidates(
            options.cohort.as_deref(),
            now_ms,
            options.retry_failed,
            report.would_export.len() + want,
            &options.run_id,
        )?;
        let fresh = &ids[report.would_export.len().min(ids.len())..];
        if fresh.is_empty() {
            return Ok(false);
        }
        for factor in self.state.factors_by_ids(fresh)? {
            report.taken_up += 1;
            report.would_export.push(Passed {
                user_id: factor.user_id,
                factor_id: factor.id,
                reason: "would export".into(),
            });
        }
        report.chunks += 1;
        Ok(true)
    }

    /// Writes how one factor's export ended (unless another run holds it now) and
    /// counts it in the report.
    fn record(
        &self,
        factor: &Factor,
        lease: &Lease,
        done: Done,
        report: &mut BackfillReport,
    ) -> Result<(), BackfillError> {
        let now_ms = self.clock.now_ms();
        let (status, reason) = match &done {
            Done::LostLease => {
                report.lost_to_other_runs += 1;
                return Ok(());
            }
            Done::Exported => (BackfillStatus::Exported, None),
            Done::Quota => (BackfillStatus::Skipped, Some("export quota reached")),
            Done::Changed => (BackfillStatus::Skipped, Some("changed meanwhile")),
            Done::Failed(reason) => (BackfillStatus::Failed, Some(reason.as_str())),
        };
        self.state
            .finish_backfill(&factor.id, &lease.token, status, reason, now_ms)?;
        match done {
            Done::LostLease => {}
            Done::Exported => report.exported += 1,
            Done::Quota => report.skipped_by_quota.push(Passed {
                user_id: factor.user_id.clone(),
                factor_id: factor.id.clone(),
                reason: "export quota reached".into(),
            }),
            Done::Changed => report.changed_meanwhile += 1,
            Done::Failed(reason) => {
                *report.failed.entry(reason.clone()).or_default() += 1;
                report.failures.push(Passed {
                    user_id: factor.user_id.clone(),
                    factor_id: factor.id.clone(),
                    reason,
                });
            }
        }
        Ok(())
    }

    /// Exports one factor's phone: ledger first, then the call, then the result.
    fn one(
        &self,
        factor: &Factor,
        lease: &Lease,
        options: &BackfillOptions,
        limiter: Option<&DefaultDirectRateLimiter>,
        backoff: &mut Duration,
        report: &mut BackfillReport,
    ) -> Result<Done, BackfillError> {
        let Some(provider_user_id) = factor.legacy_provider_user_id.as_deref() else {
            return Ok(Done::Changed);
        };
        let (mut failures, mut throttles) = (0, 0);
        // A user deleted at the old provider would spend one of their three exports on
        // a 60026: ask first (the status call costs no export). If the provider cannot
        // say, the export's own error handling below decides.
        throttle(limiter);
        if let Ok(false) = self.export.exists(provider_user_id) {
            return Ok(Done::Failed("not found at the old provider".into()));
        }
        loop {
            throttle(limiter);
            let now_ms = self.clock.now_ms();
            let attempt = Lease {
                until_ms: now_ms + options.lease_ms,
                now_ms,
                ..lease.clone()
            };
            let ledger = match self.state.begin_export(
                &factor.id,
                provider_user_id,
                &attempt,
                now_ms.saturating_sub(EXPORT_WINDOW_MS),
                EXPORT_QUOTA,
            )? {
                ExportPermit::Go(ledger) => ledger,
                ExportPermit::Quota => return Ok(Done::Quota),
                ExportPermit::LostLease => return Ok(Done::LostLease),
            };
            report.export_calls += 1;
            let answer = self.export.export(provider_user_id);
            if options
                .abort_after_exports
                .is_some_and(|n| report.export_calls >= n)
            {
                // The crash the ledger exists for: the call was made, its result is lost.
                std::process::abort();
            }
            match answer {
                Ok(phone) => {
                    self.state.finish_export(ledger, ExportOutcome::Exported)?;
                    *backoff = Duration::ZERO;
                    return self.keep_phone(factor, &phone);
                }
                Err(ProviderError::RateLimited {
                    retry_after: Some(wait),
                    ..
                }) => {
                    // Throttled before it was served: wait as told, and try again.
                    self.state.finish_export(ledger, ExportOutcome::Throttled)?;
                    report.throttled_calls += 1;
                    throttles += 1;
                    if throttles >= MAX_THROTTLES_PER_FACTOR {
                        return Ok(Done::Failed("throttled by the old provider".into()));
                    }
                    if wait > MAX_RETRY_AFTER {
                        return Err(BackfillError::TooLongToWait(wait.as_secs()));
                    }
                    std::thread::sleep(wait);
                }
                Err(ProviderError::RateLimited {
                    retry_after: None, ..
                }) => {
                    // The per-user limit: the provider counted it.
                    self.state.finish_export(ledger, ExportOutcome::Failed)?;
                    return Ok(Done::Failed("provider export limit".into()));
                }
                Err(ProviderError::Rejected { code: 60154, .. }) => {
                    self.state.finish_export(ledger, ExportOutcome::Failed)?;
                    return Err(BackfillError::ExportDisabled);
                }
                Err(ProviderError::Rejected { code: 60026, .. }) => {
                    self.state.finish_export(ledger, ExportOutcome::Failed)?;
                    return Ok(Done::Failed("not found at the old provider".into()));
                }
                Err(ProviderError::Rejected { code, .. }) => {
                    self.state.finish_export(ledger, ExportOutcome::Failed)?;
                    return Ok(Done::Failed(format!(
                        "refused by the old provider ({code})"
                    )));
                }
                Err(ProviderError::Unavailable(why)) => {
                    self.state.finish_export(ledger, ExportOutcome::Failed)?;
                    failures += 1;
                    // Back off, more with each failure in a row (whoever's), so a
                    // failing provider is not hammered user after user.
                    *backoff = (*backoff * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
                    std::thread::sleep(*backoff);
                    if failures >= MAX_FAILURES_PER_FACTOR {
                        return Ok(Done::Failed(format!("provider unavailable: {why}")));
                    }
                }
            }
        }
    }
}

impl Backfill<'_> {
    /// Seals an exported phone under the new provider's key, bound to its factor,
    /// unless the factor changed since it was read.
    fn keep_phone(&self, factor: &Factor, phone: &str) -> Result<Done, BackfillError> {
        let phone = match self.policy.normalize(phone) {
            Ok(phone) => phone,
            Err(e) => return Ok(Done::Failed(format!("phone refused: {e}"))),
        };
        let sealed = self.keys.seal(phone.e164(), &factor.user_id, &factor.id);
        let stored = self
            .state
            .store_exported_phone(factor, &sealed, self.clock.now_ms())?;
        Ok(if stored {
            Done::Exported
        } else {
            Done::Changed
        })
    }
}

/// Waits for the rate limiter's next token, if the run has a rate.
fn throttle(limiter: Option<&DefaultDirectRateLimiter>) {
    if let Some(limiter) = limiter {
        while let Err(not_until) = limiter.check() {
            std::thread::sleep(not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            )));
        }
    }
}
