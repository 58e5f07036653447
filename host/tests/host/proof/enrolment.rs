//! Enrolling a phone under a proof: only the person the proof is for, only what it
//! allows, and a recovery's factor only once the recovery completes.

use portcullis::flows::proof::{Need, Presented};
use portcullis::model::FactorStatus;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::common::Result;
use crate::recovery::{
    ALICE, BOB, Console, Env, GATEWAY, HOUR_MS, NEW_PHONE, PLAIN_CALLER, asked, with_code,
};

use super::{ATTACKER_PHONE, base64_lossy, decision_of, factorless, login_body, phones_of, post};

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
