//! `portcullis-sim`: the two SMS providers of the MFA migration over HTTP, shaped like
//! the real APIs and enforcing their limits, for the tests and the demo.
//!
//! - The old provider (Authy-like, `X-Authy-API-Key`): it keeps each user's phone and
//!   knows them by a numeric id. Send, verify, a user's status, delete, and the precious
//!   phone export (3 per user per 30 days); any other route answers the API's JSON error.
//! - The new provider (Verify-like, HTTP basic auth): the phone number comes with every
//!   request. Start a verification (SMS or call), fetch or cancel it, check a code by
//!   number or verification SID (5 checks per verification, 5 sends per
//!   number per 10 minutes, a code valid 10 minutes and re-sent unchanged within them).
//! - The receivers the outbox delivers to: a notification service (`/notify`,
//!   `/sessions`) and the products (`/products/{product}`).
//! - `/sim/…`: what a test needs: seed old-provider users, read the SMS inbox and what
//!   the receivers took, inject faults, move the clock, read counters.
//!
//! It listens on 127.0.0.1:7879 (the demo pipelines in fixtures/ expect it there), or
//! the port `--port` or `PORTCULLIS_SIM_PORT` names, and prints `listening on
//! http://ADDR` first, so a test can start it on port 0.

mod legacy;
mod notify;
mod products;
mod verify;
mod world;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Router;
use axum::routing::{get, post, put};
use clap::Parser;

use world::{Credentials, Sim};

#[derive(Parser, Debug)]
#[command(
    name = "portcullis-sim",
    about = "Both SMS providers of the MFA migration, simulated over HTTP"
)]
struct Args {
    /// Port to listen on, on 127.0.0.1 (0: any free port; the first line printed says
    /// which). The demo pipelines in fixtures/ expect 7879.
    #[arg(long, env = "PORTCULLIS_SIM_PORT", default_value_t = 7879)]
    port: u16,
    /// Address to listen on instead of 127.0.0.1:PORT (e.g. 0.0.0.0:7879).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// The old provider's API key (`X-Authy-API-Key`).
    #[arg(long, default_value = "sim-legacy-key")]
    legacy_api_key: String,
    /// The new provider's account SID (the user of its HTTP basic auth).
    #[arg(long, default_value = "ACsim")]
    verify_account_sid: String,
    /// The new provider's auth token (the password of its HTTP basic auth).
    #[arg(long, default_value = "sim-verify-token")]
    verify_auth_token: String,
    /// The new provider's verification service SID (in its URLs).
    #[arg(long, default_value = "VAsim")]
    verify_service_sid: String,
    /// Requests per second each provider accepts, all callers together (0: no limit).
    #[arg(long, default_value_t = 0)]
    rate_limit: u32,
    /// How long a `slow` provider takes to answer, in ms.
    #[arg(long, default_value_t = 5_000)]
    slow_ms: u64,
    /// Seed this many old-provider users (numeric ids from 1000000, phones +1 201-555-<n>), the
    /// first `--internal` of them in the `internal` cohort (`GET /sim/legacy-users`).
    #[arg(long, default_value_t = 0)]
    seed_legacy: u32,
    #[arg(long, default_value_t = 0)]
    internal: u32,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let sim = Arc::new(Sim::new(
        Credentials {
            legacy_api_key: args.legacy_api_key,
            verify_account_sid: args.verify_account_sid,
            verify_auth_token: args.verify_auth_token,
            verify_service_sid: args.verify_service_sid,
        },
        NonZeroU32::new(args.rate_limit),
        args.slow_ms,
    ));
    sim.seed_legacy(args.seed_legacy, args.internal);
    let app = Router::new()
        .route("/protected/json/sms/{id}", get(legacy::send))
        .route("/protected/json/verify/{token}/{id}", get(legacy::verify))
        .route(
            "/protected/json/users/{id}/phone_number",
            get(legacy::export_phone),
        )
        .route("/protected/json/users/{id}/status", get(legacy::status))
        .route("/protected/json/users/{id}/delete", post(legacy::delete))
        .route("/v2/Services/{sid}/Verifications", post(verify::start))
        .route(
            "/v2/Services/{sid}/Verifications/{verification}",
            get(verify::fetch).post(verify::update),
        )
        .route("/v2/Services/{sid}/VerificationCheck", post(verify::check))
        .route(
            "/sim/legacy-users",
            post(world::add_legacy_users).get(world::legacy_users),
        )
        .route("/sim/inbox", get(world::inbox))
        .route("/notify", post(notify::notify))
        .route("/sessions", post(notify::sessions))
        .route("/sim/notices", get(notify::notices))
        .route("/products/{product}", post(products::receive))
        .route("/sim/products", get(products::messages))
        .route("/sim/faults", put(world::set_faults))
        .route("/sim/clock", post(world::advance_clock))
        .route("/sim/stats", get(world::stats))
        .fallback(legacy::unknown)
        .with_state(sim);
    let listen = args
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], args.port)));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
