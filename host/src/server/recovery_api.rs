//! The recovery endpoints a gateway calls for its users: new recovery codes for a
//! signed-in user, and the owner's cancel link.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;

use super::{AppState, error, evaluate};
use crate::gateway::GatewayError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CodesRequest {
    user_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelRequest {
    recovery_id: String,
    token: String,
}

fn failed(e: GatewayError) -> Response {
    match e {
        GatewayError::Config(message) => error(StatusCode::NOT_IMPLEMENTED, message),
        other => {
            tracing::error!("recovery: {other}");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "state unavailable; try again",
            )
        }
    }
}

/// `POST /v1/mfa/recovery-codes` `{"user_id"}`: only a caller that vouches for the
/// user's authentication (it signed them in) may ask. The codes are in this answer
/// and nowhere else.
pub(super) async fn issue_codes(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match app.callers.authenticate(&headers) {
        Ok(caller) if caller.vouches => {}
        Ok(_) => {
            return error(
                StatusCode::FORBIDDEN,
                "only a caller that vouches for the user's sign-in may issue recovery codes",
            );
        }
        Err(refusal) => return refusal.into_response(),
    }
    let request: CodesRequest = match super::enroll_body(&app, &headers, body) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    let gateway = app.gateway();
    match evaluate(&app, move || gateway.issue_recovery_codes(&request.user_id)).await {
        Ok(Ok(Some(codes))) => (
            StatusCode::CREATED,
            [(header::CACHE_CONTROL, "no-store")],
            Json(json!({
                "codes": codes.iter().map(|c| c.expose_secret().to_owned()).collect::<Vec<_>>(),
                "note": "Shown once. Each code works once; new codes replace these.",
            })),
        )
            .into_response(),
        Ok(Ok(None)) => error(StatusCode::NOT_FOUND, "no such user"),
        Ok(Err(e)) => failed(e),
        Err(response) => response,
    }
}

/// `POST /v1/recovery/cancel` `{"recovery_id", "token"}`: the link in every notice.
/// A wrong token and an unknown recovery get the same 404.
pub(super) async fn cancel(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request: CancelRequest = match super::enroll_body(&app, &headers, body) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    let gateway = app.gateway();
    match evaluate(&app, move || {
        gateway.cancel_recovery(&request.recovery_id, &request.token)
    })
    .await
    {
        Ok(Ok(true)) => Json(json!({"cancelled": true})).into_response(),
        Ok(Ok(false)) => (
            StatusCode::NOT_FOUND,
            Json(json!({"cancelled": false, "error": "no recovery under way for this link"})),
        )
            .into_response(),
        Ok(Err(e)) => failed(e),
        Err(response) => response,
    }
}
