//! The one check of proof: every lesser proof refused, in the library and over HTTP; a
//! sign-in proof only for what the host checked.

use portcullis::flows::proof::{Need, Presented, ProofError};

use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::common::Result;
use crate::recovery::{ALICE, Console, Env, GATEWAY, HOUR_MS, NEW_PHONE, PLAIN_CALLER, with_code};

use super::{ATTACKER_PHONE, factorless, login_body, post};

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
