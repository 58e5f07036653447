//! Recovery codes: the owner's way back in, once each, guessing throttled, issued only
//! to a caller that vouches.

use portcullis::Decision;
use portcullis::model::FactorStatus;
use secrecy::ExposeSecret;

use crate::common::{Exposure, Result};

use super::{
    Console, Env, GATEWAY, HOUR_MS, PLAIN_CALLER, asked, denied_code, enrolment_asked, with_code,
};

#[test]
fn a_code_gets_the_owner_back_in_and_re_enrolled_in_one_flow_and_works_once() -> Result {
    let env = Env::new(|t| t);
    let (login, factor) = env.owner(0);
    let user = env.user_id(&login);
    let codes = env.gateway.recovery().issue_codes(&user)?.unwrap();
    assert_eq!(codes.len(), 10);
    let code = codes[0].expose_secret().to_owned();
    // Typed in lower case with spaces: the same code.
    let typed = code.to_lowercase().replace('-', " ");
    let verdict = env
        .gateway
        .login(&env.again(&login, "attacker-laptop", with_code(&typed)))?;
    assert!(enrolment_asked(&verdict), "{:?}", verdict.decision);
    // Sessions are revoked and every channel told as soon as the code is used.
    let sql = env.gateway.state().sql();
    assert!(portcullis::state::recovery::sessions_revoked_at(sql, &user)?.is_some());
    assert!(
        env.notices()
            .iter()
            .any(|n| n["event"] == "recovery-code-used")
    );
    // Someone with the password only cannot step into that enrolment.
    let sneaky = env
        .gateway
        .login(&env.again(&login, "attacker-laptop", asked()))?;
    assert_eq!(denied_code(&sneaky), "recovery_pending");
    let new_factor = env.enrol_new_phone(&verdict);
    let done = env.continue_with(&verdict, serde_json::json!({"enrollment_id": new_factor}));
    assert!(
        matches!(done.decision, Decision::Allow),
        "{:?}",
        done.decision
    );
    assert_eq!(
        env.gateway
            .state()
            .factors_of(&user)?
            .iter()
            .find(|f| f.id == factor.id)
            .unwrap()
            .status,
        FactorStatus::Disabled
    );

    // The burnt code is refused.
    let again = env
        .gateway
        .login(&env.again(&login, "attacker-laptop", with_code(&code)))?;
    assert_eq!(denied_code(&again), "recovery_code_invalid");
    // New codes: an unused earlier one stops working, a new one works.
    let unused_old = codes[1].expose_secret().to_owned();
    let fresh = env.gateway.recovery().issue_codes(&user)?.unwrap();
    assert!(
        env.notices()
            .iter()
            .any(|n| n["event"] == "recovery-codes-issued")
    );
    let old = env
        .gateway
        .login(&env.again(&login, "attacker-laptop", with_code(&unused_old)))?;
    assert_eq!(denied_code(&old), "recovery_code_invalid");
    let new = env.gateway.login(&env.again(
        &login,
        "attacker-laptop",
        with_code(fresh[0].expose_secret()),
    ))?;
    assert!(enrolment_asked(&new));
    // Codes are stored as keyed digests only: in no case or spelling in the directory
    // (its file after a checkpoint and its WAL, which holds the latest writes), the
    // legacy stores, or what the simulator printed.
    let exposure = Exposure::new()
        .databases_under(&env.dir.path().join("recovery"))
        .text("portcullis-sim", env.sim.output());
    for code in codes.iter().chain(&fresh) {
        exposure.assert_no_code("recovery code", code.expose_secret());
    }
    Ok(())
}

#[test]
fn code_guessing_is_throttled_then_disabled_and_new_codes_buy_no_more_guesses() -> Result {
    let env = Env::new(|t| {
        t.replace("max_code_failures = 100", "max_code_failures = 6")
            .replace("free_code_failures = 5", "free_code_failures = 3")
            .replace(
                "max_attempts_per_user_per_hour = 10",
                "max_attempts_per_user_per_hour = 1000",
            )
            .replace(
                "max_attempts_per_ip_per_hour = 30",
                "max_attempts_per_ip_per_hour = 1000",
            )
    });
    let (login, factor) = env.owner(0);
    let user = env.user_id(&login);
    let codes = env.gateway.recovery().issue_codes(&user)?.unwrap();
    let guess = |code: &str| {
        denied_code(
            &env.gateway
                .login(&env.again(&login, "attacker-laptop", with_code(code)))
                .unwrap(),
        )
    };
    let wrong = "ABCDE-FGHJK-MNPQR";
    for _ in 0..3 {
        assert_eq!(guess(wrong), "recovery_code_invalid");
    }
    // Delays start: too soon is refused without being checked, even a right code.
    assert_eq!(guess(codes[0].expose_secret()), "recovery_throttled");
    for delay_ms in [1_000, 2_000, 4_000] {
        env.clock.advance(delay_ms);
        assert_eq!(guess(wrong), "recovery_code_invalid");
    }
    // Six failures: disabled, however long one waits, and new codes change nothing.
    env.clock.advance(24 * HOUR_MS);
    assert_eq!(guess(codes[0].expose_secret()), "recovery_codes_disabled");
    let fresh = env.gateway.recovery().issue_codes(&user)?.unwrap();
    assert_eq!(guess(fresh[0].expose_secret()), "recovery_codes_disabled");
    // A sign-in with the factor resets the count: the code works again.
    assert!(matches!(
        env.sign_in_with_factor(&login, &factor).decision,
        Decision::Allow
    ));
    let back = env.gateway.login(&env.again(
        &login,
        "owner-phone",
        with_code(fresh[0].expose_secret()),
    ))?;
    assert!(enrolment_asked(&back), "{:?}", back.decision);
    Ok(())
}

#[test]
fn recovery_codes_are_issued_only_to_a_caller_that_vouches_and_shown_once() -> Result {
    let env = Env::new(|t| t);
    let console = Console::start(&env);
    let (login, _) = env.owner(0);
    let user = env.user_id(&login);
    let post = |token: &str, body: serde_json::Value| {
        let response = reqwest::blocking::Client::new()
            .post(format!("{}/v1/mfa/recovery-codes", console.url))
            .bearer_auth(token)
            .json(&body)
            .send()
            .unwrap();
        let status = response.status().as_u16();
        let no_store = response
            .headers()
            .get("cache-control")
            .is_some_and(|v| v == "no-store");
        (
            status,
            no_store,
            response.json::<serde_json::Value>().unwrap_or_default(),
        )
    };
    let (status, _, _) = post(PLAIN_CALLER, serde_json::json!({"user_id": user}));
    assert_eq!(status, 403);
    let (status, _, _) = post(GATEWAY, serde_json::json!({"user_id": "usr_nobody"}));
    assert_eq!(status, 404);
    let (status, no_store, body) = post(GATEWAY, serde_json::json!({"user_id": user}));
    assert_eq!(status, 201, "{body}");
    assert!(no_store);
    let codes: Vec<&str> = body["codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(codes.len(), 10);
    assert!(
        codes
            .iter()
            .all(|c| c.len() == 17 && c.chars().filter(|c| *c == '-').count() == 2)
    );
    assert_eq!(
        portcullis::state::recovery::codes_left(env.gateway.state().sql(), &user)?,
        10
    );
    Ok(())
}
