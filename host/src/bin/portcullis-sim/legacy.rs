//! The old provider, Authy-like: it keeps the phone, we name users by its id.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::world::{
    EXPORT_WINDOW_MS, EXPORTS_PER_WINDOW, Fault, Provider, Sim, World, legacy_error,
};

const TOKEN_DIGITS: u32 = 7;

fn refuse(status: StatusCode, code: u32, message: &str) -> Response {
    (status, Json(legacy_error(code, message))).into_response()
}

/// Authenticates and applies faults and the rate limit.
async fn admit(sim: &Sim, headers: &HeaderMap) -> Option<Response> {
    let key = headers.get("x-authy-api-key").and_then(|v| v.to_str().ok());
    if key != Some(sim.credentials.legacy_api_key.as_str()) {
        return Some(refuse(StatusCode::UNAUTHORIZED, 60001, "Invalid API key"));
    }
    sim.gate(Provider::Legacy).await
}

fn user_not_found() -> Response {
    refuse(StatusCode::NOT_FOUND, 60026, "User not found.")
}

/// Last digits of a phone, as the real API shows where a token went.
fn masked(phone: &str) -> String {
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    let last = &digits[digits.len().saturating_sub(2)..];
    format!("+1-XXX-XXX-XX{last}")
}

/// `GET /protected/json/sms/{id}?force=true`
pub async fn send(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = admit(&sim, &headers).await {
        return refused;
    }
    let mut world = sim.world();
    world.count("legacy.send");
    let Some(user) = world.legacy_users.get(&id).cloned() else {
        return user_not_found();
    };
    let now = world.now_ms();
    let code = World::code_for(&mut world.legacy_codes, &id, now, TOKEN_DIGITS);
    world.deliver(&user.phone, "legacy-sms", &code);
    Json(json!({
        "success": true,
        "message": "SMS token was sent",
        "cellphone": masked(&user.phone),
    }))
    .into_response()
}

/// `GET /protected/json/verify/{token}/{id}`
pub async fn verify(
    State(sim): State<Arc<Sim>>,
    Path((token, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = admit(&sim, &headers).await {
        return refused;
    }
    let mut world = sim.world();
    world.count("legacy.verify");
    if !world.legacy_users.contains_key(&id) {
        return user_not_found();
    }
    let now = world.now_ms();
    let valid = world
        .legacy_codes
        .get(&id)
        .is_some_and(|code| now < code.issued_ms + crate::world::CODE_TTL_MS && code.code == token);
    if !valid {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({
                "success": false,
                "message": "Token is invalid",
                "token": "is invalid",
                "error_code": "60020",
                "errors": { "message": "Token is invalid" },
            })),
        )
            .into_response();
    }
    // A token verifies once.
    world.legacy_codes.remove(&id);
    Json(json!({ "success": true, "message": "Token is valid.", "token": "is valid" }))
        .into_response()
}

/// `GET /protected/json/users/{id}/phone_number`: the export the migration needs and
/// must spend carefully. Every call counts against the user's quota, answered or not.
pub async fn export_phone(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = admit(&sim, &headers).await {
        return refused;
    }
    let mut world = sim.world();
    world.count("legacy.export");
    if world.legacy_fault == Fault::ExportDisabled {
        return refuse(
            StatusCode::FORBIDDEN,
            60154,
            "Phone number export is disabled for this account",
        );
    }
    let Some(user) = world.legacy_users.get(&id).cloned() else {
        return user_not_found();
    };
    let now = world.now_ms();
    let calls = world.exports.entry(id).or_default();
    calls.retain(|at| now.saturating_sub(*at) < EXPORT_WINDOW_MS);
    if calls.len() >= EXPORTS_PER_WINDOW {
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            60003,
            "Phone number export limit reached for this user",
        );
    }
    calls.push(now);
    let national = user.phone.trim_start_matches("+1");
    let phone_number = match (national.get(..3), national.get(3..6), national.get(6..)) {
        (Some(area), Some(exchange), Some(line)) => format!("{area}-{exchange}-{line}"),
        _ => national.to_owned(),
    };
    Json(json!({
        "phone_number": phone_number,
        "country_code": "1",
        "e164": user.phone,
    }))
    .into_response()
}

/// `GET /protected/json/users/{id}/status`: whether the provider still knows the user,
/// in the real API's shape (the last four digits of the phone only).
pub async fn status(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = admit(&sim, &headers).await {
        return refused;
    }
    let mut world = sim.world();
    world.count("legacy.status");
    let Some(user) = world.legacy_users.get(&id).cloned() else {
        return user_not_found();
    };
    let digits: String = user.phone.chars().filter(char::is_ascii_digit).collect();
    let last = &digits[digits.len().saturating_sub(4)..];
    // The simulator's users are North American; others show their first digits.
    let country_code: u32 = if user.phone.starts_with("+1") {
        1
    } else {
        digits.get(..2).and_then(|c| c.parse().ok()).unwrap_or(0)
    };
    // Real ids are numbers; one a test added by another name stays a string.
    let authy_id = user
        .id
        .parse::<u64>()
        .map_or_else(|_| json!(user.id), |n| json!(n));
    Json(json!({
        "status": {
            "authy_id": authy_id,
            "confirmed": true,
            "registered": false,
            "account_disabled": false,
            "country_code": country_code,
            "phone_number": format!("XXX-XXX-{last}"),
            "has_hard_token": false,
            "devices": ["sms"],
        },
        "message": "User status.",
        "success": true,
    }))
    .into_response()
}

/// `POST /protected/json/users/{id}/delete`: the user leaves the provider (what the
/// backfill must notice before it spends an export on them).
pub async fn delete(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = admit(&sim, &headers).await {
        return refused;
    }
    let mut world = sim.world();
    world.count("legacy.delete");
    if world.legacy_users.remove(&id).is_none() {
        return user_not_found();
    }
    world.legacy_codes.remove(&id);
    Json(json!({ "message": "User was added to remove.", "success": true })).into_response()
}

/// Every other route: the API's JSON error, never an empty 404 (the official clients
/// read `errors` and `error_code` from it). Under `/v2/` the new provider's shape.
pub async fn unknown(uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/v2/") {
        return (
            StatusCode::NOT_FOUND,
            Json(crate::world::verify_error(
                20404,
                &format!("The requested resource {} was not found", uri.path()),
                404,
            )),
        )
            .into_response();
    }
    refuse(
        StatusCode::NOT_FOUND,
        60000,
        "Requested URL was not found. Please check http://docs.authy.com/ to see the valid URLs",
    )
}
