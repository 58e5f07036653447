//! `cargo xtask demo`, the main job: builds the rules and the host once, then runs the
//! demo's parts on the demo stores (SQLite, target/demo-state/) and says in a few lines
//! what each part did, with a closing summary of what it showed. `--verbose` prints
//! every command (its directory, the names of the variables set for it, its arguments)
//! and its whole output: check's rule listing, every login's verdict, the reports.
//!
//! A step that fails prints its command and whole output whatever the verbosity, so the
//! short form never hides why the demo stopped.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{build_rules, cargo, shown, workspace_root};

/// Where the demo pipelines in fixtures/ expect the simulator (`portcullis-sim`'s
/// default port): their SMS providers and their outbox endpoints.
const SIM_PORT: u16 = 7879;

const USAGE: &str = "xtask: usage: cargo xtask demo [--verbose] [--sim-port N]";

pub fn demo(args: &[String]) -> Result<()> {
    let mut verbose = false;
    let mut sim_port = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--verbose" | "-v" => verbose = true,
            "--sim-port" => match args.next().and_then(|p| p.parse::<u16>().ok()) {
                Some(port) => sim_port = Some(port),
                None => {
                    eprintln!("xtask: --sim-port needs a port number\n{USAGE}");
                    std::process::exit(2)
                }
            },
            _ => {
                eprintln!("{USAGE}");
                std::process::exit(2)
            }
        }
    }
    // PORTCULLIS_SIM_PORT, which the simulator reads too, when no flag says.
    let sim_port = match (sim_port, std::env::var("PORTCULLIS_SIM_PORT")) {
        (Some(port), _) => port,
        (None, Ok(value)) => value
            .trim()
            .parse()
            .with_context(|| format!("PORTCULLIS_SIM_PORT={value:?} is not a port number"))?,
        (None, Err(_)) => SIM_PORT,
    };
    let started = Instant::now();
    let mut demo = Demo {
        verbose,
        portcullis: workspace_root().join("target/release/portcullis"),
        sim_port,
        showed: Vec::new(),
    };
    demo.build()?;
    // The simulator first: the migration's outbox delivers to its product receivers,
    // the SMS parts use its providers, recovery's notices go to it.
    let _simulator = demo.simulator()?;
    demo.migration()?;
    demo.replay()?;
    demo.sms()?;
    demo.summary(started);
    Ok(())
}

struct Demo {
    verbose: bool,
    portcullis: PathBuf,
    /// The simulator's port (the fixtures name 7879; another gets copies of them).
    sim_port: u16,
    /// Each part's name, what it demonstrates, and the figure that shows it.
    showed: Vec<(&'static str, &'static str, String)>,
}

/// `portcullis-sim`, stopped when dropped.
struct Simulator(std::process::Child);

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Demo {
    fn build(&self) -> Result<()> {
        println!(
            "demo: building the rules and the host (the first run compiles wasmtime and the host: \
             about 10 minutes on 2 cores{})",
            if self.verbose {
                ""
            } else {
                "; --verbose shows cargo's progress"
            }
        );
        let started = Instant::now();
        crate::QUIET.store(!self.verbose, Ordering::Relaxed);
        let built = build_rules().and_then(|()| {
            let mut host = cargo();
            host.args(["build", "--release", "-p", "portcullis", "--bins"]);
            crate::run(host)
        });
        crate::QUIET.store(false, Ordering::Relaxed);
        built?;
        println!("demo: built in {:.0} s", started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Starts the simulator: both SMS providers (24,000 users at the old one, 300 of
    /// them internal), the notification service and the products' outbox receivers.
    fn simulator(&self) -> Result<Simulator> {
        let simulator = workspace_root().join("target/release/portcullis-sim");
        let port = self.sim_port.to_string();
        let mut sim = Simulator(
            Command::new(&simulator)
                .args(["--port", &port])
                .args(["--seed-legacy", "24000", "--internal", "300"])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .with_context(|| format!("cannot start {}", simulator.display()))?,
        );
        // It prints its address once it listens.
        let mut line = String::new();
        let started =
            sim.0.stdout.take().map(|out| {
                std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line)
            });
        anyhow::ensure!(
            matches!(started, Some(Ok(n)) if n > 0),
            "portcullis-sim did not start (is 127.0.0.1:{port} in use? --sim-port N or PORTCULLIS_SIM_PORT picks another port)"
        );
        println!(
            "demo: portcullis-sim (SMS providers, notices, product receivers): {}",
            line.trim()
        );
        Ok(sim)
    }

    /// The demo pipeline `name` in fixtures/, for the simulator's port: the fixture
    /// itself on the default port; otherwise a copy in target/demo-fixtures/ with the
    /// simulator's URLs on that port and its relative paths made absolute (the same
    /// stores, keys and components).
    fn config(&self, name: &str) -> Result<String> {
        if self.sim_port == SIM_PORT {
            return Ok(format!("fixtures/{name}"));
        }
        let root = workspace_root();
        let text = std::fs::read_to_string(root.join("fixtures").join(name))
            .with_context(|| format!("cannot read fixtures/{name}"))?
            .replace(
                &format!("http://127.0.0.1:{SIM_PORT}"),
                &format!("http://127.0.0.1:{}", self.sim_port),
            )
            .replace("../target/", &format!("{}/target/", root.display()))
            // The key files beside the fixtures (`keys_file = "demo-mfa.keys"`, …).
            .replace(
                "_file = \"demo-",
                &format!("_file = \"{}/fixtures/demo-", root.display()),
            );
        let dir = root.join("target/demo-fixtures");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), text)?;
        Ok(format!("target/demo-fixtures/{name}"))
    }

    /// `outbox run --until-empty`: its line (claimed, delivered, …).
    fn outbox(&self, command: Command) -> Result<String> {
        let output = self.step(command, &[0])?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        Ok(stdout
            .lines()
            .find_map(|l| l.strip_prefix("outbox: "))
            .unwrap_or_else(|| last_line(&stdout))
            .to_owned())
    }

    fn section(&self, title: &str) {
        println!("\n== {title}");
    }

    fn say(&self, text: &str) {
        println!("   {text}");
    }

    /// `portcullis ARGS`, run from the workspace root (the fixtures' paths start there).
    fn portcullis(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.portcullis);
        command.current_dir(workspace_root()).args(args);
        command
    }

    /// The same with the simulator's credentials (demo only) for the providers' clients.
    fn with_secrets(&self, args: &[&str]) -> Command {
        let mut command = self.portcullis(args);
        command
            .env("PORTCULLIS_LEGACY_SMS_KEY", "sim-legacy-key")
            .env("PORTCULLIS_VERIFY_AUTH_TOKEN", "sim-verify-token");
        command
    }

    /// Runs one step and keeps its output; an exit code outside `ok` stops the demo.
    fn step(&self, mut command: Command, ok: &[i32]) -> Result<Output> {
        let shown = shown(&command);
        if self.verbose {
            eprintln!("xtask: running {shown}");
        }
        let output = command
            .output()
            .with_context(|| format!("cannot start {shown}"))?;
        let failed = !output.status.code().is_some_and(|code| ok.contains(&code));
        if failed && !self.verbose {
            eprintln!("xtask: running {shown}");
        }
        if self.verbose || failed {
            print!("{}", String::from_utf8_lossy(&output.stdout));
            eprint!("{}", String::from_utf8_lossy(&output.stderr));
        }
        if failed {
            bail!("{shown} failed with {}", output.status);
        }
        Ok(output)
    }

    /// `check`: warnings (exit 1: the store `seed` is about to make, what only `serve`
    /// needs) are expected here; errors (exit 2) stop the demo.
    fn check(&self, command: Command) -> Result<()> {
        let output = self.step(command, &[0, 1])?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let loaded = line_with(&stdout, "rule(s)").unwrap_or("the rules load");
        self.say(&format!(
            "check: {loaded}{}",
            if output.status.code() == Some(1) && !self.verbose {
                " (--verbose shows the warnings)"
            } else {
                ""
            }
        ));
        Ok(())
    }

    /// `seed`: what it made.
    fn seed(&self, command: Command) -> Result<()> {
        let output = self.step(command, &[0])?;
        for line in String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|l| l.starts_with("seeded "))
        {
            self.say(&format!("seed: {line}"));
        }
        Ok(())
    }

    /// `run --summary` over a folder of logins: its summary line.
    fn run_logins(&self, command: Command) -> Result<String> {
        let output = self.step(command, &[0])?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let summary = stdout
            .lines()
            .find_map(|l| l.strip_prefix("summary: "))
            .unwrap_or_else(|| last_line(&stdout))
            .to_owned();
        self.say(&format!("run: {summary}"));
        Ok(summary)
    }

    fn migration(&mut self) -> Result<()> {
        let config = self.config("pipeline.toml")?;
        let config = config.as_str();
        self.section(&format!(
            "1. migration: three products' users move into one directory as they sign in ({config})"
        ));
        // Seeded first: `check` then warns only about what `serve` needs.
        self.seed(self.portcullis(&["seed", "--config", config]))?;
        self.check(self.portcullis(&["check", "--config", config]))?;
        let summary = self.run_logins(self.portcullis(&[
            "run",
            "--config",
            config,
            "--login",
            "target/demo-state/logins",
            "--compact",
            "--summary",
        ]))?;
        // Every product learns its migrated users' unified id: the outbox delivers to
        // the simulator's product receivers.
        let outbox =
            self.outbox(self.portcullis(&["outbox", "run", "--config", config, "--until-empty"]))?;
        self.say(&format!(
            "outbox run (the unified ids, to the products): {outbox}"
        ));
        self.showed.push((
            "migration",
            "first sign-ins create directory users from the legacy accounts; several products or a squatted email wait for the inbox",
            format!("{summary}; unified ids to the products: {outbox}"),
        ));
        Ok(())
    }

    fn replay(&mut self) -> Result<()> {
        self.section(
            "2. replay: the recorded scenarios against the current rules (fixtures/recordings)",
        );
        let output = self.step(self.portcullis(&["replay", "fixtures/recordings"]), &[0])?;
        let result = last_line(&String::from_utf8_lossy(&output.stdout)).to_owned();
        self.say(&format!("replay: {result}"));
        self.showed.push((
            "replay",
            "every recorded scenario (migration, SMS, recovery) still gets its recorded verdict",
            result,
        ));
        Ok(())
    }

    /// The SMS second factor during the provider migration, then recovery and audit,
    /// which need the provider simulator too.
    fn sms(&mut self) -> Result<()> {
        let config = self.config("pipeline-mfa.toml")?;
        let config = config.as_str();
        self.section(&format!(
            "3. SMS migration and backfill: users move from the old SMS provider to the new one ({config})"
        ));
        // The seeded users, and 300 more with only the old provider's factor (30 of
        // them internal): the backfill's population. Seeded before `check`, which
        // then warns only about what `serve` needs.
        self.seed(self.with_secrets(&[
            "seed",
            "--config",
            config,
            "--sms-users",
            "300",
            "--sms-internal",
            "30",
        ]))?;
        self.check(self.with_secrets(&["check", "--config", config]))?;
        self.run_logins(self.with_secrets(&[
            "run",
            "--config",
            config,
            "--login",
            "target/demo-state/mfa/logins",
            "--compact",
            "--summary",
        ]))?;
        // The backfill, as the runbook has it: look, pilot, everyone else, look again.
        let before = self.mfa_status(config, "before the backfill")?;
        let pilot = self.backfill(config, Some("internal"), "backfill-pilot.json")?;
        let rest = self.backfill(config, None, "backfill.json")?;
        let after = self.mfa_status(config, "after it")?;
        self.showed.push((
            "SMS",
            "logins are challenged through either provider; the backfill exports phones within the old provider's quota",
            depending(&before, &after, pilot + rest),
        ));
        self.recovery()?;
        self.audit()
    }

    /// `mfa status`: how many factors still depend on the old provider.
    fn mfa_status(&self, config: &str, when: &str) -> Result<String> {
        let output = self.step(
            self.with_secrets(&["mfa", "status", "--config", config]),
            &[0],
        )?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let depend = line_with(&stdout, "old provider")
            .unwrap_or_else(|| last_line(&stdout))
            .to_owned();
        self.say(&format!("mfa status, {when}: {depend}"));
        Ok(depend)
    }

    /// One `mfa backfill` run (a cohort, or everyone left); the number it exported.
    fn backfill(&self, config: &str, cohort: Option<&str>, report: &str) -> Result<u64> {
        let report = format!("target/demo-state/mfa/{report}");
        let mut args = vec!["mfa", "backfill", "--config", config, "--rate", "100"];
        match cohort {
            Some(cohort) => args.extend(["--cohort", cohort]),
            None => args.extend(["--chunk", "100"]),
        }
        args.extend(["--report", &report]);
        self.step(self.with_secrets(&args), &[0])?;
        let path = workspace_root().join(&report);
        let json: Value = serde_json::from_str(
            &std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?,
        )
        .with_context(|| format!("{} is not JSON", path.display()))?;
        let exported = json["exported"].as_u64().unwrap_or(0);
        let failed: u64 = json["failed"]
            .as_object()
            .map(|by_reason| by_reason.values().filter_map(Value::as_u64).sum())
            .unwrap_or(0);
        let at_quota = json["skipped_by_quota"].as_array().map_or(0, Vec::len);
        self.say(&format!(
            "mfa backfill, {}: {exported} exported, {failed} failed, {at_quota} skipped at their export quota ({report})",
            cohort.map_or("everyone else".to_owned(), |c| format!("pilot cohort {c}"))
        ));
        Ok(exported)
    }

    /// Account recovery (fixtures/pipeline-recovery.toml): the seeded users who have a
    /// second factor ask to recover with their password only. A dry run finds them (the
    /// rule answers `recover` only for them); the real run starts their waiting
    /// periods, and every channel on file is told through the outbox at the
    /// simulator's notification endpoint.
    fn recovery(&mut self) -> Result<()> {
        let config = self.config("pipeline-recovery.toml")?;
        let config = config.as_str();
        self.section(&format!(
            "4. recovery: users who lost their phone ask to recover with their password only ({config})"
        ));
        // From nothing, each run: `seed` empties users, factors and the outbox but not
        // recoveries or the audit log, so a second run would find the first run's
        // recoveries under way (and tell nobody again), and the audit checkpoints
        // published then would not match a chain started anew.
        let state = workspace_root().join("target/demo-state/recovery");
        if state.exists() {
            std::fs::remove_dir_all(&state)
                .with_context(|| format!("cannot remove {}", state.display()))?;
        }
        self.seed(self.with_secrets(&["seed", "--config", config]))?;
        self.check(self.with_secrets(&["check", "--config", config]))?;
        let (all, asking) = (state.join("all-asking"), state.join("recovery-logins"));
        for dir in [&all, &asking] {
            let _ = std::fs::remove_dir_all(dir);
            std::fs::create_dir_all(dir)?;
        }
        for login in std::fs::read_dir(state.join("logins"))? {
            let login = login?.path();
            let mut json: Value = serde_json::from_str(&std::fs::read_to_string(&login)?)?;
            json["recovery"] = Value::Bool(true);
            std::fs::write(
                all.join(login.file_name().context("a login file")?),
                json.to_string(),
            )?;
        }
        let path = |p: &std::path::Path| p.to_str().map(str::to_owned).context("a UTF-8 path");
        let dry = self.step(
            self.with_secrets(&[
                "run",
                "--config",
                config,
                "--login",
                &path(&all)?,
                "--compact",
                "--dry-run",
            ]),
            &[0],
        )?;
        let recovering: Vec<String> = String::from_utf8_lossy(&dry.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|v| v["decision"]["type"] == "recover")
            .filter_map(|v| v["transaction_id"].as_str().map(str::to_owned))
            .collect();
        for login in std::fs::read_dir(&all)? {
            let login = login?.path();
            let json: Value = serde_json::from_str(&std::fs::read_to_string(&login)?)?;
            if recovering
                .iter()
                .any(|tx| json["transaction_id"] == tx.as_str())
            {
                std::fs::copy(
                    &login,
                    asking.join(login.file_name().context("a login file")?),
                )?;
            }
        }
        self.say(&format!(
            "a dry run of all {} seeded logins asking to recover: {} users with a second factor are recovering",
            std::fs::read_dir(&all)?.count(),
            recovering.len()
        ));
        let summary = self.run_logins(self.with_secrets(&[
            "run",
            "--config",
            config,
            "--login",
            &path(&asking)?,
            "--compact",
            "--summary",
        ]))?;
        let outbox = self.outbox(self.with_secrets(&[
            "outbox",
            "run",
            "--config",
            config,
            "--until-empty",
        ]))?;
        self.say(&format!("outbox run (the notices): {outbox}"));
        self.showed.push((
            "recovery",
            "a password alone starts a waiting period (denied meanwhile) and every channel on file is told",
            format!("{summary}; notices: {outbox}"),
        ));
        Ok(())
    }

    /// The audit log's keyed chain, which the recovery steps wrote to.
    fn audit(&mut self) -> Result<()> {
        let config = self.config("pipeline-recovery.toml")?;
        let config = config.as_str();
        self.section("5. audit: the audit log's keyed chain, verified");
        let output = self.step(
            self.with_secrets(&["audit", "verify", "--config", config]),
            &[0],
        )?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let result = match serde_json::from_str::<Value>(&stdout) {
            Ok(json) => format!(
                "ok: {}, {} rows, head {}",
                json["ok"],
                json["rows"],
                json["head"].as_str().unwrap_or("-")
            ),
            Err(_) => last_line(&stdout).to_owned(),
        };
        self.say(&format!("audit verify: {result}"));
        self.showed.push((
            "audit",
            "every recovery step is in an HMAC-chained log that verifies",
            result,
        ));
        Ok(())
    }

    fn summary(&self, started: Instant) {
        self.section("what the demo showed");
        for (part, shows, figure) in &self.showed {
            println!("   {part:<10} {shows}");
            println!("   {:<10} {figure}", "");
        }
        println!(
            "\ndemo: done in {:.0} s; the stores, logins and reports are in target/demo-state/{}",
            started.elapsed().as_secs_f64(),
            if self.verbose {
                ""
            } else {
                "; `cargo xtask demo --verbose` shows every command and its whole output"
            }
        );
    }
}

/// `mfa status`'s "N active factors still depend on the old provider", before and
/// after the backfill, in one line.
fn depending(before: &str, after: &str, exported: u64) -> String {
    let count = |line: &str| line.split_whitespace().next()?.parse::<u64>().ok();
    match (count(before), count(after)) {
        (Some(b), Some(a)) => format!(
            "{b} active factors depended on the old provider, {a} after the backfill exported {exported} phones"
        ),
        _ => format!("before the backfill: {before}; after: {after}; {exported} phones exported"),
    }
}

/// The first line of `text` that holds `needle`.
fn line_with<'a>(text: &'a str, needle: &str) -> Option<&'a str> {
    text.lines().find(|l| l.contains(needle))
}

fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
}
