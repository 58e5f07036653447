//! SMS challenges through either provider: codes, their limits, expiry, outages, the
//! cohorts config.

use portcullis::flows::resume::ResumeRefusal;
use portcullis::model::FactorProvider;
use portcullis::state::factors::Factor;
use portcullis::{Decision, Gateway, GatewayError, PipelineConfig};

use crate::common::{Result, runtime};

use super::{Env, again, challenged_via, only_legacy, only_phone, open_codes, verification};

#[test]
fn logins_are_challenged_through_both_providers_and_complete_with_the_texted_code() -> Result {
    let env = Env::new(|t| t);
    for (pick, via) in [
        (
            only_legacy as fn(&Factor) -> bool,
            FactorProvider::LegacySms,
        ),
        (only_phone, FactorProvider::Verify),
        (
            |f: &Factor| {
                f.phone.is_some()
                    && f.legacy_provider_user_id.is_some()
                    && f.cohort.as_deref() == Some("internal")
                    && !f.reverted
            },
            FactorProvider::Verify,
        ),
        (
            |f: &Factor| {
                f.phone.is_some()
                    && f.legacy_provider_user_id.is_some()
                    && f.cohort.as_deref() == Some("general")
            },
            FactorProvider::LegacySms,
        ),
        (
            |f: &Factor| f.phone.is_some() && f.reverted,
            FactorProvider::LegacySms,
        ),
    ] {
        let (login, factor) = env.login_of(pick);
        let verdict = env.gateway.login(&login)?;
        assert_eq!(
            challenged_via(&verdict),
            Some(via),
            "{factor:?}: {:?}",
            verdict.decision
        );
        let phone = env.phone_of(&factor, via);
        let Decision::Challenge {
            destination: Some(shown),
            ..
        } = &verdict.decision
        else {
            unreachable!()
        };
        assert!(shown.starts_with("+1 ***-***-"), "{shown}");
        assert!(
            phone.ends_with(
                shown
                    .trim_start_matches("+1 ***-***-")
                    .trim_start_matches("**")
            )
        );
        assert!(!shown.contains(&phone[2..8]), "masked: {shown}");
        let done = env.resume(&verdict, &env.sim.last_code(&phone))?;
        assert_eq!(done.decision, Decision::Allow, "{factor:?}");
        assert!(done.applied.is_some_and(|a| a.applied));
        // Passed: the factor shows when it was last used, nothing else of it changed.
        let after = env.gateway.state().factors_of(&factor.user_id)?.remove(0);
        assert!(after.last_used_ms.is_some());
        assert_eq!(
            Factor {
                last_used_ms: None,
                ..after
            },
            Factor {
                last_used_ms: None,
                ..factor
            }
        );
    }
    // The old provider's phone export was never called.
    assert_eq!(env.sim.get("/sim/stats")["export_calls"], 0);
    Ok(())
}

/// mfa-route reads its cohorts with `rule_model::json_text`, which nests at most 16
/// levels: a config nested up to that bound (read whole, in the rule's 16 KiB stack)
/// or far past it (refused at the bound) is the rule's own `bad_config` error, never a
/// trap. The configured policy applies: `on_error = "deny"` denies the login.
#[test]
fn a_deeply_nested_cohorts_config_is_the_rules_error_not_a_stack_overflow() -> Result {
    for depth in [16, 100_000] {
        let nested = format!("{}\"internal\"{}", "[".repeat(depth), "]".repeat(depth));
        let env = Env::new(|t| {
            let cohorts = "new_provider_cohorts = [\"internal\"]";
            assert!(t.contains(cohorts));
            t.replace(cohorts, &format!("new_provider_cohorts = '{nested}'"))
        });
        let (login, _) = env.login_of(only_phone);
        let verdict = env.gateway.login(&login)?;
        let trace = verdict
            .trace
            .iter()
            .find(|t| t.rule == "mfa-route")
            .expect("mfa-route ran");
        let fault = trace.fault.as_ref().expect("a fault");
        assert_eq!(
            fault.kind,
            portcullis::FaultKind::RuleError,
            "{depth}: {fault:?}"
        );
        assert!(fault.message.contains("bad_config"), "{depth}: {fault:?}");
        assert!(matches!(verdict.decision, Decision::Deny { .. }), "{depth}");
    }
    Ok(())
}

#[test]
fn wrong_codes_are_limited_per_challenge_and_each_token_works_once() -> Result {
    let env = Env::new(|t| t);
    let (login, factor) = env.login_of(only_phone);
    let mut verdict = env.gateway.login(&login)?;
    assert_eq!(challenged_via(&verdict), Some(FactorProvider::Verify));
    let first = verdict.clone();
    for left in (1..=4).rev() {
        verdict = env.resume(&verdict, "000000")?;
        let Decision::Challenge { attempts_left, .. } = &verdict.decision else {
            panic!("a wrong code keeps the challenge: {:?}", verdict.decision)
        };
        assert_eq!(*attempts_left, Some(left));
    }
    // A spent token does not come back, even with the right code.
    let code = env
        .sim
        .last_code(&env.phone_of(&factor, FactorProvider::Verify));
    assert!(matches!(
        env.resume(&first, &code),
        Err(GatewayError::Refused(ResumeRefusal::Replayed))
    ));
    let last = env.resume(&verdict, "not a code")?;
    assert!(
        matches!(&last.decision, Decision::Deny { code, retryable: false, .. } if code == "mfa_too_many_attempts"),
        "{:?}",
        last.decision
    );
    assert!(last.resume_token.is_none());
    Ok(())
}

#[test]
fn an_expired_code_and_a_provider_outage_deny_retryable_and_touch_nothing() -> Result {
    let env = Env::new(|t| t);
    let (login, factor) = env.login_of(only_phone);
    let verdict = env.gateway.login(&login)?;
    let code = env
        .sim
        .last_code(&env.phone_of(&factor, FactorProvider::Verify));
    env.sim.send(
        "POST",
        "/sim/clock",
        serde_json::json!({ "advance_ms": 11 * 60 * 1000 }),
    );
    let late = env.resume(&verdict, &code)?;
    assert!(
        matches!(&late.decision, Decision::Deny { code, retryable: true, .. } if code == "mfa_code_expired"),
        "{:?}",
        late.decision
    );

    let (login, factor) = env.login_of(only_legacy);
    env.sim.send(
        "PUT",
        "/sim/faults",
        serde_json::json!({ "legacy": "down" }),
    );
    let down = env.gateway.login(&login)?;
    assert!(
        matches!(&down.decision, Decision::Deny { code, retryable: true, .. } if code == "mfa_provider_unavailable"),
        "{:?}",
        down.decision
    );
    assert!(down.applied.is_none());
    assert_eq!(
        env.gateway.state().factors_of(&factor.user_id)?,
        vec![factor.clone()]
    );
    // Back up: the same user signs in.
    env.sim
        .send("PUT", "/sim/faults", serde_json::json!({ "legacy": "ok" }));
    let up = env.gateway.login(&login)?;
    assert_eq!(challenged_via(&up), Some(FactorProvider::LegacySms));
    assert_eq!(env.sim.get("/sim/stats")["export_calls"], 0);
    Ok(())
}

#[test]
fn challenges_per_user_per_hour_are_the_hosts_to_limit_across_instances() -> Result {
    let env = Env::new(|t| {
        t.replace(
            "max_challenges_per_hour = 10",
            "max_challenges_per_hour = 3",
        )
    });
    // A second gateway instance over the same state: the count is shared, so the
    // fourth code is refused whichever instance the user reaches.
    let other = Gateway::open(&PipelineConfig::load(&env.config)?, runtime())?;
    let (login, _) = env.login_of(only_legacy);
    for n in 0..3 {
        let mut attempt = login.clone();
        attempt.transaction_id = format!("{}-{n}", login.transaction_id);
        let gateway = if n == 1 { &other } else { &env.gateway };
        let verdict = gateway.login(&attempt)?;
        assert_eq!(
            challenged_via(&verdict),
            Some(FactorProvider::LegacySms),
            "{n}"
        );
    }
    let mut fourth = login.clone();
    fourth.transaction_id = format!("{}-4", login.transaction_id);
    let verdict = other.login(&fourth)?;
    assert!(
        matches!(&verdict.decision, Decision::Deny { code, retryable: true, .. } if code == "mfa_rate_limited"),
        "{:?}",
        verdict.decision
    );
    Ok(())
}

#[test]
fn the_new_providers_own_send_limit_denies_retryable() -> Result {
    // Five codes per number per 10 minutes at the new provider; the host's own hourly
    // limit (10) is further away.
    let env = Env::new(|t| t);
    let (login, _) = env.login_of(only_phone);
    for n in 0..5 {
        let mut attempt = login.clone();
        attempt.transaction_id = format!("{}-{n}", login.transaction_id);
        let verdict = env.gateway.login(&attempt)?;
        assert_eq!(
            challenged_via(&verdict),
            Some(FactorProvider::Verify),
            "{n}"
        );
    }
    let mut sixth = login.clone();
    sixth.transaction_id = format!("{}-6", login.transaction_id);
    let verdict = env.gateway.login(&sixth)?;
    assert!(
        matches!(&verdict.decision, Decision::Deny { code, retryable: true, .. } if code == "mfa_provider_unavailable"),
        "{:?}",
        verdict.decision
    );
    Ok(())
}

/// Whoever has the password signs in while the owner's code is on its way: the
/// owner's code still works (a second login never cancels the first one's: it may be
/// the attacker's), and their login completes with it.
#[test]
fn another_login_never_cancels_the_code_the_owner_is_typing() -> Result {
    let env = Env::new(|t| t);
    let (login, factor) = env.login_of(only_phone);
    let phone = env.phone_of(&factor, FactorProvider::Verify);
    let owner = env.gateway.login(&login)?;
    assert_eq!(challenged_via(&owner), Some(FactorProvider::Verify));
    let code = env.sim.last_code(&phone);
    let [(sid, _)] = &open_codes(&env)[..] else {
        panic!("{:?}", open_codes(&env))
    };
    assert_eq!(verification(&env.sim, sid)["status"], "pending");

    let stranger = env.gateway.login(&again(&login, "2"))?;
    assert_eq!(challenged_via(&stranger), Some(FactorProvider::Verify));
    assert_eq!(verification(&env.sim, sid)["status"], "pending");
    let done = env.resume(&owner, &code)?;
    assert_eq!(done.decision, Decision::Allow, "{:?}", done.decision);
    // Approved: nothing is left open to cancel.
    assert!(open_codes(&env).is_empty(), "{:?}", open_codes(&env));
    Ok(())
}

#[test]
fn an_expired_challenge_is_cancelled_and_a_failed_cancel_never_blocks_a_login() -> Result {
    let env = Env::new(|t| t.replace("ttl_seconds = 900", "ttl_seconds = 1"));
    let (login, factor) = env.login_of(only_phone);
    let first = env.gateway.login(&login)?;
    assert_eq!(challenged_via(&first), Some(FactorProvider::Verify));
    let [(expired_sid, _)] = &open_codes(&env)[..] else {
        panic!("{:?}", open_codes(&env))
    };
    // Its resume token runs out; the next challenge of anyone sweeps it.
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    let (other, other_factor) = env.login_of(|f| only_phone(f) && f.user_id != factor.user_id);
    let verdict = env.gateway.login(&other)?;
    assert_eq!(challenged_via(&verdict), Some(FactorProvider::Verify));
    assert_eq!(verification(&env.sim, expired_sid)["status"], "canceled");
    let open = open_codes(&env);
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].1, other_factor.user_id);

    // A cancel the provider refuses (here a reference it cannot take) is logged and
    // the login goes on to its challenge.
    let db = rusqlite::Connection::open(env.dir.path().join("mfa/directory.db"))?;
    db.execute("UPDATE open_codes SET reference = 'not/a/sid'", [])?;
    let verdict = env.gateway.login(&again(&other, "2"))?;
    assert_eq!(challenged_via(&verdict), Some(FactorProvider::Verify));
    let code = env
        .sim
        .last_code(&env.phone_of(&other_factor, FactorProvider::Verify));
    assert_eq!(env.resume(&verdict, &code)?.decision, Decision::Allow);
    Ok(())
}
