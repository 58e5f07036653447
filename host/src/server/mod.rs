//! `portcullis serve`: the sidecar for gateways that are not written in Rust. JSON
//! over HTTP, hot reload with rollback, Prometheus metrics, and the outbox dispatcher.

mod admin_api;
mod admission;
mod app_state;
mod callers;
mod enroll_api;
mod import_api;
mod listener;
mod login_api;
mod metrics;
mod recovery_api;
mod requests;
mod support_api;
pub mod support_client;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

pub use app_state::AppState;
pub use callers::{Caller, Callers};
pub use listener::{ConnectionLimits, serve_connections};
pub use metrics::Metrics;

use crate::config::PipelineConfig;
use crate::flows::{Gateway, GatewayError};
use crate::jobs::outbox::Dispatcher;

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

pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

pub(super) fn body_error(rejection: BytesRejection) -> Response {
    error(rejection.status(), rejection.body_text())
}

/// Runs an evaluation once a slot is free. In place, on this worker thread: the
/// runtime moves its other tasks to another thread meanwhile, which costs far less
/// than handing every login to the blocking pool (7k -> 15k logins/s measured), and a
/// slow evaluation (a password hash, a rule running to its deadline) still stalls no
/// other request.
pub(super) async fn evaluate<T>(app: &AppState, work: impl FnOnce() -> T) -> Result<T, Response> {
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
pub(super) fn prepare_next(app: &AppState, gateway: Arc<Gateway>) {
    if app.evaluations.available_permits() < app.evaluation_slots {
        return;
    }
    tokio::spawn(async move { tokio::task::block_in_place(|| gateway.pipeline().prepare()) });
}

pub(super) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("evaluation task failed: {e}"),
        )
    })
}

pub(super) fn gateway_error(e: GatewayError) -> Response {
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
        .route("/v1/login", post(login_api::login))
        .route("/v1/continue", post(login_api::resume))
        .route("/v1/mfa/enroll", post(enroll_api::mfa_enroll))
        .route(
            "/v1/mfa/enroll/confirm",
            post(enroll_api::mfa_enroll_confirm),
        )
        .route("/v1/mfa/recovery-codes", post(recovery_api::issue_codes))
        .route("/v1/recovery/cancel", post(recovery_api::cancel))
        .merge(support_api::routes())
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/admin/reload", post(admin_api::admin_reload))
        .route("/admin/rollback", post(admin_api::admin_rollback))
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
