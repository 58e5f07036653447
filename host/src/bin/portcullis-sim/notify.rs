//! A notification service, as the outbox delivers to it: `POST /notify` takes one
//! notice (email or SMS, by the user's channel), deduplicated by `Idempotency-Key` as
//! a real provider would; `GET /sim/notices?user_id=` reads what each user was told.
//! `POST /sessions` takes session revocations the same way.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use crate::world::Sim;

fn idempotency_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// One notice or revocation, kept once per idempotency key.
fn keep(sim: &Sim, headers: &HeaderMap, body: Value, sessions: bool) -> StatusCode {
    let Some(key) = idempotency_key(headers) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut world = sim.world();
    if !world.notice_keys.insert(key) {
        return StatusCode::OK;
    }
    if sessions {
        world.revocations.push(body);
    } else {
        world.notices.push(body);
    }
    *world
        .counters
        .entry(if sessions { "revocations" } else { "notices" })
        .or_default() += 1;
    StatusCode::ACCEPTED
}

pub async fn notify(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> StatusCode {
    keep(&sim, &headers, body, false)
}

pub async fn sessions(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> StatusCode {
    keep(&sim, &headers, body, true)
}

#[derive(Deserialize)]
pub struct NoticeQuery {
    user_id: Option<String>,
}

/// Notices delivered so far (one user's with `?user_id=`), oldest first, and the
/// session revocations.
pub async fn notices(State(sim): State<Arc<Sim>>, Query(query): Query<NoticeQuery>) -> Json<Value> {
    let world = sim.world();
    let mine = |v: &&Value| query.user_id.as_deref().is_none_or(|id| v["user_id"] == id);
    Json(serde_json::json!({
        "notices": world.notices.iter().filter(mine).cloned().collect::<Vec<_>>(),
        "revocations": world.revocations.iter().filter(mine).cloned().collect::<Vec<_>>(),
    }))
}
