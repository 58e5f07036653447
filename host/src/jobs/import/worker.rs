//! Runs the users-imports API's jobs (`server::import_api` accepts them) from the
//! shared state, so that any `serve` instance over one directory may run any job.
//!
//! Each instance runs one worker: it claims an active job nobody holds (or whose
//! holder's lease ran out: that instance was killed or hung) under a lease of
//! `job_lease_seconds`, and runs it record by record from the job's checkpoint. Each
//! record is one transaction with the checkpoint and renews the lease
//! (`state::import_jobs::step`), so a taker-over continues from the first record the
//! dead instance did not commit: nothing is imported twice, and what was refused
//! stays refused once. A job taken over at the same checkpoint
//! `MAX_STALLED_TAKEOVERS` times in a row is failed instead of run again (see
//! `state::import_jobs`). The worker opens a job's sealed users file in memory only.
//! It also deletes jobs past their retention.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};

use super::records::{self, RecordError};
use crate::config::ImportApiSettings;
use crate::flows::clock::Clock;
use crate::mfa::sealed::{KeyRing, SealError};
use crate::model::LegacyStores;
use crate::state::StateStore;
use crate::state::import_jobs::{
    ClaimedJob, ImportJob, JobStatus, JobStep, MAX_STALLED_TAKEOVERS, StepOutcome,
    USERS_FILE_PURPOSE, UsersFile,
};

/// What a job runs against, read again for each job (a reload may change them).
#[derive(Clone)]
pub struct JobEnv {
    pub state: Arc<dyn StateStore>,
    pub legacy: Arc<dyn LegacyStores>,
    pub clock: Arc<dyn Clock>,
}

/// Wakes the worker (a job was submitted here, or one of its jobs ended) or stops it.
#[derive(Default)]
pub struct Signal {
    flags: Mutex<(bool, bool)>,
    changed: Condvar,
}

impl Signal {
    pub fn wake(&self) {
        self.flags.lock().unwrap_or_else(PoisonError::into_inner).0 = true;
        self.changed.notify_all();
    }

    pub fn stop(&self) {
        self.flags.lock().unwrap_or_else(PoisonError::into_inner).1 = true;
        self.changed.notify_all();
    }

    pub fn stopped(&self) -> bool {
        self.flags.lock().unwrap_or_else(PoisonError::into_inner).1
    }

    /// Waits until woken or stopped, or `timeout` passed; clears the wake-up.
    fn wait(&self, timeout: Duration) {
        let flags = self.flags.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut flags, _) = self
            .changed
            .wait_timeout_while(flags, timeout, |(woken, stopped)| !*woken && !*stopped)
            .unwrap_or_else(PoisonError::into_inner);
        flags.0 = false;
    }
}

/// This process's worker.
pub struct Worker {
    /// The instance id leases are held under: unique per process.
    owner: String,
    settings: ImportApiSettings,
    /// What an upsert leaves alone on a user who signed in (`records::protected_keys`).
    protected: Vec<String>,
    /// How imported second factors are validated and sealed.
    factors: records::FactorImport,
    /// Open the jobs' users files (`[mfa]` keys).
    file_keys: Arc<KeyRing>,
    env: Arc<dyn Fn() -> JobEnv + Send + Sync>,
    signal: Arc<Signal>,
    running: Arc<AtomicUsize>,
}

/// How often a job is looked for besides wake-ups: often enough that a job whose
/// holder died is taken up soon after its lease runs out.
fn poll_interval(lease_ms: u64) -> Duration {
    Duration::from_millis((lease_ms / 4).clamp(100, 5_000))
}

/// Ended jobs past their retention are deleted this often (a GET never shows them).
const SWEEP_MS: u64 = 60_000;

impl Worker {
    pub fn new(
        settings: &ImportApiSettings,
        protected: Vec<String>,
        factors: records::FactorImport,
        file_keys: Arc<KeyRing>,
        env: Arc<dyn Fn() -> JobEnv + Send + Sync>,
        signal: Arc<Signal>,
    ) -> Self {
        Self {
            owner: format!(
                "serve-{}-{}",
                std::process::id(),
                &crate::model::random_id()[..12]
            ),
            settings: settings.clone(),
            protected,
            factors,
            file_keys,
            env,
            signal,
            running: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn lease_ms(&self) -> u64 {
        self.settings.job_lease_seconds.saturating_mul(1000)
    }

    /// Claims and runs jobs until stopped; then waits for its jobs to let go of
    /// their leases (each stops between two records).
    pub fn run(self) {
        let worker = Arc::new(self);
        let mut last_sweep: Option<u64> = None;
        while !worker.signal.stopped() {
            let env = (worker.env)();
            worker.sweep(&env, &mut last_sweep);
            while worker.running.load(Ordering::SeqCst) < worker.settings.max_concurrent_jobs {
                let now = env.clock.now_ms();
                match env.state.claim_import_job(
                    &worker.owner,
                    now,
                    now.saturating_add(worker.lease_ms()),
                ) {
                    Ok(Some(claimed)) => worker.spawn(env.clone(), claimed),
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!("import jobs: cannot claim a job: {e}");
                        break;
                    }
                }
            }
            worker.signal.wait(poll_interval(worker.lease_ms()));
        }
        while worker.running.load(Ordering::SeqCst) > 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn sweep(&self, env: &JobEnv, last: &mut Option<u64>) {
        let now = env.clock.now_ms();
        if last.is_some_and(|at| now.saturating_sub(at) < SWEEP_MS) {
            return;
        }
        *last = Some(now);
        let retention = self.settings.job_retention_seconds.saturating_mul(1000);
        match env.state.forget_expired_import_jobs(now, retention) {
            Ok(0) => {}
            Ok(n) => tracing::info!("import jobs: deleted {n} past their retention"),
            Err(e) => tracing::warn!("import jobs: cannot delete old jobs: {e}"),
        }
    }

    fn spawn(self: &Arc<Self>, env: JobEnv, claimed: ClaimedJob) {
        self.running.fetch_add(1, Ordering::SeqCst);
        let worker = self.clone();
        let name = format!("import-{}", claimed.job.id);
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            let running = Running(worker);
            running.0.run_job(&env, claimed);
        });
        if let Err(e) = spawned {
            // The lease runs out and this or another instance takes the job up.
            self.running.fetch_sub(1, Ordering::SeqCst);
            tracing::error!("import jobs: no thread for a job: {e}");
        }
    }
}

/// A job thread's place among the running, given back however the thread ends (a
/// panic too: the worker's shutdown waits for none to be left).
struct Running(Arc<Worker>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
        self.0.signal.wake();
    }
}

/// Why a file is no users list, as Auth0 says it.
fn parse_users(file: &[u8]) -> Result<Vec<Value>, String> {
    match serde_json::from_slice::<Value>(file) {
        Ok(Value::Array(list)) => Ok(list),
        Ok(_) => Err("Failed to parse users file when importing users: the file must hold a JSON array of users".into()),
        Err(e) => Err(format!(
            "Failed to parse users file JSON when importing users: line {} column {}",
            e.line(),
            e.column()
        )),
    }
}

/// Whether a job goes on after a record.
enum Flow {
    Next,
    Stop,
}

/// One job's run on this instance.
struct Run<'a> {
    worker: &'a Worker,
    env: &'a JobEnv,
    job: &'a ImportJob,
}

/// Why a job taken over at one checkpoint again and again is failed.
fn stalled(job: &ImportJob, takeovers: u64) -> String {
    format!(
        "The job was taken over {takeovers} times at user {} of the file without getting past it \
         (each instance running it stopped there: it crashed, hung or lost the directory); \
         it is failed rather than run again. The users before it were imported; it and \
         those after it were not",
        job.done + 1
    )
}

impl Worker {
    /// The claimed job's users, from its file opened in memory; or why the job fails.
    fn users_of(&self, job: &ImportJob, file: UsersFile) -> Result<Vec<Value>, String> {
        let opened = match file {
            UsersFile::Sealed(sealed) => self
                .file_keys
                .open_bytes(&sealed, USERS_FILE_PURPOSE, &job.id)
                .map_err(|e| match e {
                    SealError::UnknownKey(id) => format!(
                        "The users file was sealed with key {id:?}, which is not in the [mfa] key ring"
                    ),
                    _ => "The users file does not open with the [mfa] keys (altered, or not this job's)"
                        .to_owned(),
                })?,
            UsersFile::Clear(clear) => zeroize::Zeroizing::new(clear),
        };
        parse_users(&opened)
    }

    fn run_job(&self, env: &JobEnv, claimed: ClaimedJob) {
        let ClaimedJob {
            job,
            users_file,
            stalled_takeovers,
        } = claimed;
        let run = Run {
            worker: self,
            env,
            job: &job,
        };
        if stalled_takeovers >= MAX_STALLED_TAKEOVERS {
            tracing::warn!(
                "import job {}: taken over {stalled_takeovers} times at record {}: failed",
                job.id,
                job.done
            );
            return run.end(JobStatus::Failed, Some(&stalled(&job, stalled_takeovers)));
        }
        let list = match self.users_of(&job, users_file) {
            Ok(list) => list,
            Err(why) => return run.end(JobStatus::Failed, Some(&why)),
        };
        let now = env.clock.now_ms();
        let total = list.len() as u64;
        match env
            .state
            .start_import_job(&job.id, &self.owner, total, now, run.lease_until())
        {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => return tracing::warn!("import job {}: cannot start: {e}", job.id),
        }
        if job.done > 0 {
            tracing::info!(
                "import job {}: taken up at record {} of {total} (its last holder stopped)",
                job.id,
                job.done
            );
        }
        let started = job.started_at_ms.unwrap_or(now);
        let max_run_ms = self.settings.max_job_seconds.saturating_mul(1000);
        let pace = (self.settings.users_per_second > 0)
            .then(|| Duration::from_secs_f64(1.0 / f64::from(self.settings.users_per_second)));
        for (index, user) in list.iter().enumerate().skip(job.done as usize) {
            if self.signal.stopped() {
                return run.release();
            }
            if env.clock.now_ms().saturating_sub(started) > max_run_ms {
                let why = format!(
                    "The job ran past its limit of {} seconds; the users before the first not taken up were imported",
                    self.settings.max_job_seconds
                );
                return run.end(JobStatus::Expired, Some(&why));
            }
            if let Flow::Stop = run.record(index as u64, user) {
                return;
            }
            if let Some(pace) = pace {
                std::thread::sleep(pace);
            }
        }
        run.end(JobStatus::Completed, None);
    }
}

/// A refused record as the errors endpoint lists it (redacted as Auth0 redacts it).
fn error_entry(user: &Value, errors: Vec<RecordError>) -> Value {
    json!({"user": records::redacted(user), "errors": errors})
}

impl Run<'_> {
    fn lease_until(&self) -> u64 {
        self.env
            .clock
            .now_ms()
            .saturating_add(self.worker.lease_ms())
    }

    /// Ends the job (if this instance still holds it).
    fn end(&self, status: JobStatus, details: Option<&str>) {
        let now = self.env.clock.now_ms();
        match self.env.state.finish_import_job(
            &self.job.id,
            &self.worker.owner,
            status,
            details,
            now,
        ) {
            Ok(_) => {}
            // Its lease runs out and the job is tried again, here or elsewhere.
            Err(e) => tracing::warn!("import job {}: cannot end it: {e}", self.job.id),
        }
    }

    /// Lets another instance take the job up at once (this one is stopping).
    fn release(&self) {
        let now = self.env.clock.now_ms();
        if let Err(e) = self
            .env
            .state
            .release_import_job(&self.job.id, &self.worker.owner, now)
        {
            tracing::warn!("import job {}: cannot let go of it: {e}", self.job.id);
        }
    }

    /// Checks record `index`, then writes it with the job's checkpoint.
    fn record(&self, index: u64, user: &Value) -> Flow {
        let now = self.env.clock.now_ms();
        let checked = records::check(
            user,
            self.job.upsert,
            &self.worker.protected,
            &self.worker.factors,
            now,
        )
        .and_then(|record| {
            // Links only to accounts held under the record's own email; no factors
            // for a legacy account's email.
            match records::unproven_claims(&record, self.env.legacy.as_ref()) {
                Ok(unproven) if unproven.is_empty() => Ok(Ok(record)),
                Ok(unproven) => Err(unproven),
                Err(down) => Ok(Err(down)),
            }
        });
        let duplicate = || {
            error_entry(
                user,
                vec![RecordError {
                    code: "DUPLICATED_USER",
                    message: "The user already exists.".into(),
                    path: "email".into(),
                }],
            )
        };
        let factors_refused = || {
            error_entry(
                user,
                vec![RecordError {
                    code: "CONFLICT",
                    message: "The user already exists: an import does not replace an existing user's second factors".into(),
                    path: "mfa_factors".into(),
                }],
            )
        };
        let outcome = match checked {
            Err(errors) => self.step(index, &JobStep::Refuse(error_entry(user, errors))),
            Ok(Err(down)) => {
                // Like the directory down: the job fails, what was imported stays.
                let why = format!("A legacy store failed: {}", down.message);
                self.end(JobStatus::Failed, Some(&why));
                return Flow::Stop;
            }
            Ok(Ok(record)) => self.step(
                index,
                &JobStep::Import {
                    record: &record,
                    duplicate: &duplicate,
                    factors_refused: &factors_refused,
                },
            ),
        };
        match outcome {
            Ok(StepOutcome::LeaseLost) => {
                tracing::warn!(
                    "import job {}: another instance holds it now (this one's lease ran out)",
                    self.job.id
                );
                Flow::Stop
            }
            Ok(_) => Flow::Next,
            Err(crate::state::StoreError::Conflict(message)) => {
                // Rolled back whole: the record is refused instead, at the same index.
                let conflict = error_entry(
                    user,
                    vec![RecordError {
                        code: "CONFLICT",
                        message,
                        path: "app_metadata.legacy_accounts".into(),
                    }],
                );
                self.after_refusal(self.step(index, &JobStep::Refuse(conflict)))
            }
            Err(e) => {
                // The directory is down: the job fails; what was imported stays, and a
                // resubmission reports those users as duplicates.
                self.end(
                    JobStatus::Failed,
                    Some(&format!("The directory failed: {e}")),
                );
                Flow::Stop
            }
        }
    }

    fn after_refusal(&self, outcome: Result<StepOutcome, crate::state::StoreError>) -> Flow {
        match outcome {
            Ok(StepOutcome::LeaseLost) => Flow::Stop,
            Ok(_) => Flow::Next,
            Err(e) => {
                self.end(
                    JobStatus::Failed,
                    Some(&format!("The directory failed: {e}")),
                );
                Flow::Stop
            }
        }
    }

    fn step(
        &self,
        index: u64,
        step: &JobStep<'_>,
    ) -> Result<StepOutcome, crate::state::StoreError> {
        let now = self.env.clock.now_ms();
        self.env.state.import_job_step(
            &self.job.id,
            &self.worker.owner,
            index,
            step,
            now,
            now.saturating_add(self.worker.lease_ms()),
        )
    }
}
