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
use crate::flows::GatewayError;
use crate::flows::proof::Need;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CodesRequest {
    /// A full sign-in's proof token (the password and the factor).
    proof_token: Option<String>,
    /// Only from a caller that vouches: the user it signed in.
    user_id: Option<String>,
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

/// `POST /v1/mfa/recovery-codes`: new codes for a user who signed in fully (a
/// vouching caller's user, or a sign-in proof with the password and the factor; see
/// `flows::proof`). The codes are in this answer and nowhere else.
pub(super) async fn issue_codes(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (caller, request): (_, CodesRequest) =
        match super::requests::caller_and_body(&app, &headers, body) {
            Ok(parts) => parts,
            Err(response) => return *response,
        };
    let outcome = super::requests::with_proof(
        &app,
        caller,
        request.proof_token,
        request.user_id,
        Need::RecoveryCodes,
        |g, grant| g.recovery().issue_codes(&grant.user_id),
    )
    .await;
    match outcome {
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
        Err(response) => *response,
    }
}

/// `POST /v1/recovery/cancel` `{"recovery_id", "token"}`: the link in every notice.
/// A wrong token and an unknown recovery get the same 404.
pub(super) async fn cancel(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request: CancelRequest = match super::requests::enroll_body(&app, &headers, body) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    let gateway = app.gateway();
    match evaluate(&app, move || {
        gateway
            .recovery()
            .cancel(&request.recovery_id, &request.token)
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
