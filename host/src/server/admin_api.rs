//! `POST /admin/reload` and `/admin/rollback`, behind the admin token.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use subtle::ConstantTimeEq;

use super::{AppState, blocking, error};

/// `None` when the request carries the admin token; otherwise the response to send.
pub(super) fn refuse_unless_admin(app: &AppState, headers: &HeaderMap) -> Option<Response> {
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

pub(super) async fn admin_reload(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Response {
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

pub(super) async fn admin_rollback(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Response {
    if let Some(response) = refuse_unless_admin(&app, &headers) {
        return response;
    }
    match app.rollback() {
        Ok(rules) => Json(json!({"rolled_back": true, "rules": rules})).into_response(),
        Err(e) => error(StatusCode::CONFLICT, e),
    }
}
