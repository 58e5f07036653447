//! `portcullis mfa backfill | revert | status` as an operator runs them: real processes
//! against the provider simulator (its own process), killed and run again.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use portcullis::model::FactorProvider;
use portcullis::state::StateStore;
use portcullis::{Decision, Gateway, PipelineConfig};

use crate::common::{Exposure, Result, Simulator, mfa_config, runtime};

/// Directory users with only an old-provider factor, beside the seeded MFA demo.
struct Env {
    dir: tempfile::TempDir,
    sim: Simulator,
    config: PathBuf,
}

impl Env {
    fn new(sms_users: usize, internal: usize, sim_args: &[&str]) -> Env {
        let mut args = vec!["--seed-legacy", "3000"];
        args.extend_from_slice(sim_args);
        let sim = Simulator::start(&args);
        let dir = tempfile::tempdir().unwrap();
        let config = mfa_config(dir.path(), &sim);
        let env = Env { dir, sim, config };
        let (users, internal) = (sms_users.to_string(), internal.to_string());
        let out = env.portcullis(&[
            "seed",
            "--users",
            "300",
            "--logins",
            "20",
            "--sms-users",
            &users,
            "--sms-internal",
            &internal,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        env
    }

    fn portcullis(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command
            .args(args)
            .args(["--config", self.config.to_str().unwrap()]);
        command
    }

    /// Runs a backfill; returns its JSON report.
    fn backfill(&self, args: &[&str]) -> serde_json::Value {
        let report = self.dir.path().join("report.json");
        let mut all = vec![
            "mfa",
            "backfill",
            "--rate",
            "0",
            "--report",
            report.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        let out = self.portcullis(&all);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let written: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        assert_eq!(printed, written, "the report file is the printed summary");
        written
    }

    fn state(&self) -> std::sync::Arc<dyn StateStore> {
        portcullis::state::open_state(&format!("sqlite://{}", self.db().display()), Path::new("/"))
            .unwrap()
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("mfa/directory.db")
    }

    fn sql(&self, query: &str) -> i64 {
        rusqlite::Connection::open(self.db())
            .unwrap()
            .query_row(query, [], |row| row.get(0))
            .unwrap()
    }

    /// Old-provider factors still without a phone (not counting reverted ones).
    fn pending(&self) -> i64 {
        self.sql(
            "SELECT COUNT(*) FROM factors WHERE status = 'active' AND legacy_provider_user_id IS NOT NULL
             AND phone_ciphertext IS NULL AND NOT reverted",
        )
    }
}

#[test]
fn the_pilot_then_everyone_moves_and_the_next_login_uses_the_new_provider() -> Result {
    let env = Env::new(120, 30, &[]);
    let before = env.pending();
    assert!(before >= 120, "{before} pending");

    // A dry run calls nothing and writes nothing.
    let dry = env.backfill(&["--cohort", "internal", "--dry-run"]);
    assert!(dry["would_export"].as_array().unwrap().len() >= 30);
    assert_eq!(dry["export_calls"], 0);
    assert_eq!(env.sim.get("/sim/stats")["export_calls"], 0);
    assert_eq!(env.pending(), before);

    let pilot = env.backfill(&["--cohort", "internal", "--chunk", "7"]);
    assert!(pilot["exported"].as_u64().unwrap() >= 30, "{pilot}");
    assert_eq!(pilot["exported"], pilot["export_calls"]);
    assert_eq!(
        env.sql("SELECT COUNT(*) FROM factors WHERE cohort = 'internal' AND phone_ciphertext IS NULL AND NOT reverted"),
        0
    );
    let rest = env.backfill(&["--chunk", "25", "--limit", "1000"]);
    assert_eq!(env.pending(), 0, "{rest}");
    let stats = env.sim.get("/sim/stats");
    assert_eq!(stats["max_exports_per_user"], 1);
    assert_eq!(
        stats["export_calls"].as_u64().unwrap(),
        pilot["export_calls"].as_u64().unwrap() + rest["export_calls"].as_u64().unwrap()
    );
    // Nothing left: a rerun takes up nobody and calls nothing.
    let again = env.backfill(&[]);
    assert_eq!(
        (again["taken_up"].as_u64(), again["export_calls"].as_u64()),
        (Some(0), Some(0))
    );

    // A pilot user's next login goes through the new provider, to the exported phone.
    let config = PipelineConfig::load(&env.config)?;
    let gateway = Gateway::open(&config, runtime())?;
    let mut login = crate::common::login("tx-after-backfill");
    login.email = "sms0@example.com".into();
    login.password = None;
    login.time_ms = portcullis::flows::clock::Clock::now_ms(&portcullis::flows::clock::SystemClock);
    let verdict = gateway.login(&login)?;
    match &verdict.decision {
        Decision::Challenge { via, .. } => assert_eq!(*via, Some(FactorProvider::Verify)),
        other => panic!("{other:?}"),
    }
    let phone = portcullis::jobs::seed::legacy_sms_phone(
        env.state().factors_of("usr_sms000000")?[0]
            .legacy_provider_user_id
            .as_deref()
            .and_then(portcullis::jobs::seed::legacy_sms_index)
            .unwrap(),
    );
    let inbox = env
        .sim
        .get(&format!("/sim/inbox?to={}", phone.replace('+', "%2B")));
    assert_eq!(inbox[0]["provider"], "verify");

    // And no phone, in any format, in the database (its file after a checkpoint and
    // its WAL), the legacy stores, the reports or what the simulator printed.
    let exposure = Exposure::new()
        .databases_under(&env.dir.path().join("mfa"))
        .file(&env.dir.path().join("report.json"))
        .text("the backfill reports", format!("{dry}{pilot}{rest}{again}"))
        .text("portcullis-sim", env.sim.output());
    exposure.assert_absent("phone number's prefix", "+120155");
    let legacy_ids: Vec<String> = rusqlite::Connection::open(env.db())?
        .prepare(
            "SELECT legacy_provider_user_id FROM factors WHERE legacy_provider_user_id IS NOT NULL",
        )?
        .query_map([], |row| row.get(0))?
        .collect::<std::result::Result<_, _>>()?;
    assert!(legacy_ids.len() >= 120);
    for id in legacy_ids {
        let n = portcullis::jobs::seed::legacy_sms_index(&id).unwrap();
        exposure.assert_no_phone(&portcullis::jobs::seed::legacy_sms_phone(n));
    }
    Ok(())
}

#[test]
fn a_job_killed_between_the_call_and_its_result_never_calls_a_fourth_time() -> Result {
    let env = Env::new(5, 0, &[]);
    // One user alone in a cohort of its own.
    rusqlite::Connection::open(env.db())?.execute(
        "UPDATE factors SET cohort = 'solo' WHERE id = 'fac_sms000003'",
        [],
    )?;
    let provider_user = env.state().factors_of("usr_sms000003")?[0]
        .legacy_provider_user_id
        .clone()
        .unwrap();
    for run in 1..=3 {
        // Dies right after the export answers, before anything is written.
        let out = env.portcullis(&[
            "mfa",
            "backfill",
            "--cohort",
            "solo",
            "--rate",
            "0",
            "--lease-seconds",
            "0",
            "--abort-after-exports",
            "1",
        ]);
        assert!(!out.status.success(), "run {run} was to crash");
        assert_eq!(env.sim.get("/sim/stats")["export_calls"], run);
        assert_eq!(
            env.sql(&format!("SELECT COUNT(*) FROM mfa_exports WHERE provider_user_id = '{provider_user}' AND outcome IS NULL")),
            run,
            "the ledger counted the call whose result was lost"
        );
    }
    let fourth = env.backfill(&["--cohort", "solo", "--lease-seconds", "0"]);
    assert_eq!(fourth["export_calls"], 0, "{fourth}");
    let skipped = fourth["skipped_by_quota"].as_array().unwrap();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0]["user_id"], "usr_sms000003");
    let stats = env.sim.get("/sim/stats");
    assert_eq!(
        (
            stats["export_calls"].as_u64(),
            stats["max_exports_per_user"].as_u64()
        ),
        (Some(3), Some(3))
    );
    assert!(env.state().factors_of("usr_sms000003")?[0].phone.is_none());
    Ok(())
}

#[test]
fn killed_and_concurrent_runs_finish_the_work_without_exporting_anyone_twice() -> Result {
    // A slow provider (answers take ~40 ms each at 25/s), so the runs overlap.
    let env = Env::new(150, 0, &["--rate-limit", "25"]);
    let spawn = |report: &str| {
        env.command(&[
            "mfa",
            "backfill",
            "--rate",
            "20",
            "--chunk",
            "10",
            "--lease-seconds",
            "3",
            "--report",
            env.dir.path().join(report).to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
    };
    let (mut a, mut b, mut killed) = (spawn("a.json"), spawn("b.json"), spawn("killed.json"));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    killed.kill()?; // SIGKILL, in the middle of a chunk
    killed.wait()?;
    assert!(a.wait()?.success() && b.wait()?.success());
    // The killed run's chunk waits for its lease; a rerun then finishes it.
    std::thread::sleep(std::time::Duration::from_millis(3100));
    env.backfill(&["--lease-seconds", "3"]);
    assert_eq!(env.pending(), 0);
    let stats = env.sim.get("/sim/stats");
    // Twice only where a result was lost (the kill), and then the ledger counted it.
    for user in stats["exported_more_than_once"].as_array().unwrap() {
        let user = user.as_str().unwrap();
        assert!(
            env.sql(&format!("SELECT COUNT(*) FROM mfa_exports WHERE provider_user_id = '{user}' AND outcome IS NULL")) >= 1,
            "{user} was exported twice with no lost result"
        );
    }
    assert!(
        stats["exported_more_than_once"].as_array().unwrap().len() <= 1,
        "{stats}"
    );
    let a: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.dir.path().join("a.json"))?)?;
    let b: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.dir.path().join("b.json"))?)?;
    assert!(
        a["exported"].as_u64() > Some(0) && b["exported"].as_u64() > Some(0),
        "both runs worked: {a} {b}"
    );
    assert!(
        a["throttled_calls"].as_u64().unwrap() + b["throttled_calls"].as_u64().unwrap() > 0,
        "429s were honoured"
    );
    Ok(())
}

#[test]
fn revert_status_and_retiring_the_old_provider() -> Result {
    let env = Env::new(10, 10, &[]);
    env.backfill(&["--cohort", "internal"]);
    let status = |env: &Env| -> serde_json::Value {
        let out = env.portcullis(&["mfa", "status", "--json"]);
        assert!(out.status.success());
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let before = status(&env)["depending_on_old_provider"].as_u64().unwrap();

    let out = env.portcullis(&[
        "mfa",
        "revert",
        "--user",
        "usr_sms000004",
        "--actor",
        "support-7",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reverted: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(reverted["factors"], serde_json::json!(["fac_sms000004"]));
    assert!(env.state().factors_of("usr_sms000004")?[0].reverted);
    assert_eq!(
        env.sql("SELECT COUNT(*) FROM mfa_audit WHERE actor = 'support-7' AND action = 'mfa.revert' AND user_id = 'usr_sms000004'"),
        1
    );
    assert_eq!(
        status(&env)["depending_on_old_provider"].as_u64().unwrap(),
        before + 1
    );

    // The reverted user's next login goes through the old provider again.
    let config = PipelineConfig::load(&env.config)?;
    let gateway = Gateway::open(&config, runtime())?;
    let mut login = crate::common::login("tx-reverted");
    login.email = "sms4@example.com".into();
    login.password = None;
    login.time_ms = portcullis::flows::clock::Clock::now_ms(&portcullis::flows::clock::SystemClock);
    match gateway.login(&login)?.decision {
        Decision::Challenge { via, .. } => assert_eq!(via, Some(FactorProvider::LegacySms)),
        other => panic!("{other:?}"),
    }

    // Retiring the old provider while factors depend on it: check warns, load refuses.
    let out = env.portcullis(&["check"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("still depend on the old provider"));
    let text = std::fs::read_to_string(&env.config)?;
    let start = text.find("[mfa.legacy_sms]").unwrap();
    let end = start + text[start..].find("[mfa.verify]").unwrap();
    std::fs::write(&env.config, format!("{}{}", &text[..start], &text[end..]))?;
    let config = PipelineConfig::load(&env.config)?;
    let refused = Gateway::open(&config, runtime())
        .err()
        .expect("refused at load")
        .to_string();
    assert!(
        refused.contains(&format!("{} active SMS factors", before + 1)),
        "{refused}"
    );
    Ok(())
}

/// Users a stopped run still holds (its lease not run out) are not taken up, and the
/// run says so, with until when: an empty report must not read as "nothing left"
/// (a newcomer's Ctrl-C then rerun found nothing done and no word why).
#[test]
fn a_rerun_says_which_users_a_stopped_run_still_holds() -> Result {
    use portcullis::flows::clock::Clock as _;
    let env = Env::new(20, 0, &[]);
    let state = env.state();
    let now_ms = portcullis::flows::clock::SystemClock.now_ms();
    let ids = state.backfill_candidates(None, now_ms, false, 5, "stopped-run")?;
    assert_eq!(ids.len(), 5);
    let lease = portcullis::state::phone_export::Lease {
        token: "stopped-run-token".into(),
        until_ms: now_ms + 600_000,
        run_id: "stopped-run".into(),
        now_ms,
    };
    assert_eq!(state.claim_backfill(&ids, &lease, false)?.len(), 5);
    let report = env.backfill(&[]);
    assert_eq!(report["held_by_other_runs"], 5, "{report}");
    assert!(
        report["held_until_ms"].as_u64() >= Some(now_ms + 599_000),
        "{report}"
    );
    assert_eq!(
        env.pending(),
        5,
        "the held users wait for their run's lease"
    );
    let out = env.portcullis(&["mfa", "backfill", "--rate", "0"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("5 users are held by another run") && said.contains("--lease-seconds"),
        "{said}"
    );
    Ok(())
}

#[test]
fn a_user_deleted_at_the_old_provider_is_reported_and_costs_no_export() -> Result {
    let env = Env::new(5, 5, &[]);
    let gone = env.state().factors_of("usr_sms000002")?[0]
        .legacy_provider_user_id
        .clone()
        .unwrap();
    // Deleted through the provider's own API, as an operator there would.
    let deleted = reqwest::blocking::Client::new()
        .post(format!(
            "{}/protected/json/users/{gone}/delete",
            env.sim.url
        ))
        .header("X-Authy-API-Key", "sim-legacy-key")
        .send()?;
    assert_eq!(deleted.status(), 200);

    // It exits non-zero (a user failed) and writes its report all the same.
    let written = env.dir.path().join("deleted-report.json");
    let out = env.portcullis(&[
        "mfa",
        "backfill",
        "--rate",
        "0",
        "--cohort",
        "internal",
        "--report",
        written.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1 of"), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&written)?)?;
    let failures = report["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{report}");
    assert_eq!(failures[0]["user_id"], "usr_sms000002");
    assert_eq!(failures[0]["reason"], "not found at the old provider");
    assert_eq!(report["export_calls"], report["exported"], "{report}");
    // Neither the provider nor our ledger counted an export for that user.
    let stats = env.sim.get("/sim/stats");
    assert_eq!(stats["export_calls"], report["export_calls"]);
    assert_eq!(
        env.sql(&format!(
            "SELECT COUNT(*) FROM mfa_exports WHERE provider_user_id = '{gone}'"
        )),
        0
    );
    assert_eq!(
        env.sql("SELECT COUNT(*) FROM factors WHERE user_id = 'usr_sms000002' AND phone_ciphertext IS NOT NULL"),
        0
    );
    Ok(())
}
