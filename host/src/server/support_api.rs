//! The support console's admin API. Each agent has a bearer token of their own
//! (`[[support.agent]]`), so every action is the agent's, never a shared account's;
//! the guardrails themselves live in `flows::support`.

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

use super::{AppState, error, evaluate};
use crate::flows::support::{NewRequest, SupportError};

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin/support/users", get(lookup))
        .route("/admin/support/users/{id}/{action}", post(act))
        .route("/admin/support/requests", post(request))
        .route("/admin/support/requests/{id}/{step}", post(step))
}

/// The agent whose token the request carries.
fn agent(app: &AppState, headers: &HeaderMap) -> Result<String, Box<Response>> {
    app.agents
        .authenticate(headers)
        .map(|agent| agent.name.clone())
        .map_err(|refusal| Box::new(refusal.into_response()))
}

fn body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, Box<Response>> {
    let body = body.map_err(|r| Box::new(error(r.status(), r.body_text())))?;
    serde_json::from_slice(&body).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("invalid request: {e}"),
        ))
    })
}

fn answer<T: serde::Serialize>(result: Result<Result<T, SupportError>, Response>) -> Response {
    match result {
        Ok(Ok(value)) => Json(value).into_response(),
        Ok(Err(e)) => error(
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            e.to_string(),
        ),
        Err(response) => response,
    }
}

#[derive(Deserialize)]
struct LookupQuery {
    email: String,
}

async fn lookup(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<LookupQuery>,
) -> Response {
    let agent = match agent(&app, &headers) {
        Ok(agent) => agent,
        Err(response) => return *response,
    };
    let gateway = app.gateway();
    answer(evaluate(&app, move || gateway.support().lookup(&agent, &query.email)).await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestBody {
    action: String,
    user_id: String,
    #[serde(default)]
    params: Value,
    #[serde(default)]
    evidence: String,
    #[serde(default)]
    reason: String,
    skip_wait_reason: Option<String>,
}

async fn request(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    let agent = match agent(&app, &headers) {
        Ok(agent) => agent,
        Err(response) => return *response,
    };
    let request: RequestBody = match body(raw) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    let gateway = app.gateway();
    answer(
        evaluate(&app, move || {
            gateway.support().request(
                &agent,
                NewRequest {
                    action: &request.action,
                    user_id: &request.user_id,
                    params: request.params.clone(),
                    evidence: &request.evidence,
                    reason: &request.reason,
                    skip_wait_reason: request.skip_wait_reason.as_deref(),
                },
            )
        })
        .await,
    )
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StepBody {
    #[serde(default)]
    evidence: String,
    #[serde(default)]
    reason: String,
    skip_wait_reason: Option<String>,
}

/// `approve`, `execute` or `cancel` a request.
async fn step(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, step)): Path<(String, String)>,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    let agent = match agent(&app, &headers) {
        Ok(agent) => agent,
        Err(response) => return *response,
    };
    let empty = matches!(&raw, Ok(b) if b.is_empty());
    let body: StepBody = if empty {
        StepBody::default()
    } else {
        match body(raw) {
            Ok(body) => body,
            Err(response) => return *response,
        }
    };
    let gateway = app.gateway();
    answer(
        evaluate(&app, move || match step.as_str() {
            "approve" => gateway.support().approve(
                &agent,
                &id,
                &body.evidence,
                body.skip_wait_reason.as_deref(),
            ),
            "execute" => gateway.support().execute(&agent, &id),
            "cancel" => gateway.support().cancel(&agent, &id, &body.reason),
            _ => Err(SupportError::NotFound(
                "no such step: approve, execute or cancel".into(),
            )),
        })
        .await,
    )
}

#[derive(Deserialize)]
struct ActBody {
    #[serde(default)]
    reason: String,
    #[serde(flatten)]
    params: Value,
}

/// One agent's undoable actions: `unlink`, `password-reset`, `mfa-revert`.
async fn act(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    let agent = match agent(&app, &headers) {
        Ok(agent) => agent,
        Err(response) => return *response,
    };
    let body: ActBody = match body(raw) {
        Ok(body) => body,
        Err(response) => return *response,
    };
    let gateway = app.gateway();
    answer(
        evaluate(&app, move || {
            gateway
                .support()
                .act(&agent, &id, &action, &body.params, &body.reason)
        })
        .await,
    )
}
