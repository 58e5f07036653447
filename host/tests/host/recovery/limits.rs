//! Recovery attempts limited per address and per user, across instances.

use portcullis::{Gateway, PipelineConfig};

use portcullis::flows::clock::Clock;

use crate::common::{Result, runtime};

use super::{Env, HOUR_MS, asked, denied_code};

#[test]
fn recovery_attempts_are_rate_limited_per_address_and_answers_do_not_tell_accounts_apart() -> Result
{
    let env = Env::new(|t| {
        t.replace(
            "max_attempts_per_ip_per_hour = 30",
            "max_attempts_per_ip_per_hour = 2",
        )
    });
    let (login, _) = env.owner(0);
    let (other, _) = env.owner(1);
    for _ in 0..2 {
        env.gateway
            .login(&env.again(&login, "attacker-laptop", asked()))?;
    }
    // The same address, another account: over the address's allowance.
    let third = env
        .gateway
        .login(&env.again(&other, "attacker-laptop", asked()))?;
    assert_eq!(denied_code(&third), "recovery_rate_limited");

    // An unknown email and a wrong password get the very same answer.
    let mut unknown = env.again(&login, "someone", asked());
    unknown.email = "nobody-here@example.com".into();
    let mut wrong = env.again(&login, "someone", asked());
    wrong.password = Some("not-the-password".to_owned().into());
    let (a, b) = (env.gateway.login(&unknown)?, env.gateway.login(&wrong)?);
    assert_eq!(a.decision, b.decision);
    assert_eq!(denied_code(&a), "invalid_credentials");
    Ok(())
}

#[test]
fn recovery_attempts_per_user_are_counted_across_instances_on_the_hosts_clock() -> Result {
    let env = Env::new(|t| {
        t.replace(
            "max_attempts_per_user_per_hour = 10",
            "max_attempts_per_user_per_hour = 2",
        )
    });
    // A second gateway instance over the same directory, on the same host clock.
    let other = Gateway::open(&PipelineConfig::load(&env.config)?, runtime())?
        .with_clock(env.clock.clone());
    let (login, _) = env.owner(0);
    // Start of an hour, so the three attempts fall in one.
    let now = env.clock.now_ms();
    env.clock.advance(HOUR_MS - now % HOUR_MS);
    let first = env.gateway.login(&env.again(&login, "laptop-1", asked()))?;
    assert_eq!(denied_code(&first), "recovery_pending");
    let second = other.login(&env.again(&login, "laptop-2", asked()))?;
    assert_eq!(denied_code(&second), "recovery_pending");
    // The third, at the first instance: over the user's two.
    let third = env.gateway.login(&env.again(&login, "laptop-3", asked()))?;
    assert_eq!(denied_code(&third), "recovery_rate_limited");
    // The next hour of the host's clock (not of the wall's) allows again.
    env.clock.advance(HOUR_MS);
    let next = other.login(&env.again(&login, "laptop-3", asked()))?;
    assert_eq!(denied_code(&next), "recovery_pending");
    Ok(())
}
