//! Account recovery when the second factor is lost (fixtures/pipeline-recovery.toml):
//! the attacks it must stop and the owner's ways back in, against the simulator's
//! SMS providers and notification endpoint (a real process over HTTP), with the
//! host's clock moved by hand across the waiting period.
//! A module per part; here, what they share.

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

use crate::common::{Result, Simulator, runtime, workspace_root};

mod audit_chain;
mod codes;
mod enrolment;
mod limits;
mod outbox_secrets;
mod races;
mod replay;
mod support;
mod waiting;

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

fn cli(config: &Path, args: &[&str]) -> (String, std::process::ExitStatus) {
    crate::common::cli_logging(config, args, None)
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
