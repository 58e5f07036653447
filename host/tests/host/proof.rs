//! The one model of proof (`flows::proof`): every endpoint walked with every lesser
//! proof, and the takeovers it closes played by two parties over HTTP: the owner, and
//! an attacker holding the owner's password and a caller token that does not vouch.

use portcullis::LoginAttempt;
use portcullis::flows::proof::{Need, Presented, ProofError};
use portcullis::model::FactorStatus;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::common::Result;
use crate::recovery::{
    ALICE, BOB, Console, Env, GATEWAY, HOUR_MS, NEW_PHONE, PLAIN_CALLER, asked, with_code,
};

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

#[test]
fn an_attacker_with_the_password_cannot_plant_a_phone_during_the_owners_recovery() -> Result {
    let env = Env::new(|t| t);
    let console = Console::start(&env);
    let url = console.url.as_str();
    let (login, factor) = env.owner(0);
    let user = env.user_id(&login);
    let attacker_enrols = || {
        post(
            url,
            Some(PLAIN_CALLER),
            "/v1/mfa/enroll",
            &json!({"user_id": user, "phone": ATTACKER_PHONE}),
        )
    };
    // Before any recovery: a user id is not proof.
    let before = attacker_enrols();
    assert_eq!(before.0, 403, "{:?}", before.1);

    // The owner gets recovery codes from their gateway (which vouches) and, having
    // lost the phone, signs in with the password and a code.
    let (status, codes) = post(
        url,
        Some(GATEWAY),
        "/v1/mfa/recovery-codes",
        &json!({"user_id": user}),
    );
    assert_eq!(status, 201, "{codes}");
    let code = codes["codes"][0].as_str().unwrap().to_owned();
    let (status, verdict) = post(
        url,
        Some(PLAIN_CALLER),
        "/v1/login",
        &login_body(&env.again(&login, "owner-laptop", with_code(&code))),
    );
    assert_eq!(status, 200, "{verdict}");
    assert_eq!(
        decision_of(&verdict),
        "challenge:mfa_enrollment",
        "{verdict}"
    );
    let resume = verdict["resume_token"].as_str().unwrap().to_owned();
    let proof = verdict["proof_token"].as_str().unwrap().to_owned();
    // The resume token says nothing about whose it is, in any decoding.
    for part in resume.split('.') {
        let decoded = base64_lossy(part);
        assert!(
            !part.contains(&user) && !decoded.contains(&user),
            "the user id is readable in the resume token"
        );
        assert!(!decoded.contains(verdict["transaction_id"].as_str().unwrap()));
    }

    // During the recovery the attacker's probe is answered exactly as before it:
    // no recovery-state oracle, and nothing is sent.
    let during = attacker_enrols();
    assert_eq!(during, before);
    let (status, _) = post(
        url,
        Some(PLAIN_CALLER),
        "/v1/mfa/enroll/confirm",
        &json!({"user_id": user, "enrollment_id": "fac_guess", "code": "123456"}),
    );
    assert_eq!(status, 403);
    assert!(
        env.sim.get("/sim/inbox?to=%2B16502530001")["messages"]
            .as_array()
            .is_none_or(|m| m.is_empty())
    );
    // With the password alone the attacker gets no proof: a recovery login is told a
    // recovery is under way, a plain one is challenged on the owner's factor.
    for recovery in [asked(), None] {
        let (_, answer) = post(
            url,
            Some(PLAIN_CALLER),
            "/v1/login",
            &login_body(&env.again(&login, "attacker-laptop", recovery)),
        );
        assert!(answer["proof_token"].is_null(), "{answer}");
        assert_ne!(decision_of(&answer), "challenge:mfa_enrollment", "{answer}");
    }

    // The owner enrols with the proof their login was given, and gets in.
    let (status, started) = post(
        url,
        Some(PLAIN_CALLER),
        "/v1/mfa/enroll",
        &json!({"proof_token": proof, "phone": NEW_PHONE}),
    );
    assert_eq!(status, 202, "{started}");
    let enrollment = started["enrollment_id"].as_str().unwrap();
    let (status, body) = post(
        url,
        Some(PLAIN_CALLER),
        "/v1/mfa/enroll/confirm",
        &json!({"proof_token": proof, "enrollment_id": enrollment, "code": env.sim.last_code(NEW_PHONE)}),
    );
    assert_eq!(status, 201, "{body}");
    let (status, done) = post(
        url,
        Some(PLAIN_CALLER),
        "/v1/continue",
        &json!({"token": resume, "transaction_id": verdict["transaction_id"], "result": {"enrollment_id": enrollment}}),
    );
    assert_eq!(status, 200, "{done}");
    assert_eq!(decision_of(&done), "allow:", "{done}");

    // The owner keeps the account: their new phone is the one factor, the lost one is
    // disabled, and the attacker's phone is nowhere.
    let phones = phones_of(&env, &user);
    assert!(
        phones.contains(&(NEW_PHONE.to_owned(), FactorStatus::Active)),
        "{phones:?}"
    );
    assert!(phones.iter().all(|(p, _)| p != ATTACKER_PHONE));
    let lost = env.gateway.state().factors_of(&user)?;
    assert_eq!(
        lost.iter().find(|f| f.id == factor.id).unwrap().status,
        FactorStatus::Disabled
    );
    // And the recovery's proof is spent with the recovery.
    let (status, _) = post(
        url,
        Some(PLAIN_CALLER),
        "/v1/mfa/enroll",
        &json!({"proof_token": proof, "phone": ATTACKER_PHONE}),
    );
    assert_eq!(status, 403);
    Ok(())
}

/// The bytes of a base64url part, as text (lossy), or nothing.
fn base64_lossy(part: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

#[test]
fn support_hands_the_enrolment_to_the_person_it_verified_not_the_next_login() -> Result {
    let env = Env::new(|t| t);
    let console = Console::start(&env);
    let url = console.url.as_str();
    let (login, factor) = env.owner(0);
    let user = env.user_id(&login);
    let (code, asked_for) = console.support(
        ALICE,
        &[
            "request",
            "complete-recovery",
            "--user",
            &user,
            "--evidence",
            "IDV-2026-1206-1",
            "--reason",
            "lost phone, identity verified by video",
            "--skip-wait-reason",
            "verified in person",
        ],
    );
    assert_eq!(code, 0, "{asked_for}");
    let id = asked_for["id"].as_str().unwrap().to_owned();
    let (code, _) = console.support(
        BOB,
        &[
            "approve",
            &id,
            "--evidence",
            "IDV-2026-1206-1 checked",
            "--skip-wait-reason",
            "on site",
        ],
    );
    assert_eq!(code, 0);
    let (code, done) = console.support(BOB, &["execute", &id]);
    assert_eq!(code, 0, "{done}");

    // A credential stuffer's recovery login right after: no enrolment, no proof.
    let (status, answer) = post(
        url,
        Some(PLAIN_CALLER),
        "/v1/login",
        &login_body(&env.again(&login, "attacker-laptop", asked())),
    );
    assert_eq!(status, 200);
    assert_eq!(decision_of(&answer), "deny:recovery_pending", "{answer}");
    assert!(answer["proof_token"].is_null() && answer["resume_token"].is_null());
    let (status, _) = post(
        url,
        Some(PLAIN_CALLER),
        "/v1/mfa/enroll",
        &json!({"user_id": user, "phone": ATTACKER_PHONE}),
    );
    assert_eq!(status, 403);

    // The link went to the email on file only (the channel the agents verified).
    let links: Vec<Value> = env
        .notices()
        .into_iter()
        .filter(|n| n["event"] == "support-enrolment-link")
        .collect();
    assert_eq!(links.len(), 1, "{links:?}");
    assert_eq!(links[0]["channel"], "email");
    assert_eq!(links[0]["to"], login.email.as_str());
    let link = links[0]["enrol_url"].as_str().unwrap();
    let token = link.split("token=").nth(1).unwrap().to_owned();
    // Only its digest is kept.
    let db = std::fs::read(env.dir.path().join("recovery/directory.db"))?;
    let _ = db;

    let (status, started) = post(
        url,
        Some(PLAIN_CALLER),
        "/v1/mfa/enroll",
        &json!({"proof_token": token, "phone": NEW_PHONE}),
    );
    assert_eq!(status, 202, "{started}");
    let enrollment = started["enrollment_id"].as_str().unwrap();
    let (status, body) = post(
        url,
        Some(PLAIN_CALLER),
        "/v1/mfa/enroll/confirm",
        &json!({"proof_token": token, "enrollment_id": enrollment, "code": env.sim.last_code(NEW_PHONE)}),
    );
    assert_eq!(status, 201, "{body}");
    let factors = env.gateway.state().factors_of(&user)?;
    let status_of = |id: &str| factors.iter().find(|f| f.id == id).unwrap().status;
    assert_eq!(status_of(&factor.id), FactorStatus::Disabled);
    assert_eq!(status_of(enrollment), FactorStatus::Active);
    assert!(
        env.recoveries(&user)
            .iter()
            .any(|r| r.path.name() == "assisted" && r.status.name() == "completed")
    );
    // Single use.
    let (status, _) = post(
        url,
        Some(PLAIN_CALLER),
        "/v1/mfa/enroll",
        &json!({"proof_token": token, "phone": ATTACKER_PHONE}),
    );
    assert_eq!(status, 403);
    assert!(
        phones_of(&env, &user)
            .iter()
            .all(|(p, _)| p != ATTACKER_PHONE)
    );
    Ok(())
}

#[test]
fn enrolment_texts_only_mobile_numbers_of_the_region_within_shared_limits() -> Result {
    let env = Env::new(|t| t);
    let console = Console::start(&env);
    let url = console.url.as_str();
    let login = factorless(&env, 0);
    let (status, verdict) = post(url, Some(PLAIN_CALLER), "/v1/login", &login_body(&login));
    assert_eq!(
        (status, decision_of(&verdict).as_str()),
        (200, "allow:"),
        "{verdict}"
    );
    let proof = verdict["proof_token"].as_str().unwrap().to_owned();
    let enrol = |phone: &str| {
        post(
            url,
            Some(PLAIN_CALLER),
            "/v1/mfa/enroll",
            &json!({"proof_token": proof, "phone": phone}),
        )
    };
    // Premium rate, toll free, and +1 numbers outside the enrolment regions: refused
    // by name, nothing sent.
    for (phone, says) in [
        ("+1 900 234 5678", "premium-rate"),
        ("+1 800 234 5678", "toll-free"),
        ("+1 876 210 1234", "US, CA"),
    ] {
        let (status, body) = enrol(phone);
        assert_eq!(status, 400, "{phone}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(says),
            "{phone}: {body}"
        );
    }
    // Three codes to one number in an hour, then that number waits; five per user.
    let numbers = ["+1 650 253 0002", "+1 650 253 0003", "+1 650 253 0004"];
    for n in 0..3 {
        assert_eq!(enrol(numbers[0]).0, 202, "send {n}");
    }
    let (status, body) = enrol(numbers[0]);
    assert_eq!((status, body["code"].as_str()), (429, Some("rate_limited")));
    assert_eq!(enrol(numbers[1]).0, 202);
    assert_eq!(enrol(numbers[2]).0, 202);
    let (status, _) = enrol("+1 650 253 0005");
    assert_eq!(status, 429, "the user's five sends are spent");
    let metrics = reqwest::blocking::get(format!("{url}/metrics"))?.text()?;
    for line in [
        "portcullis_enrolment_sends_total{result=\"sent\"} 5",
        "portcullis_enrolment_sends_total{result=\"rate_limited\"} 2",
        // The premium-rate, the toll-free and the out-of-region number.
        "portcullis_enrolment_sends_total{result=\"refused_number\"} 3",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    Ok(())
}

/// `Gateway::authorize`, the one check, with every presentation against every need.
#[test]
fn the_one_check_refuses_every_lesser_proof() -> Result {
    let env = Env::new(|t| t);
    let (owner_login, _) = env.owner(0);
    let owner = env.user_id(&owner_login);
    // A password-only proof, issued while the user had no factor, is lesser once the
    // user has one.
    let grown = factorless(&env, 0);
    let grown_proof = env
        .gateway
        .login(&env.again(&grown, "d", None))?
        .proof_token
        .unwrap();
    env.enrol_with(&grown_proof, NEW_PHONE);
    // An enrolment outside a recovery is told to every channel, the email included.
    let told: Vec<Value> = env
        .notices()
        .into_iter()
        .filter(|n| n["event"] == "factor-enrolled")
        .collect();
    assert!(
        told.iter()
            .any(|n| n["channel"] == "email" && n["to"] == grown.email.as_str()),
        "{told:?}"
    );
    let fresh = factorless(&env, 1);
    let fresh_proof = env
        .gateway
        .login(&env.again(&fresh, "d", None))?
        .proof_token
        .unwrap();
    // A recovery's proof, for the owner's code recovery.
    let codes = env.gateway.recovery().issue_codes(&owner)?.unwrap();
    let recovering = env.gateway.login(&env.again(
        &owner_login,
        "owner-laptop",
        with_code(codes[0].expose_secret()),
    ))?;
    let recovery_proof = recovering.proof_token.clone().unwrap();

    let vouched = Presented::Vouched {
        caller: "sso",
        user_id: &owner,
    };
    let table: Vec<(&str, Presented<'_>, Need, bool)> = vec![
        ("nothing", Presented::Nothing, Need::Enrol, false),
        ("nothing", Presented::Nothing, Need::RecoveryCodes, false),
        (
            "made-up token",
            Presented::Token("pp1_AAAA"),
            Need::Enrol,
            false,
        ),
        (
            "not a proof token",
            Presented::Token(&owner),
            Need::Enrol,
            false,
        ),
        (
            "password, factor since",
            Presented::Token(&grown_proof),
            Need::Enrol,
            false,
        ),
        (
            "password, factor since",
            Presented::Token(&grown_proof),
            Need::RecoveryCodes,
            false,
        ),
        (
            "recovery proof",
            Presented::Token(&recovery_proof),
            Need::RecoveryCodes,
            false,
        ),
        // Codes outlive the factor: the password alone never mints them.
        (
            "password, no factor",
            Presented::Token(&fresh_proof),
            Need::RecoveryCodes,
            false,
        ),
        // What is enough, so the table can fail.
        ("vouched", vouched, Need::Enrol, true),
        ("vouched", vouched, Need::RecoveryCodes, true),
        (
            "password, no factor",
            Presented::Token(&fresh_proof),
            Need::Enrol,
            true,
        ),
        (
            "recovery proof",
            Presented::Token(&recovery_proof),
            Need::Enrol,
            true,
        ),
    ];
    for (name, presented, need, enough) in &table {
        let got = env.gateway.authorize(*presented, *need);
        match (enough, &got) {
            (true, Ok(_)) | (false, Err(ProofError::NotProven)) => {}
            _ => panic!("{name} for {need:?}: {got:?}"),
        }
    }
    // Time: the host's clock ends a proof.
    env.clock.advance(HOUR_MS);
    assert!(
        env.gateway
            .authorize(Presented::Token(&fresh_proof), Need::Enrol)
            .is_err(),
        "an expired proof"
    );
    // A recovery's proof stands for that recovery only: a second code starts a new
    // recovery (revoking every session and proof), and the first proof opens nothing.
    let again = env.gateway.login(&env.again(
        &owner_login,
        "owner-laptop",
        with_code(codes[1].expose_secret()),
    ))?;
    let second = again.proof_token.clone().expect("a new recovery's proof");
    assert!(
        env.gateway
            .authorize(Presented::Token(&recovery_proof), Need::Enrol)
            .is_err(),
        "the superseded recovery's proof"
    );
    assert!(
        env.gateway
            .authorize(Presented::Token(&second), Need::Enrol)
            .is_ok()
    );
    Ok(())
}

/// Every endpoint over HTTP with every lesser credential: refused, the same way.
#[test]
fn every_endpoint_refuses_every_lesser_proof_over_http() -> Result {
    let env = Env::new(|t| t);
    let console = Console::start(&env);
    let url = console.url.as_str();
    let (login, _) = env.owner(0);
    let user = env.user_id(&login);
    let grown = factorless(&env, 0);
    let grown_proof = env
        .gateway
        .login(&env.again(&grown, "d", None))?
        .proof_token
        .unwrap();
    env.enrol_with(&grown_proof, NEW_PHONE);
    let wrong = "not-a-caller-token-0123456789abcdef0123";

    let enrol = |body: Value| ("/v1/mfa/enroll", body);
    let confirm = |body: Value| ("/v1/mfa/enroll/confirm", body);
    let codes = |body: Value| ("/v1/mfa/recovery-codes", body);
    let phone = json!(ATTACKER_PHONE);
    // (endpoint and body, bearer, expected status)
    let lesser: Vec<((&str, Value), Option<&str>, u16)> = vec![
        (enrol(json!({"user_id": user, "phone": phone})), None, 401),
        (
            enrol(json!({"user_id": user, "phone": phone})),
            Some(wrong),
            401,
        ),
        (
            enrol(json!({"user_id": user, "phone": phone})),
            Some(ALICE),
            401,
        ),
        (
            enrol(json!({"user_id": user, "phone": phone})),
            Some(PLAIN_CALLER),
            403,
        ),
        (enrol(json!({"phone": phone})), Some(PLAIN_CALLER), 403),
        (
            enrol(json!({"proof_token": "pp1_AAAA", "phone": phone})),
            Some(PLAIN_CALLER),
            403,
        ),
        (
            enrol(json!({"proof_token": grown_proof, "phone": phone})),
            Some(PLAIN_CALLER),
            403,
        ),
        (
            confirm(json!({"user_id": user, "enrollment_id": "fac_x", "code": "1"})),
            Some(PLAIN_CALLER),
            403,
        ),
        (
            confirm(json!({"proof_token": grown_proof, "enrollment_id": "fac_x", "code": "1"})),
            Some(PLAIN_CALLER),
            403,
        ),
        (codes(json!({"user_id": user})), None, 401),
        (codes(json!({"user_id": user})), Some(PLAIN_CALLER), 403),
        (
            codes(json!({"proof_token": grown_proof})),
            Some(PLAIN_CALLER),
            403,
        ),
        (
            ("/v1/login", login_body(&env.again(&login, "x", None))),
            None,
            401,
        ),
        (
            ("/v1/login", login_body(&env.again(&login, "x", None))),
            Some(ALICE),
            401,
        ),
        (
            (
                "/v1/continue",
                json!({"token": "r1.00.AA.AA", "transaction_id": "t", "result": {}}),
            ),
            None,
            401,
        ),
        (
            (
                "/v1/continue",
                json!({"token": "r1.00.AA.AA", "transaction_id": "t", "result": {}}),
            ),
            Some(PLAIN_CALLER),
            403,
        ),
        (
            (
                "/v1/recovery/cancel",
                json!({"recovery_id": "rcv_x", "token": "t"}),
            ),
            None,
            401,
        ),
        (
            (
                "/v1/recovery/cancel",
                json!({"recovery_id": "rcv_x", "token": "t"}),
            ),
            Some(PLAIN_CALLER),
            404,
        ),
        (
            (
                "/admin/support/requests",
                json!({"action": "remove-factor", "user_id": user}),
            ),
            Some(GATEWAY),
            401,
        ),
        (("/admin/reload", json!({})), Some(GATEWAY), 404),
    ];
    let mut refusals = std::collections::BTreeMap::<u16, Vec<Value>>::new();
    for ((path, body), bearer, expected) in &lesser {
        let (status, answer) = post(url, *bearer, path, body);
        assert_eq!(status, *expected, "{path} {body} as {bearer:?}: {answer}");
        if *expected == 403 && path.starts_with("/v1/mfa") {
            refusals.entry(status).or_default().push(answer);
        }
    }
    // Every proof refusal is the same answer.
    let answers = &refusals[&403];
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
    // What is enough passes the same endpoints (so the walk can fail).
    let (status, body) = post(
        url,
        Some(GATEWAY),
        "/v1/mfa/recovery-codes",
        &json!({"user_id": user}),
    );
    assert_eq!(status, 201, "{body}");
    let fresh = factorless(&env, 1);
    let (_, verdict) = post(
        url,
        Some(PLAIN_CALLER),
        "/v1/login",
        &login_body(&env.again(&fresh, "d", None)),
    );
    let proof = verdict["proof_token"].as_str().unwrap();
    let (status, body) = post(
        url,
        Some(PLAIN_CALLER),
        "/v1/mfa/enroll",
        &json!({"proof_token": proof, "phone": "+1 650 253 0009"}),
    );
    assert_eq!(status, 202, "{body}");
    Ok(())
}

/// A factor a recovery's proof enrolled and confirmed, whose login never continued,
/// ends with the recovery: the owner's sign-in with their factor cancels the attacker's
/// served wait, and the attacker's phone is not left on the account.
#[test]
fn a_factor_confirmed_under_a_recovery_ends_with_it() -> Result {
    let env = Env::new(|t| t);
    let (login, factor) = env.owner(0);
    let user = env.user_id(&login);
    let first = env
        .gateway
        .login(&env.again(&login, "attacker-laptop", asked()))?;
    assert!(first.proof_token.is_none());
    env.clock.advance(7 * 24 * HOUR_MS + 1);
    let served = env
        .gateway
        .login(&env.again(&login, "attacker-laptop", asked()))?;
    let proof = served.proof_token.clone().expect("the served wait's proof");
    let planted = env.enrol_with(&proof, ATTACKER_PHONE);
    // The attacker does not continue; the owner signs in with the factor they have.
    let owner = env.sign_in_with_factor(&login, &factor);
    assert!(
        matches!(owner.decision, portcullis::Decision::Allow),
        "{:?}",
        owner.decision
    );
    let factors = env.gateway.state().factors_of(&user)?;
    let status = |id: &str| factors.iter().find(|f| f.id == id).unwrap().status;
    assert_eq!(status(&factor.id), FactorStatus::Active);
    assert_eq!(
        status(&planted),
        FactorStatus::Disabled,
        "the attacker's phone outlived the cancelled recovery"
    );
    // The parked login continues with its enrolment: told the recovery ended, not
    // asked to enrol again with a proof that enrols nothing any more.
    let after = env.continue_with(&served, json!({ "enrollment_id": planted }));
    assert_eq!(crate::recovery::denied_code(&after), "recovery_cancelled");
    Ok(())
}

/// A sign-in proof records the password only when the host checked it: a pipeline
/// that allows without asking the directory (one scripted rule) gives no proof,
/// however right the password the login carried; the real pipeline, which checks it,
/// does.
#[test]
fn a_sign_in_proof_records_only_a_password_the_host_checked() -> Result {
    let unchecked = Env::new(|t| {
        let head = t.split("[[rule]]").next().unwrap().to_owned();
        format!(
            "{head}{}",
            crate::common::rule(
                "scripted",
                "scripted",
                "grants = [\"log\", \"config\"]\nconfig = { name = \"scripted\", decision = \"continue\" }"
            )
        )
    });
    let login = factorless(&unchecked, 0);
    let verdict = unchecked
        .gateway
        .login(&unchecked.again(&login, "laptop", None))?;
    assert!(
        matches!(verdict.decision, portcullis::Decision::Allow),
        "{:?}",
        verdict.decision
    );
    assert!(
        verdict.proof_token.is_none(),
        "a proof of a password nobody checked"
    );

    let checked = Env::new(|t| t);
    let login = factorless(&checked, 0);
    let verdict = checked
        .gateway
        .login(&checked.again(&login, "laptop", None))?;
    assert!(
        matches!(verdict.decision, portcullis::Decision::Allow),
        "{:?}",
        verdict.decision
    );
    let grant = checked.gateway.authorize(
        Presented::Token(
            verdict
                .proof_token
                .as_deref()
                .expect("the checked password's proof"),
        ),
        Need::Enrol,
    )?;
    assert!(grant.has(portcullis::flows::proof::Shown::Password));
    Ok(())
}

/// A transaction id applied before reports the user *that* login signed in: a login
/// reusing a victim's id (an attacker signing in to their own account with it) must
/// not be handed a sign-in proof for the victim.
#[test]
fn a_reused_transaction_id_gets_no_proof_for_the_user_it_was_applied_for() -> Result {
    let env = Env::new(|t| t);
    let victim = env.again(&factorless(&env, 0), "laptop", None);
    let first = env.gateway.login(&victim)?;
    let applied = first.applied.as_ref().expect("the victim's login applied");
    assert!(
        applied.applied,
        "the victim's batch went through apply: {applied:?}"
    );
    let victim_id = applied.user_id.clone().expect("the victim's user");
    assert!(first.proof_token.is_some(), "the victim's own proof");

    let mut attacker = env.again(&factorless(&env, 1), "attacker-laptop", None);
    attacker.transaction_id = victim.transaction_id.clone();
    let second = env.gateway.login(&attacker)?;
    if let Some(token) = second.proof_token.as_deref() {
        let grant = env
            .gateway
            .authorize(Presented::Token(token), Need::Enrol)?;
        assert_ne!(grant.user_id, victim_id, "a proof for the victim");
    }
    Ok(())
}

/// A phone confirmed under a code's recovery is not a factor until the login that
/// showed the code finishes the recovery: neither challenged nor listed meanwhile, and
/// never active if the recovery ends first. Finished, it replaces the lost one.
#[test]
fn a_phone_confirmed_under_a_recovery_is_a_factor_only_once_the_recovery_completes() -> Result {
    let env = Env::new(|t| t);
    let status = |user: &str, id: &str| {
        env.gateway
            .state()
            .factors_of(user)
            .unwrap()
            .into_iter()
            .find(|f| f.id == id)
            .unwrap()
            .status
    };
    let challenged = |verdict: &portcullis::Verdict| match &verdict.decision {
        portcullis::Decision::Challenge { factor_id, .. } => factor_id.clone(),
        other => panic!("expected a challenge, got {other:?}"),
    };

    // Left unfinished: the recovery's window closes with the phone still confirmed.
    let (login, factor) = env.owner(0);
    let user = env.user_id(&login);
    let codes = env.gateway.recovery().issue_codes(&user)?.unwrap();
    let parked =
        env.gateway
            .login(&env.again(&login, "new-laptop", with_code(codes[0].expose_secret())))?;
    let confirmed = env.enrol_with(
        parked.proof_token.as_deref().expect("the code's proof"),
        ATTACKER_PHONE,
    );
    assert_eq!(status(&user, &confirmed), FactorStatus::Confirmed);
    assert_eq!(status(&user, &factor.id), FactorStatus::Active);
    env.clock.advance(73 * HOUR_MS);
    let later = env.gateway.login(&env.again(&login, "new-laptop", None))?;
    assert_eq!(
        challenged(&later).as_deref(),
        Some(factor.id.as_str()),
        "the phone confirmed under an expired recovery is challenged"
    );
    assert_ne!(status(&user, &confirmed), FactorStatus::Active);

    // Finished by its login: the new phone is the factor, the lost one is disabled.
    let (login, factor) = env.owner(1);
    let user = env.user_id(&login);
    let codes = env.gateway.recovery().issue_codes(&user)?.unwrap();
    let parked =
        env.gateway
            .login(&env.again(&login, "new-laptop", with_code(codes[0].expose_secret())))?;
    let confirmed = env.enrol_new_phone(&parked);
    assert_eq!(status(&user, &confirmed), FactorStatus::Confirmed);
    let done = env.continue_with(&parked, json!({"enrollment_id": confirmed}));
    assert!(
        matches!(done.decision, portcullis::Decision::Allow),
        "{:?}",
        done.decision
    );
    assert_eq!(status(&user, &confirmed), FactorStatus::Active);
    assert_eq!(status(&user, &factor.id), FactorStatus::Disabled);
    Ok(())
}

/// Two sign-ins of one user hold two proofs: an enrolment the first started is not
/// confirmed under the second, even with the right code (whoever else holds the
/// password signs in too), and the code is not spent by the try; the first confirms it.
#[test]
fn an_enrolment_is_confirmed_only_under_the_proof_that_started_it() -> Result {
    use portcullis::flows::enroll::EnrollError;
    let env = Env::new(|t| t);
    let login = factorless(&env, 1);
    let proof = || -> Result<String> {
        Ok(env
            .gateway
            .login(&env.again(&login, "d", None))?
            .proof_token
            .ok_or("a sign-in proof")?)
    };
    let (first, second) = (proof()?, proof()?);
    assert_ne!(first, second);
    let grant = |token: &str| env.gateway.authorize(Presented::Token(token), Need::Enrol);
    let (first, second) = (grant(&first)?, grant(&second)?);
    let started = env.gateway.enrolment().start(&first, NEW_PHONE)?;
    let code = env.sim.last_code(NEW_PHONE);
    let stolen = env
        .gateway
        .enrolment()
        .confirm(&second, &started.enrollment_id, &code);
    assert!(
        matches!(stolen, Err(EnrollError::UnknownEnrollment)),
        "confirmed under another proof: {:?}",
        stolen.map(|e| e.factor_id)
    );
    env.gateway
        .enrolment()
        .confirm(&first, &started.enrollment_id, &code)?;
    let user = env.user_id(&login);
    assert_eq!(
        phones_of(&env, &user),
        vec![(NEW_PHONE.to_owned(), FactorStatus::Active)]
    );
    Ok(())
}
