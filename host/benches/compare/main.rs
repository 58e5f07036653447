//! The migration pipeline as every engine runs it, in one run: as sandboxed
//! components (`wasm`: the runtime's `Pipeline`, instances made ahead), as plain core
//! modules (the per-rule-isolated floor, made in the login and made ahead), as
//! components over buffers, as the same rule logic compiled natively, in Lua 5.4 with
//! one state reused across logins (the OpenResty model, `rules/lua/rules.lua`) and in
//! JavaScript in Node's `vm` with a fresh context per login (`rules/js/rules.js`).
//!
//!     cargo bench -p portcullis --bench compare [-- --json] [-- --iterations N]
//!     cargo bench -p portcullis --bench compare -- --instructions
//!
//! Each engine reports two figures: the *login* (what its caller waits for) and the
//! *work per login* (the login and whatever is made for the next one outside it);
//! where nothing is made outside the login they are one figure. Every engine's verdict
//! (decision and effects) is compared with the recording's on every run, and the bench
//! exits non-zero when one differs: a number for another path is no number.
//!
//! `--instructions` counts instructions per login instead of timing (valgrind's
//! callgrind, repeatable on a busy machine): each engine and scenario runs twice under
//! it, with 200 and 400 logins, and the difference divided by 200 is one login's cost,
//! without start-up or compilation.
//!
//! Capability answers come from the recordings, in memory, for every engine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

mod floor;
mod floor_component;
mod lua;

use floor::Between;

use portcullis::Pipeline;
use portcullis::bench::{Percentiles, Scenario};
use portcullis::model::Services;
use portcullis::replay::record::{Answer, Expectation, Recording};
use portcullis::{LoginAttempt, PipelineConfig, Runtime};
use rule_model::{
    CapabilityError, CapabilityErrorKind, Decision, Host, LegacyAccount, LogLevel, LoginContext,
    Outcome, RuleError,
};
use serde::Serialize;
use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The rules' capabilities answered natively from the same in-memory answers.
struct NativeHost<'a> {
    services: &'a Services,
    config: &'a BTreeMap<String, String>,
}

fn capability_error(e: portcullis::model::ServiceError) -> CapabilityError {
    CapabilityError {
        kind: CapabilityErrorKind::Unavailable,
        message: e.message,
    }
}

impl Host for NativeHost<'_> {
    fn log(&mut self, _: LogLevel, message: &str) {
        std::hint::black_box(message);
    }
    fn config(&mut self, key: &str) -> Option<String> {
        self.config.get(key).cloned()
    }
    fn verify_directory_password(&mut self, user_id: &str) -> Result<bool, CapabilityError> {
        self.services
            .directory
            .verify_password(user_id, &"bench".into())
            .map_err(capability_error)
    }
    fn find_legacy_accounts(&mut self, email: &str) -> Result<Vec<LegacyAccount>, CapabilityError> {
        let accounts = self
            .services
            .legacy
            .find_accounts(email)
            .map_err(capability_error)?;
        Ok(accounts
            .into_iter()
            .map(|a| LegacyAccount {
                product: a.product,
                legacy_id: a.legacy_id,
                email: a.email,
                email_verified: a.email_verified,
                created_at_ms: a.created_at_ms,
                profile: a.profile.to_string(),
            })
            .collect())
    }
    fn verify_legacy_password(
        &mut self,
        product: &str,
        legacy_id: &str,
    ) -> Result<bool, CapabilityError> {
        self.services
            .legacy
            .verify_password(product, legacy_id, &"bench".into())
            .map_err(capability_error)
    }
}

fn model_context(login: &LoginAttempt) -> LoginContext {
    LoginContext {
        transaction_id: login.transaction_id.clone(),
        time_ms: login.time_ms,
        connection: login.connection.clone(),
        client_id: login.client_id.clone(),
        email: login.email.clone(),
        has_password: login.password.is_some(),
        request: rule_model::Request {
            ip: login.request.ip.clone(),
            user_agent: login.request.user_agent.clone(),
        },
        user: login.user.as_ref().map(|u| rule_model::User {
            id: u.id.clone(),
            email: u.email.clone(),
            email_verified: u.email_verified,
            identities: u
                .identities
                .iter()
                .map(|i| rule_model::Identity {
                    provider: i.provider.clone(),
                    user_id: i.user_id.clone(),
                    connection: i.connection.clone(),
                })
                .collect(),
            app_metadata: u.app_metadata.to_string(),
            user_metadata: u.user_metadata.to_string(),
            created_at_ms: u.created_at_ms,
            last_login_ms: u.last_login_ms,
            logins_count: u.logins_count,
        }),
        new_user_id: login.new_user_id(),
        pending: Vec::new(),
    }
}

type RuleFn = fn(&LoginContext, &mut NativeHost<'_>) -> Result<Outcome, RuleError>;

/// The pipeline's rules, in order (`fixtures/pipeline.toml`; `main` checks it).
pub(crate) const RULE_NAMES: [&str; 4] = [
    "bulk-imported-skip",
    "migrate-on-login",
    "ownership-check",
    "id-propagation",
];

/// The pipeline's semantics, natively: rules in order, each seeing the effects before
/// it, stopping at the first decision that is not `continue`.
fn native_evaluate(
    login: &LoginAttempt,
    services: &Services,
    configs: &[BTreeMap<String, String>],
) -> ModelVerdict {
    let rules: [RuleFn; 4] = [
        |c, h| rule_bulk_imported_skip::on_login(c, h),
        |c, h| rule_migrate_on_login::on_login(c, h),
        |c, h| rule_ownership_check::on_login(c, h),
        |c, h| rule_id_propagation::on_login(c, h),
    ];
    run_rules(login, rules.iter().zip(configs), |(rule, config), ctx| {
        rule(ctx, &mut NativeHost { services, config }).ok()
    })
}

/// How the engines beside the components end a login: the decision that stopped the
/// pipeline (with its rule's name), or every rule continued (allow), or a rule failed.
pub(crate) enum End {
    Allow,
    Stopped(Decision, &'static str),
    Failed(&'static str),
}

/// A login's verdict from the engines that run `rule_model`'s types.
pub(crate) struct ModelVerdict {
    end: End,
    effects: Vec<rule_model::Effect>,
}

/// The pipeline's semantics for the engines beside the components: each rule's
/// outcome (`None`: it failed) in order, each seeing the effects before it, stopping
/// at the first decision that is not `continue`.
fn run_rules<R>(
    login: &LoginAttempt,
    rules: impl IntoIterator<Item = R>,
    mut call: impl FnMut(R, &LoginContext) -> Option<Outcome>,
) -> ModelVerdict {
    let mut ctx = model_context(login);
    for (rule, name) in rules.into_iter().zip(RULE_NAMES) {
        let Some(outcome) = call(rule, &ctx) else {
            return ModelVerdict {
                end: End::Failed(name),
                effects: Vec::new(),
            };
        };
        ctx.pending.extend(outcome.effects);
        match outcome.decision {
            Decision::Continue => {}
            decision => {
                return ModelVerdict {
                    end: End::Stopped(decision, name),
                    effects: ctx.pending,
                };
            }
        }
    }
    ModelVerdict {
        end: End::Allow,
        effects: ctx.pending,
    }
}

/// A `rule_model` verdict in the shape the scripts' verdicts have (the host's JSON,
/// metadata still as text), then as a recording states it.
fn model_expectation(verdict: &ModelVerdict) -> Result<Expectation, String> {
    use rule_model::{ChallengeKind, Effect as E};
    let decision = match &verdict.end {
        End::Allow => json!({"type": "allow"}),
        End::Failed(rule) => return Err(format!("rule {rule} failed")),
        End::Stopped(Decision::Deny(d), rule) => json!({
            "type": "deny", "code": d.code, "message": d.message, "retryable": d.retryable, "rule": rule,
        }),
        End::Stopped(Decision::Redirect(r), rule) => json!({
            "type": "redirect", "url": r.url, "reason": r.reason, "state": r.state, "rule": rule,
        }),
        End::Stopped(Decision::Challenge(kind), rule) => json!({
            "type": "challenge", "rule": rule,
            "kind": match kind {
                ChallengeKind::Mfa => "mfa",
                ChallengeKind::PasswordReset => "password_reset",
                ChallengeKind::EmailVerification => "email_verification",
                ChallengeKind::Captcha => "captcha",
            },
        }),
        End::Stopped(Decision::Continue, _) => unreachable!("continue does not stop"),
    };
    let denied = matches!(&verdict.end, End::Stopped(Decision::Deny(_), _));
    let effects = verdict
        .effects
        .iter()
        .filter(|_| !denied)
        .map(|e| match e {
            E::SetAppMetadata(patch) => json!({"type": "set_app_metadata", "patch": patch}),
            E::SetUserMetadata(patch) => json!({"type": "set_user_metadata", "patch": patch}),
            E::AddClaim(c) => json!({"type": "add_claim", "name": c.name, "value": c.value}),
            E::CreateUser(u) => json!({
                "type": "create_user", "email": u.email, "email_verified": u.email_verified,
                "app_metadata": u.app_metadata, "user_metadata": u.user_metadata,
                "password_from_login": u.password_from_login,
            }),
            E::LinkLegacyAccount(l) => json!({
                "type": "link_legacy_account", "product": l.product, "legacy_id": l.legacy_id,
            }),
            E::EnqueueOutbox(m) => json!({
                "type": "enqueue_outbox", "topic": m.topic, "key": m.key, "payload": m.payload,
            }),
            E::RequirePasswordReset => json!({"type": "require_password_reset"}),
        })
        .collect();
    expectation_from_script(decision, effects)
}

/// A verdict written as the JS and Lua rules write one (`{type, ...}` decisions and
/// effects, with metadata and claim values as JSON text, as the contract carries them)
/// as a recording states it: the JSON text parsed where the host parses it. A value
/// that is not JSON stays a string, so it differs from the recording's.
pub(crate) fn expectation_from_script(
    decision: Value,
    mut effects: Vec<Value>,
) -> Result<Expectation, String> {
    for effect in &mut effects {
        let fields: &[&str] = match effect["type"].as_str() {
            Some("create_user") => &["app_metadata", "user_metadata"],
            Some("set_app_metadata" | "set_user_metadata") => &["patch"],
            Some("add_claim") => &["value"],
            _ => &[],
        };
        for field in fields {
            if let Some(text) = effect[*field].as_str()
                && let Ok(parsed) = serde_json::from_str::<Value>(text)
            {
                effect[*field] = parsed;
            }
        }
    }
    serde_json::from_value(json!({"decision": decision, "effects": effects}))
        .map_err(|e| format!("not a verdict ({e}): {decision} {effects:?}"))
}

/// One engine as the bench drives it. Each thread that runs an engine makes its own
/// (a Lua state is single-threaded); the shared ones borrow what they share.
pub(crate) trait Engine {
    type Out;
    /// One login: what its caller waits for.
    fn login(&mut self) -> Self::Out;
    /// After a login, outside its latency: what the next login needs made ahead.
    fn prepare(&mut self) {}
    /// The login's verdict, as a recording states one.
    fn verdict(&self, out: &Self::Out) -> Result<Expectation, String>;
}

/// The components, through the runtime's `Pipeline` (instances made ahead with
/// `prepare`, as `engine.warm_instances = 1` does).
struct WasmEngine<'a> {
    pipeline: &'a Pipeline,
    scenario: &'a Scenario,
}

impl Engine for WasmEngine<'_> {
    type Out = portcullis::Verdict;
    fn login(&mut self) -> Self::Out {
        self.pipeline
            .evaluate(&self.scenario.login, &self.scenario.services)
    }
    fn prepare(&mut self) {
        self.pipeline.prepare();
    }
    fn verdict(&self, out: &Self::Out) -> Result<Expectation, String> {
        Ok(Expectation::of(out))
    }
}

/// An engine over `rule_model`'s types: native, the floors.
struct ModelEngine<L, P> {
    login: L,
    prepare: P,
}

fn model<L: FnMut() -> ModelVerdict, P: FnMut()>(login: L, prepare: P) -> ModelEngine<L, P> {
    ModelEngine { login, prepare }
}

impl<L: FnMut() -> ModelVerdict, P: FnMut()> Engine for ModelEngine<L, P> {
    type Out = ModelVerdict;
    fn login(&mut self) -> ModelVerdict {
        (self.login)()
    }
    fn prepare(&mut self) {
        (self.prepare)()
    }
    fn verdict(&self, out: &ModelVerdict) -> Result<Expectation, String> {
        model_expectation(out)
    }
}

/// The recording's verdict as the pipeline gives it (a challenge's code is not sent
/// here, so the recording's masked destination is not expected).
fn expected(scenario: &Scenario) -> Value {
    let mut expected = scenario.expected.clone();
    if let Some(portcullis::Decision::Challenge { destination, .. }) = &mut expected.decision {
        *destination = None;
    }
    serde_json::to_value(expected).expect("an expectation serializes")
}

/// `Ok` with the verdict when it is the recording's, else what differs.
fn check(
    engine: &str,
    verdict: Result<Expectation, String>,
    expected: &Value,
) -> Result<Expectation, String> {
    let verdict = verdict.map_err(|e| format!("{engine}: {e}"))?;
    let got = serde_json::to_value(&verdict).map_err(|e| e.to_string())?;
    if &got != expected {
        return Err(format!(
            "{engine}: the verdict is not the recording's\n  got:      {got}\n  recorded: {expected}"
        ));
    }
    Ok(verdict)
}

#[derive(Serialize)]
struct EngineRow {
    engine: &'static str,
    /// What "login" and "work per login" stand for with this engine.
    figures: &'static str,
    decision: String,
    effects: usize,
    /// What a login waits for.
    login: Percentiles,
    /// The login and whatever must be made for the next one (equal to `login` where
    /// nothing is made outside it).
    work_per_login: Percentiles,
    /// Logins (each followed by its preparation) per second, `threads` at once.
    evaluations_per_second: f64,
    threads: usize,
}

/// Latency (sequential) and throughput (`threads` at once, each with its own engine)
/// of one engine; its verdict checked against the recording on the first login, after
/// the timed logins and on each thread's last. An error says what differed.
fn row<E: Engine>(
    (engine, figures): (&'static str, &'static str),
    make: impl Fn() -> E + Sync,
    expected: &Value,
    iterations: usize,
    threads: usize,
) -> Result<EngineRow, String> {
    let mut e = make();
    let first = e.login();
    let verdict = check(engine, e.verdict(&first), expected)?;
    drop(first);
    e.prepare();
    for _ in 0..(iterations / 10).max(20) {
        std::hint::black_box(e.login());
        e.prepare();
    }
    let mut login = Vec::with_capacity(iterations);
    let mut work = Vec::with_capacity(iterations);
    for _ in 0..iterations.max(1) {
        let started = Instant::now();
        std::hint::black_box(e.login());
        login.push(started.elapsed().as_secs_f64() * 1e6);
        e.prepare();
        work.push(started.elapsed().as_secs_f64() * 1e6);
    }
    let last = e.login();
    check(engine, e.verdict(&last), expected)?;
    drop(last);
    // Each thread makes its engine, then all start together; the span is from the
    // first start to the last finish, taken by the threads themselves (a waiting
    // main thread may not run again before they are done).
    let ready = std::sync::Barrier::new(threads);
    let (make, ready) = (&make, &ready);
    let runs: Vec<_> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(move || {
                    let mut e = make();
                    ready.wait();
                    let started = Instant::now();
                    for _ in 0..iterations.max(1) {
                        std::hint::black_box(e.login());
                        e.prepare();
                    }
                    let finished = Instant::now();
                    let last = e.login();
                    (started, finished, e.verdict(&last))
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let first_start = runs.iter().map(|r| r.0).min().expect("a thread");
    let last_finish = runs.iter().map(|r| r.1).max().expect("a thread");
    let elapsed = last_finish - first_start;
    for (_, _, verdict) in runs {
        check(engine, verdict, expected)?;
    }
    Ok(EngineRow {
        engine,
        figures,
        decision: decision_type(&verdict),
        effects: verdict.effects.len(),
        login: Percentiles::of(login),
        work_per_login: Percentiles::of(work),
        evaluations_per_second: (iterations.max(1) * threads) as f64 / elapsed.as_secs_f64(),
        threads,
    })
}

fn decision_type(verdict: &Expectation) -> String {
    serde_json::to_value(&verdict.decision)
        .ok()
        .and_then(|d| d["type"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The recording's answers as the JS host looks them up.
fn js_answers(recording: &Path) -> Value {
    let recording: Recording =
        serde_json::from_str(&std::fs::read_to_string(recording).unwrap()).unwrap();
    let mut answers = json!({"directory.verify-password": {}, "legacy.find-accounts": {}, "legacy.verify-password": {}});
    for call in &recording.steps[0].calls {
        let Answer::Ok(value) = &call.answer else {
            continue;
        };
        match call.call.as_str() {
            "directory.verify-password" => answers[&call.call][&call.args[0]] = value.clone(),
            "legacy.find-accounts" => {
                let mut accounts = value.clone();
                for account in accounts.as_array_mut().into_iter().flatten() {
                    account["profile"] = Value::String(account["profile"].to_string());
                }
                answers[&call.call][&call.args[0]] = accounts;
            }
            "legacy.verify-password" => {
                answers[&call.call][format!("{} {}", call.args[0], call.args[1])] = value.clone()
            }
            _ => {}
        }
    }
    answers
}

/// Node's `vm` with a fresh context per login (`rules/js/bench.mjs`): `None` without
/// node; an error when its verdicts (its first and last login) are not the recording's.
fn js_row(
    scenario: &Scenario,
    recording: &Path,
    config: &PipelineConfig,
    expected: &Value,
    iterations: usize,
) -> Result<Option<EngineRow>, String> {
    let ctx = model_context_json(&scenario.login);
    let configs: serde_json::Map<String, Value> = config
        .rules
        .iter()
        .map(|r| (r.name.clone(), json!(r.config)))
        .collect();
    let input = json!({"ctx": ctx, "answers": js_answers(recording), "config": configs, "iterations": iterations});
    let child = std::process::Command::new("node")
        .arg(root().join("rules/js/bench.mjs"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            eprintln!("node is not available ({e}): no JS row");
            return Ok(None);
        }
    };
    use std::io::Write;
    let mut stdin = child.stdin.take().ok_or("node's stdin")?;
    stdin
        .write_all(input.to_string().as_bytes())
        .map_err(|e| format!("js-vm: {e}"))?;
    drop(stdin);
    let output = child
        .wait_with_output()
        .map_err(|e| format!("js-vm: {e}"))?;
    let result: Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("js-vm: bench.mjs printed no JSON ({e})"))?;
    let mut verdict = None;
    for which in ["first", "last"] {
        let v = &result["verdicts"][which];
        let effects = v["effects"].as_array().cloned().unwrap_or_default();
        verdict = Some(check(
            "js-vm",
            expectation_from_script(v["decision"].clone(), effects),
            expected,
        )?);
    }
    let verdict = verdict.expect("checked");
    let latency = Percentiles {
        p50_us: result["p50_us"].as_f64().ok_or("js-vm: no p50")?,
        p99_us: result["p99_us"].as_f64().ok_or("js-vm: no p99")?,
        mean_us: result["mean_us"].as_f64().ok_or("js-vm: no mean")?,
    };
    Ok(Some(EngineRow {
        engine: "js-vm",
        figures: "login = work per login: a new vm context per login, inside it",
        decision: decision_type(&verdict),
        effects: verdict.effects.len(),
        login: latency.clone(),
        work_per_login: latency,
        evaluations_per_second: result["evaluations_per_second_one_thread"]
            .as_f64()
            .ok_or("js-vm: no rate")?,
        threads: 1,
    }))
}

/// The context as the JS rules see it: the WIT record's fields, snake_case.
fn model_context_json(login: &LoginAttempt) -> Value {
    let user = login.user.as_ref().map(|u| {
        json!({
            "id": u.id, "email": u.email, "email_verified": u.email_verified,
            "app_metadata": u.app_metadata.to_string(), "user_metadata": u.user_metadata.to_string(),
        })
    });
    json!({
        "transaction_id": login.transaction_id, "time_ms": login.time_ms, "email": login.email,
        "has_password": login.password.is_some(), "user": user, "new_user_id": login.new_user_id(),
    })
}

/// Logins per counting run: the two runs differ by `COUNT_STEP`.
const COUNT_BASE: usize = 200;
const COUNT_STEP: usize = 200;

/// Under valgrind: `n` logins of one engine on one scenario, nothing else.
fn count_run(engine: &str, scenario: &str, n: usize) {
    let mut config = PipelineConfig::load(&root().join("fixtures/pipeline.toml"))
        .expect("fixtures/pipeline.toml loads");
    // valgrind cannot reserve the default pool's address space.
    config.engine.max_instances = 2;
    // The work of a login, wherever it happens: instances made in it.
    config.engine.warm_instances = 0;
    let pipeline = Runtime::new(&config.engine).unwrap().load(&config).unwrap();
    let configs: Vec<BTreeMap<String, String>> =
        config.rules.iter().map(|r| r.config.clone()).collect();
    let recording = root().join(format!("fixtures/recordings/{scenario}.json"));
    let scenario = Scenario::from_recording(&recording).unwrap();
    let floor = matches!(engine, "floor" | "fl-reuse" | "fl-shared").then(|| {
        floor::Floor::load(&root(), &configs, config.engine.max_instances)
            .unwrap_or_else(|e| panic!("{e}"))
    });
    let floor_component = (engine == "floor-component").then(|| {
        floor_component::FloorComponent::load(&root(), &configs, config.engine.max_instances)
            .unwrap_or_else(|e| panic!("{e}"))
    });
    let (login, services) = (&scenario.login, &scenario.services);
    let mut lua = (engine == "lua").then(|| {
        lua::LuaEngine::new(&root(), login, services, &configs).unwrap_or_else(|e| panic!("{e}"))
    });
    for _ in 0..n {
        if let Some(lua) = &mut lua {
            let _ = std::hint::black_box(lua.login());
            continue;
        }
        match (engine, &floor, &floor_component) {
            ("wasm", ..) => {
                std::hint::black_box(pipeline.evaluate(login, services));
            }
            ("fl-reuse", Some(floor), _) => {
                std::hint::black_box(floor.evaluate_reused(login, services, Between::Restore));
            }
            ("fl-shared", Some(floor), _) => {
                std::hint::black_box(floor.evaluate_reused(login, services, Between::Nothing));
            }
            (_, Some(floor), _) => {
                std::hint::black_box(floor.evaluate(login, services));
            }
            (_, _, Some(floor)) => {
                std::hint::black_box(floor.evaluate(login, services));
            }
            _ => {
                std::hint::black_box(native_evaluate(login, services, &configs));
            }
        }
    }
}

/// The instantiation of an engine's rules: what instances made ahead take out of the
/// login (valgrind's names; counted inclusively with `--toggle-collect`).
fn instantiation(engine: &str) -> &'static str {
    match engine {
        "wasm" => "wasmtime::runtime::component::instance::InstancePre<T>::instantiate",
        "floor" => "wasmtime::runtime::instance::InstancePre<T>::instantiate",
        _ => unreachable!("no instances made ahead for {engine}"),
    }
}

/// Instructions the whole process executed (or only inside `within`, inclusive), from
/// callgrind's output file.
fn callgrind_total(
    engine: &str,
    scenario: &str,
    n: usize,
    within: Option<&str>,
) -> Result<u64, String> {
    let out = std::env::temp_dir().join(format!("portcullis-callgrind-{}.out", std::process::id()));
    let mut valgrind = std::process::Command::new("valgrind");
    valgrind.args(["--tool=callgrind", "--quiet"]);
    if let Some(function) = within {
        valgrind.arg(format!("--toggle-collect={function}"));
    }
    let status = valgrind
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(std::env::current_exe().map_err(|e| e.to_string())?)
        .args(["--count-run", engine, scenario, &n.to_string()])
        .status()
        .map_err(|e| format!("cannot run valgrind ({e}); install it (apt-get install valgrind)"))?;
    if !status.success() {
        return Err(format!("valgrind exited with {status}"));
    }
    let text = std::fs::read_to_string(&out).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&out);
    text.lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| "no totals in callgrind's output".into())
}

#[derive(Serialize)]
struct InstructionRow {
    scenario: String,
    wasm_instructions_per_login: u64,
    floor_component_instructions_per_login: u64,
    floor_instructions_per_login: u64,
    native_instructions_per_login: u64,
    wasm_over_floor: f64,
    /// Both with instances made ahead: the login without instantiating its rules.
    wasm_ahead_instructions_per_login: u64,
    floor_ahead_instructions_per_login: u64,
    wasm_over_floor_ahead: f64,
    wasm_over_native: f64,
    /// The Lua state reused across logins (a fresh environment per login).
    lua_instructions_per_login: u64,
    /// The floor's instances kept across logins: memory put back after each, or not.
    floor_reused_instructions_per_login: u64,
    floor_shared_instructions_per_login: u64,
    /// The work per login (instances made in it) and the login alone (made ahead).
    wasm_over_lua: f64,
    wasm_ahead_over_lua: f64,
}

fn instructions(json_out: bool) {
    // A first run under valgrind fills the compile cache, so no counted run compiles:
    // the cache is keyed by the engine's settings and the CPU features it sees, and
    // valgrind's CPU differs.
    callgrind_total("wasm", "already-migrated", 0, None).unwrap_or_else(|e| panic!("{e}"));
    let mut rows = Vec::new();
    for scenario in ["already-migrated", "single-product-migrated"] {
        let per_login_within = |engine: &str, within: Option<&str>| -> Option<u64> {
            let count =
                |n| callgrind_total(engine, scenario, n, within).unwrap_or_else(|e| panic!("{e}"));
            let (low, high) = (count(COUNT_BASE), count(COUNT_BASE + COUNT_STEP));
            // Nothing counted inside `within`: the compiler inlined it into its callers
            // in this build, so there is no function to toggle on.
            if within.is_some() && high == 0 {
                eprintln!(
                    "{within:?} is not a function of its own in this build: no made-ahead count"
                );
                return None;
            }
            assert!(
                high > low,
                "the counted runs were not alike: {low} then {high}"
            );
            Some((high - low) / COUNT_STEP as u64)
        };
        let per_login = |engine: &str| per_login_within(engine, None).expect("counted");
        // Made ahead, a login does all but instantiate its rules (0: not counted).
        let ahead = |engine: &str, total: u64| {
            per_login_within(engine, Some(instantiation(engine))).map_or(0, |i| total - i)
        };
        let (wasm, floor, native) = (per_login("wasm"), per_login("floor"), per_login("native"));
        let floor_component = per_login("floor-component");
        let lua = per_login("lua");
        let (floor_reused, floor_shared) = (per_login("fl-reuse"), per_login("fl-shared"));
        let (wasm_ahead, floor_ahead) = (ahead("wasm", wasm), ahead("floor", floor));
        rows.push(InstructionRow {
            scenario: scenario.into(),
            wasm_instructions_per_login: wasm,
            floor_component_instructions_per_login: floor_component,
            floor_instructions_per_login: floor,
            native_instructions_per_login: native,
            wasm_over_floor: wasm as f64 / floor.max(1) as f64,
            wasm_ahead_instructions_per_login: wasm_ahead,
            floor_ahead_instructions_per_login: floor_ahead,
            wasm_over_floor_ahead: wasm_ahead as f64 / floor_ahead.max(1) as f64,
            wasm_over_native: wasm as f64 / native.max(1) as f64,
            lua_instructions_per_login: lua,
            floor_reused_instructions_per_login: floor_reused,
            floor_shared_instructions_per_login: floor_shared,
            wasm_over_lua: wasm as f64 / lua.max(1) as f64,
            wasm_ahead_over_lua: wasm_ahead as f64 / lua.max(1) as f64,
        });
    }
    if json_out {
        println!("{}", serde_json::to_string_pretty(&rows).unwrap());
        return;
    }
    print_instructions(&rows);
}

/// The instruction counts as tables: every engine, made ahead, and the Lua peer.
fn print_instructions(rows: &[InstructionRow]) {
    println!(
        "{:<26} {:>16} {:>16} {:>17} {:>18} {:>11} {:>12}",
        "scenario",
        "wasm instr/login",
        "fl.comp instr",
        "floor instr/login",
        "native instr/login",
        "wasm/floor",
        "wasm/native"
    );
    for r in rows {
        println!(
            "{:<26} {:>16} {:>16} {:>17} {:>18} {:>10.2}x {:>11.1}x",
            r.scenario,
            r.wasm_instructions_per_login,
            r.floor_component_instructions_per_login,
            r.floor_instructions_per_login,
            r.native_instructions_per_login,
            r.wasm_over_floor,
            r.wasm_over_native
        );
    }
    // 0: not counted (the instantiation was inlined in this build).
    let counted = |n: u64| {
        if n == 0 {
            "n/a".to_owned()
        } else {
            n.to_string()
        }
    };
    let ratio = |n: u64, r: f64| {
        if n == 0 {
            "n/a".to_owned()
        } else {
            format!("{r:.2}x")
        }
    };
    println!("made ahead (the login alone, both engines):");
    for r in rows {
        println!(
            "{:<26} wasm {:>9}  floor {:>9}  wasm/floor {}",
            r.scenario,
            counted(r.wasm_ahead_instructions_per_login),
            counted(r.floor_ahead_instructions_per_login),
            ratio(
                r.wasm_ahead_instructions_per_login * r.floor_ahead_instructions_per_login,
                r.wasm_over_floor_ahead
            )
        );
    }
    println!("a Lua state reused across logins (a fresh environment per login):");
    for r in rows {
        println!(
            "{:<26} lua {:>9}  wasm/lua {:.2}x (work per login), {} (login, instances made ahead)",
            r.scenario,
            r.lua_instructions_per_login,
            r.wasm_over_lua,
            ratio(r.wasm_ahead_instructions_per_login, r.wasm_ahead_over_lua)
        );
    }
    println!("the floor's instances kept across logins (not a fresh one per rule per login):");
    for r in rows {
        println!(
            "{:<26} memory put back {:>9} ({:.2}x lua)  nothing reset {:>9} ({:.2}x lua)",
            r.scenario,
            r.floor_reused_instructions_per_login,
            r.floor_reused_instructions_per_login as f64
                / r.lua_instructions_per_login.max(1) as f64,
            r.floor_shared_instructions_per_login,
            r.floor_shared_instructions_per_login as f64
                / r.lua_instructions_per_login.max(1) as f64,
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--count-run") {
        let n = args
            .get(i + 3)
            .and_then(|n| n.parse().ok())
            .unwrap_or(COUNT_BASE);
        count_run(&args[i + 1], &args[i + 2], n);
        return;
    }
    if args.iter().any(|a| a == "--instructions") {
        instructions(args.iter().any(|a| a == "--json"));
        return;
    }
    let json_out = args.iter().any(|a| a == "--json");
    let iterations = args
        .iter()
        .position(|a| a == "--iterations")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(5000);
    let (comparisons, failures) = compare(iterations);
    if json_out {
        println!("{}", serde_json::to_string_pretty(&comparisons).unwrap());
    } else {
        print_comparisons(&comparisons);
    }
    if !failures.is_empty() {
        for failure in &failures {
            eprintln!("{failure}");
        }
        eprintln!(
            "{} engine(s) did not give the recording's verdict: the bench measured another path",
            failures.len()
        );
        std::process::exit(1);
    }
}

/// What each engine's two figures stand for.
const WASM: &str = "login: instances made ahead (Pipeline::prepare after it, outside the timer); work per login: login + prepare";
const FLOOR_REUSED: &str = "one instance per rule kept across logins, its memory put back as instantiated after each login (no login's data reaches the next)";
const FLOOR_SHARED: &str =
    "one instance per rule kept across logins, nothing reset (a reused Lua state's isolation)";
const FLOOR_AHEAD: &str = "login: instances made ahead (Floor::prepare after it, outside the timer); work per login: login + prepare";
const MADE_IN_LOGIN: &str = "login = work per login: every instance made in the login";
const NATIVE: &str = "login = work per login: no sandbox, nothing made per login";
const LUA: &str =
    "login = work per login: one Lua state reused, a fresh environment table per login, inside it";

/// wasm's p50 over a peer's, for both figures: below 1, wasm costs less.
#[derive(Serialize)]
struct Ratio {
    peer: &'static str,
    login: f64,
    work_per_login: f64,
}

#[derive(Serialize)]
struct Comparison {
    scenario: String,
    engines: Vec<EngineRow>,
    wasm_over: Vec<Ratio>,
    /// The largest guest linear memory a wasm evaluation held at once.
    peak_guest_memory_kib: u64,
}

/// The largest guest linear memory one wasm evaluation of the scenario held.
fn peak_guest_memory_kib(pipeline: &Pipeline, scenario: &Scenario) -> u64 {
    pipeline
        .evaluate(&scenario.login, &scenario.services)
        .trace
        .iter()
        .map(|t| t.memory_kib)
        .max()
        .unwrap_or(0)
}

/// The demo pipeline, whose rules the bench's peers port, in its order.
fn fixture_config() -> PipelineConfig {
    let config = PipelineConfig::load(&root().join("fixtures/pipeline.toml"))
        .expect("fixtures/pipeline.toml loads");
    let names: Vec<&str> = config.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names, RULE_NAMES,
        "the bench's peers run these rules in this order"
    );
    config
}

/// The floor's two builds: core modules, and the same through the component model.
fn floors(
    configs: &[BTreeMap<String, String>],
    max_instances: u32,
) -> (floor::Floor, floor_component::FloorComponent) {
    let floor =
        floor::Floor::load(&root(), configs, max_instances).unwrap_or_else(|e| panic!("{e}"));
    let floor_component = floor_component::FloorComponent::load(&root(), configs, max_instances)
        .unwrap_or_else(|e| panic!("{e}"));
    (floor, floor_component)
}

/// wasm's p50s over each peer's, for the login and for the work per login.
fn wasm_over(engines: &[EngineRow]) -> Vec<Ratio> {
    match engines.iter().find(|r| r.engine == "wasm") {
        Some(wasm) => engines
            .iter()
            .filter(|r| r.engine != "wasm")
            .map(|peer| Ratio {
                peer: peer.engine,
                login: wasm.login.p50_us / peer.login.p50_us,
                work_per_login: wasm.work_per_login.p50_us / peer.work_per_login.p50_us,
            })
            .collect(),
        None => Vec::new(),
    }
}

/// Every engine on both scenarios, and what did not give the recording's verdict.
/// The floor with its instances kept across logins (`fl-reuse`, `fl-shared`).
fn kept_row(
    between: Between,
    floor: &floor::Floor,
    scenario: &Scenario,
    expected: &Value,
    iterations: usize,
) -> Result<EngineRow, String> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let name = match between {
        Between::Restore => ("fl-reuse", FLOOR_REUSED),
        Between::Nothing => ("fl-shared", FLOOR_SHARED),
    };
    let (login, services) = (&scenario.login, &scenario.services);
    row(
        name,
        || model(|| floor.evaluate_reused(login, services, between), || {}),
        expected,
        iterations,
        threads,
    )
}

fn compare(iterations: usize) -> (Vec<Comparison>, Vec<String>) {
    let config = fixture_config();
    let pipeline = Runtime::new(&config.engine)
        .unwrap()
        .load(&config)
        .expect("build the rules first: cargo xtask build-rules");
    let configs: Vec<BTreeMap<String, String>> =
        config.rules.iter().map(|r| r.config.clone()).collect();
    let (floor, floor_component) = floors(&configs, config.engine.max_instances);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (mut comparisons, mut failures) = (Vec::new(), Vec::new());
    for name in ["already-migrated", "single-product-migrated"] {
        let recording = root().join(format!("fixtures/recordings/{name}.json"));
        let scenario = Scenario::from_recording(&recording).unwrap();
        let expected = expected(&scenario);
        let (login, services) = (&scenario.login, &scenario.services);
        let peak_guest_memory_kib = peak_guest_memory_kib(&pipeline, &scenario);
        let rows = [
            row(
                ("wasm", WASM),
                || WasmEngine {
                    pipeline: &pipeline,
                    scenario: &scenario,
                },
                &expected,
                iterations,
                threads,
            ),
            row(
                ("fl-ahead", FLOOR_AHEAD),
                || {
                    model(
                        || floor.evaluate_made_ahead(login, services),
                        || floor.prepare(),
                    )
                },
                &expected,
                iterations,
                threads,
            ),
            kept_row(Between::Restore, &floor, &scenario, &expected, iterations),
            kept_row(Between::Nothing, &floor, &scenario, &expected, iterations),
            row(
                ("floor", MADE_IN_LOGIN),
                || model(|| floor.evaluate(login, services), || {}),
                &expected,
                iterations,
                threads,
            ),
            row(
                ("fl-comp", MADE_IN_LOGIN),
                || model(|| floor_component.evaluate(login, services), || {}),
                &expected,
                iterations,
                threads,
            ),
            row(
                ("native", NATIVE),
                || model(|| native_evaluate(login, services, &configs), || {}),
                &expected,
                iterations,
                threads,
            ),
            row(
                ("lua", LUA),
                || {
                    lua::LuaEngine::new(&root(), login, services, &configs)
                        .unwrap_or_else(|e| panic!("{e}"))
                },
                &expected,
                iterations,
                threads,
            ),
            // No node: no JS row (`js_row` says so).
            js_row(
                &scenario,
                &recording,
                &config,
                &expected,
                iterations.min(3000),
            )
            .and_then(|row| row.ok_or_else(String::new)),
        ];
        let mut engines = Vec::new();
        for row in rows {
            match row {
                Ok(row) => engines.push(row),
                Err(e) if e.is_empty() => {}
                Err(e) => failures.push(format!("{name}: {e}")),
            }
        }
        comparisons.push(Comparison {
            scenario: name.into(),
            wasm_over: wasm_over(&engines),
            engines,
            peak_guest_memory_kib,
        });
    }
    (comparisons, failures)
}

fn print_comparisons(comparisons: &[Comparison]) {
    println!(
        "{:<24} {:<8} {:<8} {:>7} {:>10} {:>10} {:>10} {:>10} {:>14}",
        "scenario",
        "engine",
        "decision",
        "effects",
        "login p50",
        "p99 µs",
        "work p50",
        "p99 µs",
        "logins/s"
    );
    for c in comparisons {
        for row in &c.engines {
            println!(
                "{:<24} {:<8} {:<8} {:>7} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>9.0} ({}t)",
                c.scenario,
                row.engine,
                row.decision,
                row.effects,
                row.login.p50_us,
                row.login.p99_us,
                row.work_per_login.p50_us,
                row.work_per_login.p99_us,
                row.evaluations_per_second,
                row.threads
            );
        }
    }
    println!(
        "every engine's verdict (decision and effects) is the recording's: checked on its first login, after the timed ones and on each thread's last"
    );
    println!("\nwasm over each peer, p50 (below 1: wasm costs less):");
    println!(
        "{:<24} {:<8} {:>8} {:>15}",
        "scenario", "peer", "login", "work per login"
    );
    for c in comparisons {
        for r in &c.wasm_over {
            println!(
                "{:<24} {:<8} {:>7.2}x {:>14.2}x",
                c.scenario, r.peer, r.login, r.work_per_login
            );
        }
        println!(
            "{:<24} peak guest memory {} KiB per wasm evaluation",
            c.scenario, c.peak_guest_memory_kib
        );
    }
    println!("\nwhat the figures are:");
    let mut seen = Vec::new();
    for row in comparisons.iter().flat_map(|c| &c.engines) {
        if !seen.contains(&row.engine) {
            seen.push(row.engine);
            println!("  {:<8} {}", row.engine, row.figures);
        }
    }
}
