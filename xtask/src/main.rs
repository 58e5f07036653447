//! Project chores that need more than one cargo call: `cargo xtask <task>`.
//!
//! - `build-rules`: installs the wasm32-wasip2 target if missing, builds every rule crate
//! - `demo`: builds the rules and the host once, then the demo's parts (migration,
//!   replay, SMS migration and backfill, recovery, audit), each in a few lines, and
//!   what they showed (the main job; `--verbose` for every command's whole output)
//! - `test`: builds the rules, installs promtool when missing, and the official
//!   clients' venv (target/clients-venv, from host/tests/clients/requirements.txt),
//!   then runs the test suite
//! - `lint`: rustfmt and clippy checks (host and rules), as CI runs them
//! - `bench`: the rule pipeline as components, as plain core modules (the floor),
//!   natively and in a JS sandbox
//! - `demo-import`: the bulk import beside lazy migration, end to end, on 100,000 people
//!   (products on PostgreSQL, MariaDB and SQLite); reports in target/demo-import/
//! - `bench-server`: `portcullis serve` under wrk on loopback (installs wrk if missing):
//!   its `/healthz` rate, its login rate and their ratio, in one run
//! - `fuzz`: builds the libFuzzer targets in fuzz/ and runs each (`--seconds N`, default
//!   30, or `--runs N`), seeded from the fixtures; a JSON report in target/fuzz-report.json

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};

const WASM_TARGET: &str = "wasm32-wasip2";

mod componentize;
mod demo;
mod fuzz;
mod import_demo;

fn main() -> Result<()> {
    if std::env::var_os(fuzz::WRAPPER_ENV).is_some() {
        return fuzz::rustc_wrapper();
    }
    let task = std::env::args().nth(1).unwrap_or_default();
    let extra: Vec<String> = std::env::args().skip(2).collect();
    // Help is asked for, not a task to start (`cargo xtask demo --help` must not run
    // the demo).
    if matches!(task.as_str(), "" | "-h" | "--help" | "help")
        || extra.iter().any(|a| a == "-h" || a == "--help")
    {
        println!("{USAGE}");
        return Ok(());
    }
    match task.as_str() {
        "build-rules" => build_rules(),
        "demo" => demo::demo(&extra),
        "test" => test(&extra),
        "lint" => lint(),
        "bench" => bench(&extra),
        "bench-server" => bench_server(&extra),
        "demo-import" => import_demo::demo_import(&extra),
        "fuzz" => fuzz::fuzz(&extra),
        _ => {
            eprintln!("xtask: no task {task:?}\n\n{USAGE}");
            std::process::exit(2)
        }
    }
}

const USAGE: &str = "usage: cargo xtask <task> [options]

  build-rules   build every rule crate (installs the wasm32-wasip2 target if missing)
  demo          build, then migration, replay, SMS migration and backfill, recovery and
                audit, each in a few lines (--verbose: every command's whole output;
                --sim-port N or PORTCULLIS_SIM_PORT: the simulator's port, default 7879)
  demo-import   the bulk import beside lazy migration, end to end
  test          build the rules, then run the test suite
  lint          rustfmt and clippy checks, as CI runs them
  bench         the rule pipeline as components, as core modules, natively and in JS
  bench-server  `portcullis serve` under wrk on loopback: /healthz, then logins
  fuzz          the libFuzzer targets in fuzz/ (--seconds N or --runs N)";

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_owned()
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

/// Whether [`run`] keeps a command's output to itself unless it fails (the demo's
/// build, outside `--verbose`).
static QUIET: AtomicBool = AtomicBool::new(false);

fn run(mut command: Command) -> Result<()> {
    let shown = shown(&command);
    if QUIET.load(Ordering::Relaxed) {
        let output = command
            .output()
            .with_context(|| format!("cannot start {shown}"))?;
        if !output.status.success() {
            eprintln!("xtask: running {shown}");
            print!("{}", String::from_utf8_lossy(&output.stdout));
            eprint!("{}", String::from_utf8_lossy(&output.stderr));
            bail!("{shown} failed with {}", output.status);
        }
        return Ok(());
    }
    eprintln!("xtask: running {shown}");
    let status = command
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

/// A command as printed: its directory, the names of the variables set for it (their
/// values are keys and tokens, never printed) and its arguments.
pub(crate) fn shown(command: &Command) -> String {
    let mut out = String::new();
    if let Some(dir) = command.get_current_dir() {
        out.push_str(&format!("cd {dir:?} && "));
    }
    for (name, _) in command.get_envs() {
        out.push_str(&format!("{}=… ", name.to_string_lossy()));
    }
    out.push_str(&format!("{:?}", command.get_program()));
    for arg in command.get_args() {
        out.push_str(&format!(" {arg:?}"));
    }
    out
}

fn ensure_wasm_target() -> Result<()> {
    ensure_target(WASM_TARGET)
}

fn ensure_target(target: &str) -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("cannot run rustup (the wasm32-wasip2 target is installed with it)")?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == target)
    {
        return Ok(());
    }
    let mut add = Command::new("rustup");
    add.args(["target", "add", target]);
    run(add)
}

fn build_rules() -> Result<()> {
    ensure_wasm_target()?;
    let mut build = cargo();
    build.args([
        "build",
        "--profile",
        "guest",
        "--target",
        WASM_TARGET,
        "--workspace",
    ]);
    build.args(["--exclude", "portcullis", "--exclude", "xtask"]);
    build.args(["--exclude", "portcullis-fuzz"]);
    for rule in componentize::RULES {
        build.args(["--exclude", rule]);
    }
    run(build)?;
    componentize::build()
}

/// The database servers the suite tests against, where `.ci/run` and this machine
/// kind have them: (variable, address, URL used when the variable is unset).
const TEST_SERVERS: [(&str, &str, &str); 2] = [
    (
        "PORTCULLIS_TEST_POSTGRES",
        "127.0.0.1:5432",
        "postgres://postgres@127.0.0.1:5432/test",
    ),
    (
        "PORTCULLIS_TEST_MYSQL",
        "127.0.0.1:3306",
        "mysql://root@127.0.0.1:3306/test",
    ),
];

fn test(extra: &[String]) -> Result<()> {
    build_rules()?;
    let mut test = cargo();
    // Release: the suite compiles and runs real components. (Not the demo's build:
    // dev-dependencies unify other features of shared crates into it.)
    test.args(["test", "--release"]).args(extra);
    // The PostgreSQL and MariaDB tests run whenever those servers answer at their
    // usual addresses, not only when CI names them.
    for (var, address, url) in TEST_SERVERS {
        if std::env::var_os(var).is_some() {
            continue;
        }
        let answers = address
            .parse()
            .ok()
            .and_then(|a| {
                std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(1)).ok()
            })
            .is_some();
        if answers {
            eprintln!(
                "xtask: {var} is unset and a server answers at {address}: testing against {url}"
            );
            test.env(var, url);
        } else {
            eprintln!(
                "xtask: {var} is unset and nothing answers at {address}: the tests that need it will not run (listed at the end)"
            );
        }
    }
    // Each test that cannot run here writes a line; they are listed after the run, so
    // "passed" never stands for "did nothing" without a word.
    let skips = workspace_root().join("target").join("test-skips.txt");
    let _ = std::fs::remove_file(&skips);
    test.env("PORTCULLIS_TEST_SKIPS", &skips);
    // The official clients of the systems the servers imitate (auth0-python, …) drive
    // them in the tests that hold those interfaces to the real ones.
    match clients_venv() {
        Ok(python) => {
            test.env("PORTCULLIS_TEST_PYTHON", python);
        }
        Err(why) => {
            eprintln!("xtask: no clients venv ({why}): the tests that need it will not run");
            test.env("PORTCULLIS_TEST_PYTHON_MISSING", why);
        }
    }
    promtool();
    let result = run(test);
    if let Ok(text) = std::fs::read_to_string(&skips) {
        let mut by_reason: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for line in text.lines() {
            let (test, reason) = line.split_once('\t').unwrap_or((line, "?"));
            by_reason.entry(reason).or_default().push(test);
        }
        let count: usize = by_reason.values().map(Vec::len).sum();
        eprintln!("xtask: {count} tests did not run (they count as passed above):");
        for (reason, tests) in by_reason {
            eprintln!("  {} because {reason}: {}", tests.len(), tests.join(", "));
        }
    } else if result.is_ok() {
        eprintln!("xtask: every test ran");
    }
    result
}

/// promtool, which the tests run on `/metrics`: Debian's `prometheus` package ships it
/// (without its recommends: the server alone). A test without it says it did not run.
fn promtool() {
    let present = || {
        Command::new("promtool")
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if present() {
        return;
    }
    eprintln!("xtask: promtool is missing; installing Debian's prometheus (no recommends)");
    let quiet = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let install = ["install", "-y", "--no-install-recommends", "prometheus"];
    if !(quiet(&install) || (quiet(&["update"]) && quiet(&install))) || !present() {
        eprintln!("xtask: promtool could not be installed: the /metrics check will not run");
    }
}

/// `target/clients-venv`: a venv holding host/tests/clients/requirements.txt (pinned),
/// made when missing and made again when the requirements change (a copy of the file
/// it was made from is kept inside it). Python's venv module comes from Debian's
/// python3-venv when it is missing. The python to run, or why there is none.
fn clients_venv() -> std::result::Result<PathBuf, String> {
    let root = workspace_root();
    let requirements = root.join("host/tests/clients/requirements.txt");
    let wanted =
        std::fs::read(&requirements).map_err(|e| format!("{}: {e}", requirements.display()))?;
    let venv = root.join("target").join("clients-venv");
    let python = venv.join("bin").join("python");
    let made_from = venv.join("requirements.txt");
    if python.exists() && std::fs::read(&made_from).ok().as_ref() == Some(&wanted) {
        return Ok(python);
    }
    let quiet = |mut command: Command| -> bool {
        command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let venv_works = || {
        let probe = root.join("target").join("clients-venv-probe");
        let _ = std::fs::remove_dir_all(&probe);
        let mut make = Command::new("python3");
        make.args(["-m", "venv"]).arg(&probe);
        let works = quiet(make);
        let _ = std::fs::remove_dir_all(&probe);
        works
    };
    if !venv_works() {
        eprintln!("xtask: python3 cannot make a venv here; installing python3-venv");
        let mut update = Command::new("apt-get");
        update.arg("update");
        let mut install = Command::new("apt-get");
        install.args(["install", "-y", "python3", "python3-venv"]);
        if !(quiet(update) && quiet(install) && venv_works()) {
            return Err(
                "python3 with its venv module is missing and could not be installed".into(),
            );
        }
    }
    eprintln!(
        "xtask: making {} from {}",
        venv.display(),
        requirements.display()
    );
    let _ = std::fs::remove_dir_all(&venv);
    let mut make = Command::new("python3");
    make.args(["-m", "venv"]).arg(&venv);
    run(make).map_err(|e| format!("python3 -m venv: {e}"))?;
    let mut install = Command::new(venv.join("bin").join("pip"));
    install
        .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(&requirements);
    run(install).map_err(|e| format!("pip install -r {}: {e}", requirements.display()))?;
    std::fs::write(&made_from, &wanted).map_err(|e| format!("{}: {e}", made_from.display()))?;
    Ok(python)
}

fn lint() -> Result<()> {
    ensure_wasm_target()?;
    ensure_target(componentize::CORE_TARGET)?;
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    run(fmt)?;
    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--release",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    run(clippy)?;
    // The fuzz targets and the host's `fuzzing` entry points.
    let mut clippy_fuzz = cargo();
    clippy_fuzz.args([
        "clippy",
        "--release",
        "-p",
        "portcullis-fuzz",
        "--",
        "-D",
        "warnings",
    ]);
    run(clippy_fuzz)?;
    // The rules built without WASI, as they are built (bump allocator, panic hook).
    let mut clippy_core_rules = cargo();
    clippy_core_rules.args([
        "clippy",
        "--profile",
        "guest",
        "--target",
        componentize::CORE_TARGET,
    ]);
    for rule in componentize::RULES {
        clippy_core_rules.args(["-p", rule]);
    }
    clippy_core_rules.args(["--", "-D", "warnings"]);
    run(clippy_core_rules)?;
    let mut clippy_rules = cargo();
    clippy_rules.args([
        "clippy",
        "--profile",
        "guest",
        "--target",
        WASM_TARGET,
        "--workspace",
    ]);
    clippy_rules.args([
        "--exclude",
        "portcullis",
        "--exclude",
        "xtask",
        "--exclude",
        "portcullis-fuzz",
        "--",
        "-D",
        "warnings",
    ]);
    run(clippy_rules)
}

fn bench(extra: &[String]) -> Result<()> {
    // The floors first: building the components after them restores their modules.
    componentize::build_floor()?;
    componentize::build_floor_component()?;
    build_rules()?;
    let mut bench = cargo();
    bench
        .args(["bench", "-p", "portcullis", "--bench", "compare", "--"])
        .args(extra);
    run(bench)
}

/// `cargo xtask bench-server`'s flags.
struct ServerBench {
    flush_ms: Option<u64>,
    postgres: Option<String>,
    warm: Option<u32>,
    connections: u32,
    seconds: u32,
    binary: Option<PathBuf>,
    evaluations: Option<u32>,
    pin: bool,
}

impl ServerBench {
    // `--login-stats-flush-ms N`: how the statistics of logins without effects are
    // written (0: with each login; the config's default otherwise). `--postgres URL`:
    // the directory in PostgreSQL instead of the demo's SQLite file.
    // `--warm-instances N`: `engine.warm_instances` (instances made ahead per rule).
    // `--connections N`: wrk's open connections (64: the server saturated; 1: one
    // login at a time, the latency a lightly loaded gateway sees). `--binary PATH`: a
    // `portcullis` built elsewhere (another commit's, to compare two in one sitting)
    // instead of this tree's. `--seconds N`: each wrk run's length (10).
    // `--evaluations N`: `server.max_concurrent_evaluations` (default 4 x cores).
    // `--pin`: the server on the first core and wrk (one thread) on the second, so
    // neither waits for the other's core: the tail the server makes on its own.
    fn parse(extra: &[String]) -> Result<Self> {
        let mut bench = Self {
            flush_ms: None,
            postgres: None,
            warm: None,
            connections: 64,
            seconds: 10,
            binary: None,
            evaluations: None,
            pin: false,
        };
        let mut args = extra.iter();
        while let Some(flag) = args.next() {
            if flag == "--pin" {
                bench.pin = true;
                continue;
            }
            match (flag.as_str(), args.next()) {
                ("--login-stats-flush-ms", Some(n)) => {
                    bench.flush_ms = Some(
                        n.parse::<u64>()
                            .context("--login-stats-flush-ms needs a number")?,
                    )
                }
                ("--postgres", Some(url)) => bench.postgres = Some(url.clone()),
                ("--binary", Some(path)) => bench.binary = Some(PathBuf::from(path)),
                ("--seconds", Some(n)) => {
                    bench.seconds = n.parse().context("--seconds needs a number")?;
                    anyhow::ensure!(bench.seconds >= 1, "--seconds needs at least 1");
                }
                ("--connections", Some(n)) => {
                    bench.connections = n.parse().context("--connections needs a number")?;
                    anyhow::ensure!(bench.connections >= 1, "--connections needs at least 1");
                }
                ("--evaluations", Some(n)) => {
                    let n: u32 = n.parse().context("--evaluations needs a number")?;
                    anyhow::ensure!(n >= 1, "--evaluations needs at least 1");
                    bench.evaluations = Some(n);
                }
                ("--warm-instances", Some(n)) => {
                    bench.warm = Some(
                        n.parse::<u32>()
                            .context("--warm-instances needs a number")?,
                    )
                }
                (flag, _) => {
                    bail!(
                        "bench-server: unknown flag or missing value: {flag}\nusage: cargo xtask bench-server [--login-stats-flush-ms N] [--postgres URL] [--warm-instances N] [--connections N] [--seconds N] [--binary PATH] [--evaluations N] [--pin]"
                    )
                }
            }
        }
        Ok(bench)
    }

    /// The demo pipeline, with its gateway allowed to vouch for password-less logins
    /// (the path measured here): a copy beside the demo state, paths adjusted.
    fn config(&self, root: &Path) -> Result<PathBuf> {
        let config = root.join("target/bench-pipeline.toml");
        std::fs::write(
            &config,
            std::fs::read_to_string(root.join("fixtures/pipeline.toml"))?
                .replace("\"../target/", "\"./")
                .replace(
                    "token_env = \"PORTCULLIS_GATEWAY_TOKEN\"",
                    "token_env = \"PORTCULLIS_GATEWAY_TOKEN\"\nvouches = true",
                )
                .replace(
                    "[engine]\n",
                    &self.warm.map_or("[engine]\n".into(), |n| {
                        format!("[engine]\nwarm_instances = {n}\n")
                    }),
                )
                .replace(
                    "[[server.caller]]\n",
                    &self.evaluations.map_or("[[server.caller]]\n".into(), |n| {
                        format!("[server]\nmax_concurrent_evaluations = {n}\n\n[[server.caller]]\n")
                    }),
                )
                .replace(
                    "[state]\n",
                    &self.flush_ms.map_or("[state]\n".into(), |ms| {
                        format!("[state]\nlogin_stats_flush_ms = {ms}\n")
                    }),
                )
                .replace(
                    "directory = \"sqlite://../target/demo-state/directory.db\"",
                    &self.postgres.as_ref().map_or(
                        "directory = \"sqlite://../target/demo-state/directory.db\"".into(),
                        |url| format!("directory = \"{url}\""),
                    ),
                ),
        )?;
        Ok(config)
    }

    /// A user the seed put in the directory as already migrated.
    fn migrated_email(&self, root: &Path) -> Result<String> {
        let query = "SELECT email FROM users WHERE app_metadata LIKE '%\"migrated\":true%' LIMIT 1";
        let email = match &self.postgres {
            Some(url) => Command::new("psql")
                .args([url.as_str(), "-tAc", query])
                .output()
                .context("psql reads the seeded directory")?,
            None => Command::new("python3")
                .args([
                    "-c",
                    "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone()[0])",
                ])
                .arg(root.join("target/demo-state/directory.db"))
                .arg(query)
                .output()
                .context("python3 reads the seeded directory")?,
        };
        let email = String::from_utf8(email.stdout)?.trim().to_owned();
        anyhow::ensure!(
            email.contains('@'),
            "no migrated user in the seeded directory"
        );
        Ok(email)
    }
}

/// wrk, from Debian when missing.
fn ensure_wrk() -> Result<()> {
    if Command::new("wrk").arg("--version").output().is_ok() {
        return Ok(());
    }
    let mut install = Command::new("apt-get");
    install.args(["install", "-y", "wrk"]);
    if run(install).is_err() {
        let mut update = Command::new("apt-get");
        update.arg("update");
        run(update)?;
        let mut install = Command::new("apt-get");
        install.args(["install", "-y", "wrk"]);
        run(install)?;
    }
    Ok(())
}

/// Two wrk runs against one server: `GET /healthz` (its HTTP floor), then the logins.
fn bench_server(extra: &[String]) -> Result<()> {
    let bench = ServerBench::parse(extra)?;
    let (connections, seconds) = (bench.connections, bench.seconds);
    build_rules()?;
    ensure_wrk()?;
    let root = workspace_root();
    let portcullis = match &bench.binary {
        Some(path) => {
            std::fs::canonicalize(path).with_context(|| format!("--binary {}", path.display()))?
        }
        None => {
            let mut build = cargo();
            build.args(["build", "--release", "-p", "portcullis"]);
            run(build)?;
            root.join("target/release/portcullis")
        }
    };
    let token = "bench-gateway-token-0123456789abcdef";
    let config = bench.config(&root)?;
    let mut seed = Command::new(&portcullis);
    seed.current_dir(&root)
        .args([
            "seed",
            "--logins",
            "0",
            "--logins-dir",
            "target/bench-logins",
            "--config",
        ])
        .arg(&config);
    run(seed)?;
    let email = bench.migrated_email(&root)?;
    let script = std::env::temp_dir().join("portcullis-migrated-login.lua");
    std::fs::write(
        &script,
        std::fs::read_to_string(root.join("fixtures/bench/migrated-login.lua"))?
            .replace("EMAIL", &email)
            .replace("TOKEN", token),
    )?;

    let healthz = std::env::temp_dir().join("portcullis-healthz.lua");
    std::fs::write(
        &healthz,
        std::fs::read_to_string(root.join("fixtures/bench/healthz.lua"))?.replace("TOKEN", token),
    )?;

    let mut server = pinned(bench.pin.then_some("0"), &portcullis);
    server
        .current_dir(&root)
        .env("PORTCULLIS_GATEWAY_TOKEN", token)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::piped());
    eprintln!("xtask: running {}", shown(&server));
    let mut server = server.spawn()?;
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().context("server stdout")?),
        &mut line,
    )?;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .context("the server did not say where it listens")?
        .to_owned();
    // The server's own HTTP floor first (nothing written), then the logins: one
    // process, one sitting, so the ratio of the two rates is the login path's cost
    // against the server's, whatever else the machine runs.
    let wrk = WrkSettings {
        addr: &addr,
        connections,
        seconds,
        server: server.id(),
        pin: bench.pin,
    };
    let floor = wrk.run(&healthz);
    let logins = floor.as_ref().ok().map(|_| wrk.run(&script));
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let _ = server.wait();
    let floor = floor?;
    let logins = logins.context("no login run")??;
    println!("--- GET /healthz (the server's HTTP floor)");
    print!("{}", floor.report);
    println!("--- POST /v1/login");
    print!("{}", logins.report);
    print_rates(&floor, &logins);
    println!(
        "logins/s over healthz/s: {:.1}% (server CPU per login over per healthz: {})",
        100.0 * logins.rate / floor.rate,
        match (logins.cpu_us, floor.cpu_us) {
            (Some(l), Some(h)) if h > 0.0 => format!("{:.2}x", l / h),
            _ => "n/a".into(),
        }
    );
    Ok(())
}

/// Each run's rate, server CPU per request and latency tail.
fn print_rates(floor: &WrkRun, logins: &WrkRun) {
    for (what, run) in [("healthz", floor), ("login", logins)] {
        match run.cpu_us {
            Some(micros) => println!(
                "{what}: {:.0}/s, server CPU {micros:.1} µs per request ({} requests)",
                run.rate, run.requests
            ),
            None => println!("{what}: {:.0}/s ({} requests)", run.rate, run.requests),
        }
        // Issue 25's tail target is p99 ≤ 2× p50 for the login; the healthz beside it
        // says how much of the tail is the machine's (no pipeline, no writes there).
        if let (Some(p50), Some(p99)) = (
            wrk_percentile(&run.report, "50%"),
            wrk_percentile(&run.report, "99%"),
        ) {
            println!(
                "{what}: p50 {p50:.2} ms, p99 {p99:.2} ms, p99/p50 {:.2}x",
                p99 / p50
            );
        }
    }
}

/// One wrk run against the server and what it cost the server.
struct WrkRun {
    report: String,
    requests: u64,
    rate: f64,
    /// The server's CPU time per request (user + system, from `/proc/<pid>/stat`).
    cpu_us: Option<f64>,
}

/// `program`, under `taskset -c <core>` when pinned.
fn pinned(core: Option<&str>, program: &Path) -> Command {
    match core {
        Some(core) => {
            let mut taskset = Command::new("taskset");
            taskset.args(["-c", core]).arg(program);
            taskset
        }
        None => Command::new(program),
    }
}

/// How `bench-server` runs wrk against its server.
struct WrkSettings<'a> {
    addr: &'a str,
    connections: u32,
    seconds: u32,
    server: u32,
    pin: bool,
}

impl WrkSettings<'_> {
    fn run(&self, script: &Path) -> Result<WrkRun> {
        wrk_run(script, self)
    }
}

fn wrk_run(script: &std::path::Path, settings: &WrkSettings) -> Result<WrkRun> {
    let WrkSettings {
        addr,
        connections,
        seconds,
        server,
        pin,
    } = *settings;
    let mut wrk = pinned(pin.then_some("1"), Path::new("wrk"));
    // Pinned, wrk has one core: one thread.
    let threads = if pin { 1 } else { connections.min(2) };
    wrk.arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .args(["--latency", "-s"])
        .arg(script)
        .arg(format!("http://{addr}"));
    eprintln!("xtask: running {}", shown(&wrk));
    let cpu_before = cpu_ticks(server);
    let output = wrk.output().context("cannot start wrk")?;
    let cpu_after = cpu_ticks(server);
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    anyhow::ensure!(output.status.success(), "wrk failed with {}", output.status);
    // A run whose requests were refused measured something else.
    anyhow::ensure!(
        !report.contains("Non-2xx or 3xx responses"),
        "the server refused requests:\n{report}"
    );
    let requests = report
        .lines()
        .find_map(|l| {
            l.trim()
                .split_once(" requests in ")
                .map(|(n, _)| n.to_owned())
        })
        .and_then(|n| n.parse::<u64>().ok())
        .context("wrk printed no request count")?;
    let rate = report
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|n| n.trim().parse::<f64>().ok())
        .context("wrk printed no rate")?;
    // wrk shares the two cores with the server, so requests/s moves with whatever
    // else runs; the server's own CPU time per request is the steadier figure.
    let cpu_us = match (cpu_before, cpu_after) {
        (Ok(before), Ok(after)) if requests > 0 => {
            let per_second = clock_ticks_per_second().unwrap_or(100);
            Some((after - before) as f64 * 1e6 / per_second as f64 / requests as f64)
        }
        _ => None,
    };
    Ok(WrkRun {
        report,
        requests,
        rate,
        cpu_us,
    })
}

/// A latency percentile from wrk's `--latency` distribution (`50%    6.32ms`), in ms.
fn wrk_percentile(report: &str, percentile: &str) -> Option<f64> {
    let value = report
        .lines()
        .find_map(|l| l.trim().strip_prefix(percentile))?
        .trim();
    let (number, scale) = if let Some(n) = value.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = value.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = value.strip_suffix('s') {
        (n, 1e3)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

/// User + system CPU time a process has used so far, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("unexpected /proc/PID/stat")?
        .1
        .split_whitespace()
        .collect();
    let field =
        |i: usize| -> Result<u64> { Ok(fields.get(i).context("short /proc/PID/stat")?.parse()?) };
    // utime and stime are fields 14 and 15 of proc_pid_stat(5): 11 and 12 counted
    // from 0 after the name (field 3, the state, is 0).
    Ok(field(11)? + field(12)?)
}

fn clock_ticks_per_second() -> Option<u64> {
    let out = Command::new("getconf").arg("CLK_TCK").output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}
