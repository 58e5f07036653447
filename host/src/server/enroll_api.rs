//! `POST /v1/mfa/enroll` and `/v1/mfa/enroll/confirm`: enrolling a phone with the new
//! provider, for the user a proof names.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::requests::{caller_and_body, with_proof};
use crate::flows::proof::Need;

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

/// `POST /v1/mfa/enroll`: starts enrolling a phone with the new provider for the user
/// the proof names; a code is texted to it.
pub(super) async fn mfa_enroll(
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
        move |g, grant| g.enrolment().start(grant, &phone),
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
pub(super) async fn mfa_enroll_confirm(
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
        move |g, grant| g.enrolment().confirm(grant, &enrollment_id, &code),
    )
    .await;
    match outcome {
        Ok(Ok(enrolled)) => (StatusCode::CREATED, Json(enrolled)).into_response(),
        Ok(Err(e)) => enroll_error(e),
        Err(response) => *response,
    }
}
