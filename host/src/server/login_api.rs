//! `POST /v1/login` and `POST /v1/continue`: a login attempt in, a verdict out.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{AppState, body_error, error, evaluate, gateway_error, prepare_next};
use crate::model::LoginAttempt;

pub(super) async fn login(
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

pub(super) async fn resume(
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
