//! The simulator's state: both providers' users, codes and counters, the SMS inbox,
//! the faults a test injected and a clock a test can move.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// How long a code stays valid, and the window the send limit counts in.
pub const CODE_TTL_MS: u64 = 10 * 60 * 1000;
/// The old provider's export quota: per user, per 30 days.
pub const EXPORTS_PER_WINDOW: usize = 3;
pub const EXPORT_WINDOW_MS: u64 = 30 * 24 * 3600 * 1000;

pub struct Credentials {
    pub legacy_api_key: String,
    pub verify_account_sid: String,
    pub verify_auth_token: String,
    pub verify_service_sid: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    #[default]
    Ok,
    /// 503 on every request.
    Down,
    /// Answers after `--slow-ms`.
    Slow,
    /// 500 on every request.
    Error,
    /// The old provider's phone export answers 60154.
    ExportDisabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Legacy,
    Verify,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LegacyUser {
    pub id: String,
    /// E.164.
    pub phone: String,
    #[serde(default)]
    pub cohort: Option<String>,
}

/// A code one provider issued.
#[derive(Debug, Clone)]
pub struct Code {
    pub code: String,
    pub issued_ms: u64,
    pub checks: u32,
}

/// A verification of the new provider, kept for fetches and updates by its SID.
#[derive(Debug, Clone)]
pub struct Verification {
    pub sid: String,
    pub to: String,
    pub channel: String,
    /// `pending`, `approved` or `canceled`.
    pub status: String,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// Each send: its SID, channel and time.
    pub attempts: Vec<(String, String, u64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Sms {
    pub to: String,
    pub provider: &'static str,
    pub code: String,
    pub body: String,
    pub at_ms: u64,
}

#[derive(Default)]
pub struct World {
    pub legacy_users: HashMap<String, LegacyUser>,
    /// Every export call per old-provider user, answered or not (the quota counts them).
    pub exports: HashMap<String, Vec<u64>>,
    pub legacy_codes: HashMap<String, Code>,
    /// The new provider's pending verification per phone number.
    pub verifications: HashMap<String, Code>,
    /// Every verification by SID, and the SID of the latest one per phone number.
    pub verification_records: HashMap<String, Verification>,
    pub latest_verification: HashMap<String, String>,
    pub sends: HashMap<String, Vec<u64>>,
    pub inbox: Vec<Sms>,
    pub legacy_fault: Fault,
    pub verify_fault: Fault,
    /// Fractions of the old provider's requests answered 500, or slowly.
    pub legacy_error_rate: f64,
    pub legacy_slow_rate: f64,
    pub clock_offset_ms: u64,
    pub counters: HashMap<&'static str, u64>,
    /// Delivered notices and session revocations, and the idempotency keys seen.
    pub notices: Vec<serde_json::Value>,
    pub revocations: Vec<serde_json::Value>,
    pub notice_keys: std::collections::HashSet<String>,
    /// Messages the products' outbox receivers took, and their idempotency keys.
    pub product_messages: Vec<serde_json::Value>,
    pub product_keys: std::collections::HashSet<String>,
}

pub struct Sim {
    pub credentials: Credentials,
    world: Mutex<World>,
    limits: Option<(DefaultDirectRateLimiter, DefaultDirectRateLimiter)>,
    slow: Duration,
}

impl Sim {
    pub fn new(credentials: Credentials, rate: Option<NonZeroU32>, slow_ms: u64) -> Self {
        Self {
            credentials,
            world: Mutex::default(),
            limits: rate.map(|rate| {
                (
                    RateLimiter::direct(Quota::per_second(rate)),
                    RateLimiter::direct(Quota::per_second(rate)),
                )
            }),
            slow: Duration::from_millis(slow_ms),
        }
    }

    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn seed_legacy(&self, count: u32, internal: u32) {
        let mut world = self.world();
        for n in 0..count {
            let id = portcullis::jobs::seed::legacy_sms_id(n as usize);
            world.legacy_users.insert(
                id.clone(),
                LegacyUser {
                    id,
                    phone: portcullis::jobs::seed::legacy_sms_phone(n as usize),
                    cohort: (n < internal).then(|| "internal".to_owned()),
                },
            );
        }
    }

    /// What every provider request goes through first: its fault, then its rate
    /// limit. `Some` is the answer to give instead of serving the request.
    pub async fn gate(&self, provider: Provider) -> Option<Response> {
        let fault = {
            let mut world = self.world();
            *world.counters.entry("requests").or_default() += 1;
            let draw: f64 = rand::rng().random();
            match provider {
                Provider::Legacy if world.legacy_fault != Fault::Ok => world.legacy_fault,
                Provider::Legacy if draw < world.legacy_error_rate => Fault::Error,
                Provider::Legacy if draw < world.legacy_error_rate + world.legacy_slow_rate => {
                    Fault::Slow
                }
                Provider::Legacy => Fault::Ok,
                Provider::Verify => world.verify_fault,
            }
        };
        match fault {
            Fault::Down => return Some(StatusCode::SERVICE_UNAVAILABLE.into_response()),
            Fault::Error => {
                return Some(
                    (StatusCode::INTERNAL_SERVER_ERROR, "simulated failure").into_response(),
                );
            }
            Fault::Slow => tokio::time::sleep(self.slow).await,
            Fault::Ok | Fault::ExportDisabled => {}
        }
        let (legacy, verify) = self.limits.as_ref()?;
        let limiter = match provider {
            Provider::Legacy => legacy,
            Provider::Verify => verify,
        };
        if let Err(not_until) = limiter.check() {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let retry_after = wait.as_secs_f64().ceil().max(1.0) as u64;
            let body = match provider {
                Provider::Legacy => legacy_error(60003, "Too many requests"),
                Provider::Verify => verify_error(20429, "Too many requests", 429),
            };
            let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(retry_after));
            return Some(response);
        }
        None
    }
}

impl World {
    pub fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
            + self.clock_offset_ms
    }

    pub fn count(&mut self, what: &'static str) {
        *self.counters.entry(what).or_default() += 1;
    }

    /// The code to send: the one still valid (re-sent unchanged), or a new one.
    pub fn code_for(
        codes: &mut HashMap<String, Code>,
        key: &str,
        now_ms: u64,
        digits: u32,
    ) -> String {
        if let Some(code) = codes.get(key)
            && now_ms < code.issued_ms + CODE_TTL_MS
        {
            return code.code.clone();
        }
        let code = format!(
            "{:0width$}",
            rand::rng().random_range(0..10u64.pow(digits)),
            width = digits as usize
        );
        codes.insert(
            key.to_owned(),
            Code {
                code: code.clone(),
                issued_ms: now_ms,
                checks: 0,
            },
        );
        code
    }

    /// The SID of the pending verification of `to`, if one is still valid.
    pub fn pending_sid(&self, to: &str, now_ms: u64) -> Option<String> {
        let sid = self.latest_verification.get(to)?;
        self.verification_records
            .get(sid)
            .filter(|v| v.status == "pending" && now_ms < v.created_ms + CODE_TTL_MS)
            .map(|v| v.sid.clone())
    }

    /// A verification by its SID (`VE…`), or the pending one of a phone number; an
    /// expired one is gone, as in the real API (its SIDs live 10 minutes).
    pub fn find_verification(&mut self, which: &str, now_ms: u64) -> Option<Verification> {
        let sid = if which.starts_with("VE") {
            which.to_owned()
        } else {
            self.pending_sid(which, now_ms)?
        };
        let found = self.verification_records.get(&sid)?.clone();
        if now_ms >= found.created_ms + CODE_TTL_MS {
            self.verification_records.remove(&sid);
            if found.status == "pending" {
                self.verifications.remove(&found.to);
            }
            return None;
        }
        Some(found)
    }

    pub fn deliver(&mut self, to: &str, provider: &'static str, code: &str) {
        let at_ms = self.now_ms();
        self.inbox.push(Sms {
            to: to.to_owned(),
            provider,
            code: code.to_owned(),
            body: format!("Your verification code is {code}"),
            at_ms,
        });
    }
}

pub fn legacy_error(code: u32, message: &str) -> Value {
    json!({
        "success": false,
        "message": message,
        "error_code": code.to_string(),
        "errors": { "message": message },
    })
}

pub fn verify_error(code: u32, message: &str, status: u16) -> Value {
    json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status,
    })
}

pub async fn add_legacy_users(
    State(sim): State<Arc<Sim>>,
    Json(users): Json<Vec<LegacyUser>>,
) -> Json<Value> {
    let mut world = sim.world();
    let added = users.len();
    for user in users {
        world.legacy_users.insert(user.id.clone(), user);
    }
    Json(json!({ "added": added }))
}

pub async fn legacy_users(State(sim): State<Arc<Sim>>) -> Json<Vec<LegacyUser>> {
    let world = sim.world();
    let mut users: Vec<LegacyUser> = world.legacy_users.values().cloned().collect();
    users.sort_by(|a, b| a.id.cmp(&b.id));
    Json(users)
}

#[derive(Deserialize)]
pub struct InboxQuery {
    to: Option<String>,
}

/// The SMS sent so far (to one number with `?to=`), oldest first: a phone's inbox.
pub async fn inbox(State(sim): State<Arc<Sim>>, Query(query): Query<InboxQuery>) -> Json<Vec<Sms>> {
    let world = sim.world();
    Json(
        world
            .inbox
            .iter()
            .filter(|sms| query.to.as_deref().is_none_or(|to| sms.to == to))
            .cloned()
            .collect(),
    )
}

#[derive(Deserialize)]
pub struct Faults {
    legacy: Option<Fault>,
    verify: Option<Fault>,
    /// Random faults on the old provider: this fraction of requests answers 500 …
    legacy_error_rate: Option<f64>,
    /// … and this fraction answers after `--slow-ms`.
    legacy_slow_rate: Option<f64>,
}

pub async fn set_faults(State(sim): State<Arc<Sim>>, Json(faults): Json<Faults>) -> Json<Value> {
    let mut world = sim.world();
    if let Some(fault) = faults.legacy {
        world.legacy_fault = fault;
    }
    if let Some(fault) = faults.verify {
        world.verify_fault = fault;
    }
    if let Some(rate) = faults.legacy_error_rate {
        world.legacy_error_rate = rate.clamp(0.0, 1.0);
    }
    if let Some(rate) = faults.legacy_slow_rate {
        world.legacy_slow_rate = rate.clamp(0.0, 1.0);
    }
    Json(json!({ "legacy": world.legacy_fault, "verify": world.verify_fault }))
}

#[derive(Deserialize)]
pub struct Advance {
    advance_ms: u64,
}

pub async fn advance_clock(
    State(sim): State<Arc<Sim>>,
    Json(advance): Json<Advance>,
) -> Json<Value> {
    let mut world = sim.world();
    world.clock_offset_ms = world.clock_offset_ms.saturating_add(advance.advance_ms);
    Json(json!({ "now_ms": world.now_ms() }))
}

/// Counters, and the export calls per user (`max_exports_per_user` is what the quota
/// tests look at).
pub async fn stats(State(sim): State<Arc<Sim>>) -> Json<Value> {
    let world = sim.world();
    let max_exports = world.exports.values().map(Vec::len).max().unwrap_or(0);
    let mut more_than_once: Vec<&String> = world
        .exports
        .iter()
        .filter(|(_, calls)| calls.len() > 1)
        .map(|(id, _)| id)
        .collect();
    more_than_once.sort();
    Json(json!({
        "counters": world.counters,
        "exported_users": world.exports.len(),
        "export_calls": world.exports.values().map(Vec::len).sum::<usize>(),
        "max_exports_per_user": max_exports,
        "exported_more_than_once": more_than_once,
        "sms_sent": world.inbox.len(),
    }))
}
