//! The recovery's enrolment: the host, not a rule, decides when and whose.

use portcullis::flows::proof::{Need, Presented};
use secrecy::ExposeSecret;

use portcullis::flows::clock::Clock;

use crate::common::Result;

use super::{
    Env, HOUR_MS, NEW_PHONE, asked, denied_code, enrolment_asked, with_code, with_hostile_guard,
};

#[test]
fn a_rule_asking_to_enrol_before_the_wait_is_over_is_refused_by_the_host() -> Result {
    let env = Env::new(|t| t);
    let hostile = with_hostile_guard(&env, "enrol-early")?;
    let (login, _) = env.owner(0);
    let user = env.user_id(&login);
    // The attacker (the password, not the phone) starts a wait through the honest guard.
    let started = env
        .gateway
        .login(&env.again(&login, "attacker-laptop", asked()))?;
    assert_eq!(denied_code(&started), "recovery_pending");
    let ready_at = env.recoveries(&user)[0].ready_at_ms;

    // A rule that answers `enrol` at once, an hour in, and a millisecond before the
    // end: the host's clock says the wait is not over.
    for at in [
        env.clock.now_ms(),
        env.clock.now_ms() + HOUR_MS,
        ready_at - 1,
    ] {
        env.clock.set(at);
        let early = hostile.login(&env.again(&login, "attacker-laptop", asked()))?;
        assert_eq!(
            early.recovery,
            Some(portcullis::runtime::verdict::RecoveryStep::Enrol),
            "the rule asked to enrol"
        );
        assert!(
            !enrolment_asked(&early),
            "enrolment {} ms before the wait ends: {:?}",
            ready_at - at,
            early.decision
        );
        assert_eq!(denied_code(&early), "recovery_pending");
        assert!(early.resume_token.is_none(), "no token to enrol with");
        let recovery = &env.recoveries(&user)[0];
        assert_eq!(recovery.status.name(), "waiting", "the wait runs on");
        assert_eq!(recovery.ready_at_ms, ready_at);
    }

    // The same rule at the end of the wait is let through: the refusals above were
    // the clock's, not the rule's.
    env.clock.set(ready_at);
    let due = hostile.login(&env.again(&login, "attacker-laptop", asked()))?;
    assert!(enrolment_asked(&due), "{:?}", due.decision);
    Ok(())
}

#[test]
fn a_rule_asking_to_enrol_cannot_step_into_a_code_holders_enrolment() -> Result {
    let env = Env::new(|t| t);
    let hostile = with_hostile_guard(&env, "enrol-early")?;
    let (login, _) = env.owner(0);
    let user = env.user_id(&login);
    let codes = env.gateway.recovery().issue_codes(&user)?.unwrap();
    let owner = env.gateway.login(&env.again(
        &login,
        "owner-phone",
        with_code(codes[0].expose_secret()),
    ))?;
    assert!(enrolment_asked(&owner), "{:?}", owner.decision);
    // The password alone, with a rule that asks to enrol: the code's enrolment is
    // the code-holder's login's only.
    let sneaky = hostile.login(&env.again(&login, "attacker-laptop", asked()))?;
    assert!(!enrolment_asked(&sneaky), "{:?}", sneaky.decision);
    assert_eq!(denied_code(&sneaky), "recovery_pending");
    assert_eq!(env.recoveries(&user)[0].status.name(), "enrolling");
    Ok(())
}

#[test]
fn a_recovery_that_replaces_one_enrolling_cancels_its_code_at_the_provider() -> Result {
    let env = Env::new(|t| t);
    let (login, _) = env.owner(0);
    let user = env.user_id(&login);
    let codes = env.gateway.recovery().issue_codes(&user)?.unwrap();
    let first = env.gateway.login(&env.again(
        &login,
        "attacker-laptop",
        with_code(codes[0].expose_secret()),
    ))?;
    assert!(enrolment_asked(&first), "{:?}", first.decision);
    // The first recovery's enrolment texts a code, and is left there.
    let grant = env.gateway.authorize(
        Presented::Token(first.proof_token.as_deref().unwrap()),
        Need::Enrol,
    )?;
    env.gateway.enrolment().start(&grant, NEW_PHONE)?;
    let db = rusqlite::Connection::open(env.dir.path().join("recovery/directory.db"))?;
    let sid: String = db.query_row(
        "SELECT reference FROM open_codes WHERE user_id = ?1 AND purpose = 'enrol'",
        [&user],
        |row| row.get(0),
    )?;
    assert_eq!(
        crate::mfa::verification(&env.sim, &sid)["status"],
        "pending"
    );
    // Another recovery code replaces that recovery: its code stops working at once.
    let second = env.gateway.login(&env.again(
        &login,
        "owner-phone",
        with_code(codes[1].expose_secret()),
    ))?;
    assert!(enrolment_asked(&second), "{:?}", second.decision);
    assert_eq!(
        crate::mfa::verification(&env.sim, &sid)["status"],
        "canceled"
    );
    let left: i64 = db.query_row(
        "SELECT COUNT(*) FROM open_codes WHERE user_id = ?1",
        [&user],
        |row| row.get(0),
    )?;
    assert_eq!(left, 0);
    Ok(())
}
