//! The small JSON requests of the enrolment, recovery and support endpoints: read
//! after the caller is known, bounded, and the proof they present checked once.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{AppState, Caller, body_error, error, evaluate};
use crate::flows::Gateway;
use crate::flows::proof::{Need, Presented, ProofError};

/// The longest enrolment, recovery or support request worth reading: ids, a token, a phone number, a code.
const MAX_ENROLL_BODY: usize = 2 * 1024;

/// Reads a small JSON body for the enrolment and recovery endpoints, after the caller
/// is known; hands back the caller too.
pub(super) fn caller_and_body<'a, T: serde::de::DeserializeOwned>(
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

pub(super) fn enroll_body<T: serde::de::DeserializeOwned>(
    app: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, Box<Response>> {
    caller_and_body(app, headers, body).map(|(_, request)| request)
}

/// What a request presents as proof: a token the host issued, or, from a caller that
/// vouches, the user it signed in. A user id from any other caller is not proof and
/// is answered as nothing at all.
pub(super) fn presented<'a>(
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
pub(super) async fn with_proof<T>(
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
