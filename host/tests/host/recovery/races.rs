//! Changes to which of a user's factors are active, raced on PostgreSQL (READ
//! COMMITTED: without the user's factor lock, two transactions each see the other's
//! factor still active). Found by the attack review: two `remove-factor` executions
//! at once removed both of a user's factors, and two enrolment confirms at once left
//! two active factors; either way the account could end with no factor, open to
//! whoever has the password.

use std::sync::Barrier;

use portcullis::flows::proof::{Need, Presented};
use portcullis::flows::support::NewRequest;
use portcullis::model::{FactorProvider, FactorStatus};
use serde_json::json;

use super::Env;
use crate::common::Result;

fn active(env: &Env, user: &str) -> usize {
    env.gateway
        .state()
        .factors_of(user)
        .unwrap()
        .iter()
        .filter(|f| f.status == FactorStatus::Active)
        .count()
}

#[test]
fn two_removals_at_once_never_leave_a_user_without_a_factor_on_postgres() -> Result {
    let Some(url) = crate::postgres::fresh_database("remove_race") else {
        crate::common::not_run("PORTCULLIS_TEST_POSTGRES is not set");
        return Ok(());
    };
    let env = Env::new(|t| crate::common::directory_at(&t, &url));
    for skip in 0..3 {
        // Each one done has two factors now, so the next without is the first again.
        let (login, factor) = env.owner(0);
        let user = env.user_id(&login);
        let mut spare = factor.clone();
        spare.id = format!("{}_spare", factor.id);
        spare.phone = None;
        spare.provider = FactorProvider::LegacySms;
        spare.legacy_provider_user_id = Some(format!("spare-{skip}"));
        env.gateway.state().put_factor(&spare)?;
        let mut ids = Vec::new();
        for id in [&factor.id, &spare.id] {
            let asked = env.gateway.support().request(
                "alice",
                NewRequest {
                    action: "remove-factor",
                    user_id: &user,
                    params: json!({ "factor_id": id }),
                    evidence: "IDV-RACE",
                    reason: "lost phone",
                    skip_wait_reason: Some("verified in person"),
                },
            )?;
            env.gateway
                .support()
                .approve("bob", &asked.id, "IDV-RACE checked", Some("on site"))?;
            ids.push(asked.id);
        }
        let barrier = Barrier::new(2);
        std::thread::scope(|s| {
            for id in &ids {
                let (env, barrier) = (&env, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let _ = env.gateway.support().execute("bob", id);
                });
            }
        });
        assert_eq!(active(&env, &user), 1, "user {skip}: one of the two stays");
    }
    Ok(())
}

#[test]
fn two_enrolments_confirmed_at_once_leave_one_active_factor_on_postgres() -> Result {
    let Some(url) = crate::postgres::fresh_database("enrol_race") else {
        crate::common::not_run("PORTCULLIS_TEST_POSTGRES is not set");
        return Ok(());
    };
    let env = Env::new(|t| crate::common::directory_at(&t, &url));
    for skip in 0..6 {
        // Each one done has a factor now, so the next without is the first again.
        let login = crate::proof::factorless(&env, 0);
        let user = env.user_id(&login);
        let mut started = Vec::new();
        // Each user's own numbers: a number takes three enrolment codes an hour.
        let phones = [
            format!("+1650253{:04}", 100 + 2 * skip),
            format!("+1650253{:04}", 101 + 2 * skip),
        ];
        for (n, phone) in phones.iter().enumerate() {
            let verdict = env
                .gateway
                .login(&env.again(&login, &format!("laptop-{n}"), None))?;
            let grant = env.gateway.authorize(
                Presented::Token(verdict.proof_token.as_deref().expect("a sign-in proof")),
                Need::Enrol,
            )?;
            let enrolment = env.gateway.enrolment().start(&grant, phone)?;
            started.push((grant, enrolment.enrollment_id, env.sim.last_code(phone)));
        }
        let barrier = Barrier::new(2);
        std::thread::scope(|s| {
            for (grant, id, code) in &started {
                let (env, barrier) = (&env, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let _ = env.gateway.enrolment().confirm(grant, id, code);
                });
            }
        });
        assert_eq!(active(&env, &user), 1, "user {skip}: one enrolment wins");
    }
    Ok(())
}
