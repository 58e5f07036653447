//! Account recovery when the second factor is lost (fixtures/pipeline-recovery.toml):
//! the attacks it must stop and the owner's ways back in, against the simulator's
//! SMS providers and notification endpoint (a real process over HTTP), with the
//! host's clock moved by hand across the waiting period.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use portcullis::flows::clock::{Clock, ManualClock};
use portcullis::flows::proof::{Need, Presented};
use portcullis::mfa::sealed::KeyRing;
use portcullis::model::FactorStatus;
use portcullis::model::RecoveryRequest;
use portcullis::runtime::verdict::ChallengeKind;
use portcullis::state::factors::Factor;
use portcullis::{Decision, Gateway, LoginAttempt, PipelineConfig, Verdict};
use secrecy::ExposeSecret;

use crate::common::{Exposure, Result, Simulator, runtime, workspace_root};

pub(crate) const HOUR_MS: u64 = 3_600_000;
/// A number the new provider texts the new factor's codes to.
pub(crate) const NEW_PHONE: &str = "+16502530000";

/// fixtures/pipeline-recovery.toml with its stores in `dir` and its providers and
/// notification endpoint at `sim`.
pub fn recovery_config(dir: &Path, sim: &Simulator) -> PathBuf {
    let path = crate::common::provider_config(dir, sim, "pipeline-recovery.toml");
    std::fs::copy(
        workspace_root().join("fixtures/demo-recovery.key"),
        dir.join("demo-recovery.key"),
    )
    .unwrap();
    std::fs::copy(
        workspace_root().join("fixtures/demo-audit.key"),
        dir.join("demo-audit.key"),
    )
    .unwrap();
    path
}

mod audit_chain;
mod outbox_secrets;
mod races;

pub(crate) struct Env {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) sim: Simulator,
    pub(crate) config: PathBuf,
    pub(crate) gateway: Gateway,
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) next_tx: std::sync::atomic::AtomicU32,
}

impl Env {
    pub(crate) fn new(edit: impl FnOnce(String) -> String) -> Env {
        let crate::common::ProviderEnv {
            sim,
            dir,
            config,
            loaded,
        } = crate::common::ProviderEnv::seed(
            &["--seed-legacy", "200", "--internal", "10"],
            recovery_config,
            edit,
            ("recovery", 300, 400),
        );
        let clock = ManualClock::at(portcullis::flows::clock::SystemClock.now_ms());
        let gateway = Gateway::open(&loaded, runtime())
            .unwrap()
            .with_clock(clock.clone());
        Env {
            dir,
            sim,
            config,
            gateway,
            clock,
            next_tx: Default::default(),
        }
    }

    /// A seeded login with the right password of a user whose one factor is a phone
    /// at the new provider (the simulator texts it), `skip` such users first.
    pub(crate) fn owner(&self, skip: usize) -> (LoginAttempt, Factor) {
        let state = self.gateway.state();
        let dir = self.dir.path().join("recovery");
        let mut found = crate::common::seeded_logins(
            state.as_ref(),
            &dir,
            crate::common::one_new_provider_phone,
        );
        let owner = found.nth(skip).expect("the seeded batch has such a login");
        (owner.login, owner.factors[0].clone())
    }

    /// `login` again, now, under a new transaction id, from `device`.
    pub(crate) fn again(
        &self,
        login: &LoginAttempt,
        device: &str,
        recovery: Option<RecoveryRequest>,
    ) -> LoginAttempt {
        let n = self
            .next_tx
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut login = login.clone();
        login.transaction_id = format!("tx-recovery-{n}");
        login.time_ms = self.clock.now_ms();
        login.request.user_agent = device.into();
        login.request.ip = if device == "owner-phone" {
            "198.51.100.7".into()
        } else {
            "203.0.113.99".into()
        };
        login.recovery = recovery;
        login
    }

    pub(crate) fn phone_of(&self, factor: &Factor) -> String {
        KeyRing::from_file(&self.dir.path().join("demo-mfa.keys"))
            .unwrap()
            .open(factor.phone.as_ref().unwrap(), &factor.user_id, &factor.id)
            .unwrap()
            .to_string()
    }

    /// The owner signs in with their factor (the code the simulator texted).
    pub(crate) fn sign_in_with_factor(&self, login: &LoginAttempt, factor: &Factor) -> Verdict {
        let verdict = self
            .gateway
            .login(&self.again(login, "owner-phone", None))
            .unwrap();
        assert!(
            matches!(
                verdict.decision,
                Decision::Challenge {
                    kind: ChallengeKind::Mfa,
                    ..
                }
            ),
            "{:?}",
            verdict.decision
        );
        let code = self.sim.last_code(&self.phone_of(factor));
        let verdict = self.continue_with(&verdict, serde_json::json!({ "code": code }));
        // Where it came from is written behind with the login's statistics.
        self.gateway.flush_login_stats().unwrap();
        verdict
    }

    pub(crate) fn continue_with(&self, verdict: &Verdict, result: serde_json::Value) -> Verdict {
        self.gateway
            .resume(
                verdict.resume_token.as_deref().expect("a resume token"),
                &verdict.transaction_id,
                &result.to_string(),
            )
            .unwrap()
    }

    /// Enrols `NEW_PHONE` as the user's new factor (code from the simulator's inbox)
    /// with the proof the host issued to the enrolment's login.
    pub(crate) fn enrol_new_phone(&self, verdict: &Verdict) -> String {
        let token = verdict.proof_token.as_deref().expect("an enrolment proof");
        self.enrol_with(token, NEW_PHONE)
    }

    /// Enrols `phone` with the proof `token` (code from the simulator's inbox).
    pub(crate) fn enrol_with(&self, token: &str, phone: &str) -> String {
        let grant = self
            .gateway
            .authorize(Presented::Token(token), Need::Enrol)
            .unwrap();
        let started = self.gateway.enrolment().start(&grant, phone).unwrap();
        let code = self.sim.last_code(phone);
        self.gateway
            .enrolment()
            .confirm(&grant, &started.enrollment_id, &code)
            .unwrap();
        started.enrollment_id
    }

    pub(crate) fn notices(&self) -> Vec<serde_json::Value> {
        self.gateway
            .state()
            .outbox_messages()
            .unwrap()
            .into_iter()
            .filter(|m| m.topic == "notify")
            .map(|m| serde_json::from_str(&m.payload).unwrap())
            .collect()
    }

    pub(crate) fn recoveries(&self, user_id: &str) -> Vec<portcullis::state::recovery::Recovery> {
        portcullis::state::recovery::recoveries_of(self.gateway.state().sql(), user_id).unwrap()
    }

    pub(crate) fn user_id(&self, login: &LoginAttempt) -> String {
        portcullis::model::Directory::find_by_email(self.gateway.state().as_ref(), &login.email)
            .unwrap()[0]
            .id
            .clone()
    }
}

pub(crate) fn asked() -> Option<RecoveryRequest> {
    Some(RecoveryRequest::Flag(true))
}

pub(crate) fn with_code(code: &str) -> Option<RecoveryRequest> {
    Some(RecoveryRequest::Code { code: code.into() })
}

pub(crate) fn denied_code(verdict: &Verdict) -> String {
    match &verdict.decision {
        Decision::Deny { code, .. } => code.clone(),
        other => panic!("expected a deny, got {other:?}"),
    }
}

pub(crate) fn enrolment_asked(verdict: &Verdict) -> bool {
    matches!(
        verdict.decision,
        Decision::Challenge {
            kind: ChallengeKind::MfaEnrollment,
            ..
        }
    ) && verdict.resume_token.is_some()
}

#[test]
fn with_the_password_only_nobody_gets_in_before_the_wait_ends_and_the_owner_is_told() -> Result {
    password_only_then_back_in_after_the_wait(&Env::new(|t| t))
}

#[test]
fn the_same_recovery_with_the_directory_on_postgres() -> Result {
    let Some(url) = crate::postgres::fresh_database("recovery_flow") else {
        crate::common::not_run("PORTCULLIS_TEST_POSTGRES is not set");
        return Ok(());
    };
    let env = Env::new(|text| {
        text.lines()
            .map(|line| {
                if line.starts_with("directory = ") {
                    format!("directory = \"{url}\"")
                } else {
                    line.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    password_only_then_back_in_after_the_wait(&env)
}

fn password_only_then_back_in_after_the_wait(env: &Env) -> Result {
    let (login, factor) = env.owner(0);
    let user = env.user_id(&login);
    // The owner has signed in from their phone before: that device and network are
    // known, so a recovery from them waits the minimum.
    assert!(matches!(
        env.sign_in_with_factor(&login, &factor).decision,
        Decision::Allow
    ));

    let first = env
        .gateway
        .login(&env.again(&login, "owner-phone", asked()))?;
    assert_eq!(denied_code(&first), "recovery_pending");
    let recovery = &env.recoveries(&user)[0];
    assert_eq!(
        (recovery.status.name(), recovery.path.name()),
        ("waiting", "wait")
    );
    assert_eq!(
        recovery.ready_at_ms - recovery.requested_at_ms,
        72 * HOUR_MS
    );
    // Every channel on file, at once, each with the cancel link and how to dispute.
    let notices = env.notices();
    let channels: Vec<(&str, &str)> = notices
        .iter()
        .map(|n| (n["channel"].as_str().unwrap(), n["to"].as_str().unwrap()))
        .collect();
    assert!(
        channels.contains(&("email", login.email.as_str())),
        "{channels:?}"
    );
    assert!(
        channels.contains(&("sms", factor.id.as_str())),
        "{channels:?}"
    );
    for notice in &notices {
        assert_eq!(notice["event"], "recovery-requested");
        assert!(
            notice["cancel_url"]
                .as_str()
                .unwrap()
                .contains(&recovery.id)
        );
        assert!(notice["dispute"].as_str().unwrap().contains("cancel"));
    }

    // A second request neither restarts nor shortens the wait, and sends nothing new.
    env.clock.advance(HOUR_MS);
    let second = env
        .gateway
        .login(&env.again(&login, "owner-phone", asked()))?;
    assert_eq!(denied_code(&second), "recovery_pending");
    assert_eq!(env.recoveries(&user).len(), 1);
    assert_eq!(&env.recoveries(&user)[0], recovery);
    assert_eq!(env.notices().len(), notices.len());

    // Without the factor a plain login is still challenged by it (the guard, for
    // recovery logins only, is skipped), and an hour before the end of the wait the
    // recovery still answers "pending".
    env.clock.advance(70 * HOUR_MS);
    let plain = env.gateway.login(&env.again(&login, "owner-phone", None))?;
    let guard = |v: &Verdict| {
        v.trace
            .iter()
            .find(|t| t.rule == "recovery-guard")
            .map(|t| t.result)
    };
    assert_eq!(guard(&plain), Some(portcullis::RuleResult::Skipped));
    assert_eq!(guard(&first), Some(portcullis::RuleResult::Recover));
    assert!(matches!(
        plain.decision,
        Decision::Challenge {
            kind: ChallengeKind::Mfa,
            ..
        }
    ));
    let early = env
        .gateway
        .login(&env.again(&login, "owner-phone", asked()))?;
    assert_eq!(denied_code(&early), "recovery_pending");
    assert!(early.resume_token.is_none());

    // The wait is over: the same login enrols a new factor and gets in.
    env.clock.advance(HOUR_MS + 1);
    let ready = env
        .gateway
        .login(&env.again(&login, "owner-phone", asked()))?;
    assert!(enrolment_asked(&ready), "{:?}", ready.decision);
    // A continue without a confirmed factor gets the same enrolment again.
    let not_yet = env.continue_with(&ready, serde_json::json!({"enrollment_id": factor.id}));
    assert!(enrolment_asked(&not_yet), "the old factor does not count");
    let new_factor = env.enrol_new_phone(&ready);
    let done = env.continue_with(&not_yet, serde_json::json!({"enrollment_id": new_factor}));
    assert!(
        matches!(done.decision, Decision::Allow),
        "{:?}",
        done.decision
    );
    assert!(
        done.effects
            .iter()
            .any(|e| matches!(e, portcullis::Effect::AddClaim { name, .. } if name == "recovery"))
    );
    // The lost factor opens nothing now; the new one is the user's factor.
    let factors = env.gateway.state().factors_of(&user)?;
    let status = |id: &str| factors.iter().find(|f| f.id == id).unwrap().status;
    assert_eq!(status(&factor.id), FactorStatus::Disabled);
    assert_eq!(status(&new_factor), FactorStatus::Active);
    assert_eq!(env.recoveries(&user)[0].status.name(), "completed");
    let revoked =
        portcullis::state::recovery::sessions_revoked_at(env.gateway.state().sql(), &user)?;
    assert_eq!(revoked, Some(env.clock.now_ms()));
    assert!(
        env.notices()
            .iter()
            .any(|n| n["event"] == "recovery-completed")
    );
    let audit = portcullis::state::audit::verify(env.gateway.state().sql())?;
    assert!(audit.ok && audit.rows >= 4, "{audit:?}");
    Ok(())
}

#[test]
fn a_request_from_a_new_device_and_network_waits_longer() -> Result {
    let env = Env::new(|t| t);
    let (login, factor) = env.owner(0);
    let user = env.user_id(&login);
    assert!(matches!(
        env.sign_in_with_factor(&login, &factor).decision,
        Decision::Allow
    ));
    env.gateway
        .login(&env.again(&login, "attacker-laptop", asked()))?;
    let recovery = &env.recoveries(&user)[0];
    assert_eq!(
        recovery.ready_at_ms - recovery.requested_at_ms,
        168 * HOUR_MS
    );
    assert_eq!(recovery.reasons, ["new device", "new network"]);
    Ok(())
}

/// The recovery id and token of the cancel link in the newest notice.
fn cancel_link(env: &Env) -> (String, String) {
    let notices = env.notices();
    let url = url::Url::parse(notices.last().unwrap()["cancel_url"].as_str().unwrap()).unwrap();
    let get = |name: &str| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .unwrap()
    };
    (get("recovery"), get("token"))
}

#[test]
fn the_owner_cancels_and_the_attackers_recovery_is_dead() -> Result {
    let env = Env::new(|t| t);
    let (login, factor) = env.owner(0);
    let user = env.user_id(&login);
    env.gateway
        .login(&env.again(&login, "attacker-laptop", asked()))?;
    let (id, token) = cancel_link(&env);
    assert!(
        !env.gateway
            .recovery()
            .cancel(&id, "0123456789abcdef0123456789abcdef")?
    );
    assert!(!env.gateway.recovery().cancel("rcv_unknown", &token)?);
    assert!(env.gateway.recovery().cancel(&id, &token)?);
    assert!(!env.gateway.recovery().cancel(&id, &token)?, "once");
    assert_eq!(env.recoveries(&user)[0].status.name(), "cancelled");
    // Long after the wait would have ended, the attacker's next request starts a new
    // wait (and tells the owner again); it never reaches enrolment.
    env.clock.advance(200 * HOUR_MS);
    let told_before = env.notices().len();
    let later = env
        .gateway
        .login(&env.again(&login, "attacker-laptop", asked()))?;
    assert_eq!(denied_code(&later), "recovery_pending");
    assert!(env.notices().len() > told_before);
    let recoveries = env.recoveries(&user);
    assert_eq!(recoveries.len(), 2);
    assert_eq!(recoveries[0].status.name(), "waiting");

    // A sign-in with the old factor ends a recovery under way too.
    assert!(matches!(
        env.sign_in_with_factor(&login, &factor).decision,
        Decision::Allow
    ));
    let recoveries = env.recoveries(&user);
    assert_eq!(recoveries[0].status.name(), "cancelled");
    assert!(
        recoveries[0]
            .outcome
            .as_deref()
            .unwrap()
            .contains("second factor")
    );
    env.clock.advance(200 * HOUR_MS);
    let after = env
        .gateway
        .login(&env.again(&login, "attacker-laptop", asked()))?;
    assert!(!enrolment_asked(&after));
    Ok(())
}

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

fn cli(config: &Path, args: &[&str]) -> (String, std::process::ExitStatus) {
    crate::common::cli_logging(config, args, None)
}

#[test]
fn notices_reach_the_notification_endpoint_and_an_edited_audit_row_fails_verify() -> Result {
    let env = Env::new(|t| t);
    let (login, factor) = env.owner(0);
    let user = env.user_id(&login);
    env.gateway.recovery().issue_codes(&user)?.unwrap();
    env.gateway
        .login(&env.again(&login, "attacker-laptop", asked()))?;
    env.gateway
        .login(&env.again(&login, "attacker-laptop", asked()))?;
    let (outbox_out, status) = cli(&env.config, &["outbox", "run", "--until-empty"]);
    assert!(status.success(), "{outbox_out}");
    let delivered = env.sim.get(&format!("/sim/notices?user_id={user}"));
    let events: Vec<&str> = delivered["notices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["event"].as_str().unwrap())
        .collect();
    assert!(
        events.contains(&"recovery-codes-issued") && events.contains(&"recovery-requested"),
        "{events:?}"
    );
    // An SMS notice reaches the phone: opened for the delivery only, never stored in
    // the outbox.
    let phone = env.phone_of(&factor);
    let texted: Vec<&serde_json::Value> = delivered["notices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["channel"] == "sms")
        .collect();
    assert_eq!(texted.len(), 2, "{delivered}");
    for notice in texted {
        assert_eq!(notice["to"], phone.as_str());
        assert_eq!(notice["factor_id"], factor.id.as_str());
    }
    let (out, status) = cli(&env.config, &["audit", "verify"]);
    assert!(status.success(), "{out}");
    let report: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(
        (report["ok"].as_bool(), report["rows"].as_u64()),
        (Some(true), Some(3)),
        "{out}"
    );
    let head = report["head"].as_str().unwrap().to_owned();
    // Someone with write access to the database rewrites why a recovery started.
    let db = rusqlite::Connection::open(env.dir.path().join("recovery/directory.db"))?;
    db.execute("UPDATE audit_log SET reason = 'routine' WHERE seq = 2", [])?;
    let (out, status) = cli(&env.config, &["audit", "verify"]);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("\"first_bad_seq\": 2"), "{out}");
    // Deleting the row instead is caught as well.
    db.execute("DELETE FROM audit_log WHERE seq = 2", [])?;
    let (out, status) = cli(&env.config, &["audit", "verify"]);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("row 2 is missing"), "{out}");
    // Cutting the end off leaves a valid, shorter chain: the head kept from the
    // earlier run tells.
    db.execute("DELETE FROM audit_log WHERE seq >= 2", [])?;
    let (out, status) = cli(&env.config, &["audit", "verify"]);
    assert!(status.success(), "{out}");
    let (out, status) = cli(&env.config, &["audit", "verify", "--expect-head", &head]);
    assert_eq!(status.code(), Some(1), "{out}");
    // The phone is nowhere at rest either (the outbox rows, the directory's WAL, the
    // legacy stores), nor in what the dispatcher and the simulator printed. Checked
    // last: closing the files it reads drops this process's SQLite locks on them
    // (POSIX locks are per process), and a `portcullis` exiting after that would take
    // itself for the last connection and remove the WAL `db` above writes to.
    Exposure::new()
        .databases_under(&env.dir.path().join("recovery"))
        .text("portcullis outbox run", &outbox_out)
        .text("portcullis-sim", env.sim.output())
        .assert_no_phone(&phone);
    for message in env.gateway.state().outbox_messages()? {
        // Keys are logged when a delivery fails: no address in them.
        assert!(
            !message.key.contains(&login.email),
            "an email in an outbox key"
        );
    }
    Ok(())
}

#[test]
fn recordings_of_each_recovery_path_replay() -> Result {
    let env = Env::new(|t| t);
    let (login, factor) = env.owner(0);
    let user = env.user_id(&login);
    let codes = env.gateway.recovery().issue_codes(&user)?.unwrap();
    let write = |name: &str, recovery: serde_json::Value| -> PathBuf {
        let file = env.dir.path().join(format!("{name}.json"));
        let mut json = serde_json::json!({
            "transaction_id": format!("tx-rec-{name}"),
            "time_ms": portcullis::flows::clock::SystemClock.now_ms(),
            "connection": login.connection, "client_id": login.client_id, "email": login.email,
            "password": login.password.as_ref().unwrap().expose_secret(),
            "request": {"ip": "203.0.113.99", "user_agent": "attacker-laptop"},
        });
        if !recovery.is_null() {
            json["recovery"] = recovery;
        }
        std::fs::write(&file, json.to_string()).unwrap();
        file
    };
    let _ = factor;
    let mut seen = Vec::new();
    for (name, recovery) in [
        ("wait", serde_json::json!(true)),
        (
            "code",
            serde_json::json!({"code": codes[0].expose_secret()}),
        ),
        ("plain", serde_json::Value::Null),
    ] {
        let login_file = write(name, recovery);
        let recording = env.dir.path().join(format!("rec-{name}.json"));
        let (out, status) = crate::common::cli_logging(
            &env.config,
            &[
                "run",
                "--login",
                login_file.to_str().unwrap(),
                "--record",
                recording.to_str().unwrap(),
            ],
            Some("trace"),
        );
        assert!(status.success(), "{out}");
        let code = codes[0].expose_secret();
        assert!(
            !out.contains(code) && !out.contains(&code.replace('-', "")),
            "the code is in the output (trace logs on)"
        );
        let text = std::fs::read_to_string(&recording)?;
        assert!(text.contains("recovery.facts") || name == "plain", "{text}");
        assert!(
            !text.contains(codes[0].expose_secret()),
            "the code is not recorded"
        );
        let (out, status) = cli(&env.config, &["replay", recording.to_str().unwrap()]);
        assert!(status.success(), "{name}: {out}");
        seen.push(out);
    }
    assert!(seen[0].contains("recover:wait"), "{}", seen[0]);
    assert!(seen[1].contains("recover:use_code"), "{}", seen[1]);
    assert!(seen[2].contains("challenge:mfa"), "{}", seen[2]);
    Ok(())
}

/// `serve`'s router for `env`'s config, with two agents and two callers (one that
/// vouches for its users' sign-ins) whose tokens are in files.
pub(crate) struct Console {
    pub(crate) url: String,
    pub(crate) _runtime: tokio::runtime::Runtime,
}

pub(crate) const ALICE: &str = "agent-alice-token-0123456789abcdef0123";
pub(crate) const BOB: &str = "agent-bob-token-0123456789abcdef012345";
pub(crate) const GATEWAY: &str = "recovery-test-gateway-token-0123456789";
pub(crate) const PLAIN_CALLER: &str = "recovery-test-plain-caller-0123456789";

impl Console {
    pub(crate) fn start(env: &Env) -> Console {
        let dir = env.dir.path();
        for (file, token) in [
            ("alice", ALICE),
            ("bob", BOB),
            ("gateway", GATEWAY),
            ("plain", PLAIN_CALLER),
        ] {
            std::fs::write(dir.join(format!("{file}.token")), token).unwrap();
        }
        let text = std::fs::read_to_string(&env.config)
            .unwrap()
            .replace(
                "token_env = \"PORTCULLIS_GATEWAY_TOKEN\"",
                "token_file = \"gateway.token\"\nvouches = true\n\n[[server.caller]]\nname = \"plain\"\ntoken_file = \"plain.token\"",
            )
            .replace("token_env = \"PORTCULLIS_AGENT_ALICE_TOKEN\"", "token_file = \"alice.token\"")
            .replace("token_env = \"PORTCULLIS_AGENT_BOB_TOKEN\"", "token_file = \"bob.token\"");
        std::fs::write(&env.config, text).unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let app = Arc::new(portcullis::server::AppState::load(&env.config).unwrap());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        runtime.spawn(async move { axum::serve(listener, portcullis::server::router(app)).await });
        Console {
            url,
            _runtime: runtime,
        }
    }

    /// `portcullis support …` as the agent holding `token`: (exit code, JSON answer).
    pub(crate) fn support(&self, token: &str, args: &[&str]) -> (i32, serde_json::Value) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["support", "--server", &self.url])
            .args(args)
            .env("PORTCULLIS_AGENT_TOKEN", token)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        (
            out.status.code().unwrap_or(-1),
            serde_json::from_str(&stdout).unwrap_or_else(|_| {
                serde_json::json!({"raw": format!("{stdout}{}", String::from_utf8_lossy(&out.stderr))})
            }),
        )
    }
}

#[test]
fn one_agent_alone_cannot_remove_a_factor_nor_approve_their_own_request() -> Result {
    let env = Env::new(|t| t);
    let console = Console::start(&env);
    let (login, factor) = env.owner(0);
    let user = env.user_id(&login);
    let factor_status = || {
        env.gateway
            .state()
            .factors_of(&user)
            .unwrap()
            .into_iter()
            .find(|f| f.id == factor.id)
            .unwrap()
            .status
    };

    // A lookup shows masked data only, and is itself audited.
    let (code, found) = console.support(ALICE, &["lookup", &login.email]);
    assert_eq!(code, 0, "{found}");
    assert_eq!(found["user_id"], user.as_str());
    assert_ne!(found["email"], login.email.as_str());
    assert!(found["email"].as_str().unwrap().contains("***@"));
    assert_eq!(found["factors"][0]["id"], factor.id.as_str());
    Exposure::new()
        .text("the support lookup", found.to_string())
        .assert_no_phone(&env.phone_of(&factor));
    let (code, _) = console.support(
        "not-an-agent-token-0123456789abcdef",
        &["lookup", &login.email],
    );
    assert_eq!(code, 1);

    let request = |token: &str, evidence: &str, skip: Option<&str>| {
        let mut args = vec![
            "request",
            "remove-factor",
            "--user",
            &user,
            "--factor",
            &factor.id,
            "--evidence",
            evidence,
            "--reason",
            "lost phone, verified by video call",
        ];
        if let Some(skip) = skip {
            args.extend(["--skip-wait-reason", skip]);
        }
        console.support(token, &args)
    };
    // Evidence is required.
    let (code, refused) = request(ALICE, " ", None);
    assert_eq!(code, 1, "{refused}");
    assert!(refused.to_string().contains("evidence"));

    // The user's only factor never goes: the account would open to whoever has the
    // password. The answer points to complete-recovery.
    let (code, refused) = request(ALICE, "IDV-2026-1130-76", None);
    assert_eq!(code, 1, "{refused}");
    assert!(
        refused.to_string().contains("only active factor")
            && refused.to_string().contains("complete-recovery"),
        "{refused}"
    );
    assert_eq!(factor_status(), FactorStatus::Active);
    // With a second factor on file (the old provider's), the lost one may go.
    let mut spare = factor.clone();
    spare.id = format!("{}_spare", factor.id);
    spare.phone = None;
    spare.provider = portcullis::model::FactorProvider::LegacySms;
    spare.legacy_provider_user_id = Some("spare-legacy-id".into());
    env.gateway.state().put_factor(&spare)?;

    let (code, asked) = request(
        ALICE,
        "IDV-2026-1130-77",
        Some("identity verified in person"),
    );
    assert_eq!(code, 0, "{asked}");
    assert_eq!(asked["status"], "awaiting-approval");
    let id = asked["id"].as_str().unwrap().to_owned();
    // Alone, alice can neither carry it out nor approve it.
    let (code, refused) = console.support(ALICE, &["execute", &id]);
    assert_eq!(code, 1, "{refused}");
    assert!(refused.to_string().contains("second agent"), "{refused}");
    let (code, refused) =
        console.support(ALICE, &["approve", &id, "--evidence", "IDV-2026-1130-77"]);
    assert_eq!(code, 1, "{refused}");
    assert!(refused.to_string().contains("cannot approve"), "{refused}");
    assert_eq!(factor_status(), FactorStatus::Active);

    // Bob approves without a reason to skip: the waiting period runs.
    let (code, approved) = console.support(
        BOB,
        &["approve", &id, "--evidence", "IDV-2026-1130-77 checked"],
    );
    assert_eq!(code, 0, "{approved}");
    assert!(
        approved["ready_at_ms"].as_u64().unwrap()
            > portcullis::flows::clock::SystemClock.now_ms() + 71 * HOUR_MS
    );
    let (code, refused) = console.support(BOB, &["execute", &id]);
    assert_eq!(code, 1, "{refused}");
    // When it ends, as a person reads a time (RFC 3339, UTC).
    let ready = portcullis::error::utc_time(approved["ready_at_ms"].as_u64().unwrap());
    assert!(ready.ends_with('Z') && ready.contains('T'), "{ready}");
    assert!(
        refused
            .to_string()
            .contains(&format!("the waiting period runs until {ready}")),
        "{refused}"
    );
    assert_eq!(factor_status(), FactorStatus::Active);
    let (code, _) = console.support(
        ALICE,
        &["cancel", &id, "--reason", "redo with both skip reasons"],
    );
    assert_eq!(code, 0);

    // Both agents give a reason to skip the wait: carried out at once.
    let (_, asked) = request(
        ALICE,
        "IDV-2026-1130-78",
        Some("identity verified in person"),
    );
    let id = asked["id"].as_str().unwrap().to_owned();
    let (code, _) = console.support(
        BOB,
        &[
            "approve",
            &id,
            "--evidence",
            "IDV-2026-1130-78 checked",
            "--skip-wait-reason",
            "user on site with ID",
        ],
    );
    assert_eq!(code, 0);
    // The spare went meanwhile: carrying it out now would leave no factor, so the
    // execution checks again and refuses.
    spare.status = FactorStatus::Disabled;
    env.gateway.state().put_factor(&spare)?;
    let (code, refused) = console.support(BOB, &["execute", &id]);
    assert_eq!(code, 1, "{refused}");
    assert!(
        refused.to_string().contains("only active factor"),
        "{refused}"
    );
    assert_eq!(factor_status(), FactorStatus::Active);
    spare.status = FactorStatus::Active;
    env.gateway.state().put_factor(&spare)?;
    let (code, done) = console.support(BOB, &["execute", &id]);
    assert_eq!(code, 0, "{done}");
    assert_eq!(done["status"], "done");
    assert_eq!(factor_status(), FactorStatus::Disabled);

    // The user was told at each step; every action, refusals included, is audited
    // with its agent, and the chain holds.
    let events: Vec<String> = env
        .notices()
        .iter()
        .map(|n| n["event"].as_str().unwrap().to_owned())
        .collect();
    for event in [
        "support-action-requested",
        "support-action-approved",
        "support-action-done",
    ] {
        assert!(events.iter().any(|e| e == event), "{event}: {events:?}");
    }
    let trail = portcullis::state::audit::rows_about(env.gateway.state().sql(), &user)?;
    let seen = |actor: &str, action: &str, outcome: &str| {
        trail.iter().any(|r| {
            r.entry.actor == actor && r.entry.action == action && r.entry.outcome == outcome
        })
    };
    assert!(seen("agent:alice", "support-lookup", "ok"));
    assert!(seen("agent:alice", "support-approve", "refused"));
    assert!(seen("agent:alice", "support-execute", "refused"));
    assert!(seen("agent:bob", "support-approve", "ok"));
    assert!(seen("agent:bob", "support-execute", "ok"));
    assert!(portcullis::state::audit::verify(env.gateway.state().sql())?.ok);
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

#[test]
fn a_rule_cannot_shorten_the_hosts_waiting_period() -> Result {
    // A guard configured (or written) to wait an hour: the host's minimum stands.
    let env = Env::new(|t| {
        t.replace(
            "wait_hours = 72\nrisky_wait_hours = 168",
            "wait_hours = 1\nrisky_wait_hours = 1",
        )
    });
    let (login, _) = env.owner(0);
    let user = env.user_id(&login);
    env.gateway
        .login(&env.again(&login, "attacker-laptop", asked()))?;
    let recovery = &env.recoveries(&user)[0];
    assert_eq!(
        recovery.ready_at_ms - recovery.requested_at_ms,
        72 * HOUR_MS
    );
    env.clock.advance(2 * HOUR_MS);
    let early = env
        .gateway
        .login(&env.again(&login, "attacker-laptop", asked()))?;
    assert_eq!(denied_code(&early), "recovery_pending");
    Ok(())
}

/// A second gateway over `env`'s stores and clock whose recovery rule is the hostile
/// test rule in `mode`: a rule that says what no honest guard would.
fn with_hostile_guard(env: &Env, mode: &str) -> Result<Gateway> {
    let honest = format!(
        "{}/target/rules/rule_recovery_guard.wasm",
        workspace_root().display()
    );
    let text = std::fs::read_to_string(&env.config)?;
    assert!(
        text.contains(&honest),
        "the guard is where the test expects it"
    );
    let text = text
        .replace(
            &honest,
            &crate::common::guest("hostile").display().to_string(),
        )
        // The hostile rule imports `legacy` (for its other modes), not `recovery`.
        .replace(
            "grants = [\"log\", \"config\", \"recovery\"]",
            "grants = [\"log\", \"config\", \"legacy\"]",
        )
        .replace(
            "wait_hours = 72\nrisky_wait_hours = 168",
            &format!("mode = \"{mode}\""),
        );
    let path = env.dir.path().join("pipeline-hostile-guard.toml");
    std::fs::write(&path, text)?;
    Ok(Gateway::open(&PipelineConfig::load(&path)?, runtime())?.with_clock(env.clock.clone()))
}

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
