//! The one model of proof (`flows::proof`): every endpoint walked with every lesser
//! proof, and the takeovers it closes played by two parties over HTTP: the owner, and
//! an attacker holding the owner's password and a caller token that does not vouch.
//! A module per part; here, what they share.

use portcullis::LoginAttempt;
use portcullis::model::FactorStatus;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::recovery::Env;

mod checks;
mod enrolment;

/// The attacker's own phone, which must never end up on the owner's account.
const ATTACKER_PHONE: &str = "+16502530001";

fn post(url: &str, bearer: Option<&str>, path: &str, body: &Value) -> (u16, Value) {
    let mut request = reqwest::blocking::Client::new()
        .post(format!("{url}{path}"))
        .json(body);
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or_default())
}

/// The JSON a gateway posts to `/v1/login` for `login`.
fn login_body(login: &LoginAttempt) -> Value {
    let mut body = json!({
        "transaction_id": login.transaction_id,
        "time_ms": login.time_ms,
        "connection": login.connection,
        "client_id": login.client_id,
        "email": login.email,
        "password": login.password.as_ref().unwrap().expose_secret(),
        "request": {"ip": login.request.ip, "user_agent": login.request.user_agent},
    });
    match &login.recovery {
        Some(portcullis::model::RecoveryRequest::Flag(flag)) => body["recovery"] = json!(flag),
        Some(portcullis::model::RecoveryRequest::Code { code }) => {
            body["recovery"] = json!({"code": code.expose_secret()})
        }
        None => {}
    }
    body
}

fn decision_of(verdict: &Value) -> String {
    let decision = &verdict["decision"];
    format!(
        "{}:{}",
        decision["type"].as_str().unwrap_or("?"),
        decision["kind"]
            .as_str()
            .or(decision["code"].as_str())
            .unwrap_or("")
    )
}

/// Every phone on the user's factors, opened.
fn phones_of(env: &Env, user: &str) -> Vec<(String, FactorStatus)> {
    env.gateway
        .state()
        .factors_of(user)
        .unwrap()
        .iter()
        .filter(|f| f.phone.is_some())
        .map(|f| (env.phone_of(f), f.status))
        .collect()
}

/// The first user with the right password in the seed and no factor at all.
pub(crate) fn factorless(env: &Env, skip: usize) -> LoginAttempt {
    let mut found = 0;
    for file in crate::common::login_files(&env.dir.path().join("recovery")) {
        let login = LoginAttempt::from_json(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let Ok(users) =
            portcullis::model::Directory::find_by_email(env.gateway.state().as_ref(), &login.email)
        else {
            continue;
        };
        let Some(user) = users.first() else { continue };
        if !env.gateway.state().factors_of(&user.id).unwrap().is_empty() {
            continue;
        }
        let right = portcullis::model::Directory::verify_password(
            env.gateway.state().as_ref(),
            &user.id,
            login.password.as_ref().unwrap(),
        )
        .unwrap();
        if right {
            if found == skip {
                return login;
            }
            found += 1;
        }
    }
    panic!("the seed has no such user");
}

/// The bytes of a base64url part, as text (lossy), or nothing.
fn base64_lossy(part: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}
