//! `portcullis import run`: submits an export's files to an Auth0-compatible
//! users-imports endpoint (this project's `serve`, or a tenant), at most `max_jobs`
//! at once, and follows each job to its end.
//!
//! Each file's state is in the directory (`state::import_files`), written before every
//! step that could be lost: `submitting` before the POST, the job's id as soon as it is
//! known. A run killed at any point and started again submits no completed file twice;
//! a file left `submitting` is first looked up by its external id (the file's SHA-256)
//! on the target, and only submitted again if the target has no such job (a tenant
//! without that search: Auth0's own API has none, and a resubmission's users come back
//! as `DUPLICATED_USER`). Rate limits are waited out (`x-ratelimit-reset`,
//! `Retry-After`); failed or expired jobs and server errors are retried with backoff up
//! to `max_attempts`; a 413 is final. The target keeps a job's errors for 24 hours, so
//! they are saved beside the export (`results/<file>.errors.json`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::export::{MANIFEST, Manifest};
use crate::state::import_files::{FileStatus, ImportFileState};
use crate::state::{StateStore, StoreError};

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The export's directory (its `manifest.json` and files).
    pub dir: PathBuf,
    /// The target's base URL, e.g. `http://127.0.0.1:8080` or `https://TENANT.auth0.com`.
    pub target: String,
    pub token: SecretString,
    pub connection_id: String,
    pub upsert: bool,
    /// Jobs at once (Auth0 allows 2).
    pub max_jobs: usize,
    /// Submissions per file before it is given up.
    pub max_attempts: u32,
    /// First wait between polls; it doubles to `max_poll`.
    pub poll: Duration,
    pub max_poll: Duration,
    /// Wait before a failed file is submitted again.
    pub retry_after: Duration,
    /// List what would be submitted; no call, no write.
    pub dry_run: bool,
    /// Take up files an earlier run gave up on, with their attempts starting over.
    pub retry_failed: bool,
    /// Fault injection (tests): stop right after this many accepted submissions,
    /// before their job ids are written (as a `kill -9` there would).
    pub abort_after_submissions: Option<u32>,
    pub now_ms: fn() -> u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    /// The target refused the token: nothing else can succeed.
    #[error("the target refused the API token ({0})")]
    Unauthorized(u16),
    /// There is no users-imports API where the target says: nothing else can succeed.
    #[error(
        "the target answered {status} for POST {url}: there is no users-imports API there; is --target the API's base URL (e.g. https://TENANT.auth0.com, or where `serve` with [server.import_api] listens)?"
    )]
    NoImportApi { status: u16, url: String },
    #[error("stopped after {0} submissions (fault injection)")]
    Aborted(u32),
}

#[derive(Debug, Clone, Serialize)]
pub struct FailedFile {
    pub name: String,
    pub reason: String,
}

#[derive(Debug, Default, Serialize)]
pub struct RunReport {
    pub target: String,
    pub dry_run: bool,
    pub files: usize,
    pub files_completed: usize,
    pub files_failed: Vec<FailedFile>,
    /// Files this run would submit (`--dry-run`).
    pub files_to_submit: Vec<String>,
    pub users: u64,
    pub inserted: u64,
    pub updated: u64,
    /// Users the target already had (lazy migration got there first): reconciled,
    /// not imported twice.
    pub duplicates: u64,
    /// Users refused for other reasons, by error code (details in `results/`).
    pub failed_users: BTreeMap<String, u64>,
    pub submissions: u64,
    /// Submissions the target took (a job was created).
    pub submissions_accepted: u64,
    /// Jobs found again by external id after a run died before writing their id.
    pub jobs_found_again: u64,
    pub rate_limited: u64,
    pub elapsed_ms: u64,
    /// Users the target took per second (inserted + updated + refused) over the run.
    pub users_per_second: f64,
    pub peak_rss_kib: u64,
}

pub struct Progress {
    pub files_done: usize,
    pub files: usize,
    pub inserted: u64,
    pub errors: u64,
}

/// One answer, or why there is none.
enum Answer {
    Got(u16, Vec<u8>),
    /// 429: wait this long.
    Throttled(Duration),
    Transport(String),
}

/// How long a 429 says to wait: `Retry-After`, else until `x-ratelimit-reset`.
fn wait_of(headers: &reqwest::header::HeaderMap, now_ms: u64) -> Duration {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let wait = number("retry-after")
        .map(|s| s * 1000)
        .or_else(|| number("x-ratelimit-reset").map(|reset| (reset * 1000).saturating_sub(now_ms)))
        .unwrap_or(1000);
    Duration::from_millis(wait.clamp(100, 120_000))
}

struct Client<'a> {
    http: reqwest::blocking::Client,
    options: &'a RunOptions,
    rate_limited: u64,
}

/// A transport error with its causes ("error sending request: … connection reset by
/// peer"), without the URL (the caller names it where it helps).
fn transport(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

/// A URL as printed: without any user or password it may hold.
fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        Err(_) => url.to_owned(),
    }
}

impl Client<'_> {
    fn send(&mut self, request: reqwest::blocking::RequestBuilder) -> Answer {
        match request
            .bearer_auth(self.options.token.expose_secret())
            .send()
        {
            Err(e) => Answer::Transport(transport(e)),
            Ok(response) => {
                let status = response.status().as_u16();
                if status == 429 {
                    self.rate_limited += 1;
                    return Answer::Throttled(wait_of(response.headers(), (self.options.now_ms)()));
                }
                match response.bytes() {
                    Ok(body) => Answer::Got(status, body.to_vec()),
                    Err(e) => Answer::Transport(transport(e)),
                }
            }
        }
    }

    /// A GET, waiting out rate limits and retrying transport errors a few times.
    fn get(&mut self, path: &str) -> Result<(u16, Vec<u8>), RunError> {
        let url = format!("{}{path}", self.options.target.trim_end_matches('/'));
        let mut transport_errors = 0;
        loop {
            match self.send(self.http.get(&url)) {
                Answer::Got(401 | 403, _) => return Err(RunError::Unauthorized(401)),
                Answer::Got(status, body) => return Ok((status, body)),
                Answer::Throttled(wait) => std::thread::sleep(wait),
                Answer::Transport(e) => {
                    transport_errors += 1;
                    if transport_errors >= 5 {
                        return Ok((0, e.into_bytes()));
                    }
                    std::thread::sleep(Duration::from_millis(200 << transport_errors));
                }
            }
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, RunError> {
    std::fs::read(path).map_err(|source| RunError::Io {
        path: path.to_owned(),
        source,
    })
}

fn message_of(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect())
}

pub fn run(
    state: &dyn StateStore,
    options: &RunOptions,
    mut progress: impl FnMut(Progress),
) -> Result<RunReport, RunError> {
    let started = Instant::now();
    if options.max_jobs == 0 || options.max_attempts == 0 {
        return Err(RunError::Invalid(
            "--max-jobs and --max-attempts must be at least 1".into(),
        ));
    }
    let manifest = verified_manifest(&options.dir)?;
    let mut report = RunReport {
        target: options.target.clone(),
        dry_run: options.dry_run,
        files: manifest.files.len(),
        ..Default::default()
    };
    if options.dry_run {
        dry_run(state, &manifest, options, &mut report)?;
        return Ok(report);
    }
    let now = options.now_ms;
    register(state, &manifest, options)?;
    let results = options.dir.join("results");
    std::fs::create_dir_all(&results).map_err(|source| RunError::Io {
        path: results.clone(),
        source,
    })?;
    let mut client = Client {
        http: reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| RunError::Invalid(format!("HTTP client: {e}")))?,
        options,
        rate_limited: 0,
    };
    let ours: std::collections::BTreeSet<&str> =
        manifest.files.iter().map(|f| f.sha256.as_str()).collect();
    let mut poll = options.poll;
    loop {
        let files: Vec<ImportFileState> = state
            .import_files()?
            .into_iter()
            .filter(|f| ours.contains(f.sha256.as_str()))
            .collect();
        let finished =
            |f: &ImportFileState| matches!(f.status, FileStatus::Completed | FileStatus::Failed);
        progress(Progress {
            files_done: files.iter().filter(|f| finished(f)).count(),
            files: files.len(),
            inserted: files.iter().map(|f| f.inserted).sum(),
            errors: files.iter().map(|f| f.failed).sum(),
        });
        if files.iter().all(finished) {
            break;
        }
        let mut changed = false;
        // Follow the running jobs.
        for file in files.iter().filter(|f| f.status == FileStatus::Submitted) {
            changed |= follow(&mut client, state, file, &results)?;
        }
        // Start files while fewer than max_jobs run.
        let running = state
            .import_files()?
            .iter()
            .filter(|f| ours.contains(f.sha256.as_str()) && f.status == FileStatus::Submitted)
            .count();
        let startable = files.iter().filter(|f| match f.status {
            FileStatus::Pending | FileStatus::Submitting => true,
            FileStatus::Retrying => f.retry_at_ms <= now(),
            _ => false,
        });
        for file in startable.take(options.max_jobs.saturating_sub(running)) {
            match start(&mut client, state, file, &mut report)? {
                Started::Changed => changed = true,
                Started::Wait(wait) => {
                    std::thread::sleep(wait);
                    break;
                }
            }
        }
        poll = if changed {
            options.poll
        } else {
            (poll * 2).min(options.max_poll)
        };
        std::thread::sleep(poll);
    }
    for file in state
        .import_files()?
        .into_iter()
        .filter(|f| ours.contains(f.sha256.as_str()))
    {
        report.count(file);
    }
    report.failed_users = failed_users_by_code(&options.dir);
    report.rate_limited = client.rate_limited;
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    let handled: u64 = report.inserted
        + report.updated
        + report.failed_users.values().sum::<u64>()
        + report.duplicates;
    report.users_per_second = handled as f64 / started.elapsed().as_secs_f64().max(1e-9);
    report.peak_rss_kib = crate::jobs::peak_rss_kib();
    Ok(report)
}

/// The export's manifest, its files checked to be the ones exported: each is its
/// own external id.
fn verified_manifest(dir: &Path) -> Result<Manifest, RunError> {
    let manifest: Manifest = serde_json::from_slice(&read(&dir.join(MANIFEST))?)
        .map_err(|e| RunError::Invalid(format!("{MANIFEST}: {e}")))?;
    for file in &manifest.files {
        let bytes = read(&dir.join(&file.name))?;
        if hex::encode(Sha256::digest(&bytes)) != file.sha256 {
            return Err(RunError::Invalid(format!(
                "{} changed since the export (its SHA-256 differs from the manifest's)",
                file.name
            )));
        }
    }
    Ok(manifest)
}

/// `--dry-run`: the files a run would submit, from what the state says of them.
fn dry_run(
    state: &dyn StateStore,
    manifest: &Manifest,
    options: &RunOptions,
    report: &mut RunReport,
) -> Result<(), RunError> {
    let known: BTreeMap<String, ImportFileState> = state
        .import_files()?
        .into_iter()
        .map(|f| (f.sha256.clone(), f))
        .collect();
    for file in &manifest.files {
        let done = known.get(&file.sha256).is_some_and(|f| {
            f.status == FileStatus::Completed
                || (f.status == FileStatus::Failed && !options.retry_failed)
        });
        if !done {
            report.files_to_submit.push(file.name.clone());
        }
    }
    report.users = manifest.files.iter().map(|f| f.users).sum();
    Ok(())
}

/// The manifest's files in the state (once each), and with `--retry-failed` those
/// given up on earlier (a wrong target, a token since fixed) pending again, attempts
/// from zero; the reason stays until the next attempt replaces it.
fn register(
    state: &dyn StateStore,
    manifest: &Manifest,
    options: &RunOptions,
) -> Result<(), RunError> {
    let now = options.now_ms;
    state.import_files_register(
        &manifest
            .files
            .iter()
            .map(|f| (f.sha256.clone(), f.name.clone(), f.users))
            .collect::<Vec<_>>(),
        now(),
    )?;
    if options.retry_failed {
        for mut file in state.import_files()? {
            if file.status == FileStatus::Failed
                && manifest.files.iter().any(|f| f.sha256 == file.sha256)
            {
                file.status = FileStatus::Pending;
                file.attempts = 0;
                file.job_id = None;
                state.import_file_update(&file, now())?;
            }
        }
    }
    Ok(())
}

impl RunReport {
    /// One file's outcome in the totals.
    fn count(&mut self, file: ImportFileState) {
        self.users += file.users;
        self.inserted += file.inserted;
        self.updated += file.updated;
        self.duplicates += file.duplicates;
        match file.status {
            FileStatus::Completed => self.files_completed += 1,
            _ => self.files_failed.push(FailedFile {
                name: file.name,
                reason: file.last_error.unwrap_or_default(),
            }),
        }
    }
}

enum Started {
    /// The file's state moved on.
    Changed,
    /// The target asks to wait (rate limit, or its jobs are all busy).
    Wait(Duration),
}

fn retry_or_fail(options: &RunOptions, file: &mut ImportFileState, reason: String, now_ms: u64) {
    file.last_error = Some(reason);
    file.job_id = None;
    if file.attempts >= options.max_attempts {
        file.status = FileStatus::Failed;
    } else {
        file.status = FileStatus::Retrying;
        file.retry_at_ms =
            now_ms + options.retry_after.as_millis() as u64 * u64::from(file.attempts);
    }
}

fn start(
    client: &mut Client<'_>,
    state: &dyn StateStore,
    file: &ImportFileState,
    report: &mut RunReport,
) -> Result<Started, RunError> {
    let options = client.options;
    let now = options.now_ms;
    let mut file = file.clone();
    if file.status == FileStatus::Submitting
        && let Some(started) = found_again(client, state, &mut file, report)?
    {
        return Ok(started);
    }
    let previous = file.status;
    file.status = FileStatus::Submitting;
    state.import_file_update(&file, now())?;
    let url = format!(
        "{}/api/v2/jobs/users-imports",
        options.target.trim_end_matches('/')
    );
    report.submissions += 1;
    let answer = submit(client, &url, &file)?;
    match answer {
        Answer::Got(200..=202, body) => {
            accepted(options, &mut file, &body, report)?;
            state.import_file_update(&file, now())?;
            Ok(Started::Changed)
        }
        Answer::Got(401 | 403, _) => Err(RunError::Unauthorized(401)),
        Answer::Got(status @ (404 | 405), _) => {
            // The wrong target, not this file: it stays to be submitted once --target
            // is right (no job was made, no attempt spent).
            file.status = previous;
            state.import_file_update(&file, now())?;
            Err(RunError::NoImportApi {
                status,
                url: shown_url(&url),
            })
        }
        Answer::Got(413, body) => {
            file.attempts += 1;
            file.status = FileStatus::Failed;
            file.last_error = Some(format!(
                "too large for the target (413): {}",
                message_of(&body)
            ));
            state.import_file_update(&file, now())?;
            Ok(Started::Changed)
        }
        Answer::Got(status @ 400..=499, body) => {
            // The target refuses this file as it is: trying again cannot help.
            file.attempts += 1;
            file.status = FileStatus::Failed;
            file.last_error = Some(format!("refused ({status}): {}", message_of(&body)));
            state.import_file_update(&file, now())?;
            Ok(Started::Changed)
        }
        Answer::Got(status, body) => {
            file.attempts += 1;
            retry_or_fail(
                options,
                &mut file,
                format!("the target failed ({status}): {}", message_of(&body)),
                now(),
            );
            state.import_file_update(&file, now())?;
            Ok(Started::Changed)
        }
        Answer::Throttled(wait) => {
            // Not taken: no attempt spent.
            file.status = previous;
            state.import_file_update(&file, now())?;
            Ok(Started::Wait(wait))
        }
        Answer::Transport(e) => {
            // The target may have taken it: the external id is looked up first next
            // time, so the file stays `submitting`.
            file.attempts += 1;
            file.last_error = Some(format!("submitting to {}: {e}", shown_url(&url)));
            state.import_file_update(&file, now())?;
            Ok(Started::Wait(options.retry_after))
        }
    }
}

/// A run died after (or while) submitting this file: does the target have the job?
/// `Some` when that settles the file for now.
fn found_again(
    client: &mut Client<'_>,
    state: &dyn StateStore,
    file: &mut ImportFileState,
    report: &mut RunReport,
) -> Result<Option<Started>, RunError> {
    let options = client.options;
    let now = options.now_ms;
    {
        let (status, body) = client.get(&format!("/api/v2/jobs?external_id={}", file.sha256))?;
        // A failed or expired job with this external id is an earlier attempt (or the
        // lost one, failed already): only a live or completed job is taken up.
        if status == 200
            && let Ok(Value::Array(jobs)) = serde_json::from_slice::<Value>(&body)
            && let Some(id) = jobs
                .iter()
                .find(|j| {
                    matches!(
                        j["status"].as_str(),
                        Some("pending" | "processing" | "completed")
                    )
                })
                .and_then(|j| j["id"].as_str())
        {
            file.status = FileStatus::Submitted;
            file.job_id = Some(id.to_owned());
            file.attempts += 1;
            state.import_file_update(file, now())?;
            report.jobs_found_again += 1;
            return Ok(Some(Started::Changed));
        }
        if file.attempts >= options.max_attempts {
            // The lost submission was the last attempt.
            file.status = FileStatus::Failed;
            state.import_file_update(file, now())?;
            return Ok(Some(Started::Changed));
        }
    }
    Ok(None)
}

/// Sends the file. A server without this API may answer 404 at once and close the
/// connection while the file is still being sent, which the client sees as a broken
/// request, not as the 404: asked again without the file, it says what it is (a real
/// import API answers that with a 400 and makes no job).
fn submit(client: &mut Client<'_>, url: &str, file: &ImportFileState) -> Result<Answer, RunError> {
    let options = client.options;
    let bytes = read(&options.dir.join(&file.name))?;
    let form = reqwest::blocking::multipart::Form::new()
        .part(
            "users",
            reqwest::blocking::multipart::Part::bytes(bytes)
                .file_name(file.name.clone())
                .mime_str("application/json")
                .expect("a valid MIME type"),
        )
        .text("connection_id", options.connection_id.clone())
        .text("upsert", options.upsert.to_string())
        .text("external_id", file.sha256.clone())
        .text("send_completion_email", "false");
    Ok(match client.send(client.http.post(url).multipart(form)) {
        Answer::Transport(e) => match client.send(
            client.http.post(url).multipart(
                reqwest::blocking::multipart::Form::new()
                    .text("connection_id", options.connection_id.clone()),
            ),
        ) {
            Answer::Got(status @ (404 | 405), body) => Answer::Got(status, body),
            _ => Answer::Transport(e),
        },
        answer => answer,
    })
}

/// The target took the file: its job id is the file's (or, named none, a retry).
fn accepted(
    options: &RunOptions,
    file: &mut ImportFileState,
    body: &[u8],
    report: &mut RunReport,
) -> Result<(), RunError> {
    let id = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["id"].as_str().map(str::to_owned));
    file.attempts += 1;
    match id {
        Some(id) => {
            report.submissions_accepted += 1;
            // Injected faults stop here, before the id is written.
            if options.abort_after_submissions == Some(report.submissions_accepted as u32) {
                return Err(RunError::Aborted(report.submissions_accepted as u32));
            }
            file.status = FileStatus::Submitted;
            file.job_id = Some(id);
            file.last_error = None;
        }
        None => retry_or_fail(
            options,
            file,
            "the target accepted the file but named no job".into(),
            (options.now_ms)(),
        ),
    }
    Ok(())
}

/// Polls one running job; true when its file's state changed.
fn follow(
    client: &mut Client<'_>,
    state: &dyn StateStore,
    file: &ImportFileState,
    results: &Path,
) -> Result<bool, RunError> {
    let options = client.options;
    let now = options.now_ms;
    let Some(id) = file.job_id.clone() else {
        return Ok(false);
    };
    let mut file = file.clone();
    let (status, body) = client.get(&format!("/api/v2/jobs/{id}"))?;
    match status {
        200 => {}
        404 => {
            // Gone (kept 24 h, or the target restarted): submit it again.
            retry_or_fail(
                options,
                &mut file,
                format!("the target no longer has job {id}"),
                now(),
            );
            state.import_file_update(&file, now())?;
            return Ok(true);
        }
        _ => return Ok(false),
    }
    let job: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    match job["status"].as_str() {
        Some("completed") => {
            let (errors_status, errors_body) = client.get(&format!("/api/v2/jobs/{id}/errors"))?;
            let errors: Vec<Value> = match errors_status {
                200 => serde_json::from_slice(&errors_body).unwrap_or_default(),
                204 => Vec::new(),
                // Not fetched: poll again.
                _ => return Ok(false),
            };
            let path = results.join(format!(
                "{}.errors.json",
                file.name.trim_end_matches(".json")
            ));
            std::fs::write(&path, serde_json::to_vec_pretty(&errors).expect("JSON"))
                .map_err(|source| RunError::Io { path, source })?;
            let summary = &job["summary"];
            let count = |key: &str| summary[key].as_u64().unwrap_or(0);
            file.inserted = count("inserted");
            file.updated = count("updated");
            file.failed = count("failed");
            file.duplicates = errors
                .iter()
                .filter(|e| {
                    e["errors"]
                        .as_array()
                        .is_some_and(|list| list.iter().any(|x| x["code"] == "DUPLICATED_USER"))
                })
                .count() as u64;
            file.status = FileStatus::Completed;
            file.last_error = None;
            state.import_file_update(&file, now())?;
            Ok(true)
        }
        Some(done @ ("failed" | "expired")) => {
            // Auth0 says why in `status_details` (older versions of this API: `message`).
            let why = job["status_details"]
                .as_str()
                .or(job["message"].as_str())
                .unwrap_or(done)
                .to_owned();
            retry_or_fail(options, &mut file, format!("job {id} {done}: {why}"), now());
            state.import_file_update(&file, now())?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Users refused for reasons other than being there already, by code, over the saved
/// errors of an export's completed files.
pub fn failed_users_by_code(dir: &Path) -> BTreeMap<String, u64> {
    let mut codes = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir.join("results")) else {
        return codes;
    };
    for entry in entries.flatten() {
        let Ok(bytes) = std::fs::read(entry.path()) else {
            continue;
        };
        let errors: Vec<Value> = serde_json::from_slice(&bytes).unwrap_or_default();
        for error in errors {
            for e in error["errors"].as_array().into_iter().flatten() {
                if let Some(code) = e["code"].as_str()
                    && code != "DUPLICATED_USER"
                {
                    *codes.entry(code.to_owned()).or_insert(0) += 1;
                }
            }
        }
    }
    codes
}
