//! The SMS second factor during the provider migration: contract 0.2.0 beside 0.1.0,
//! and logins challenged through both providers of the simulator (a real process
//! over HTTP), with the host's limits and no phone number anywhere it should not be.

use std::path::{Path, PathBuf};

use portcullis::flows::resume::ResumeRefusal;
use portcullis::mfa::sealed::KeyRing;
use portcullis::model::FactorProvider;
use portcullis::state::factors::Factor;
use portcullis::{Decision, Gateway, GatewayError, LoadError, LoginAttempt, PipelineConfig};
use secrecy::ExposeSecret;

use crate::common::{
    Exposure, Result, Simulator, core_rule_component, guest, mfa_config, runtime, workspace_root,
};

#[test]
fn the_login_context_and_resume_have_one_shape_in_both_contracts() -> Result {
    // The host hands a 0.1.0 rule the 0.2.0 context without converting it (see
    // `runtime::contract`): the component model must agree the two are one type.
    use wasmtime::component::types::ComponentItem;
    let engine = runtime().engine();
    let params = |crate_name: &str, export: &str| -> Vec<wasmtime::component::types::Type> {
        let component =
            wasmtime::component::Component::from_file(engine, core_rule_component(crate_name))
                .unwrap();
        let component_type = component.component_type();
        let found = component_type
            .get_export(engine, export)
            .unwrap_or_else(|| panic!("{crate_name} exports {export}"));
        match found.ty {
            ComponentItem::ComponentFunc(f) => f.params().map(|(_, ty)| ty).collect(),
            _ => panic!("{export} is a function"),
        }
    };
    let old = params("rule-ownership-check", "on-continue");
    let new = params("rule-mfa-route", "on-continue");
    assert_eq!(old.len(), 2);
    assert_eq!(old[0], new[0], "login-context");
    assert_eq!(old[1], new[1], "resume");
    assert_eq!(
        params("rule-migrate-on-login", "on-login")[0],
        params("rule-mfa-route", "on-login")[0]
    );
    // And the comparison can fail: the context is not the resume.
    assert_ne!(old[0], new[1]);
    Ok(())
}

#[test]
fn rules_built_against_0_1_replay_every_recording_beside_a_0_2_rule() -> Result {
    let dir = tempfile::tempdir()?;
    let base = crate::common::migration_config(dir.path(), "pipeline.toml");
    // A 0.2.0 rule first: it runs on every login before the four 0.1.0 rules.
    let observer = format!(
        "[[rule]]\nname = \"observer\"\ncomponent = \"{}\"\ngrants = [\"log\"]\non_error = \"deny\"\n\n",
        guest("v02-observer").display()
    );
    let text =
        std::fs::read_to_string(&base)?.replacen("[[rule]]", &format!("{observer}[[rule]]"), 1);
    let mixed = dir.path().join("pipeline-mixed.toml");
    std::fs::write(&mixed, text)?;

    let pipeline = runtime().load(&PipelineConfig::load(&mixed)?)?;
    let versions: Vec<&str> = pipeline
        .rules()
        .iter()
        .map(|r| r.contract_version())
        .collect();
    assert_eq!(versions, ["0.2.0", "0.1.0", "0.1.0", "0.1.0", "0.1.0"]);

    let files =
        portcullis::replay::recording_files(&[workspace_root().join("fixtures/recordings")])?;
    let mut replay = portcullis::replay::Replay::new(&mixed)?;
    let mut replayed = 0;
    for file in &files {
        let text = std::fs::read_to_string(file)?;
        let recording: portcullis::replay::record::Recording = serde_json::from_str(&text)?;
        let result = replay.run_text(file, &text);
        assert!(result.passed(), "{}: {:?}", file.display(), result.error);
        // Recordings with a pipeline of their own ran that one; the rest ran beside
        // the 0.2.0 rule.
        replayed += usize::from(recording.pipeline.is_none());
    }
    assert!(
        replayed >= 10,
        "{replayed} recordings ran in the mixed pipeline"
    );
    Ok(())
}

#[test]
fn an_import_that_could_export_a_phone_is_refused_at_load() -> Result {
    let rule = crate::common::rule(
        "exporter",
        "phone-export",
        "grants = [\"log\", \"config\", \"directory\", \"legacy\", \"mfa\"]",
    );
    match crate::common::load(&[rule]) {
        Err(LoadError::Unsupported { rule, import }) => {
            assert_eq!(rule, "exporter");
            assert_eq!(import, "portcullis:rule/legacy-sms-export@0.2.0");
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a rule that imports a phone export was loaded"),
    }
    Ok(())
}

/// A seeded MFA environment: the simulator, the stores and a gateway.
struct Env {
    dir: tempfile::TempDir,
    sim: Simulator,
    config: PathBuf,
    gateway: Gateway,
}

impl Env {
    fn new(edit: impl FnOnce(String) -> String) -> Env {
        let crate::common::ProviderEnv {
            sim,
            dir,
            config,
            loaded,
        } = crate::common::ProviderEnv::seed(
            &["--seed-legacy", "2000", "--internal", "30"],
            mfa_config,
            edit,
            ("mfa", 1000, 1500),
        );
        let gateway = Gateway::open(&loaded, runtime()).unwrap();
        Env {
            dir,
            sim,
            config,
            gateway,
        }
    }

    fn keys(&self) -> KeyRing {
        KeyRing::from_file(&self.dir.path().join("demo-mfa.keys")).unwrap()
    }

    /// A seeded login with the right password of a user whose factor `pick` accepts.
    fn login_of(&self, pick: impl Fn(&Factor) -> bool) -> (LoginAttempt, Factor) {
        let (login, factor) = self.login_where(|f| f.is_some_and(&pick));
        (login, factor.unwrap())
    }

    /// A seeded login with the right password of a directory user whose first factor
    /// (or none) `pick` accepts.
    fn login_where(
        &self,
        pick: impl Fn(Option<&Factor>) -> bool,
    ) -> (LoginAttempt, Option<Factor>) {
        let state = self.gateway.state();
        let dir = self.dir.path().join("mfa");
        crate::common::seeded_logins(state.as_ref(), &dir, |f| pick(f.first()))
            .next()
            .map(|s| (s.login, s.factors.first().cloned()))
            .expect("the seeded batch has such a login")
    }

    /// Where a factor's codes go.
    fn phone_of(&self, factor: &Factor, via: FactorProvider) -> String {
        match via {
            FactorProvider::Verify => {
                let sealed = factor.phone.as_ref().unwrap();
                self.keys()
                    .open(sealed, &factor.user_id, &factor.id)
                    .unwrap()
                    .to_string()
            }
            FactorProvider::LegacySms => {
                let id = factor.legacy_provider_user_id.as_deref().unwrap();
                let n = portcullis::jobs::seed::legacy_sms_index(id).unwrap();
                portcullis::jobs::seed::legacy_sms_phone(n)
            }
        }
    }

    fn resume(
        &self,
        verdict: &portcullis::Verdict,
        code: &str,
    ) -> std::result::Result<portcullis::Verdict, GatewayError> {
        self.gateway.resume(
            verdict.resume_token.as_deref().expect("a resume token"),
            &verdict.transaction_id,
            &serde_json::json!({ "code": code }).to_string(),
        )
    }
}

fn only_legacy(f: &Factor) -> bool {
    f.legacy_provider_user_id.is_some() && f.phone.is_none()
}

fn only_phone(f: &Factor) -> bool {
    f.legacy_provider_user_id.is_none() && f.phone.is_some()
}

fn challenged_via(verdict: &portcullis::Verdict) -> Option<FactorProvider> {
    match &verdict.decision {
        Decision::Challenge { via, .. } => *via,
        _ => None,
    }
}

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

/// Every phone number of the seeded factors, in E.164.
fn seeded_phones(env: &Env) -> Vec<String> {
    let db = rusqlite::Connection::open(env.dir.path().join("mfa/directory.db")).unwrap();
    let mut statement = db.prepare("SELECT user_id FROM factors").unwrap();
    let users: Vec<String> = statement
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let mut phones = Vec::new();
    for user in users {
        for factor in env.gateway.state().factors_of(&user).unwrap() {
            for via in [FactorProvider::Verify, FactorProvider::LegacySms] {
                let usable = match via {
                    FactorProvider::Verify => factor.phone.is_some(),
                    FactorProvider::LegacySms => factor.legacy_provider_user_id.is_some(),
                };
                if usable {
                    phones.push(env.phone_of(&factor, via));
                }
            }
        }
    }
    assert!(phones.len() >= 10, "{} phones", phones.len());
    phones
}

fn cli(config: &Path, args: &[&str]) -> (String, std::process::ExitStatus) {
    crate::common::cli_logging(config, args, Some("trace"))
}

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

/// The sidecar over HTTP for `env`'s config, with a caller token from a file.
struct Sidecar {
    url: String,
    _runtime: tokio::runtime::Runtime,
}

const CALLER_TOKEN: &str = "mfa-test-gateway-token-0123456789abcdef";

impl Sidecar {
    fn start(env: &Env) -> Sidecar {
        let token = env.dir.path().join("caller.token");
        std::fs::write(&token, CALLER_TOKEN).unwrap();
        let text = std::fs::read_to_string(&env.config).unwrap().replace(
            "token_env = \"PORTCULLIS_GATEWAY_TOKEN\"",
            &format!("token_file = \"{}\"", token.display()),
        );
        std::fs::write(&env.config, text).unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let app = std::sync::Arc::new(portcullis::server::AppState::load(&env.config).unwrap());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        runtime.spawn(async move { axum::serve(listener, portcullis::server::router(app)).await });
        Sidecar {
            url,
            _runtime: runtime,
        }
    }

    fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let response = reqwest::blocking::Client::new()
            .post(format!("{}{path}", self.url))
            .bearer_auth(CALLER_TOKEN)
            .json(&body)
            .send()
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().unwrap_or_default())
    }
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

/// The verification the new provider holds under `sid`, as its own API shows it.
pub(crate) fn verification(sim: &Simulator, sid: &str) -> serde_json::Value {
    reqwest::blocking::Client::new()
        .get(format!("{}/v2/Services/VAsim/Verifications/{sid}", sim.url))
        .basic_auth("ACsim", Some("sim-verify-token"))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

/// The provider's references the directory holds open, as `(reference, user)`.
fn open_codes(env: &Env) -> Vec<(String, String)> {
    let db = rusqlite::Connection::open(env.dir.path().join("mfa/directory.db")).unwrap();
    let mut statement = db
        .prepare("SELECT reference, user_id FROM open_codes ORDER BY reference")
        .unwrap();
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

fn again(login: &LoginAttempt, n: &str) -> LoginAttempt {
    let mut attempt = login.clone();
    attempt.transaction_id = format!("{}-{n}", login.transaction_id);
    attempt
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
