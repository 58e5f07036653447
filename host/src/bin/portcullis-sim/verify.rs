//! The new provider, Verify-like: the phone number comes with every request.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Deserialize;
use serde_json::json;

use crate::world::{CODE_TTL_MS, Provider, Sim, World, verify_error};

const CODE_DIGITS: u32 = 6;
const MAX_SENDS: usize = 5;
const MAX_CHECKS: u32 = 5;

fn refuse(code: u32, message: &str, status: StatusCode) -> Response {
    (status, Json(verify_error(code, message, status.as_u16()))).into_response()
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

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Start {
    to: String,
    channel: String,
}

fn verification(sid: &str, to: &str, status: &str) -> serde_json::Value {
    json!({
        "sid": format!("VE{:032x}", fxhash(to)),
        "service_sid": sid,
        "to": to,
        "channel": "sms",
        "status": status,
        "valid": status == "approved",
    })
}

/// A stable id per number (the simulator's verification SIDs need not be secret).
fn fxhash(text: &str) -> u128 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325u128, |h, b| {
        (h ^ u128::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// `POST /v2/Services/{sid}/Verifications` (`To`, `Channel=sms`)
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
    if form.channel != "sms" {
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
    world.deliver(&form.to, "verify", &code);
    (
        StatusCode::CREATED,
        Json(verification(&sid, &form.to, "pending")),
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Check {
    to: String,
    code: String,
}

/// `POST /v2/Services/{sid}/VerificationCheck` (`To`, `Code`)
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
    let not_found = || {
        refuse(
            20404,
            "The requested resource /Services/VerificationCheck was not found",
            StatusCode::NOT_FOUND,
        )
    };
    // Approved and expired verifications are gone, as in the real API.
    let Some(pending) = world.verifications.get_mut(&form.to) else {
        return not_found();
    };
    if now >= pending.issued_ms + CODE_TTL_MS {
        world.verifications.remove(&form.to);
        return not_found();
    }
    if pending.checks >= MAX_CHECKS {
        return refuse(
            60202,
            "Max check attempts reached",
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    pending.checks += 1;
    if pending.code == form.code {
        world.verifications.remove(&form.to);
        return Json(verification(&sid, &form.to, "approved")).into_response();
    }
    Json(verification(&sid, &form.to, "pending")).into_response()
}
