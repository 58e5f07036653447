//! Auth0's bulk user-import endpoints on the directory, with Auth0's limits, so the
//! import client runs against this sidecar or a real tenant alike:
//!
//! - `POST /api/v2/jobs/users-imports` (multipart: `users` file, `connection_id`,
//!   `upsert`, `external_id`, `send_completion_email`): 201 with the job; a file over
//!   the limit is 413, a third active job 429;
//! - `GET /api/v2/jobs/{id}`: pending / processing (`percentage_done`,
//!   `time_left_seconds`) / completed (`summary`) / failed / expired (with
//!   `status_details`: why);
//! - `GET /api/v2/jobs/{id}/errors`: each refused user (redacted as Auth0 redacts it;
//!   `{}` for a record that is not an object) with its errors, 204 when there are none,
//!   and for a job that failed as a whole the job with its `status_details`;
//! - `GET /api/v2/jobs?external_id=…` (this sidecar only; Auth0 has no job search):
//!   the jobs submitted with that external id, so a client that died before writing a
//!   job's id down finds it again.
//!
//! Every request needs the API token and counts against a rate limit (429 with
//! `x-ratelimit-limit`, `-remaining`, `-reset`). Jobs live in this process: a job and
//! its errors are kept `job_retention_seconds` (Auth0: 24 h), so a client keeps its own
//! results; a restart fails the jobs in flight (the client resubmits them).

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use governor::middleware::StateInformationMiddleware;
use governor::{Quota, RateLimiter, clock::Clock as _};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::AppState;
use crate::config::ImportApiSettings;
use crate::jobs::import::records::{self, RecordError};
use crate::model::LegacyStores;
use crate::state::{ImportOutcome, StateStore};

type Limiter = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    governor::clock::DefaultClock,
    StateInformationMiddleware,
>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pending,
    Processing,
    Completed,
    Failed,
    Expired,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Processing => "processing",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Expired => "expired",
        }
    }

    fn active(self) -> bool {
        matches!(self, Status::Pending | Status::Processing)
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Summary {
    inserted: u64,
    updated: u64,
    failed: u64,
    total: u64,
}

struct Job {
    id: String,
    status: Status,
    created: SystemTime,
    created_at: Instant,
    connection_id: String,
    external_id: Option<String>,
    upsert: bool,
    send_completion_email: bool,
    /// Users taken up so far (of `summary.total`, once the file is parsed).
    done: u64,
    summary: Summary,
    errors: Vec<Value>,
    /// Why a failed job failed.
    failure: Option<String>,
    started: Option<Instant>,
}

impl Job {
    fn to_json(&self) -> Value {
        let mut job = json!({
            "type": "users_import",
            "status": self.status.name(),
            "id": self.id,
            "connection_id": self.connection_id,
            "created_at": humantime::format_rfc3339_millis(self.created).to_string(),
            "upsert": self.upsert,
            "send_completion_email": self.send_completion_email,
        });
        if let Some(external) = &self.external_id {
            job["external_id"] = json!(external);
        }
        match self.status {
            Status::Processing => {
                let percentage = (self.done * 100)
                    .checked_div(self.summary.total)
                    .unwrap_or(0);
                job["percentage_done"] = json!(percentage);
                if let Some(started) = self.started
                    && self.done > 0
                {
                    let per_user = started.elapsed().as_secs_f64() / self.done as f64;
                    job["time_left_seconds"] =
                        json!((per_user * (self.summary.total - self.done) as f64).ceil() as u64);
                }
            }
            Status::Completed | Status::Expired | Status::Failed => {
                job["summary"] = json!({
                    "failed": self.summary.failed,
                    "updated": self.summary.updated,
                    "inserted": self.summary.inserted,
                    "total": self.summary.total,
                });
                // Why it failed or expired, where Auth0 and its SDKs read it.
                if let Some(failure) = &self.failure {
                    job["status_details"] = json!(failure);
                }
            }
            Status::Pending => {}
        }
        job
    }
}

pub struct ImportApi {
    token: SecretString,
    settings: ImportApiSettings,
    /// What an upsert leaves alone on a user who signed in (`records::protected_keys`).
    protected: Vec<String>,
    /// How imported second factors are validated and sealed.
    factors: records::FactorImport,
    jobs: Mutex<BTreeMap<String, Job>>,
    limiter: Limiter,
}

/// Auth0's error body.
fn auth0_error(status: StatusCode, message: impl Into<String>, code: &str) -> Response {
    (
        status,
        Json(json!({
            "statusCode": status.as_u16(),
            "error": status.canonical_reason().unwrap_or(""),
            "message": message.into(),
            "errorCode": code,
        })),
    )
        .into_response()
}

impl ImportApi {
    pub fn new(
        settings: &ImportApiSettings,
        protected: Vec<String>,
        factors: records::FactorImport,
    ) -> Result<Self, String> {
        let token = crate::config::secret_from(
            "server.import_api token",
            settings.token_env.as_deref(),
            settings.token_file.as_deref(),
        )?;
        if token.expose_secret().len() < 32 {
            return Err("server.import_api: the token must hold at least 32 characters".into());
        }
        let per_minute = NonZeroU32::new(settings.requests_per_minute)
            .ok_or("server.import_api.requests_per_minute must be at least 1")?;
        if settings.max_concurrent_jobs == 0 || settings.max_file_kb == 0 {
            return Err(
                "server.import_api: max_concurrent_jobs and max_file_kb must be at least 1".into(),
            );
        }
        Ok(Self {
            token,
            settings: settings.clone(),
            protected,
            factors,
            jobs: Mutex::new(BTreeMap::new()),
            limiter: RateLimiter::direct(Quota::per_minute(per_minute))
                .with_middleware::<StateInformationMiddleware>(),
        })
    }

    pub(super) fn max_file_kb(&self) -> usize {
        self.settings.max_file_kb
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Job>> {
        let mut jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        // Kept for the retention period, then gone (404), as at Auth0.
        let keep = Duration::from_secs(self.settings.job_retention_seconds);
        jobs.retain(|_, job| job.active() || job.created_at.elapsed() < keep);
        jobs
    }

    /// Whether the request carries the API token (for the connection's admission; the
    /// rate limit is `admit`'s, once per request).
    pub(super) fn holds_token(&self, headers: &HeaderMap) -> bool {
        let presented = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        !presented.is_empty()
            && bool::from(
                presented
                    .as_bytes()
                    .ct_eq(self.token.expose_secret().as_bytes()),
            )
    }

    /// The token and the rate limit, for every endpoint; the rate headers on success.
    #[allow(clippy::result_large_err)]
    fn admit(&self, headers: &HeaderMap) -> Result<HeaderMap, Response> {
        let presented = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let expected = self.token.expose_secret().as_bytes();
        if presented.is_empty() || !bool::from(presented.as_bytes().ct_eq(expected)) {
            return Err(auth0_error(
                StatusCode::UNAUTHORIZED,
                "Invalid token",
                "invalid_token",
            ));
        }
        let limit = self.settings.requests_per_minute;
        let now_s = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut rate = HeaderMap::new();
        let mut put = |name: &'static str, value: u64| {
            rate.insert(name, HeaderValue::from(value));
        };
        put("x-ratelimit-limit", u64::from(limit));
        match self.limiter.check() {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                put("x-ratelimit-remaining", u64::from(remaining));
                // Full again after the used part of the burst refills.
                let refill = 60 * u64::from(limit - remaining).div_ceil(u64::from(limit));
                put("x-ratelimit-reset", now_s + refill);
                Ok(rate)
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
                put("x-ratelimit-remaining", 0);
                put(
                    "x-ratelimit-reset",
                    now_s + wait.as_secs_f64().ceil() as u64,
                );
                put("retry-after", wait.as_secs_f64().ceil() as u64);
                let mut response = auth0_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Global limit has been reached",
                    "too_many_requests",
                );
                response.headers_mut().extend(rate);
                Err(response)
            }
        }
    }
}

impl Job {
    fn active(&self) -> bool {
        self.status.active()
    }
}

/// The API, once the request passed its token and rate limit; with the rate headers
/// every answer carries. A refusal is the response itself (axum's idiom).
#[allow(clippy::result_large_err)]
fn admitted(app: &AppState, headers: &HeaderMap) -> Result<(Arc<ImportApi>, HeaderMap), Response> {
    let api = app
        .import_api
        .as_ref()
        .ok_or_else(|| auth0_error(StatusCode::NOT_FOUND, "Not Found", "not_found"))?;
    let rate = api.admit(headers)?;
    Ok((api.clone(), rate))
}

fn no_such_job() -> Response {
    auth0_error(
        StatusCode::NOT_FOUND,
        "The job does not exist.",
        "inexistent_job",
    )
}

fn with_headers(mut response: Response, headers: HeaderMap) -> Response {
    response.headers_mut().extend(headers);
    response
}

pub fn routes(max_file_kb: Option<usize>) -> Router<Arc<AppState>> {
    // The file plus the other fields and multipart framing; more is refused unread.
    let limit = max_file_kb.unwrap_or(500) * 1024 + 64 * 1024;
    Router::new()
        .route("/api/v2/jobs/users-imports", post(submit))
        .route("/api/v2/jobs", get(find))
        .route("/api/v2/jobs/{id}", get(status))
        .route("/api/v2/jobs/{id}/errors", get(errors))
        .layer(DefaultBodyLimit::max(limit))
}

struct Submission {
    users: Option<Vec<u8>>,
    connection_id: Option<String>,
    upsert: bool,
    external_id: Option<String>,
    send_completion_email: bool,
}

fn flag(text: &str) -> Result<bool, String> {
    match text {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("expected true or false, not {other:?}")),
    }
}

#[allow(clippy::result_large_err)]
async fn read_submission(mut form: Multipart, max_file: usize) -> Result<Submission, Response> {
    let bad = |message: String| auth0_error(StatusCode::BAD_REQUEST, message, "invalid_body");
    let mut submission = Submission {
        users: None,
        connection_id: None,
        upsert: false,
        external_id: None,
        send_completion_email: true,
    };
    loop {
        let field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(too_large(max_file));
            }
            Err(e) => return Err(bad(format!("invalid multipart body: {}", e.body_text()))),
        };
        let name = field.name().unwrap_or_default().to_owned();
        let bytes = field.bytes().await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large(max_file)
            } else {
                bad(format!("invalid multipart body: {}", e.body_text()))
            }
        })?;
        let text = || String::from_utf8_lossy(&bytes).trim().to_owned();
        match name.as_str() {
            "users" => {
                if bytes.len() > max_file {
                    return Err(too_large(max_file));
                }
                submission.users = Some(bytes.to_vec());
            }
            "connection_id" => submission.connection_id = Some(text()),
            "upsert" => {
                submission.upsert = flag(&text()).map_err(|e| bad(format!("upsert: {e}")))?
            }
            "external_id" => {
                let id = text();
                if id.len() > 255 {
                    return Err(bad("external_id: at most 255 characters".into()));
                }
                submission.external_id = Some(id);
            }
            "send_completion_email" => {
                submission.send_completion_email =
                    flag(&text()).map_err(|e| bad(format!("send_completion_email: {e}")))?
            }
            other => return Err(bad(format!("unknown field {other:?}"))),
        }
    }
    Ok(submission)
}

fn too_large(max_file: usize) -> Response {
    auth0_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("Payload content length greater than maximum allowed: {max_file}"),
        "payload_too_large",
    )
}

async fn submit(State(app): State<Arc<AppState>>, headers: HeaderMap, form: Multipart) -> Response {
    let (api, rate) = match admitted(&app, &headers) {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let max_file = api.settings.max_file_kb * 1024;
    let submission = match read_submission(form, max_file).await {
        Ok(submission) => submission,
        Err(response) => return with_headers(response, rate),
    };
    let bad = |message: &str| auth0_error(StatusCode::BAD_REQUEST, message, "invalid_body");
    let Some(users) = submission.users else {
        return with_headers(bad("Missing required property: users"), rate);
    };
    match submission.connection_id.as_deref() {
        None => return with_headers(bad("Missing required property: connection_id"), rate),
        Some(id) if id != api.settings.connection_id => {
            return with_headers(
                auth0_error(
                    StatusCode::BAD_REQUEST,
                    format!("The connection does not exist: {id}"),
                    "inexistent_connection",
                ),
                rate,
            );
        }
        Some(_) => {}
    }
    let id = {
        let mut jobs = api.jobs();
        let active = jobs.values().filter(|j| j.active()).count();
        if active >= api.settings.max_concurrent_jobs {
            return with_headers(
                auth0_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "There are {active} active import users jobs, please wait until some of them are finished and try again"
                    ),
                    "too_many_requests",
                ),
                rate,
            );
        }
        let id = format!("job_{}", crate::model::random_id());
        jobs.insert(
            id.clone(),
            Job {
                id: id.clone(),
                status: Status::Pending,
                created: SystemTime::now(),
                created_at: Instant::now(),
                connection_id: api.settings.connection_id.clone(),
                external_id: submission.external_id,
                upsert: submission.upsert,
                send_completion_email: submission.send_completion_email,
                done: 0,
                summary: Summary::default(),
                errors: Vec::new(),
                failure: None,
                started: None,
            },
        );
        id
    };
    let gateway = app.gateway();
    let (state, legacy) = (gateway.state().clone(), gateway.services().legacy.clone());
    let (worker, job_id) = (api.clone(), id.clone());
    std::thread::Builder::new()
        .name(format!("import-{id}"))
        .spawn(move || worker.process(&job_id, &users, state.as_ref(), legacy.as_ref()))
        .expect("a thread for the job");
    let body = api.jobs().get(&id).map(Job::to_json).unwrap_or_default();
    with_headers((StatusCode::CREATED, Json(body)).into_response(), rate)
}

impl ImportApi {
    fn update(&self, id: &str, change: impl FnOnce(&mut Job)) {
        if let Some(job) = self.jobs().get_mut(id) {
            change(job);
        }
    }

    /// Runs one job to its end on its own thread.
    fn process(&self, id: &str, users: &[u8], state: &dyn StateStore, legacy: &dyn LegacyStores) {
        let started = Instant::now();
        let list = match serde_json::from_slice::<Value>(users) {
            Ok(Value::Array(list)) => list,
            Ok(_) => {
                return self.update(id, |job| {
                    job.status = Status::Failed;
                    job.failure = Some(
                        "Failed to parse users file when importing users: the file must hold a JSON array of users".into(),
                    );
                });
            }
            Err(e) => {
                return self.update(id, |job| {
                    job.status = Status::Failed;
                    job.failure = Some(format!(
                        "Failed to parse users file JSON when importing users: line {} column {}",
                        e.line(),
                        e.column()
                    ));
                });
            }
        };
        let (upsert, total) = (
            self.jobs().get(id).is_some_and(|j| j.upsert),
            list.len() as u64,
        );
        self.update(id, |job| {
            job.status = Status::Processing;
            job.summary.total = total;
            job.started = Some(started);
        });
        let pace = (self.settings.users_per_second > 0)
            .then(|| Duration::from_secs_f64(1.0 / f64::from(self.settings.users_per_second)));
        let max_run = Duration::from_secs(self.settings.max_job_seconds);
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        for (n, user) in list.iter().enumerate() {
            if started.elapsed() > max_run {
                return self.update(id, |job| {
                    job.status = Status::Expired;
                    job.failure = Some(format!(
                        "The job ran past its limit of {} seconds; the users before the first not taken up were imported",
                        max_run.as_secs()
                    ));
                });
            }
            let checked = records::check(user, upsert, &self.protected, &self.factors, now_ms)
                .and_then(|record| {
                    // Links only to accounts held under the record's own email.
                    match records::unproven_links(&record, legacy) {
                        Ok(unproven) if unproven.is_empty() => Ok(Ok(record)),
                        Ok(unproven) => Err(unproven),
                        Err(down) => Ok(Err(down)),
                    }
                });
            let outcome = match checked {
                Err(errors) => Err(errors),
                Ok(Err(down)) => {
                    // Like the directory down: the job fails, what was imported stays.
                    return self.update(id, |job| {
                        job.status = Status::Failed;
                        job.failure = Some(format!("A legacy store failed: {}", down.message));
                    });
                }
                Ok(Ok(record)) => match state.import_user(&record) {
                    Ok(ImportOutcome::Inserted(_)) => Ok(true),
                    Ok(ImportOutcome::Updated(_)) => Ok(false),
                    Ok(ImportOutcome::Duplicate(_)) => Err(vec![RecordError {
                        code: "DUPLICATED_USER",
                        message: "The user already exists.".into(),
                        path: "email".into(),
                    }]),
                    Ok(ImportOutcome::FactorsRefused(_)) => Err(vec![RecordError {
                        code: "CONFLICT",
                        message: "The user already exists: an import does not replace an existing user's second factors".into(),
                        path: "mfa_factors".into(),
                    }]),
                    Err(crate::state::StoreError::Conflict(message)) => Err(vec![RecordError {
                        code: "CONFLICT",
                        message,
                        path: "app_metadata.legacy_accounts".into(),
                    }]),
                    Err(e) => {
                        // The directory is down: the job fails; what was imported stays,
                        // and a resubmission reports those users as duplicates.
                        return self.update(id, |job| {
                            job.status = Status::Failed;
                            job.failure = Some(format!("The directory failed: {e}"));
                        });
                    }
                },
            };
            self.update(id, |job| {
                job.done = n as u64 + 1;
                match outcome {
                    Ok(true) => job.summary.inserted += 1,
                    Ok(false) => job.summary.updated += 1,
                    Err(errors) => {
                        job.summary.failed += 1;
                        job.errors.push(json!({
                            "user": records::redacted(user),
                            "errors": errors,
                        }));
                    }
                }
            });
            if let Some(pace) = pace {
                std::thread::sleep(pace);
            }
        }
        self.update(id, |job| job.status = Status::Completed);
    }
}

async fn status(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let (api, rate) = match admitted(&app, &headers) {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let found = api.jobs().get(&id).map(Job::to_json);
    with_headers(
        match found {
            Some(job) => Json(job).into_response(),
            None => no_such_job(),
        },
        rate,
    )
}

async fn errors(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let (api, rate) = match admitted(&app, &headers) {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    // Auth0's answer is the refused users, or for a job that failed as a whole (its
    // file unread) the job itself with its `status_details`, as the SDKs parse it.
    let found = api.jobs().get(&id).map(|job| {
        if job.status == Status::Failed && job.errors.is_empty() {
            Some(job.to_json())
        } else {
            (!job.errors.is_empty()).then(|| Value::Array(job.errors.clone()))
        }
    });
    with_headers(
        match found {
            None => no_such_job(),
            Some(None) => StatusCode::NO_CONTENT.into_response(),
            Some(Some(body)) => Json(body).into_response(),
        },
        rate,
    )
}

#[derive(Deserialize)]
struct FindQuery {
    external_id: String,
}

async fn find(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<FindQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let (api, rate) = match admitted(&app, &headers) {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let Ok(Query(query)) = query else {
        return with_headers(
            auth0_error(
                StatusCode::BAD_REQUEST,
                "external_id is required",
                "invalid_query",
            ),
            rate,
        );
    };
    let found: Vec<Value> = api
        .jobs()
        .values()
        .filter(|job| job.external_id.as_deref() == Some(query.external_id.as_str()))
        .map(Job::to_json)
        .collect();
    with_headers(Json(found).into_response(), rate)
}
