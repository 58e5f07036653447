//! Attacks on the second factor's limits by someone who holds the victim's password,
//! over HTTP against `serve` (fixtures/pipeline-recovery.toml) with the simulator's
//! SMS providers, on a host clock moved by hand:
//!
//! - guessing codes challenge after challenge, for days (issue #22, item 6);
//! - spending the user's shared hourly allowances (codes sent, recovery attempts) so
//!   the owner cannot sign in nor recover (issue #22, item 7).
//!
//! Each asserts the victim keeps the account.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use portcullis::flows::clock::{Clock, ManualClock};
use portcullis::mfa::sealed::KeyRing;
use portcullis::state::factors::Factor;
use portcullis::state::portable::Val;
use serde_json::{Value, json};

use crate::common::{Result, Simulator};

const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;
const CALLER: &str = "factor-limits-gateway-token-0123456789";
const ALICE: &str = "factor-limits-agent-alice-0123456789ab";
/// How often the simulator's clock moves before a login: past its 10-minute codes
/// and its 5 texts per number per 10 minutes, so only the host's limits are tested.
const SIM_STEP_MS: u64 = 11 * 60 * 1000;

/// `serve` over HTTP on a ManualClock, the simulator, and seeded stores.
struct Env {
    /// First, so it stops (and drops what its tasks hold) before `app` is dropped
    /// here, outside the runtime: a PostgreSQL client cannot be dropped inside one.
    _runtime: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    sim: Simulator,
    clock: Arc<ManualClock>,
    app: Arc<portcullis::server::AppState>,
    url: String,
    next_tx: AtomicU32,
}

/// Someone signing in: the seeded login's JSON (email and password) and where from.
#[derive(Clone)]
struct Party {
    login: Value,
    ip: &'static str,
    user_agent: &'static str,
    device_token: Option<String>,
}

impl Env {
    fn new(edit: impl FnOnce(String) -> String) -> Env {
        let crate::common::ProviderEnv {
            sim, dir, config, ..
        } = crate::common::ProviderEnv::seed(
            &["--seed-legacy", "200", "--internal", "10"],
            |dir, sim| {
                std::fs::write(dir.join("gateway.token"), CALLER).unwrap();
                std::fs::write(dir.join("alice.token"), ALICE).unwrap();
                crate::recovery::recovery_config(dir, sim)
            },
            |text| {
                edit(
                    text.replace(
                        "token_env = \"PORTCULLIS_GATEWAY_TOKEN\"",
                        "token_file = \"gateway.token\"",
                    )
                    .replace(
                        "token_env = \"PORTCULLIS_AGENT_ALICE_TOKEN\"",
                        "token_file = \"alice.token\"",
                    )
                    .replace(
                        "token_env = \"PORTCULLIS_AGENT_BOB_TOKEN\"",
                        "token_file = \"alice.token\"",
                    ),
                )
            },
            ("recovery", 300, 400),
        );
        // The start of an hour of the host's clock, so the hourly windows are whole.
        let now = portcullis::flows::clock::SystemClock.now_ms();
        let clock = ManualClock::at(now - now % HOUR_MS + HOUR_MS + 1000);
        let app = Arc::new(
            portcullis::server::AppState::load_with_clock(&config, Some(clock.clone())).unwrap(),
        );
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = portcullis::server::router(app.clone());
        runtime.spawn(async move { axum::serve(listener, router).await });
        Env {
            _runtime: runtime,
            dir,
            sim,
            clock,
            app,
            url,
            next_tx: AtomicU32::new(0),
        }
    }

    fn state(&self) -> Arc<dyn portcullis::state::StateStore> {
        self.app.gateway().state().clone()
    }

    /// The `skip`-th seeded user whose one factor is a phone at the new provider,
    /// signing in with the right password from their own phone.
    fn owner(&self, skip: usize) -> (Party, Factor) {
        let state = self.state();
        let dir = self.dir.path().join("recovery");
        // Users have several seeded logins: count users, not logins.
        let mut seen = std::collections::HashSet::new();
        let owner = crate::common::seeded_logins(
            state.as_ref(),
            &dir,
            crate::common::one_new_provider_phone,
        )
        .filter(|s| seen.insert(s.user_id.clone()))
        .nth(skip)
        .expect("the seeded batch has such a login");
        let party = Party {
            login: serde_json::from_str(&owner.text).unwrap(),
            ip: "198.51.100.7",
            user_agent: "owner-phone",
            device_token: None,
        };
        (party, owner.factors[0].clone())
    }

    fn user_id(&self, party: &Party) -> String {
        portcullis::model::Directory::find_by_email(
            self.state().as_ref(),
            party.login["email"].as_str().unwrap(),
        )
        .unwrap()[0]
            .id
            .clone()
    }

    fn phone_of(&self, factor: &Factor) -> String {
        KeyRing::from_file(&self.dir.path().join("demo-mfa.keys"))
            .unwrap()
            .open(factor.phone.as_ref().unwrap(), &factor.user_id, &factor.id)
            .unwrap()
            .to_string()
    }

    fn post(&self, path: &str, token: &str, body: &Value) -> (u16, Value) {
        let response = reqwest::blocking::Client::new()
            .post(format!("{}{path}", self.url))
            .bearer_auth(token)
            .json(body)
            .send()
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().unwrap_or_default())
    }

    /// `POST /v1/login` as `party`, now by the host's clock, under a new transaction.
    fn login(&self, party: &Party, recovery: Option<Value>) -> Value {
        self.sim
            .send("POST", "/sim/clock", json!({ "advance_ms": SIM_STEP_MS }));
        let n = self.next_tx.fetch_add(1, Ordering::Relaxed);
        let mut body = party.login.clone();
        body["transaction_id"] = json!(format!("tx-factor-{n}"));
        body["time_ms"] = json!(self.clock.now_ms());
        body["request"] = json!({"ip": party.ip, "user_agent": party.user_agent});
        if let Some(token) = &party.device_token {
            body["request"]["device_token"] = json!(token);
        }
        if let Some(recovery) = recovery {
            body["recovery"] = recovery;
        }
        let (status, verdict) = self.post("/v1/login", CALLER, &body);
        assert_eq!(status, 200, "{verdict}");
        verdict
    }

    /// `POST /v1/continue` with a code for `verdict`'s challenge.
    fn code(&self, verdict: &Value, code: &str) -> Value {
        let (status, next) = self.post(
            "/v1/continue",
            CALLER,
            &json!({
                "token": verdict["resume_token"],
                "transaction_id": verdict["transaction_id"],
                "result": {"code": code},
            }),
        );
        assert_eq!(status, 200, "{next}");
        next
    }

    /// The code the phone received last, and a code that is certainly not it.
    fn codes(&self, phone: &str) -> (String, String) {
        let right = self.sim.last_code(phone);
        let n: u32 = right.parse().unwrap();
        let wrong = format!(
            "{:0width$}",
            (n + 1) % 10u32.pow(right.len() as u32),
            width = right.len()
        );
        (right, wrong)
    }

    /// Texts the phone has received.
    fn texts(&self, phone: &str) -> usize {
        self.sim
            .get(&format!("/sim/inbox?to={}", phone.replace('+', "%2B")))
            .as_array()
            .map_or(0, Vec::len)
    }

    /// The notices the outbox holds for `user_id` about `event`.
    fn notices(&self, user_id: &str, event: &str) -> Vec<Value> {
        self.state()
            .outbox_messages()
            .unwrap()
            .into_iter()
            .filter(|m| m.topic == "notify")
            .map(|m| serde_json::from_str::<Value>(&m.payload).unwrap())
            .filter(|n| n["user_id"] == user_id && n["event"] == event)
            .collect()
    }

    /// The owner signs in with the code their phone received: the final verdict.
    fn sign_in(&self, party: &Party, factor: &Factor) -> Value {
        let challenged = self.login(party, None);
        assert_eq!(challenge_kind(&challenged), Some("mfa"), "{challenged}");
        let (right, _) = self.codes(&self.phone_of(factor));
        self.code(&challenged, &right)
    }
}

fn decision(verdict: &Value) -> &str {
    verdict["decision"]["type"].as_str().unwrap_or_default()
}

fn denied(verdict: &Value) -> &str {
    assert_eq!(decision(verdict), "deny", "{verdict}");
    verdict["decision"]["code"].as_str().unwrap()
}

fn challenge_kind(verdict: &Value) -> Option<&str> {
    (decision(verdict) == "challenge").then(|| verdict["decision"]["kind"].as_str().unwrap())
}

fn stranger(owner: &Party) -> Party {
    Party {
        ip: "203.0.113.99",
        user_agent: "attacker-laptop",
        device_token: None,
        ..owner.clone()
    }
}

/// The delay after `failures` consecutive wrong codes: none below 10, then 1 s
/// doubling, at most an hour (the defaults of `[mfa]`).
fn delay_after(failures: u32) -> u64 {
    if failures < 10 {
        return 0;
    }
    (1000u64 << (failures - 10).min(30)).min(HOUR_MS)
}

/// The hourly allowance of codes is not what these tests are about.
fn many_codes_an_hour(text: String) -> String {
    text.replace(
        "max_challenges_per_hour = 10",
        "max_challenges_per_hour = 1000",
    )
}

#[test]
fn guessing_codes_across_challenges_slows_down_tells_the_owner_and_stops_at_100() -> Result {
    guessing_codes(&Env::new(many_codes_an_hour))
}

#[test]
fn guessing_codes_with_the_directory_on_postgres() -> Result {
    let Some(url) = crate::postgres::fresh_database("factor_guessing") else {
        crate::common::not_run("PORTCULLIS_TEST_POSTGRES is not set");
        return Ok(());
    };
    guessing_codes(&Env::new(|text| {
        crate::common::directory_at(&many_codes_an_hour(text), &url)
    }))
}

fn guessing_codes(env: &Env) -> Result {
    let (owner, factor) = env.owner(0);
    let user = env.user_id(&owner);
    let phone = env.phone_of(&factor);
    let attacker = stranger(&owner);

    // Nine wrong codes over two challenges, then the owner signs in with the right
    // one: the count starts again, so none of this reaches the threshold.
    let mut challenge = env.login(&attacker, None);
    for n in 1..=9 {
        if n == 6 {
            challenge = env.login(&attacker, None);
        }
        let (_, wrong) = env.codes(&phone);
        challenge = env.code(&challenge, &wrong);
    }
    assert_eq!(challenge["decision"]["attempts_left"], 1, "{challenge}");
    let owners = env.sign_in(&owner, &factor);
    assert_eq!(decision(&owners), "allow", "{owners}");

    // The attacker guesses on, challenge after challenge, waiting out each delay on
    // the host's clock; `failures` counts wrong codes since the owner's sign-in.
    let mut failures = 0u32;
    let mut challenge = env.login(&attacker, None);
    while failures < 100 {
        if challenge_kind(&challenge) != Some("mfa") {
            // The challenge took its five wrong codes: sign in again for a new one.
            challenge = env.login(&attacker, None);
        }
        assert_eq!(
            challenge_kind(&challenge),
            Some("mfa"),
            "after {failures} wrong codes: {challenge}"
        );
        let (_, wrong) = env.codes(&phone);
        challenge = env.code(&challenge, &wrong);
        failures += 1;
        match failures {
            1..=9 => assert!(env.notices(&user, "second-factor-guessing").is_empty()),
            10 => {
                // Told once, on every channel, that someone has the password.
                let told = env.notices(&user, "second-factor-guessing");
                let channels: Vec<(&str, &str)> = told
                    .iter()
                    .map(|n| (n["channel"].as_str().unwrap(), n["to"].as_str().unwrap()))
                    .collect();
                assert_eq!(
                    channels,
                    [
                        ("email", owner.login["email"].as_str().unwrap()),
                        ("sms", factor.id.as_str())
                    ],
                    "{told:?}"
                );
                assert!(told[0]["message"].as_str().unwrap().contains("password"));
            }
            _ => {}
        }
        let delay = delay_after(failures);
        if failures < 100 && [10, 11, 13, 30].contains(&failures) {
            // A millisecond before the delay ends nothing is sent, nothing checked.
            env.clock.advance(delay - 1);
            let texts = env.texts(&phone);
            let early = env.login(&attacker, None);
            assert_eq!(denied(&early), "mfa_throttled", "after {failures}: {early}");
            assert_eq!(env.texts(&phone), texts, "no code is sent during a delay");
            // (Its token outlives only delays shorter than its 15 minutes.)
            if challenge_kind(&challenge) == Some("mfa") && delay < 10 * 60 * 1000 {
                let (right, _) = env.codes(&phone);
                let refused = env.code(&challenge, &right);
                assert_eq!(denied(&refused), "mfa_throttled", "even the right code");
            }
            env.clock.advance(1);
            challenge = env.login(&attacker, None);
        } else {
            env.clock.advance(delay);
            if delay > 10 * 60 * 1000 {
                // Past the resume token's 15 minutes: the next guess needs a new login.
                challenge = env.login(&attacker, None);
            }
        }
    }
    // The hundredth: the factor takes no more codes, and no more are sent, days on.
    assert_eq!(denied(&challenge), "mfa_locked", "{challenge}");
    env.clock.advance(7 * DAY_MS);
    let texts = env.texts(&phone);
    for party in [&attacker, &owner] {
        assert_eq!(denied(&env.login(party, None)), "mfa_locked");
    }
    assert_eq!(env.texts(&phone), texts);
    // Told once only, however many codes followed.
    assert_eq!(env.notices(&user, "second-factor-guessing").len(), 2);

    // Support's password-reset lifts the stop; the owner's right code then leads to
    // a password reset, not into the account (the host's mark, for a user who was
    // never bulk-imported).
    let (status, body) = env.post(
        &format!("/admin/support/users/{user}/password-reset"),
        ALICE,
        &json!({"reason": "owner called: codes guessed, identity verified"}),
    );
    assert_eq!(status, 200, "{body}");
    let reset = env.sign_in(&owner, &factor);
    assert_eq!(challenge_kind(&reset), Some("password_reset"), "{reset}");
    assert!(reset["device_token"].is_null());

    // The owner changes the password (the reset flow writes the directory): the
    // old one stops working, and the owner signs in with the new one and the code.
    let new_password = "a-new-password-after-the-attack";
    let hash = portcullis::state::passwords::hash_argon2id(new_password);
    let mut metadata = env.state().get_user(&user)?.unwrap().app_metadata;
    metadata
        .as_object_mut()
        .unwrap()
        .remove("forcePasswordReset");
    portcullis::state::portable::transact(env.state().sql(), |tx| {
        tx.execute(
            "UPDATE users SET password_hash = $2, app_metadata = $3 WHERE id = $1",
            &[
                Val::text(&user),
                Val::text(&hash),
                Val::text(metadata.to_string()),
            ],
        )
    })?;
    assert_eq!(denied(&env.login(&attacker, None)), "invalid_credentials");
    let mut renewed = owner.clone();
    renewed.login["password"] = json!(new_password);
    let back = env.sign_in(&renewed, &factor);
    assert_eq!(decision(&back), "allow", "{back}");
    Ok(())
}

#[test]
fn a_recognised_device_keeps_its_own_allowance_when_a_stranger_spends_the_users() -> Result {
    recognised_devices(&Env::new(|t| t))
}

#[test]
fn recognised_devices_with_the_directory_on_postgres() -> Result {
    let Some(url) = crate::postgres::fresh_database("recognised_devices") else {
        crate::common::not_run("PORTCULLIS_TEST_POSTGRES is not set");
        return Ok(());
    };
    recognised_devices(&Env::new(|text| crate::common::directory_at(&text, &url)))
}

fn recognised_devices(env: &Env) -> Result {
    let (mut owner, factor) = env.owner(0);
    let (other, other_factor) = env.owner(1);
    let user = env.user_id(&owner);
    let phone = env.phone_of(&factor);

    // A full sign-in gives the device a token; a token from before the last 90 days
    // has expired by the host's clock.
    let first = env.sign_in(&owner, &factor);
    assert_eq!(decision(&first), "allow", "{first}");
    let expired = first["device_token"]
        .as_str()
        .expect("an allowed full sign-in carries a device token")
        .to_owned();
    env.clock.advance(91 * DAY_MS);
    let now = env.clock.now_ms();
    env.clock.advance(HOUR_MS - now % HOUR_MS + 1000);
    let allowed = env.sign_in(&owner, &factor);
    let token = allowed["device_token"].as_str().unwrap().to_owned();
    let others = env.sign_in(&other, &other_factor)["device_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(token, expired);
    owner.device_token = Some(token.clone());
    let codes = env.app.gateway().recovery().issue_codes(&user)?.unwrap();

    // The stranger, with the password only, spends the hour's codes and recovery
    // attempts (the owner's sign-in this hour spent one of the ten codes).
    let attacker_plain = stranger(&owner);
    for n in 0..9 {
        let verdict = env.login(&attacker_plain, None);
        assert_eq!(challenge_kind(&verdict), Some("mfa"), "{n}: {verdict}");
    }
    assert_eq!(
        denied(&env.login(&attacker_plain, None)),
        "mfa_rate_limited"
    );
    for n in 0..10 {
        let verdict = env.login(&attacker_plain, Some(json!(true)));
        assert_eq!(denied(&verdict), "recovery_pending", "{n}");
    }
    assert_eq!(
        denied(&env.login(&attacker_plain, Some(json!(true)))),
        "recovery_rate_limited"
    );

    // Without a recognised device the owner is shut out too: no token, another
    // user's, an expired one, a made-up one.
    let mut stranger_token = owner.clone();
    for presented in [
        None,
        Some(others.clone()),
        Some(expired.clone()),
        Some(format!("dvc_{}", "0".repeat(64))),
    ] {
        stranger_token.device_token = presented.clone();
        let texts = env.texts(&phone);
        assert_eq!(
            denied(&env.login(&stranger_token, None)),
            "mfa_rate_limited",
            "{presented:?}"
        );
        assert_eq!(env.texts(&phone), texts);
        let code = secrecy::ExposeSecret::expose_secret(&codes[0]).to_owned();
        assert_eq!(
            denied(&env.login(&stranger_token, Some(json!({"code": code})))),
            "recovery_rate_limited",
            "{presented:?}"
        );
    }
    // An overlong token is refused before anything is looked up.
    let mut overlong = owner.login.clone();
    overlong["transaction_id"] = json!("tx-overlong");
    overlong["time_ms"] = json!(env.clock.now_ms());
    overlong["request"] =
        json!({"ip": "198.51.100.7", "user_agent": "x", "device_token": "d".repeat(4096)});
    let (status, body) = env.post("/v1/login", CALLER, &overlong);
    assert_eq!(status, 400, "{body}");
    assert!(!body.to_string().contains(&"d".repeat(64)));

    // On the recognised device the owner still gets a code and signs in...
    let back = env.sign_in(&owner, &factor);
    assert_eq!(decision(&back), "allow", "{back}");
    // ...and can recover with a recovery code.
    let code = secrecy::ExposeSecret::expose_secret(&codes[0]).to_owned();
    let recovering = env.login(&owner, Some(json!({"code": code})));
    assert_eq!(
        challenge_kind(&recovering),
        Some("mfa_enrollment"),
        "{recovering}"
    );
    // The stranger's budget is as it was.
    assert_eq!(
        denied(&env.login(&attacker_plain, None)),
        "mfa_rate_limited"
    );
    assert_eq!(
        denied(&env.login(&attacker_plain, Some(json!(true)))),
        "recovery_rate_limited"
    );

    // Only digests are stored: no token in the directory's files.
    let db = env.dir.path().join("recovery");
    for entry in std::fs::read_dir(&db)? {
        let path: PathBuf = entry?.path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("directory.db"))
        {
            let bytes = String::from_utf8_lossy(&std::fs::read(&path)?).into_owned();
            for secret in [&token, &expired, &others] {
                assert!(!bytes.contains(secret.as_str()), "{}", path.display());
            }
        }
    }
    Ok(())
}
