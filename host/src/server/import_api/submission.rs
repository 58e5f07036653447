//! `POST /api/v2/jobs/users-imports`: the multipart form, Auth0's checks on it, and the
//! job stored in the shared state (where any instance's worker takes it up), its users
//! file sealed.
//!
//! The body is read to its end (bounded by the route's limit) before anything is
//! answered but a missing token: a server that answers (a 429) and closes while the
//! client is still sending makes the client see a reset connection, not the answer.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{AppState, ImportApi, auth0_error, unavailable, wire, with_headers};
use crate::state::import_jobs::{
    Admission, ImportJob, JobStatus, JobSummary, NewImportJob, USERS_FILE_PURPOSE,
};

struct Submission {
    users: Option<Vec<u8>>,
    connection_id: Option<String>,
    upsert: bool,
    external_id: Option<String>,
    send_completion_email: bool,
}

fn flag(text: &str) -> Result<bool, String> {
    match text {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("expected true or false, not {other:?}")),
    }
}

#[allow(clippy::result_large_err)]
async fn read_submission(mut form: Multipart, max_file: usize) -> Result<Submission, Response> {
    let bad = |message: String| auth0_error(StatusCode::BAD_REQUEST, message, "invalid_body");
    let mut submission = Submission {
        users: None,
        connection_id: None,
        upsert: false,
        external_id: None,
        send_completion_email: true,
    };
    loop {
        let field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(too_large(max_file));
            }
            Err(e) => return Err(bad(format!("invalid multipart body: {}", e.body_text()))),
        };
        let name = field.name().unwrap_or_default().to_owned();
        let bytes = field.bytes().await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large(max_file)
            } else {
                bad(format!("invalid multipart body: {}", e.body_text()))
            }
        })?;
        let text = || String::from_utf8_lossy(&bytes).trim().to_owned();
        match name.as_str() {
            "users" => {
                if bytes.len() > max_file {
                    return Err(too_large(max_file));
                }
                submission.users = Some(bytes.to_vec());
            }
            "connection_id" => submission.connection_id = Some(text()),
            "upsert" => {
                submission.upsert = flag(&text()).map_err(|e| bad(format!("upsert: {e}")))?
            }
            "external_id" => {
                let id = text();
                if id.len() > 255 {
                    return Err(bad("external_id: at most 255 characters".into()));
                }
                submission.external_id = Some(id);
            }
            "send_completion_email" => {
                submission.send_completion_email =
                    flag(&text()).map_err(|e| bad(format!("send_completion_email: {e}")))?
            }
            other => return Err(bad(format!("unknown field {other:?}"))),
        }
    }
    Ok(submission)
}

fn too_large(max_file: usize) -> Response {
    auth0_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("Payload content length greater than maximum allowed: {max_file}"),
        "payload_too_large",
    )
}

/// The job to store, or Auth0's answer to a form without what it needs.
#[allow(clippy::result_large_err)]
fn new_job(api: &ImportApi, submission: Submission, now_ms: u64) -> Result<NewImportJob, Response> {
    let bad = |message: &str| auth0_error(StatusCode::BAD_REQUEST, message, "invalid_body");
    let Some(mut users) = submission.users else {
        return Err(bad("Missing required property: users"));
    };
    match submission.connection_id.as_deref() {
        None => return Err(bad("Missing required property: connection_id")),
        Some(id) if id != api.settings.connection_id => {
            return Err(auth0_error(
                StatusCode::BAD_REQUEST,
                format!("The connection does not exist: {id}"),
                "inexistent_connection",
            ));
        }
        Some(_) => {}
    }
    let id = format!("job_{}", crate::model::random_id());
    // Sealed before it is stored: the file holds password hashes and phone numbers.
    let users_file = api.file_keys.seal_bytes(USERS_FILE_PURPOSE, &users, &id);
    zeroize::Zeroize::zeroize(&mut users);
    Ok(NewImportJob {
        id,
        connection_id: api.settings.connection_id.clone(),
        external_id: submission.external_id,
        upsert: submission.upsert,
        send_completion_email: submission.send_completion_email,
        users_file,
        created_at_ms: now_ms,
    })
}

/// The whole body (bounded by the route's limit), then the form in it; the token is
/// checked first, before anything is read.
#[allow(clippy::result_large_err)]
async fn read_body(
    app: &AppState,
    request: Request,
) -> Result<(Arc<ImportApi>, Bytes, Option<header::HeaderValue>), Response> {
    let api = app
        .import_api
        .clone()
        .ok_or_else(|| auth0_error(StatusCode::NOT_FOUND, "Not Found", "not_found"))?;
    if !api.holds_token(request.headers()) {
        return Err(ImportApi::refuse_token());
    }
    let content_type = request.headers().get(header::CONTENT_TYPE).cloned();
    let max_file = api.settings.max_file_kb * 1024;
    let body = Bytes::from_request(request, &()).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large(max_file)
        } else {
            auth0_error(
                StatusCode::BAD_REQUEST,
                "the request body could not be read",
                "invalid_body",
            )
        }
    })?;
    Ok((api, body, content_type))
}

pub(super) async fn submit(State(app): State<Arc<AppState>>, request: Request) -> Response {
    let (api, body, content_type) = match read_body(&app, request).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    // Counted once the body is in: a refusal now reaches a client that sent it all.
    let rate = match api.rate(&app) {
        Ok(rate) => rate,
        Err(response) => return response,
    };
    let mut form = Request::new(Body::from(body));
    if let Some(content_type) = content_type {
        form.headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    let form = match Multipart::from_request(form, &()).await {
        Ok(form) => form,
        Err(e) => {
            let bad = auth0_error(
                StatusCode::BAD_REQUEST,
                format!("invalid multipart body: {}", e.body_text()),
                "invalid_body",
            );
            return with_headers(bad, rate);
        }
    };
    let max_file = api.settings.max_file_kb * 1024;
    let submission = match read_submission(form, max_file).await {
        Ok(submission) => submission,
        Err(response) => return with_headers(response, rate),
    };
    let gateway = app.gateway();
    let now = gateway.clock().now_ms();
    let job = match new_job(&api, submission, now) {
        Ok(job) => job,
        Err(response) => return with_headers(response, rate),
    };
    let max_active = api.settings.max_concurrent_jobs as u64;
    // The limit holds across instances: checked where the job is stored, in one
    // transaction.
    let stored =
        tokio::task::block_in_place(|| gateway.state().insert_import_job(&job, max_active));
    let response = match stored {
        Ok(Admission::Stored) => {
            api.signal.wake();
            // As stored: pending (a worker may have taken it up since).
            let stored = ImportJob {
                id: job.id,
                status: JobStatus::Pending,
                connection_id: job.connection_id,
                external_id: job.external_id,
                upsert: job.upsert,
                send_completion_email: job.send_completion_email,
                done: 0,
                summary: JobSummary::default(),
                status_details: None,
                created_at_ms: job.created_at_ms,
                started_at_ms: None,
                updated_at_ms: job.created_at_ms,
                lease_owner: None,
                lease_until_ms: None,
            };
            (StatusCode::CREATED, Json(wire::job_json(&stored, now))).into_response()
        }
        Ok(Admission::TooMany { active }) => auth0_error(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "There are {active} active import users jobs, please wait until some of them are finished and try again"
            ),
            "too_many_requests",
        ),
        Err(e) => unavailable(e),
    };
    with_headers(response, rate)
}
