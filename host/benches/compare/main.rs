//! The migration pipeline three ways, in one run: as sandboxed components (a fresh
//! instance per rule per login), as the same rule logic compiled natively, and as the
//! same rules in JavaScript in Node's `vm` with a fresh context per evaluation.
//!
//!     cargo bench -p portcullis --bench compare [-- --json] [-- --iterations N]
//!     cargo bench -p portcullis --bench compare -- --instructions
//!
//! `--instructions` counts instructions per login instead of timing (valgrind's
//! callgrind, repeatable on a busy machine): each engine and scenario runs twice under
//! it, with 200 and 400 logins, and the difference divided by 200 is one login's cost,
//! without start-up or compilation.
//!
//! Capability answers come from the recordings, in memory, for all three.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

mod floor;
mod floor_component;

use portcullis::bench::{Percentiles, Scenario, ScenarioReport, measure};
use portcullis::model::Services;
use portcullis::replay::record::{Answer, Recording};
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

/// The pipeline's semantics, natively: rules in order, each seeing the effects before
/// it, stopping at the first decision that is not `continue`.
fn native_evaluate(
    login: &LoginAttempt,
    services: &Services,
    configs: &[BTreeMap<String, String>],
) -> (String, usize) {
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

/// The pipeline's semantics for the engines beside the components: each rule's
/// outcome (`None`: it failed) in order, each seeing the effects before it, stopping
/// at the first decision that is not `continue`. (verdict, effects held).
fn run_rules<R>(
    login: &LoginAttempt,
    rules: impl IntoIterator<Item = R>,
    mut call: impl FnMut(R, &LoginContext) -> Option<Outcome>,
) -> (String, usize) {
    let mut ctx = model_context(login);
    for rule in rules {
        let Some(outcome) = call(rule, &ctx) else {
            return ("deny".into(), 0);
        };
        ctx.pending.extend(outcome.effects);
        match outcome.decision {
            Decision::Continue => {}
            Decision::Deny(_) => return ("deny".into(), 0),
            Decision::Redirect(_) => return ("redirect".into(), ctx.pending.len()),
            Decision::Challenge(_) => return ("challenge".into(), ctx.pending.len()),
        }
    }
    ("allow".into(), ctx.pending.len())
}

#[derive(Serialize)]
struct EngineRow {
    engine: &'static str,
    decision: String,
    effects: usize,
    #[serde(flatten)]
    latency: Percentiles,
    evaluations_per_second: f64,
    threads: usize,
}

#[derive(Serialize)]
struct Comparison {
    scenario: String,
    wasm: ScenarioReport,
    engines: Vec<EngineRow>,
    wasm_over_native_p50: f64,
    wasm_over_floor_p50: f64,
    /// Both with instances made ahead: what a login waits for.
    wasm_over_floor_ahead_p50: f64,
    js_over_wasm_p50: Option<f64>,
}

fn native_row(
    scenario: &Scenario,
    configs: &[BTreeMap<String, String>],
    iterations: usize,
    threads: usize,
) -> EngineRow {
    row(
        "native",
        || native_evaluate(&scenario.login, &scenario.services, configs),
        iterations,
        threads,
    )
}

/// Latency percentiles (sequential) and throughput (`threads` at once) of `run`.
fn row(
    engine: &'static str,
    run: impl Fn() -> (String, usize) + Sync,
    iterations: usize,
    threads: usize,
) -> EngineRow {
    row_then(engine, run, || {}, iterations, threads)
}

/// As `row`, with `after` run after each login outside its latency (instances made
/// ahead for the next one) and inside the throughput.
fn row_then(
    engine: &'static str,
    run: impl Fn() -> (String, usize) + Sync,
    after: impl Fn() + Sync,
    iterations: usize,
    threads: usize,
) -> EngineRow {
    let (decision, effects) = run();
    after();
    for _ in 0..iterations / 10 {
        std::hint::black_box(run());
        after();
    }
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        std::hint::black_box(run());
        samples.push(started.elapsed().as_secs_f64() * 1e6);
        after();
    }
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                for _ in 0..iterations {
                    std::hint::black_box(run());
                    after();
                }
            });
        }
    });
    let evaluations_per_second = (iterations * threads) as f64 / started.elapsed().as_secs_f64();
    EngineRow {
        engine,
        decision,
        effects,
        latency: Percentiles::of(samples),
        evaluations_per_second,
        threads,
    }
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

fn js_row(
    scenario: &Scenario,
    recording: &Path,
    config: &PipelineConfig,
    iterations: usize,
) -> Option<EngineRow> {
    let ctx = serde_json::to_value(model_context_json(&scenario.login)).ok()?;
    let configs: serde_json::Map<String, Value> = config
        .rules
        .iter()
        .map(|r| (r.name.clone(), json!(r.config)))
        .collect();
    let input = json!({"ctx": ctx, "answers": js_answers(recording), "config": configs, "iterations": iterations});
    let mut child = std::process::Command::new("node")
        .arg(root().join("rules/js/bench.mjs"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| eprintln!("node is not available ({e}): no JS column"))
        .ok()?;
    use std::io::Write;
    child
        .stdin
        .take()?
        .write_all(input.to_string().as_bytes())
        .ok()?;
    let output = child.wait_with_output().ok()?;
    let result: Value = serde_json::from_slice(&output.stdout).ok()?;
    Some(EngineRow {
        engine: "js-vm",
        decision: result["decision"].as_str().unwrap_or("?").into(),
        effects: result["effects"].as_u64().unwrap_or(0) as usize,
        latency: Percentiles {
            p50_us: result["p50_us"].as_f64()?,
            p99_us: result["p99_us"].as_f64()?,
            mean_us: result["mean_us"].as_f64()?,
        },
        evaluations_per_second: result["evaluations_per_second_one_thread"].as_f64()?,
        threads: 1,
    })
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
    let floor = (engine == "floor").then(|| {
        floor::Floor::load(&root(), &configs, config.engine.max_instances)
            .unwrap_or_else(|e| panic!("{e}"))
    });
    let floor_component = (engine == "floor-component").then(|| {
        floor_component::FloorComponent::load(&root(), &configs, config.engine.max_instances)
            .unwrap_or_else(|e| panic!("{e}"))
    });
    let (login, services) = (&scenario.login, &scenario.services);
    for _ in 0..n {
        match (engine, &floor, &floor_component) {
            ("wasm", ..) => {
                std::hint::black_box(pipeline.evaluate(login, services));
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
}

fn instructions(json_out: bool) {
    // A first run under valgrind fills the compile cache, so no counted run compiles:
    // the cache is keyed by the engine's settings and the CPU features it sees, and
    // valgrind's CPU differs.
    callgrind_total("wasm", "already-migrated", 0, None).unwrap_or_else(|e| panic!("{e}"));
    let mut rows = Vec::new();
    for scenario in ["already-migrated", "single-product-migrated"] {
        let per_login_within = |engine: &str, within: Option<&str>| -> u64 {
            let count =
                |n| callgrind_total(engine, scenario, n, within).unwrap_or_else(|e| panic!("{e}"));
            let (low, high) = (count(COUNT_BASE), count(COUNT_BASE + COUNT_STEP));
            assert!(
                high > low,
                "the counted runs were not alike: {low} then {high}"
            );
            (high - low) / COUNT_STEP as u64
        };
        let per_login = |engine: &str| per_login_within(engine, None);
        // Made ahead, a login does all but instantiate its rules.
        let ahead = |engine: &str, total: u64| {
            total - per_login_within(engine, Some(instantiation(engine)))
        };
        let (wasm, floor, native) = (per_login("wasm"), per_login("floor"), per_login("native"));
        let floor_component = per_login("floor-component");
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
        });
    }
    if json_out {
        println!("{}", serde_json::to_string_pretty(&rows).unwrap());
        return;
    }
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
    for r in &rows {
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
    println!("made ahead (the login alone, both engines):");
    for r in &rows {
        println!(
            "{:<26} wasm {:>9}  floor {:>9}  wasm/floor {:.2}x",
            r.scenario,
            r.wasm_ahead_instructions_per_login,
            r.floor_ahead_instructions_per_login,
            r.wasm_over_floor_ahead
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
    let config = PipelineConfig::load(&root().join("fixtures/pipeline.toml"))
        .expect("fixtures/pipeline.toml loads");
    let pipeline = Runtime::new(&config.engine)
        .unwrap()
        .load(&config)
        .expect("build the rules first: cargo xtask build-rules");
    let configs: Vec<BTreeMap<String, String>> =
        config.rules.iter().map(|r| r.config.clone()).collect();
    let floor = floor::Floor::load(&root(), &configs, config.engine.max_instances)
        .unwrap_or_else(|e| panic!("{e}"));
    let floor_component =
        floor_component::FloorComponent::load(&root(), &configs, config.engine.max_instances)
            .unwrap_or_else(|e| panic!("{e}"));
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);

    let mut comparisons = Vec::new();
    for name in ["already-migrated", "single-product-migrated"] {
        let recording = root().join(format!("fixtures/recordings/{name}.json"));
        let scenario = Scenario::from_recording(&recording).unwrap();
        let wasm = measure(&pipeline, &scenario, iterations, threads);
        let floor_row = row(
            "floor",
            || floor.evaluate(&scenario.login, &scenario.services),
            iterations,
            threads,
        );
        let floor_ahead_row = row_then(
            "fl-ahead",
            || floor.evaluate_made_ahead(&scenario.login, &scenario.services),
            || floor.prepare(),
            iterations,
            threads,
        );
        let floor_component_row = row(
            "fl-comp",
            || floor_component.evaluate(&scenario.login, &scenario.services),
            iterations,
            threads,
        );
        let native = native_row(&scenario, &configs, iterations, threads);
        let js = js_row(&scenario, &recording, &config, iterations.min(3000));
        let wasm_row = EngineRow {
            engine: "wasm",
            decision: serde_json::to_value(&scenario.expected.decision)
                .ok()
                .and_then(|d| d["type"].as_str().map(str::to_owned))
                .unwrap_or_default(),
            effects: scenario.expected.effects.len(),
            latency: wasm.pipeline.clone(),
            evaluations_per_second: wasm.evaluations_per_second,
            threads,
        };
        // The login's latency takes instances made ahead; the work per login (made
        // in the login, as the floors do) is the evaluation plus `prepare`.
        let work_row = EngineRow {
            engine: "wasm+prep",
            latency: wasm.pipeline_and_prepare.clone(),
            evaluations_per_second: wasm.evaluations_per_second,
            decision: wasm_row.decision.clone(),
            effects: wasm_row.effects,
            threads,
        };
        let wasm_over_native_p50 = wasm.pipeline.p50_us / native.latency.p50_us;
        let wasm_over_floor_p50 = wasm.pipeline_and_prepare.p50_us / floor_row.latency.p50_us;
        let wasm_over_floor_ahead_p50 = wasm.pipeline.p50_us / floor_ahead_row.latency.p50_us;
        let js_over_wasm_p50 = js.as_ref().map(|j| j.latency.p50_us / wasm.pipeline.p50_us);
        let mut engines = vec![
            wasm_row,
            work_row,
            floor_component_row,
            floor_row,
            floor_ahead_row,
            native,
        ];
        engines.extend(js);
        comparisons.push(Comparison {
            scenario: name.into(),
            wasm,
            engines,
            wasm_over_native_p50,
            wasm_over_floor_p50,
            wasm_over_floor_ahead_p50,
            js_over_wasm_p50,
        });
    }

    if json_out {
        println!("{}", serde_json::to_string_pretty(&comparisons).unwrap());
        return;
    }
    println!(
        "{:<26} {:<8} {:<9} {:>7} {:>10} {:>10} {:>14}",
        "scenario", "engine", "decision", "effects", "p50 µs", "p99 µs", "evals/s"
    );
    for c in &comparisons {
        for row in &c.engines {
            println!(
                "{:<26} {:<8} {:<9} {:>7} {:>10.2} {:>10.2} {:>9.0} ({}t)",
                c.scenario,
                row.engine,
                row.decision,
                row.effects,
                row.latency.p50_us,
                row.latency.p99_us,
                row.evaluations_per_second,
                row.threads
            );
        }
        println!(
            "{:<26} wasm+prep/floor p50 {:.2}x, wasm/fl-ahead p50 {:.2}x, wasm/native p50 {:.1}x, js/wasm p50 {}, peak guest memory {} KiB per evaluation",
            "",
            c.wasm_over_floor_p50,
            c.wasm_over_floor_ahead_p50,
            c.wasm_over_native_p50,
            c.js_over_wasm_p50
                .map(|r| format!("{r:.1}x"))
                .unwrap_or_else(|| "n/a".into()),
            c.wasm.peak_memory_kib_per_evaluation
        );
    }
}
