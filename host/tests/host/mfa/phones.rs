//! Phones: never in an output, a recording or the database in clear; enrolled only
//! sealed and confirmed.

use portcullis::Decision;
use portcullis::model::FactorProvider;
use secrecy::ExposeSecret;

use crate::common::{Exposure, Result};

use super::{Env, Sidecar, challenged_via, cli, only_phone, seeded_phones};

#[test]
fn no_phone_number_in_any_output_recording_or_the_database() -> Result {
    let env = Env::new(|t| t);
    let phones = seeded_phones(&env);
    let logins = env.dir.path().join("mfa/logins");
    let mut outputs = Vec::new();
    // Every login, traced at the most verbose level.
    let (all, status) = cli(
        &env.config,
        &["run", "--login", logins.to_str().unwrap(), "--compact"],
    );
    assert!(status.success(), "{all}");
    assert!(all.contains("\"via\":\"verify\"") && all.contains("\"via\":\"legacy-sms\""));
    outputs.push(all);
    // One challenge through to the end, recorded, with a wrong code first.
    let (login, factor) = env.login_of(only_phone);
    let file = env.dir.path().join("one.json");
    std::fs::write(
        &file,
        serde_json::to_string(&serde_json::json!({
            "transaction_id": "tx-phone-check", "time_ms": login.time_ms, "connection": login.connection,
            "client_id": login.client_id, "email": login.email,
            "password": login.password.as_ref().unwrap().expose_secret(),
            "request": {"ip": "198.51.100.7", "user_agent": "test"},
        }))?,
    )?;
    let recording = env.dir.path().join("recording.json");
    let (first, status) = cli(
        &env.config,
        &[
            "run",
            "--login",
            file.to_str().unwrap(),
            "--record",
            recording.to_str().unwrap(),
        ],
    );
    assert!(status.success(), "{first}");
    let token_in = |out: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix("\"resume_token\": \""))
            .map(|t| t.trim_end_matches(['"', ',']).to_owned())
    };
    let mut token = token_in(&first).expect("a challenge");
    outputs.push(first);
    let code = env
        .sim
        .last_code(&env.phone_of(&factor, FactorProvider::Verify));
    for attempt in ["000000", code.as_str()] {
        let result = serde_json::json!({ "code": attempt }).to_string();
        let (out, status) = cli(
            &env.config,
            &[
                "continue",
                "--token",
                &token,
                "--transaction-id",
                "tx-phone-check",
                "--result",
                &result,
                "--record",
                recording.to_str().unwrap(),
            ],
        );
        assert!(status.success(), "{out}");
        if let Some(next) = token_in(&out) {
            token = next;
        }
        outputs.push(out);
    }
    assert!(
        outputs.last().unwrap().contains("\"allow\""),
        "{}",
        outputs.last().unwrap()
    );
    let recorded = std::fs::read_to_string(&recording)?;
    assert!(recorded.contains("sms.send-code") && recorded.contains("[redacted]"));
    assert!(!recorded.contains(&code), "the code is not recorded");
    outputs.push(recorded);
    // The stores too: the directory's file after a checkpoint and its WAL (where the
    // latest writes are), the legacy stores, and what the simulator printed.
    let mut exposure = Exposure::new()
        .databases_under(&env.dir.path().join("mfa"))
        .text("portcullis-sim", env.sim.output());
    for (n, output) in outputs.iter().enumerate() {
        exposure = exposure.text(&format!("CLI output {n}"), output);
    }
    for phone in &phones {
        exposure.assert_no_phone(phone);
    }
    Ok(())
}

#[test]
fn enrolment_goes_to_the_new_provider_and_stores_only_a_sealed_confirmed_phone() -> Result {
    let env = Env::new(|t| t);
    let sidecar = Sidecar::start(&env);
    let (login, none) = env.login_where(|f| f.is_none());
    assert!(none.is_none());
    let user =
        portcullis::model::Directory::find_by_email(env.gateway.state().as_ref(), &login.email)?
            .remove(0);
    let factors = || env.gateway.state().factors_of(&user.id).unwrap();
    // A user id is not proof: the gateway enrols with what the host issued to the
    // user's sign-in (the password; the user has no factor yet).
    let (status, body) = sidecar.post(
        "/v1/mfa/enroll",
        serde_json::json!({"user_id": user.id, "phone": "(415) 555-2671"}),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("proof_required"))
    );
    let signed_in = env.gateway.login(&login)?;
    assert_eq!(signed_in.decision, Decision::Allow);
    let proof = signed_in.proof_token.clone().expect("a sign-in proof");

    // Numbers outside the allowed region, or not numbers: refused, nothing stored.
    for (phone, says) in [
        ("+44 7911 123456", "+44"),
        ("12", "phone number"),
        ("+1 415 555 267", "not a valid"),
    ] {
        let (status, body) = sidecar.post(
            "/v1/mfa/enroll",
            serde_json::json!({"proof_token": proof, "phone": phone}),
        );
        assert_eq!(status, 400, "{phone}: {body}");
        assert_eq!(body["code"], "invalid_phone");
        assert!(body["error"].as_str().unwrap().contains(says), "{body}");
        assert!(
            !body.to_string().contains("7911"),
            "the error does not repeat the number"
        );
    }
    assert!(factors().is_empty());
    let (status, _) = sidecar.post(
        "/v1/mfa/enroll",
        serde_json::json!({"proof_token": "pp1_madeup", "phone": "(415) 555-2671"}),
    );
    assert_eq!(status, 403);

    let (status, started) = sidecar.post(
        "/v1/mfa/enroll",
        serde_json::json!({"proof_token": proof, "phone": "(415) 555-2671"}),
    );
    assert_eq!(status, 202, "{started}");
    assert_eq!(started["destination"], "+1 ***-***-2671");
    let enrollment = started["enrollment_id"].as_str().unwrap().to_owned();
    // Pending: stored sealed, never listed to rules.
    let pending = factors();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].status, portcullis::model::FactorStatus::Pending);
    assert!(
        portcullis::model::Directory::list_factors(env.gateway.state().as_ref(), &user.id)?
            .is_empty()
    );

    let confirm = |code: &str| {
        sidecar.post(
            "/v1/mfa/enroll/confirm",
            serde_json::json!({"proof_token": proof, "enrollment_id": enrollment, "code": code}),
        )
    };
    let (status, body) = confirm("000000");
    assert_eq!((status, body["code"].as_str()), (422, Some("wrong_code")));
    let (status, body) = confirm(&env.sim.last_code("+14155552671"));
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["provider"], "verify");
    let active = factors();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].status, portcullis::model::FactorStatus::Active);
    assert_eq!(active[0].provider, FactorProvider::Verify);
    let sealed = active[0].phone.as_ref().unwrap();
    assert_eq!(
        &*env.keys().open(sealed, &user.id, &active[0].id)?,
        "+14155552671"
    );
    // The phone, sealed for this user, does not open as anyone else's.
    assert!(
        env.keys()
            .open(sealed, "usr_someone_else", &active[0].id)
            .is_err()
    );

    // The password alone no longer proves enough now that the user has a factor.
    let (status, body) = sidecar.post(
        "/v1/mfa/enroll",
        serde_json::json!({"proof_token": proof, "phone": "+1 415 555 0000"}),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("proof_required"))
    );

    // The user's next login is challenged through the new provider, at that phone.
    let verdict = env.gateway.login(&login)?;
    assert_eq!(challenged_via(&verdict), Some(FactorProvider::Verify));
    let done = env.resume(&verdict, &env.sim.last_code("+14155552671"))?;
    assert_eq!(done.decision, Decision::Allow);

    // An enrolment whose code expired leaves nothing behind.
    let (other, _) = env.login_where(|f| f.is_none());
    let other =
        portcullis::model::Directory::find_by_email(env.gateway.state().as_ref(), &other.email)?
            .remove(0);
    assert_ne!(other.id, user.id, "the first user has a factor now");
    let other_id = other.id;
    let (other_login, _) = env.login_where(|f| f.is_none());
    let other_proof = env
        .gateway
        .login(&other_login)?
        .proof_token
        .expect("a sign-in proof");
    {
        let (status, started) = sidecar.post(
            "/v1/mfa/enroll",
            serde_json::json!({"proof_token": other_proof, "phone": "+1 415 555 2672"}),
        );
        assert_eq!(status, 202, "{started}");
        env.sim.send(
            "POST",
            "/sim/clock",
            serde_json::json!({ "advance_ms": 11 * 60 * 1000 }),
        );
        let code = env.sim.last_code("+14155552672");
        let (status, body) = sidecar.post(
            "/v1/mfa/enroll/confirm",
            serde_json::json!({"proof_token": other_proof, "enrollment_id": started["enrollment_id"], "code": code}),
        );
        assert_eq!(
            (status, body["code"].as_str()),
            (410, Some("code_expired")),
            "{body}"
        );
        assert!(env.gateway.state().factors_of(&other_id)?.is_empty());
    }
    Ok(())
}
