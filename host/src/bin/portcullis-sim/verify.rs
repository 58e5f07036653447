//! The new provider, Verify-like: the phone number comes with every request.
//!
//! The resources answer in Twilio Verify v2's shapes (`Verification`,
//! `VerificationCheck`), so the official `twilio` client reads them: a verification
//! is created (`sms` or `call`), fetched, checked by `To` or by `VerificationSid`, and
//! updated to `canceled` or `approved`.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use rand::RngExt;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::world::{CODE_TTL_MS, Provider, Sim, Verification, World, verify_error};

const CODE_DIGITS: u32 = 6;
const MAX_SENDS: usize = 5;
const MAX_CHECKS: u32 = 5;
const CHANNELS: [&str; 2] = ["sms", "call"];

fn refuse(code: u32, message: &str, status: StatusCode) -> Response {
    (status, Json(verify_error(code, message, status.as_u16()))).into_response()
}

fn not_found(what: &str) -> Response {
    refuse(
        20404,
        &format!("The requested resource {what} was not found"),
        StatusCode::NOT_FOUND,
    )
}

async fn admit(sim: &Sim, headers: &HeaderMap, sid: &str) -> Option<Response> {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            sim.credentials.verify_account_sid, sim.credentials.verify_auth_token
        ))
    );
    let given = headers.get("authorization").and_then(|v| v.to_str().ok());
    if given != Some(expected.as_str()) {
        return Some(refuse(20003, "Authenticate", StatusCode::UNAUTHORIZED));
    }
    if sid != sim.credentials.verify_service_sid {
        return Some(refuse(
            20404,
            "The requested resource was not found",
            StatusCode::NOT_FOUND,
        ));
    }
    sim.gate(Provider::Verify).await
}

/// E.164: a plus, then 8 to 15 digits not starting with 0.
fn e164(to: &str) -> bool {
    let digits = to.strip_prefix('+').unwrap_or("");
    (8..=15).contains(&digits.len())
        && digits.chars().all(|c| c.is_ascii_digit())
        && !digits.starts_with('0')
}

/// ISO 8601 in UTC, as the API dates its resources.
fn date(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A Twilio SID: two letters, then 32 hex digits.
fn new_sid(prefix: &str) -> String {
    format!("{prefix}{:032x}", rand::rng().random::<u128>())
}

/// A `Verification` resource as the API answers it.
fn verification(sim: &Sim, v: &Verification) -> Value {
    let service = &sim.credentials.verify_service_sid;
    json!({
        "sid": v.sid,
        "service_sid": service,
        "account_sid": sim.credentials.verify_account_sid,
        "to": v.to,
        "channel": v.channel,
        "status": v.status,
        "valid": v.status == "approved",
        "lookup": {},
        "amount": null,
        "payee": null,
        "send_code_attempts": v.attempts.iter().map(|(sid, channel, at)| json!({
            "attempt_sid": sid,
            "channel": channel,
            "time": date(*at),
        })).collect::<Vec<_>>(),
        "date_created": date(v.created_ms),
        "date_updated": date(v.updated_ms),
        "sna": null,
        "url": format!("https://verify.twilio.com/v2/Services/{service}/Verifications/{}", v.sid),
    })
}

/// A `VerificationCheck` resource: the verification's fields, without its links.
fn verification_check(sim: &Sim, v: &Verification) -> Value {
    json!({
        "sid": v.sid,
        "service_sid": sim.credentials.verify_service_sid,
        "account_sid": sim.credentials.verify_account_sid,
        "to": v.to,
        "channel": v.channel,
        "status": v.status,
        "valid": v.status == "approved",
        "amount": null,
        "payee": null,
        "date_created": date(v.created_ms),
        "date_updated": date(v.updated_ms),
        "sna_attempts_error_codes": [],
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Start {
    to: String,
    channel: String,
}

/// `POST /v2/Services/{sid}/Verifications` (`To`, `Channel=sms|call`)
pub async fn start(
    State(sim): State<Arc<Sim>>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<Start>,
) -> Response {
    if let Some(refused) = admit(&sim, &headers, &sid).await {
        return refused;
    }
    let mut world = sim.world();
    world.count("verify.start");
    if !e164(&form.to) {
        return refuse(60200, "Invalid parameter `To`", StatusCode::BAD_REQUEST);
    }
    if !CHANNELS.contains(&form.channel.as_str()) {
        return refuse(
            60200,
            "Invalid parameter `Channel`",
            StatusCode::BAD_REQUEST,
        );
    }
    let now = world.now_ms();
    let sends = world.sends.entry(form.to.clone()).or_default();
    sends.retain(|at| now.saturating_sub(*at) < CODE_TTL_MS);
    if sends.len() >= MAX_SENDS {
        return refuse(
            60203,
            "Max send attempts reached",
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    sends.push(now);
    let code = World::code_for(&mut world.verifications, &form.to, now, CODE_DIGITS);
    let provider = if form.channel == "call" {
        "verify-call"
    } else {
        "verify"
    };
    world.deliver(&form.to, provider, &code);
    // A send within a pending verification is another attempt of the same one.
    let pending = world
        .pending_sid(&form.to, now)
        .unwrap_or_else(|| new_sid("VE"));
    world
        .latest_verification
        .insert(form.to.clone(), pending.clone());
    let record = world
        .verification_records
        .entry(pending.clone())
        .or_insert_with(|| Verification {
            sid: pending,
            to: form.to.clone(),
            channel: form.channel.clone(),
            status: "pending".into(),
            created_ms: now,
            updated_ms: now,
            attempts: Vec::new(),
        });
    record.channel = form.channel.clone();
    record.updated_ms = now;
    record.attempts.push((new_sid("VL"), form.channel, now));
    let record = record.clone();
    (StatusCode::CREATED, Json(verification(&sim, &record))).into_response()
}

/// `GET /v2/Services/{sid}/Verifications/{verification}`: by its SID, or by the `To`
/// number of the pending one, as the real API allows.
pub async fn fetch(
    State(sim): State<Arc<Sim>>,
    Path((sid, which)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = admit(&sim, &headers, &sid).await {
        return refused;
    }
    let mut world = sim.world();
    world.count("verify.fetch");
    let now = world.now_ms();
    match world.find_verification(&which, now) {
        Some(found) => Json(verification(&sim, &found)).into_response(),
        None => not_found(&format!("/v2/Services/{sid}/Verifications/{which}")),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Update {
    status: String,
}

/// `POST /v2/Services/{sid}/Verifications/{verification}` (`Status=canceled|approved`)
pub async fn update(
    State(sim): State<Arc<Sim>>,
    Path((sid, which)): Path<(String, String)>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<Update>,
) -> Response {
    if let Some(refused) = admit(&sim, &headers, &sid).await {
        return refused;
    }
    let mut world = sim.world();
    world.count("verify.update");
    if !matches!(form.status.as_str(), "canceled" | "approved") {
        return refuse(60200, "Invalid parameter: Status", StatusCode::BAD_REQUEST);
    }
    let now = world.now_ms();
    let Some(found) = world.find_verification(&which, now) else {
        return not_found(&format!("/v2/Services/{sid}/Verifications/{which}"));
    };
    if found.status != "pending" {
        // Only a pending verification changes; the API treats the others as gone.
        return not_found(&format!("/v2/Services/{sid}/Verifications/{which}"));
    }
    world.verifications.remove(&found.to);
    let record = world
        .verification_records
        .get_mut(&found.sid)
        .expect("found above");
    record.status = form.status;
    record.updated_ms = now;
    let record = record.clone();
    Json(verification(&sim, &record)).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Check {
    to: Option<String>,
    verification_sid: Option<String>,
    code: String,
}

/// `POST /v2/Services/{sid}/VerificationCheck` (`To` or `VerificationSid`, `Code`)
pub async fn check(
    State(sim): State<Arc<Sim>>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<Check>,
) -> Response {
    if let Some(refused) = admit(&sim, &headers, &sid).await {
        return refused;
    }
    let mut world = sim.world();
    world.count("verify.check");
    let now = world.now_ms();
    let gone = || not_found("/Services/VerificationCheck");
    let which = match (&form.to, &form.verification_sid) {
        (Some(to), _) => to.clone(),
        (None, Some(verification)) => verification.clone(),
        (None, None) => {
            return refuse(
                60200,
                "Either a 'To' number or 'VerificationSid' must be specified",
                StatusCode::BAD_REQUEST,
            );
        }
    };
    // Approved, canceled and expired verifications are gone, as in the real API.
    let Some(record) = world
        .find_verification(&which, now)
        .filter(|v| v.status == "pending")
    else {
        return gone();
    };
    let Some(pending) = world.verifications.get_mut(&record.to) else {
        return gone();
    };
    if pending.checks >= MAX_CHECKS {
        return refuse(
            60202,
            "Max check attempts reached",
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    pending.checks += 1;
    if pending.code != form.code {
        return Json(verification_check(&sim, &record)).into_response();
    }
    world.verifications.remove(&record.to);
    let record = world
        .verification_records
        .get_mut(&record.sid)
        .expect("found above");
    record.status = "approved".into();
    record.updated_ms = now;
    let record = record.clone();
    Json(verification_check(&sim, &record)).into_response()
}
