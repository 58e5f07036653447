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
//! `x-ratelimit-limit`, `-remaining`, `-reset`), counted in the shared state per
//! minute of the host's clock, so instances over one directory share it. A submission
//! is read to its end (bounded by the body limit) before any answer but a missing
//! token, so a client sending a file always gets the answer instead of a connection
//! closed under its upload. Users files are sealed under the `[mfa]` keys before they
//! are stored (`state::import_jobs`). Jobs, their
//! progress and errors live in the directory (`state::import_jobs`): any instance
//! over it answers for any job, the limit of active jobs holds across instances, and
//! each instance's worker (`jobs::import::worker`) runs jobs under a lease, so another
//! takes a job up where it stood when its instance dies. A job and its errors are kept
//! `job_retention_seconds` (Auth0: 24 h), so a client keeps its own results.

mod submission;
mod wire;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::AppState;
use crate::config::ImportApiSettings;
use crate::jobs::import::worker::{JobEnv, Signal, Worker};
use crate::mfa::sealed::KeyRing;
use crate::state::import_jobs::JobStatus;

/// The rate limit's key in the shared state's windows: one limit for the API, as
/// Auth0's global limit, whichever instance is asked.
const RATE_KEY: &str = "import-api:requests";
const RATE_WINDOW_MS: u64 = 60_000;

pub struct ImportApi {
    token: SecretString,
    settings: ImportApiSettings,
    /// What an upsert leaves alone on a user who signed in (`records::protected_keys`).
    protected: Vec<String>,
    /// How imported second factors are validated and sealed.
    factors: crate::jobs::import::records::FactorImport,
    /// Seal users files at rest (the `[mfa]` keys, as phones are sealed).
    file_keys: Arc<KeyRing>,
    /// Wakes this instance's job worker when a job is submitted here.
    signal: Arc<Signal>,
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
        factors: crate::jobs::import::records::FactorImport,
        mfa: &crate::config::MfaSettings,
    ) -> Result<Self, String> {
        let token = crate::config::secret_from(
            "server.import_api token",
            settings.token_env.as_deref(),
            settings.token_file.as_deref(),
        )?;
        if token.expose_secret().len() < 32 {
            return Err("server.import_api: the token must hold at least 32 characters".into());
        }
        if settings.requests_per_minute == 0 {
            return Err("server.import_api.requests_per_minute must be at least 1".into());
        }
        // A users file holds password hashes and phone numbers: never at rest in clear.
        let file_keys = mfa.key_ring().map_err(|e| {
            format!(
                "server.import_api: users files are sealed at rest under the [mfa] keys \
                 (keys_env or keys_file), as phone numbers are: {e}"
            )
        })?;
        if settings.max_concurrent_jobs == 0 || settings.max_file_kb == 0 {
            return Err(
                "server.import_api: max_concurrent_jobs and max_file_kb must be at least 1".into(),
            );
        }
        // Each record renews the lease, and records are at most a second apart
        // (`users_per_second` >= 1): a lease of 2 s outlasts the wait between two.
        if settings.job_lease_seconds < 2 {
            return Err("server.import_api.job_lease_seconds must be at least 2".into());
        }
        Ok(Self {
            token,
            settings: settings.clone(),
            protected,
            factors,
            file_keys: Arc::new(file_keys),
            signal: Arc::new(Signal::default()),
        })
    }

    pub(super) fn max_file_kb(&self) -> usize {
        self.settings.max_file_kb
    }

    fn retention_ms(&self) -> u64 {
        self.settings.job_retention_seconds.saturating_mul(1000)
    }

    /// This instance's job worker, over what `env` hands it for each job; run it on a
    /// thread of its own (`Worker::run`), and `stop_worker` to end it.
    pub(super) fn worker(&self, env: Arc<dyn Fn() -> JobEnv + Send + Sync>) -> Worker {
        Worker::new(
            &self.settings,
            self.protected.clone(),
            self.factors.clone(),
            self.file_keys.clone(),
            env,
            self.signal.clone(),
        )
    }

    /// Stops the worker: its jobs let go of their leases between two records.
    pub(super) fn stop_worker(&self) {
        self.signal.stop();
    }

    /// Whether the request carries the API token (for the connection's admission, and
    /// every endpoint's; the rate limit is `rate`'s, once per request).
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

    /// Auth0's answer to a request without the API token.
    fn refuse_token() -> Response {
        auth0_error(StatusCode::UNAUTHORIZED, "Invalid token", "invalid_token")
    }

    /// Counts the request against the API's rate limit in the shared state (one count
    /// for all instances, per minute of the host's clock); the rate headers every
    /// answer carries, or the 429 that carries them.
    #[allow(clippy::result_large_err)]
    fn rate(&self, app: &AppState) -> Result<HeaderMap, Response> {
        let gateway = app.gateway();
        let now_ms = gateway.clock().now_ms();
        let counted = tokio::task::block_in_place(|| {
            crate::state::rate_windows::count_in(
                gateway.state().sql(),
                RATE_KEY,
                RATE_WINDOW_MS,
                now_ms,
            )
        });
        let (hits, ends_ms) = counted.map_err(unavailable)?;
        let limit = u64::from(self.settings.requests_per_minute);
        let mut rate = HeaderMap::new();
        let mut put = |name: &'static str, value: u64| {
            rate.insert(name, HeaderValue::from(value));
        };
        put("x-ratelimit-limit", limit);
        put("x-ratelimit-remaining", limit.saturating_sub(hits));
        put("x-ratelimit-reset", ends_ms.div_ceil(1000));
        if hits <= limit {
            return Ok(rate);
        }
        put(
            "retry-after",
            ends_ms.saturating_sub(now_ms).div_ceil(1000).max(1),
        );
        let mut response = auth0_error(
            StatusCode::TOO_MANY_REQUESTS,
            "Global limit has been reached",
            "too_many_requests",
        );
        response.headers_mut().extend(rate);
        Err(response)
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
    if !api.holds_token(headers) {
        return Err(ImportApi::refuse_token());
    }
    let rate = api.rate(app)?;
    Ok((api.clone(), rate))
}

fn no_such_job() -> Response {
    auth0_error(
        StatusCode::NOT_FOUND,
        "The job does not exist.",
        "inexistent_job",
    )
}

/// The shared state did not answer: the client tries again (the cause is logged, not
/// shown).
fn unavailable(e: impl std::fmt::Display) -> Response {
    tracing::error!("import API: the job store failed: {e}");
    auth0_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "The job store is unavailable, try again later",
        "temporarily_unavailable",
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
        .route("/api/v2/jobs/users-imports", post(submission::submit))
        .route("/api/v2/jobs", get(find))
        .route("/api/v2/jobs/{id}", get(status))
        .route("/api/v2/jobs/{id}/errors", get(errors))
        .layer(DefaultBodyLimit::max(limit))
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
    let gateway = app.gateway();
    let now = gateway.clock().now_ms();
    let found =
        tokio::task::block_in_place(|| gateway.state().import_job(&id, now, api.retention_ms()));
    with_headers(
        match found {
            Ok(Some(job)) => Json(wire::job_json(&job, now)).into_response(),
            Ok(None) => no_such_job(),
            Err(e) => unavailable(e),
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
    let gateway = app.gateway();
    let now = gateway.clock().now_ms();
    let found = tokio::task::block_in_place(|| {
        let Some(job) = gateway.state().import_job(&id, now, api.retention_ms())? else {
            return Ok(None);
        };
        let errors = gateway.state().import_job_errors(&id)?;
        Ok::<_, crate::state::StoreError>(Some((job, errors)))
    });
    // Auth0's answer is the refused users, or for a job that failed as a whole (its
    // file unread) the job itself with its `status_details`, as the SDKs parse it.
    let response = match found {
        Err(e) => unavailable(e),
        Ok(None) => no_such_job(),
        Ok(Some((job, errors))) if errors.is_empty() => {
            if job.status == JobStatus::Failed {
                Json(wire::job_json(&job, now)).into_response()
            } else {
                StatusCode::NO_CONTENT.into_response()
            }
        }
        Ok(Some((_, errors))) => Json(Value::Array(errors)).into_response(),
    };
    with_headers(response, rate)
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
    let gateway = app.gateway();
    let now = gateway.clock().now_ms();
    let found = tokio::task::block_in_place(|| {
        gateway
            .state()
            .import_jobs_by_external_id(&query.external_id, now, api.retention_ms())
    });
    with_headers(
        match found {
            Ok(jobs) => {
                let jobs: Vec<Value> = jobs.iter().map(|j| wire::job_json(j, now)).collect();
                Json(jobs).into_response()
            }
            Err(e) => unavailable(e),
        },
        rate,
    )
}
