//! The SMS second factor during the provider migration: contract 0.2.0 beside 0.1.0,
//! and logins challenged through both providers of the simulator (a real process
//! over HTTP), with the host's limits and no phone number anywhere it should not be.
//! A module per part; here, what they share.

use std::path::{Path, PathBuf};

use portcullis::mfa::sealed::KeyRing;
use portcullis::model::FactorProvider;
use portcullis::state::factors::Factor;
use portcullis::{Decision, Gateway, GatewayError, LoginAttempt};

use crate::common::{Simulator, mfa_config, runtime};

mod challenges;
mod contracts;
mod phones;

/// A seeded MFA environment: the simulator, the stores and a gateway.
struct Env {
    dir: tempfile::TempDir,
    sim: Simulator,
    config: PathBuf,
    gateway: Gateway,
}

impl Env {
    fn new(edit: impl FnOnce(String) -> String) -> Env {
        let crate::common::ProviderEnv {
            sim,
            dir,
            config,
            loaded,
        } = crate::common::ProviderEnv::seed(
            &["--seed-legacy", "2000", "--internal", "30"],
            mfa_config,
            edit,
            ("mfa", 1000, 1500),
        );
        let gateway = Gateway::open(&loaded, runtime()).unwrap();
        Env {
            dir,
            sim,
            config,
            gateway,
        }
    }

    fn keys(&self) -> KeyRing {
        KeyRing::from_file(&self.dir.path().join("demo-mfa.keys")).unwrap()
    }

    /// A seeded login with the right password of a user whose factor `pick` accepts.
    fn login_of(&self, pick: impl Fn(&Factor) -> bool) -> (LoginAttempt, Factor) {
        let (login, factor) = self.login_where(|f| f.is_some_and(&pick));
        (login, factor.unwrap())
    }

    /// A seeded login with the right password of a directory user whose first factor
    /// (or none) `pick` accepts.
    fn login_where(
        &self,
        pick: impl Fn(Option<&Factor>) -> bool,
    ) -> (LoginAttempt, Option<Factor>) {
        let state = self.gateway.state();
        let dir = self.dir.path().join("mfa");
        crate::common::seeded_logins(state.as_ref(), &dir, |f| pick(f.first()))
            .next()
            .map(|s| (s.login, s.factors.first().cloned()))
            .expect("the seeded batch has such a login")
    }

    /// Where a factor's codes go.
    fn phone_of(&self, factor: &Factor, via: FactorProvider) -> String {
        match via {
            FactorProvider::Verify => {
                let sealed = factor.phone.as_ref().unwrap();
                self.keys()
                    .open(sealed, &factor.user_id, &factor.id)
                    .unwrap()
                    .to_string()
            }
            FactorProvider::LegacySms => {
                let id = factor.legacy_provider_user_id.as_deref().unwrap();
                let n = portcullis::jobs::seed::legacy_sms_index(id).unwrap();
                portcullis::jobs::seed::legacy_sms_phone(n)
            }
        }
    }

    fn resume(
        &self,
        verdict: &portcullis::Verdict,
        code: &str,
    ) -> std::result::Result<portcullis::Verdict, GatewayError> {
        self.gateway.resume(
            verdict.resume_token.as_deref().expect("a resume token"),
            &verdict.transaction_id,
            &serde_json::json!({ "code": code }).to_string(),
        )
    }
}

fn only_legacy(f: &Factor) -> bool {
    f.legacy_provider_user_id.is_some() && f.phone.is_none()
}

fn only_phone(f: &Factor) -> bool {
    f.legacy_provider_user_id.is_none() && f.phone.is_some()
}

fn challenged_via(verdict: &portcullis::Verdict) -> Option<FactorProvider> {
    match &verdict.decision {
        Decision::Challenge { via, .. } => *via,
        _ => None,
    }
}

/// Every phone number of the seeded factors, in E.164.
fn seeded_phones(env: &Env) -> Vec<String> {
    let db = rusqlite::Connection::open(env.dir.path().join("mfa/directory.db")).unwrap();
    let mut statement = db.prepare("SELECT user_id FROM factors").unwrap();
    let users: Vec<String> = statement
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let mut phones = Vec::new();
    for user in users {
        for factor in env.gateway.state().factors_of(&user).unwrap() {
            for via in [FactorProvider::Verify, FactorProvider::LegacySms] {
                let usable = match via {
                    FactorProvider::Verify => factor.phone.is_some(),
                    FactorProvider::LegacySms => factor.legacy_provider_user_id.is_some(),
                };
                if usable {
                    phones.push(env.phone_of(&factor, via));
                }
            }
        }
    }
    assert!(phones.len() >= 10, "{} phones", phones.len());
    phones
}

fn cli(config: &Path, args: &[&str]) -> (String, std::process::ExitStatus) {
    crate::common::cli_logging(config, args, Some("trace"))
}

/// The sidecar over HTTP for `env`'s config, with a caller token from a file.
struct Sidecar {
    url: String,
    _runtime: tokio::runtime::Runtime,
}

const CALLER_TOKEN: &str = "mfa-test-gateway-token-0123456789abcdef";

impl Sidecar {
    fn start(env: &Env) -> Sidecar {
        let token = env.dir.path().join("caller.token");
        std::fs::write(&token, CALLER_TOKEN).unwrap();
        let text = std::fs::read_to_string(&env.config).unwrap().replace(
            "token_env = \"PORTCULLIS_GATEWAY_TOKEN\"",
            &format!("token_file = \"{}\"", token.display()),
        );
        std::fs::write(&env.config, text).unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let app = std::sync::Arc::new(portcullis::server::AppState::load(&env.config).unwrap());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        runtime.spawn(async move { axum::serve(listener, portcullis::server::router(app)).await });
        Sidecar {
            url,
            _runtime: runtime,
        }
    }

    fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let response = reqwest::blocking::Client::new()
            .post(format!("{}{path}", self.url))
            .bearer_auth(CALLER_TOKEN)
            .json(&body)
            .send()
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().unwrap_or_default())
    }
}

/// The verification the new provider holds under `sid`, as its own API shows it.
pub(crate) fn verification(sim: &Simulator, sid: &str) -> serde_json::Value {
    reqwest::blocking::Client::new()
        .get(format!("{}/v2/Services/VAsim/Verifications/{sid}", sim.url))
        .basic_auth("ACsim", Some("sim-verify-token"))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

/// The provider's references the directory holds open, as `(reference, user)`.
fn open_codes(env: &Env) -> Vec<(String, String)> {
    let db = rusqlite::Connection::open(env.dir.path().join("mfa/directory.db")).unwrap();
    let mut statement = db
        .prepare("SELECT reference, user_id FROM open_codes ORDER BY reference")
        .unwrap();
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

fn again(login: &LoginAttempt, n: &str) -> LoginAttempt {
    let mut attempt = login.clone();
    attempt.transaction_id = format!("{}-{n}", login.transaction_id);
    attempt
}
