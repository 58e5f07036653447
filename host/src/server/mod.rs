//! `portcullis serve`: the sidecar for gateways that are not written in Rust. JSON
//! over HTTP, hot reload with rollback, Prometheus metrics, and the outbox dispatcher.

mod admission;
mod callers;
mod import_api;
mod listener;
mod metrics;
mod recovery_api;
mod support_api;
pub mod support_client;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

pub use callers::{Caller, Callers};
pub use listener::{ConnectionLimits, serve_connections};
pub use metrics::Metrics;

use crate::config::PipelineConfig;
use crate::flows::proof::{Need, Presented, ProofError};
use crate::flows::{Gateway, GatewayError};
use crate::jobs::outbox::Dispatcher;
use crate::model::LoginAttempt;
use crate::runtime::engine::Runtime;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

/// The live pipeline, the one before it (for rollback), and what reloads need.
pub struct AppState {
    gateway: ArcSwap<Gateway>,
    previous: Mutex<Option<Arc<Gateway>>>,
    runtime: Runtime,
    config_path: PathBuf,
    admin_token: Option<String>,
    callers: Callers,
    /// Support agents (`[[support.agent]]`), for the console's admin API.
    agents: Callers,
    max_body: usize,
    request_timeout: std::time::Duration,
    evaluations: tokio::sync::Semaphore,
    /// The users-imports API, when `[server.import_api]` is set (a reload keeps it).
    import_api: Option<Arc<import_api::ImportApi>>,
    /// The semaphore's size: all free means no evaluation is running.
    evaluation_slots: usize,
    /// The host's clock for every gateway this state opens; `None`: the system's.
    clock: Option<Arc<dyn crate::flows::clock::Clock>>,
    pub metrics: Metrics,
}

impl AppState {
    /// Loads the config and its pipeline; the engine is kept for every reload.
    pub fn load(config_path: &Path) -> Result<Self, ServeError> {
        Self::load_with_clock(config_path, None)
    }

    /// As [`AppState::load`], deciding time by `clock` (tests move it by hand), in
    /// this gateway and every one a reload opens.
    pub fn load_with_clock(
        config_path: &Path,
        clock: Option<Arc<dyn crate::flows::clock::Clock>>,
    ) -> Result<Self, ServeError> {
        let config = PipelineConfig::load(config_path).map_err(|e| GatewayError::Load(e.into()))?;
        let runtime = Runtime::new(&config.engine).map_err(GatewayError::Load)?;
        let mut gateway = Gateway::open(&config, &runtime)?;
        if let Some(clock) = &clock {
            gateway = gateway.with_clock(clock.clone());
        }
        let admin_token = match &config.server.admin_token_env {
            Some(name) => {
                let token = std::env::var(name).map_err(|_| {
                    ServeError::Config(format!(
                        "server.admin_token_env names {name}, which is not set"
                    ))
                })?;
                if token.len() < 32 {
                    return Err(ServeError::Config(format!(
                        "{name} must hold at least 32 characters"
                    )));
                }
                Some(token)
            }
            None => None,
        };
        let callers = Callers::load(&config.server.callers).map_err(ServeError::Config)?;
        // Agents are callers of the admin API, each with a token of their own.
        let agents = Callers::load(&config.support.agents)
            .map_err(|e| ServeError::Config(e.replace("server.caller", "support.agent")))?;
        let import_api = config
            .server
            .import_api
            .as_ref()
            .map(|settings| {
                let protected = crate::jobs::import::records::protected_keys(&config);
                let factors = crate::jobs::import::records::FactorImport::from_config(&config)?;
                import_api::ImportApi::new(settings, protected, factors, &config.mfa).map(Arc::new)
            })
            .transpose()
            .map_err(ServeError::Config)?;
        let evaluation_slots = config.server.max_concurrent_evaluations.unwrap_or_else(|| {
            4 * std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        });
        Ok(Self {
            gateway: ArcSwap::from_pointee(gateway),
            previous: Mutex::new(None),
            runtime,
            config_path: config_path.to_owned(),
            admin_token,
            callers,
            agents,
            max_body: config.server.max_body_kb * 1024,
            request_timeout: std::time::Duration::from_millis(config.server.request_timeout_ms),
            evaluations: tokio::sync::Semaphore::new(evaluation_slots),
            import_api,
            evaluation_slots,
            clock,
            metrics: Metrics::new(),
        })
    }

    pub fn gateway(&self) -> Arc<Gateway> {
        self.gateway.load_full()
    }

    /// Re-reads the config and swaps the new pipeline in atomically. Logins already
    /// running finish on the pipeline they started with. On failure nothing changes.
    pub fn reload(&self) -> Result<usize, String> {
        let loaded = PipelineConfig::load(&self.config_path)
            .map_err(|e| e.to_string())
            .and_then(|config| Gateway::open(&config, &self.runtime).map_err(|e| e.to_string()))
            .map(|gateway| match &self.clock {
                Some(clock) => gateway.with_clock(clock.clone()),
                None => gateway,
            });
        match loaded {
            Ok(gateway) => {
                let rules = gateway.pipeline().rules().len();
                let names = |g: &Gateway| -> Vec<String> {
                    g.pipeline()
                        .rules()
                        .iter()
                        .map(|r| r.settings.name.clone())
                        .collect()
                };
                let now = names(&gateway);
                let old = self.gateway.swap(Arc::new(gateway));
                let before = names(&old);
                *self.previous.lock().unwrap_or_else(|p| p.into_inner()) = Some(old);
                self.metrics.reload("ok");
                // One line that says what was reloaded (shown by default: see main.rs).
                let differ = |a: &[String], b: &[String]| -> Vec<String> {
                    a.iter().filter(|n| !b.contains(n)).cloned().collect()
                };
                let (added, removed) = (differ(&now, &before), differ(&before, &now));
                tracing::info!(
                    "pipeline reloaded from {}: {rules} rule(s) ({}){}{}",
                    self.config_path.display(),
                    now.join(", "),
                    if added.is_empty() {
                        String::new()
                    } else {
                        format!("; added {}", added.join(", "))
                    },
                    if removed.is_empty() {
                        String::new()
                    } else {
                        format!("; removed {}", removed.join(", "))
                    }
                );
                Ok(rules)
            }
            Err(e) => {
                self.metrics.reload("failed");
                tracing::error!("reload failed, keeping the running pipeline: {e}");
                Err(e)
            }
        }
    }

    /// Puts the pipeline before the last reload back (and keeps the current one as the
    /// next rollback target).
    pub fn rollback(&self) -> Result<usize, String> {
        let mut previous = self.previous.lock().unwrap_or_else(|p| p.into_inner());
        let Some(older) = previous.take() else {
            return Err("there is no previous pipeline to roll back to".into());
        };
        let rules = older.pipeline().rules().len();
        *previous = Some(self.gateway.swap(older));
        self.metrics.reload("rollback");
        tracing::info!("pipeline rolled back to the one before the last reload: {rules} rule(s)");
        Ok(rules)
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

fn body_error(rejection: BytesRejection) -> Response {
    error(rejection.status(), rejection.body_text())
}

/// Runs an evaluation once a slot is free. In place, on this worker thread: the
/// runtime moves its other tasks to another thread meanwhile, which costs far less
/// than handing every login to the blocking pool (7k -> 15k logins/s measured), and a
/// slow evaluation (a password hash, a rule running to its deadline) still stalls no
/// other request.
async fn evaluate<T>(app: &AppState, work: impl FnOnce() -> T) -> Result<T, Response> {
    let _slot = app
        .evaluations
        .acquire()
        .await
        .map_err(|_| error(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))?;
    Ok(tokio::task::block_in_place(work))
}

/// The next logins' instances (`engine.warm_instances`), made in a task of their own
/// so the answer at hand goes out first, and only when no evaluation is running: under
/// load the work would only move, and handing it to another task costs more than the
/// login saves (`cargo xtask bench-server --warm-instances`, BENCHMARKS.md).
fn prepare_next(app: &AppState, gateway: Arc<Gateway>) {
    if app.evaluations.available_permits() < app.evaluation_slots {
        return;
    }
    tokio::spawn(async move { tokio::task::block_in_place(|| gateway.pipeline().prepare()) });
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("evaluation task failed: {e}"),
        )
    })
}

fn gateway_error(e: GatewayError) -> Response {
    match e {
        GatewayError::Refused(refusal) => (
            StatusCode::FORBIDDEN,
            Json(json!({"error": refusal.to_string(), "refused": serde_json::to_value(&refusal).ok().map(|v| v["refused"].clone())})),
        )
            .into_response(),
        GatewayError::Login(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
        other => error(StatusCode::SERVICE_UNAVAILABLE, other.to_string()),
    }
}

async fn login(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let caller = match app.callers.authenticate(&headers) {
        Ok(caller) => caller,
        Err(refusal) => return refusal.into_response(),
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return body_error(rejection),
    };
    let attempt = match std::str::from_utf8(&body)
        .map_err(|e| e.to_string())
        .and_then(|t| LoginAttempt::from_json(t).map_err(|e| e.to_string()))
    {
        Ok(attempt) => attempt,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    if attempt.password.is_none() && !caller.vouches {
        return error(
            StatusCode::FORBIDDEN,
            format!(
                "caller {:?} may not send logins without a password (it does not vouch for authentications)",
                caller.name
            ),
        );
    }
    let gateway = app.gateway();
    let next = gateway.clone();
    match evaluate(&app, move || gateway.login_owned(attempt)).await {
        Ok(Ok(verdict)) => {
            app.metrics.observe(&verdict);
            prepare_next(&app, next);
            verdict_response(&verdict)
        }
        Ok(Err(e)) => gateway_error(e),
        Err(response) => response,
    }
}

/// A verdict as JSON, written once into a buffer of a verdict's usual size (axum's
/// `Json` starts at 128 bytes and grows, copying, about three times per verdict).
fn verdict_response(verdict: &crate::runtime::verdict::Verdict) -> Response {
    let mut body = Vec::with_capacity(2048);
    match serde_json::to_writer(&mut body, verdict) {
        Ok(()) => (
            [(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the verdict could not be written: {e}"),
        ),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContinueRequest {
    token: String,
    transaction_id: String,
    result: serde_json::Value,
}

async fn resume(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(refusal) = app.callers.authenticate(&headers) {
        return refusal.into_response();
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return body_error(rejection),
    };
    let request: ContinueRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("invalid continue request: {e}"),
            );
        }
    };
    // Expiry is the host's to decide: a `time_ms` here is refused as an unknown field.
    let gateway = app.gateway();
    let next = gateway.clone();
    let result = request.result.to_string();
    match evaluate(&app, move || {
        gateway.resume(&request.token, &request.transaction_id, &result)
    })
    .await
    {
        Ok(Ok(verdict)) => {
            app.metrics.observe(&verdict);
            prepare_next(&app, next);
            Json(verdict).into_response()
        }
        Ok(Err(e)) => gateway_error(e),
        Err(response) => response,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollRequest {
    /// The proof the host issued (a sign-in's, a recovery's, support's link).
    proof_token: Option<String>,
    /// Only from a caller that vouches: the user it signed in.
    user_id: Option<String>,
    phone: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfirmRequest {
    proof_token: Option<String>,
    user_id: Option<String>,
    enrollment_id: String,
    code: String,
}

/// The longest enrolment request worth reading: ids, a token, a phone number, a code.
const MAX_ENROLL_BODY: usize = 2 * 1024;

fn enroll_error(e: crate::flows::enroll::EnrollError) -> Response {
    use crate::flows::enroll::EnrollError as E;
    let status = match &e {
        E::InvalidPhone(_) | E::RefusedPhone => StatusCode::BAD_REQUEST,
        E::UnknownUser | E::UnknownEnrollment => StatusCode::NOT_FOUND,
        E::AlreadyEnrolled => StatusCode::CONFLICT,
        E::WrongCode => StatusCode::UNPROCESSABLE_ENTITY,
        E::Expired => StatusCode::GONE,
        E::TooManyAttempts | E::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        E::Unavailable(_) | E::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    (
        status,
        Json(json!({"error": e.to_string(), "code": e.code()})),
    )
        .into_response()
}

/// Reads a small JSON body for the enrolment and recovery endpoints, after the caller
/// is known; hands back the caller too.
fn caller_and_body<'a, T: serde::de::DeserializeOwned>(
    app: &'a AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(&'a Caller, T), Box<Response>> {
    let caller = app
        .callers
        .authenticate(headers)
        .map_err(|refusal| Box::new(refusal.into_response()))?;
    let body = body.map_err(|rejection| Box::new(body_error(rejection)))?;
    if body.len() > MAX_ENROLL_BODY {
        return Err(Box::new(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request too large",
        )));
    }
    // The body holds a phone number, a token or a code: the error names none.
    let request = serde_json::from_slice(&body).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("invalid request at line {} column {}", e.line(), e.column()),
        ))
    })?;
    Ok((caller, request))
}

fn enroll_body<T: serde::de::DeserializeOwned>(
    app: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, Box<Response>> {
    caller_and_body(app, headers, body).map(|(_, request)| request)
}

/// What a request presents as proof: a token the host issued, or, from a caller that
/// vouches, the user it signed in. A user id from any other caller is not proof and
/// is answered as nothing at all.
fn presented<'a>(
    caller: &'a (String, bool),
    proof_token: Option<&'a str>,
    user_id: Option<&'a str>,
) -> Result<Presented<'a>, Box<Response>> {
    match (proof_token, user_id) {
        (Some(_), Some(_)) => Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "give either proof_token or (from a caller that vouches) user_id, not both",
        ))),
        (Some(token), None) => Ok(Presented::Token(token)),
        (None, Some(user_id)) if caller.1 => Ok(Presented::Vouched {
            caller: &caller.0,
            user_id,
        }),
        _ => Ok(Presented::Nothing),
    }
}

/// Every refusal of proof looks the same, whatever the account or the token.
pub(crate) fn proof_error(e: ProofError) -> Box<Response> {
    Box::new(proof_response(e))
}

fn proof_response(e: ProofError) -> Response {
    match e {
        ProofError::NotProven => (
            StatusCode::FORBIDDEN,
            Json(json!({"error": e.to_string(), "code": "proof_required"})),
        )
            .into_response(),
        ProofError::Store(e) => {
            tracing::error!("checking a proof: {e}");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "state unavailable; try again",
            )
        }
    }
}

/// Checks the proof a request presents for `need` (the one check, in an evaluation
/// slot) and runs `work` with what it granted.
async fn with_proof<T>(
    app: &AppState,
    caller: &Caller,
    proof_token: Option<String>,
    user_id: Option<String>,
    need: Need,
    work: impl FnOnce(&Gateway, &crate::flows::proof::Grant) -> T,
) -> Result<T, Box<Response>> {
    let caller = (caller.name.clone(), caller.vouches);
    let gateway = app.gateway();
    match evaluate(app, move || {
        let presented = presented(&caller, proof_token.as_deref(), user_id.as_deref())?;
        let grant = gateway.authorize(presented, need).map_err(proof_error)?;
        Ok(work(&gateway, &grant))
    })
    .await
    {
        Ok(done) => done,
        Err(response) => Err(Box::new(response)),
    }
}

/// `POST /v1/mfa/enroll`: starts enrolling a phone with the new provider for the user
/// the proof names; a code is texted to it.
async fn mfa_enroll(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (caller, request): (_, EnrollRequest) = match caller_and_body(&app, &headers, body) {
        Ok(parts) => parts,
        Err(response) => return *response,
    };
    let EnrollRequest {
        proof_token,
        user_id,
        phone,
    } = request;
    let outcome = with_proof(
        &app,
        caller,
        proof_token,
        user_id,
        Need::Enrol,
        move |g, grant| g.enroll_sms(grant, &phone),
    )
    .await;
    use crate::flows::enroll::EnrollError as E;
    match outcome {
        Ok(Ok(started)) => {
            app.metrics.enrolment_send("sent");
            (StatusCode::ACCEPTED, Json(started)).into_response()
        }
        Ok(Err(e)) => {
            match &e {
                E::RateLimited => app.metrics.enrolment_send("rate_limited"),
                // Refused by kind or region: both are what SMS pumping looks like.
                E::InvalidPhone(
                    crate::mfa::phone::PhoneError::Kind(_)
                    | crate::mfa::phone::PhoneError::RegionNotAllowed { .. }
                    | crate::mfa::phone::PhoneError::RegionOutside(_),
                ) => app.metrics.enrolment_send("refused_number"),
                _ => {}
            }
            enroll_error(e)
        }
        Err(response) => *response,
    }
}

/// `POST /v1/mfa/enroll/confirm`: the code came back; the factor becomes active. Only
/// the proof that started the enrolment confirms it.
async fn mfa_enroll_confirm(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (caller, request): (_, ConfirmRequest) = match caller_and_body(&app, &headers, body) {
        Ok(parts) => parts,
        Err(response) => return *response,
    };
    let ConfirmRequest {
        proof_token,
        user_id,
        enrollment_id,
        code,
    } = request;
    let outcome = with_proof(
        &app,
        caller,
        proof_token,
        user_id,
        Need::Enrol,
        move |g, grant| g.confirm_sms(grant, &enrollment_id, &code),
    )
    .await;
    match outcome {
        Ok(Ok(enrolled)) => (StatusCode::CREATED, Json(enrolled)).into_response(),
        Ok(Err(e)) => enroll_error(e),
        Err(response) => *response,
    }
}

async fn healthz(State(app): State<Arc<AppState>>) -> Response {
    Json(json!({"status": "ok", "rules": app.gateway().pipeline().rules().len()})).into_response()
}

async fn metrics(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let gateway = app.gateway();
    if let Ok(Ok(backlog)) = blocking(move || gateway.state().outbox_backlog()).await {
        app.metrics.outbox_backlog.set(backlog as i64);
    }
    let gateway = app.gateway();
    if let Ok(Ok(cohorts)) = blocking(move || gateway.state().mfa_status()).await {
        app.metrics.set_mfa(&cohorts);
    }
    let accept = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let (content_type, body) = app.metrics.negotiate(accept);
    ([("content-type", content_type)], body).into_response()
}

/// `None` when the request carries the admin token; otherwise the response to send.
fn refuse_unless_admin(app: &AppState, headers: &HeaderMap) -> Option<Response> {
    let Some(expected) = &app.admin_token else {
        return Some(error(
            StatusCode::NOT_FOUND,
            "admin endpoints are off (set server.admin_token_env)",
        ));
    };
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
        None
    } else {
        Some(error(
            StatusCode::UNAUTHORIZED,
            "a valid admin bearer token is required",
        ))
    }
}

async fn admin_reload(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(response) = refuse_unless_admin(&app, &headers) {
        return response;
    }
    let worker = app.clone();
    match blocking(move || worker.reload()).await {
        Ok(Ok(rules)) => Json(json!({"reloaded": true, "rules": rules})).into_response(),
        Ok(Err(e)) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("reload failed, the running pipeline stays: {e}"),
        ),
        Err(response) => response,
    }
}

async fn admin_rollback(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(response) = refuse_unless_admin(&app, &headers) {
        return response;
    }
    match app.rollback() {
        Ok(rules) => Json(json!({"rolled_back": true, "rules": rules})).into_response(),
        Err(e) => error(StatusCode::CONFLICT, e),
    }
}

/// A request that is not answered in time (a body trickling in, an evaluation stuck
/// behind others) is answered 503 and its work dropped.
async fn within_deadline(
    State(app): State<Arc<AppState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(app.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the request was not completed in time",
        ),
    }
}

pub fn router(app: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/login", post(login))
        .route("/v1/continue", post(resume))
        .route("/v1/mfa/enroll", post(mfa_enroll))
        .route("/v1/mfa/enroll/confirm", post(mfa_enroll_confirm))
        .route("/v1/mfa/recovery-codes", post(recovery_api::issue_codes))
        .route("/v1/recovery/cancel", post(recovery_api::cancel))
        .merge(support_api::routes())
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/admin/reload", post(admin_reload))
        .route("/admin/rollback", post(admin_rollback))
        .layer(axum::extract::DefaultBodyLimit::max(app.max_body))
        // Its own body limit: a users file is up to 500 KB.
        .merge(import_api::routes(
            app.import_api.as_ref().map(|api| api.max_file_kb()),
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            admission::admit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            within_deadline,
        ))
        .with_state(app)
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = terminate => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

/// Serves until SIGTERM; `on_listening` gets the bound address (port 0 picks one).
pub async fn serve(
    config_path: &Path,
    listen: SocketAddr,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let app = Arc::new(tokio::task::block_in_place(|| AppState::load(config_path))?);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: listen,
            source,
        })?;
    // SIGHUP reloads, as daemons do: handled before the address is announced, so a
    // SIGHUP sent once it is cannot end the process (the signal's default action).
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    on_listening(listener.local_addr()?);
    let reloader = app.clone();
    tokio::spawn(async move {
        let Ok(mut hangups) = hangups else {
            return;
        };
        while hangups.recv().await.is_some() {
            let worker = reloader.clone();
            let _ = tokio::task::spawn_blocking(move || worker.reload()).await;
        }
    });

    let (stop_dispatch, dispatch_stopped) = tokio::sync::watch::channel(false);
    let config =
        PipelineConfig::load(config_path).map_err(|e| ServeError::Config(e.to_string()))?;
    let dispatcher = config.server.dispatch_outbox.then(|| {
        let phone_keys = config
            .mfa
            .verify
            .as_ref()
            .and_then(|_| config.mfa.key_ring().ok().map(Arc::new));
        let dispatcher = Dispatcher::new(app.gateway().state().clone(), config.outbox.clone())
            .with_phone_keys(phone_keys)
            .with_audit_checkpoints(config.audit.checkpoint_file.clone());
        let mut stopped = dispatch_stopped.clone();
        tokio::spawn(async move {
            let stop = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(e) = dispatcher.run(false, stop).await {
                tracing::error!("outbox dispatcher stopped: {e}");
            }
        })
    });

    let import_worker = start_import_worker(&app)?;
    let limits = ConnectionLimits::from(&config.server);
    let drain = std::time::Duration::from_millis(config.server.request_timeout_ms);
    serve_connections(
        listener,
        router(app.clone()),
        limits,
        shutdown_signal(),
        drain,
    )
    .await?;
    let _ = stop_dispatch.send(true);
    if let Some(task) = dispatcher {
        let _ = task.await;
    }
    if let (Some(api), Some(worker)) = (&app.import_api, import_worker) {
        // Its jobs let go of their leases, so another instance goes on at once.
        api.stop_worker();
        let _ = tokio::task::spawn_blocking(move || worker.join()).await;
    }
    Ok(())
}

/// The users-imports API's job worker on a thread of its own, when the API is on: it
/// runs jobs from the shared state, whichever instance accepted them.
fn start_import_worker(
    app: &Arc<AppState>,
) -> Result<Option<std::thread::JoinHandle<()>>, ServeError> {
    let Some(api) = &app.import_api else {
        return Ok(None);
    };
    let source = app.clone();
    // Read for each job: a reload's stores and clock are the next job's.
    let env = Arc::new(move || {
        let gateway = source.gateway();
        crate::jobs::import::worker::JobEnv {
            state: gateway.state().clone(),
            legacy: gateway.services().legacy.clone(),
            clock: gateway.clock().clone(),
        }
    });
    let worker = api.worker(env);
    let thread = std::thread::Builder::new()
        .name("import-worker".into())
        .spawn(move || worker.run())?;
    Ok(Some(thread))
}
