//! The `portcullis` binary: exit 0 with JSON for any verdict, exit 2 with one clear
//! line for bad input, never a panic.

use std::process::{Command, Output};

use crate::common::{Result, Simulator, mfa_config, rule, workspace_root};

fn portcullis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .current_dir(workspace_root())
        .env("NO_COLOR", "1")
        .output()
        .expect("the binary runs")
}

fn assert_bad_input(output: &Output, mentions: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(output.stdout.is_empty(), "nothing printed on bad input");
    assert!(
        stderr.contains(mentions),
        "{stderr:?} should mention {mentions:?}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
}

#[test]
fn check_lists_rules_with_imports_and_grants() {
    // The demo config over seeded stores (without them `check` is exit 2: `run` would
    // refuse a config whose legacy stores are not there).
    let (_dir, config) = crate::common::seeded_dir(20, 1);
    let output = portcullis(&["check", "--config", config.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    // A warning remains (the caller's token unset): exit 1.
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("1. bulk-imported-skip"), "{stdout}");
    assert!(
        stdout.contains("grants:  log, config, directory, legacy"),
        "{stdout}"
    );
    assert!(
        stdout.contains("imports: portcullis:rule/legacy@0.1.0  [capability: legacy]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("3. ownership-check") && stdout.contains("resumable component"),
        "{stdout}"
    );
    // Every rule says which contract it was built against.
    assert_eq!(stdout.matches(", contract 0.1.0").count(), 4, "{stdout}");
    // Settings as the config spells them (it said `on_error Deny`).
    assert_eq!(stdout.matches("on_error = \"deny\"").count(), 4, "{stdout}");
    // Each rule's data image, as the component holds it: the migration rules are
    // written to keep theirs small (docs/writing-rules.md), none over 12 KiB.
    let images: Vec<u64> = stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("data image: "))
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(images.len(), 4, "{stdout}");
    assert!(
        images.iter().all(|b| (1..12 * 1024).contains(b)),
        "{images:?}"
    );
}

#[test]
fn seed_run_record_and_replay_leak_no_secret() -> Result {
    let dir = tempfile::tempdir()?;
    let config = crate::common::migration_config(dir.path(), "pipeline.toml");
    let config = config.to_str().unwrap();
    let seeded = portcullis(&[
        "seed", "--config", config, "--users", "150", "--logins", "30",
    ]);
    assert!(
        seeded.status.success(),
        "{}",
        String::from_utf8_lossy(&seeded.stderr)
    );
    assert!(String::from_utf8_lossy(&seeded.stdout).contains("seeded 150 people"));

    let logins = dir.path().join("logins");
    let run = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "run",
            "--config",
            config,
            "--login",
            logins.to_str().unwrap(),
            "--compact",
            "--summary",
        ])
        .env("PORTCULLIS_LOG", "portcullis=trace")
        .output()?;
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let stdout = String::from_utf8(run.stdout)?;
    let verdicts: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(serde_json::from_str)
        .collect::<std::result::Result<_, _>>()?;
    assert_eq!(verdicts.len(), 30);
    assert!(
        stdout
            .lines()
            .last()
            .unwrap()
            .starts_with("summary: 30 logins:"),
        "{stdout}"
    );

    // Record one login, then replay the recording.
    let first = logins.join("login-00000.json");
    let recording = dir.path().join("rec.json");
    let recorded = portcullis(&[
        "run",
        "--config",
        config,
        "--login",
        first.to_str().unwrap(),
        "--record",
        recording.to_str().unwrap(),
        "--dry-run",
    ]);
    assert!(
        recorded.status.success(),
        "{}",
        String::from_utf8_lossy(&recorded.stderr)
    );
    let replayed = portcullis(&["replay", recording.to_str().unwrap(), "--config", config]);
    assert!(
        replayed.status.success(),
        "{}",
        String::from_utf8_lossy(&replayed.stdout)
    );
    assert!(String::from_utf8_lossy(&replayed.stdout).contains("1 passed, 0 failed"));

    // No password, and no full email, in anything the runs printed or wrote.
    let mut everything = format!("{stdout}{}", String::from_utf8_lossy(&run.stderr));
    everything.push_str(&std::fs::read_to_string(&recording)?);
    everything.push_str(&String::from_utf8_lossy(&recorded.stdout));
    everything.push_str(&String::from_utf8_lossy(&recorded.stderr));
    assert!(
        everything.contains("TRACE") || everything.contains("DEBUG"),
        "trace logging was on"
    );
    // Nor a password in the stores: the directory (its file after a checkpoint and its
    // WAL) and the legacy stores.
    let exposure = crate::common::Exposure::new()
        .databases_under(dir.path())
        .text("what the runs printed", &everything);
    for entry in std::fs::read_dir(&logins)? {
        let login: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(entry?.path())?)?;
        let password = login["password"].as_str().unwrap();
        let email = login["email"].as_str().unwrap();
        exposure.assert_absent("password", password);
        assert!(!everything.contains(email), "the email {email:?} leaked");
    }
    Ok(())
}

#[test]
fn bad_input_is_one_line_and_exit_2() -> Result {
    let dir = tempfile::tempdir()?;
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let good_login = &write(
        "good.json",
        r#"{"transaction_id": "t", "time_ms": 1, "connection": "c", "client_id": "a", "email": "a@example.com"}"#,
    );
    let truncated = write("truncated.json", r#"{"transaction_id": "t", "time_ms": 1"#);
    let incomplete = write(
        "incomplete.json",
        r#"{"transaction_id": "t", "time_ms": 1}"#,
    );
    let unknown_key = write(
        "unknown.toml",
        &format!("{}colour = 1\n", rule("r", "add-claim", "")),
    );
    let bad_component = write(
        "bad.toml",
        "[[rule]]\nname = \"r\"\ncomponent = \"nothing-here.wasm\"\n",
    );
    let junk = write("junk.wasm", "not wasm");
    let junk_component = write(
        "junk.toml",
        &format!("[[rule]]\nname = \"r\"\ncomponent = \"{junk}\"\n"),
    );
    let ungranted = write("ungranted.toml", &rule("sneaky", "ungranted-import", ""));

    let cases: [(&[&str], &str); 8] = [
        (
            &[
                "run",
                "--config",
                "fixtures/pipeline.toml",
                "--login",
                &truncated,
            ],
            "truncated.json",
        ),
        (
            &[
                "run",
                "--config",
                "fixtures/pipeline.toml",
                "--login",
                &incomplete,
            ],
            "missing field",
        ),
        (
            &[
                "run",
                "--config",
                "fixtures/pipeline.toml",
                "--login",
                "/nonexistent.json",
            ],
            "/nonexistent.json",
        ),
        (
            &[
                "run",
                "--config",
                "/nonexistent.toml",
                "--login",
                good_login,
            ],
            "/nonexistent.toml",
        ),
        (
            &["run", "--config", &unknown_key, "--login", good_login],
            "unknown field `colour`",
        ),
        (&["check", "--config", &bad_component], "nothing-here.wasm"),
        (
            &["check", "--config", &junk_component],
            "not a valid WebAssembly component",
        ),
        (
            &["check", "--config", &ungranted],
            "\"sneaky\" imports the `legacy` capability",
        ),
    ];
    for (args, mentions) in cases {
        assert_bad_input(&portcullis(args), mentions);
    }
    Ok(())
}

#[test]
fn bench_counts_instructions_per_evaluation() {
    // callgrind counts the same on a busy machine; the migrated path runs four
    // sandboxes, so one evaluation is tens of thousands of instructions at least.
    if Command::new("valgrind").arg("--version").output().is_err() {
        crate::common::not_run("valgrind is not installed");
        return;
    }
    let output = portcullis(&[
        "bench",
        "--config",
        "fixtures/pipeline.toml",
        "--recording",
        "fixtures/recordings/already-migrated.json",
        "--instructions",
        "--json",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let count = report[0]["instructions_per_evaluation"].as_u64().unwrap();
    assert!(
        (10_000..50_000_000).contains(&count),
        "{count} instructions per evaluation"
    );
}

#[test]
fn keys_rotate_reseals_every_phone_and_is_safe_to_run_again() -> Result {
    use portcullis::mfa::sealed::KeyRing;
    use portcullis::model::{FactorKind, FactorProvider, FactorStatus};
    use portcullis::state::SqliteState;
    use portcullis::state::factors::Factor;
    use portcullis::state::factors::FactorStore;
    const OLD: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const NEW: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
    const GONE: &str = "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=";
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("directory.db");
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        format!(
            "[[rule]]\nname = \"r\"\ncomponent = \"r.wasm\"\n[state]\ndirectory = \"sqlite://{}\"\n\
             [mfa]\nkeys_env = \"PC_TEST_ROTATE_KEYS\"\n",
            db.display()
        ),
    )?;
    let state = SqliteState::open(&db)?;
    let old = KeyRing::parse(&format!("old:{OLD}"))?;
    let gone = KeyRing::parse(&format!("gone:{GONE}"))?;
    for i in 0..4 {
        let user = format!("usr_{i}");
        crate::common::create_user(&state, &user, &format!("u{i}@example.com"))?;
        let factor = format!("fac_{i}");
        let phone = format!("+1415555267{i}");
        // The last one was sealed with a key that is no longer anywhere.
        let ring = if i == 3 { &gone } else { &old };
        state.put_factor(&Factor {
            id: factor.clone(),
            user_id: user.clone(),
            kind: FactorKind::Sms,
            provider: FactorProvider::Verify,
            legacy_provider_user_id: None,
            phone: Some(ring.seal(&phone, &user, &factor)),
            status: FactorStatus::Active,
            enrolled_at_ms: 1,
            updated_at_ms: 1,
            last_used_ms: None,
            cohort: None,
            reverted: false,
        })?;
    }
    let rotate = || {
        Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["keys", "rotate", "--chunk", "2", "--config"])
            .arg(&config)
            .env("PC_TEST_ROTATE_KEYS", format!("new:{NEW},old:{OLD}"))
            .output()
            .unwrap()
    };
    let first = rotate();
    // Done, with a failure: one phone could not be opened.
    assert_eq!(
        first.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        String::from_utf8_lossy(&first.stderr).contains("1 phone number(s) could not be re-sealed")
    );
    let report: serde_json::Value = serde_json::from_slice(&first.stdout)?;
    assert_eq!(report["resealed"], 3, "{report}");
    assert_eq!(report["failed"]["key not in the ring"], 1, "{report}");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&first.stdout),
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(!output.contains("41555526") && !output.contains(NEW) && !output.contains(OLD));
    let new = KeyRing::parse(&format!("new:{NEW}"))?;
    for i in 0..3 {
        let factor = &state.factors_of(&format!("usr_{i}"))?[0];
        let sealed = factor.phone.as_ref().unwrap();
        assert_eq!(sealed.key_id, "new");
        let phone = new.open(sealed, &format!("usr_{i}"), &format!("fac_{i}"))?;
        assert_eq!(&*phone, &format!("+1415555267{i}"));
    }
    // Again: nothing left to do but the one that cannot be opened.
    let second: serde_json::Value = serde_json::from_slice(&rotate().stdout)?;
    assert_eq!(second["resealed"], 0, "{second}");
    assert_eq!(second["failed"]["key not in the ring"], 1, "{second}");
    Ok(())
}

// Exit codes, the same for every command (README, "Exit codes"): 0 done, 1 done with
// failures or differences, 2 bad input or configuration.

/// `portcullis ARGS --config CONFIG`.
fn with_config(config: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("NO_COLOR", "1")
        .output()
        .expect("the binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_usage_error_is_exit_2_and_help_is_exit_0() {
    let missing_flag = portcullis(&["run", "--config", "fixtures/pipeline.toml"]);
    assert_eq!(missing_flag.status.code(), Some(2));
    assert!(
        stderr(&missing_flag).contains("--login"),
        "{}",
        stderr(&missing_flag)
    );
    assert_eq!(portcullis(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(
        portcullis(&["mfa", "revert", "--config", "x"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(portcullis(&["run", "--help"]).status.code(), Some(0));
}

/// A reader that goes away (`| head`) ends a command quietly with a shell's SIGPIPE
/// code, never a panic (exit 101 and a backtrace, as a newcomer saw).
#[test]
fn a_closed_output_pipe_ends_a_command_quietly() -> Result {
    // The read end is closed before the command starts: its first write fails.
    let (reader, writer) = std::io::pipe()?;
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config", "fixtures/pipeline.toml"])
        .current_dir(workspace_root())
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()?;
    assert_eq!(out.status.code(), Some(141), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    Ok(())
}

/// `check --serve` names every support agent whose token is missing, not the first.
#[test]
fn check_names_every_missing_agent_token() {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "check",
            "--serve",
            "--config",
            "fixtures/pipeline-recovery.toml",
        ])
        .current_dir(workspace_root())
        .env_remove("PORTCULLIS_AGENT_ALICE_TOKEN")
        .env_remove("PORTCULLIS_AGENT_BOB_TOKEN")
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(
        said.contains("PORTCULLIS_AGENT_ALICE_TOKEN")
            && said.contains("PORTCULLIS_AGENT_BOB_TOKEN"),
        "{said}"
    );
}

#[test]
fn completions_and_the_config_from_the_environment() {
    let bash = portcullis(&["completions", "bash"]);
    assert!(bash.status.success(), "{}", stderr(&bash));
    let script = String::from_utf8_lossy(&bash.stdout);
    assert!(
        script.contains("_portcullis") && script.contains("backfill-ids"),
        "{script}"
    );
    assert_eq!(portcullis(&["completions", "tcsh"]).status.code(), Some(2));

    // PORTCULLIS_CONFIG stands in for --config.
    let (_dir, config) = crate::common::seeded_dir(20, 1);
    let check = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("check")
        .current_dir(workspace_root())
        .env("PORTCULLIS_CONFIG", &config)
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(1), "{}", stderr(&check));
    assert!(String::from_utf8_lossy(&check.stdout).contains("4 rule(s), "));

    // Without either, the usage error says the variable would do.
    let neither = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("check")
        .current_dir(workspace_root())
        .env_remove("PORTCULLIS_CONFIG")
        .output()
        .unwrap();
    assert_eq!(neither.status.code(), Some(2), "{}", stderr(&neither));
    assert!(
        stderr(&neither).contains("--config") && stderr(&neither).contains("PORTCULLIS_CONFIG"),
        "{}",
        stderr(&neither)
    );
    // Another missing flag gets no such hint, though the usage line names --config.
    let no_token = portcullis(&[
        "continue",
        "--config",
        "fixtures/pipeline.toml",
        "--transaction-id",
        "tx-x",
        "--result",
        "{}",
    ]);
    assert_eq!(no_token.status.code(), Some(2));
    assert!(
        stderr(&no_token).contains("--token") && !stderr(&no_token).contains("PORTCULLIS_CONFIG"),
        "{}",
        stderr(&no_token)
    );
}

#[test]
fn a_backfill_whose_users_all_failed_exits_1_and_a_revert_of_no_one_does_not_exit_0() -> Result {
    let sim = Simulator::start(&["--seed-legacy", "500"]);
    let dir = tempfile::tempdir()?;
    let config = mfa_config(dir.path(), &sim);
    let seeded = with_config(
        &config,
        &["seed", "--users", "30", "--logins", "1", "--sms-users", "5"],
    );
    assert!(seeded.status.success(), "{}", stderr(&seeded));

    // The old provider is down: every export fails.
    sim.send("PUT", "/sim/faults", serde_json::json!({"legacy": "down"}));
    let backfill = with_config(&config, &["mfa", "backfill", "--rate", "0"]);
    assert_eq!(backfill.status.code(), Some(1), "{}", stderr(&backfill));
    let report: serde_json::Value = serde_json::from_slice(&backfill.stdout)?;
    let failed: u64 = report["failed"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(serde_json::Value::as_u64)
        .sum();
    // The five, and the seeded users whose factor is still at the old provider.
    let taken_up = report["taken_up"].as_u64().unwrap();
    assert!(taken_up >= 5 && failed == taken_up, "{report}");
    assert!(
        stderr(&backfill).contains(&format!("{taken_up} of {taken_up} users failed")),
        "{}",
        stderr(&backfill)
    );
    // Without --retry-failed, nothing is left to take up: done, nothing failed.
    let again = with_config(&config, &["mfa", "backfill", "--rate", "0"]);
    assert!(again.status.success(), "{}", stderr(&again));

    // Someone the directory does not know: bad input.
    assert_bad_input(
        &with_config(&config, &["mfa", "revert", "--user", "usr_nobody"]),
        "usr_nobody",
    );
    assert_bad_input(
        &with_config(&config, &["mfa", "revert", "--cohort", "nobody"]),
        "\"nobody\"",
    );
    let revert = ["mfa", "revert", "--user", "usr_sms000000", "--actor", "t"];
    let first = with_config(&config, &revert);
    assert!(first.status.success(), "{}", stderr(&first));
    // Again: nothing left to revert.
    let second = with_config(&config, &revert);
    assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
    let answer: serde_json::Value = serde_json::from_slice(&second.stdout)?;
    assert_eq!(answer["reverted"], 0);
    assert!(
        stderr(&second).contains("nothing reverted"),
        "{}",
        stderr(&second)
    );
    Ok(())
}

#[test]
fn audit_verify_with_a_malformed_head_says_not_ok_and_exits_2() -> Result {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("directory.db");
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        format!(
            "[[rule]]\nname = \"r\"\ncomponent = \"r.wasm\"\n[state]\ndirectory = \"sqlite://{}\"\n",
            db.display()
        ),
    )?;
    drop(portcullis::state::SqliteState::open(&db)?);

    let malformed = with_config(&config, &["audit", "verify", "--expect-head", "abc"]);
    assert_eq!(malformed.status.code(), Some(2), "{}", stderr(&malformed));
    let report: serde_json::Value = serde_json::from_slice(&malformed.stdout)?;
    assert_eq!(report["ok"], false, "{report}");
    assert!(
        report["problem"]
            .as_str()
            .unwrap()
            .contains("--expect-head"),
        "{report}"
    );
    assert!(
        stderr(&malformed).contains("SEQ:HASH"),
        "{}",
        stderr(&malformed)
    );

    // The empty chain holds …
    let empty = with_config(&config, &["audit", "verify"]);
    assert!(empty.status.success(), "{}", stderr(&empty));
    // … but not through a head it never had: a difference, exit 1.
    let head = format!("5:{}", "ab".repeat(32));
    let cut = with_config(&config, &["audit", "verify", "--expect-head", &head]);
    assert_eq!(cut.status.code(), Some(1), "{}", stderr(&cut));
    let report: serde_json::Value = serde_json::from_slice(&cut.stdout)?;
    assert_eq!(report["ok"], false, "{report}");
    Ok(())
}

#[test]
fn replay_exits_2_for_what_is_not_a_recording_and_1_for_a_changed_verdict() -> Result {
    assert_bad_input(
        &portcullis(&["replay", "/nonexistent/recordings/"]),
        "/nonexistent/recordings",
    );

    let dir = tempfile::tempdir()?;
    let junk = dir.path().join("junk.json");
    std::fs::write(&junk, "{}")?;
    let unreadable = portcullis(&["replay", junk.to_str().unwrap()]);
    assert_eq!(unreadable.status.code(), Some(2), "{}", stderr(&unreadable));
    assert!(stderr(&unreadable).contains("could not be replayed"));

    // The recorded verdict was another: the rules' verdict differs.
    let mut recording: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        workspace_root().join("fixtures/recordings/already-migrated.json"),
    )?)?;
    recording["steps"][0]["expect"]["decision"] =
        serde_json::json!({"type": "challenge", "kind": "password_reset"});
    let changed = dir.path().join("changed.json");
    std::fs::write(&changed, recording.to_string())?;
    let differs = portcullis(&["replay", changed.to_str().unwrap()]);
    assert_eq!(differs.status.code(), Some(1), "{}", stderr(&differs));
    assert!(String::from_utf8_lossy(&differs.stdout).contains("0 passed, 1 failed"));
    Ok(())
}

/// How many rows an SQLite table (and condition) holds.
fn count_rows(db: &std::path::Path, table: &str) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

/// The products' legacy stores of `mfa_config` in `dir`, empty: the tests about the
/// directory have them there (without them `check` is exit 2 for `run`'s sake).
fn empty_legacy_stores(dir: &std::path::Path) -> Result {
    std::fs::create_dir_all(dir.join("mfa"))?;
    for product in ["collect", "paste", "transfer"] {
        rusqlite::Connection::open(dir.join(format!("mfa/legacy-{product}.db")))?;
    }
    Ok(())
}

#[test]
fn reading_commands_never_create_a_store_and_check_concludes_nothing_from_one_that_is_not_there()
-> Result {
    let sim = Simulator::start(&[]);
    let dir = tempfile::tempdir()?;
    let config = mfa_config(dir.path(), &sim);
    // A typo in the path: the directory's folder is not there either.
    let text =
        std::fs::read_to_string(&config)?.replace("/mfa/directory.db", "/mfa-typo/directory.db");
    std::fs::write(&config, text)?;
    let missing = dir.path().join("mfa-typo/directory.db");
    empty_legacy_stores(dir.path())?;

    let check = with_config(&config, &["check"]);
    assert_eq!(check.status.code(), Some(1), "{}", stderr(&check));
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(!out.contains("no longer needed"), "{out}");
    assert!(
        stderr(&check).contains(&format!(
            "there is no directory store at {}: `serve` and `run` would create it empty",
            missing.display()
        )),
        "{}",
        stderr(&check)
    );
    for args in [
        &["mfa", "status"][..],
        &["mfa", "revert", "--user", "usr_x"],
        &["audit", "verify"],
        &["keys", "rotate"],
        &["outbox", "run", "--until-empty"],
    ] {
        let output = with_config(&config, args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(&format!("there is no store at {}", missing.display())),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    let dry = with_config(
        &config,
        &[
            "run",
            "--dry-run",
            "--login",
            "fixtures/does-not-matter.json",
        ],
    );
    assert_eq!(dry.status.code(), Some(2), "{}", stderr(&dry));
    assert!(
        !dir.path().join("mfa-typo").exists(),
        "a reading command created the store's folder"
    );

    // Once the store is there, the conclusion says what it looked at.
    let fixed = dir.path().join("mfa-typo");
    std::fs::create_dir(&fixed)?;
    drop(portcullis::state::SqliteState::open(&missing)?);
    let check = with_config(&config, &["check"]);
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(
        out.contains(
            "the old SMS provider is no longer needed: none of the 0 SMS factor(s) in sqlite://"
        ) && out.contains("mfa-typo/directory.db"),
        "{out}{}",
        stderr(&check)
    );
    Ok(())
}

#[test]
fn check_finds_what_run_and_serve_would_refuse() -> Result {
    let sim = Simulator::start(&["--seed-legacy", "500"]);
    let dir = tempfile::tempdir()?;
    let config = mfa_config(dir.path(), &sim);
    let seeded = with_config(
        &config,
        &["seed", "--users", "30", "--logins", "1", "--sms-users", "5"],
    );
    assert!(seeded.status.success(), "{}", stderr(&seeded));
    let original = std::fs::read_to_string(&config)?;
    let with = |text: &str, args: &[&str]| {
        std::fs::write(&config, text).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command
            .args(args)
            .arg("--config")
            .arg(&config)
            .env("NO_COLOR", "1")
            .env_remove("PORTCULLIS_TEST_UNSET")
            .env("PORTCULLIS_GATEWAY_TOKEN", "t".repeat(40));
        command.output().unwrap()
    };

    // As seeded: the old provider is still needed (a warning).
    let check = with(&original, &["check"]);
    assert_eq!(check.status.code(), Some(1), "{}", stderr(&check));
    let said = stderr(&check);
    assert!(said.contains("still depend on the old provider"), "{said}");
    assert!(!said.contains("[outbox.endpoints]"), "{said}");
    // Without the products' outbox endpoints (the fixture names the simulator's): a
    // warning; an error for serve.
    let no_endpoints: String = original
        .lines()
        .filter(|line| !line.contains("/products/"))
        .map(|line| format!("{line}\n"))
        .collect();
    let check = with(&no_endpoints, &["check"]);
    assert_eq!(check.status.code(), Some(1), "{}", stderr(&check));
    assert!(
        stderr(&check)
            .contains("[outbox.endpoints] names no endpoint for collect, paste, transfer"),
        "{}",
        stderr(&check)
    );
    assert_eq!(
        with(&no_endpoints, &["check", "--serve"]).status.code(),
        Some(2)
    );

    // Each of these makes `run` refuse the config; `check` finds it first.
    let no_legacy = {
        let start = original.find("[mfa.legacy_sms]").unwrap();
        let end = original.find("[mfa.verify]").unwrap();
        format!("{}{}", &original[..start], &original[end..])
    };
    let cases = [
        (
            original.replace(
                "key = \"demo-only-resume-key-do-not-deploy-0001\"",
                "key_env = \"PORTCULLIS_TEST_UNSET\"",
            ),
            "key_env names PORTCULLIS_TEST_UNSET, which is not set",
        ),
        (
            original.replace(
                "api_key_file = \"legacy.key\"",
                "api_key_env = \"PORTCULLIS_TEST_UNSET\"",
            ),
            "the environment variable PORTCULLIS_TEST_UNSET is not set",
        ),
        (no_legacy, "put [mfa.legacy_sms] back"),
    ];
    let login = dir.path().join("mfa/logins");
    for (text, finding) in &cases {
        let check = with(text, &["check"]);
        assert_eq!(check.status.code(), Some(2), "{}", stderr(&check));
        assert!(stderr(&check).contains(finding), "{}", stderr(&check));
        let run = with(text, &["run", "--login", login.to_str().unwrap()]);
        assert_eq!(
            run.status.code(),
            Some(2),
            "run accepted what check refused"
        );
    }

    // No caller: a warning for `run`, an error for `serve`.
    let callers = original.find("[[server.caller]]").unwrap();
    let rules = original.find("[[rule]]").unwrap();
    let no_caller = format!("{}{}", &original[..callers], &original[rules..]);
    let check = with(&no_caller, &["check"]);
    assert_eq!(check.status.code(), Some(1), "{}", stderr(&check));
    assert!(stderr(&check).contains("there is no [[server.caller]]"));
    let check = with(&no_caller, &["check", "--serve"]);
    assert_eq!(check.status.code(), Some(2), "{}", stderr(&check));
    assert!(stderr(&check).contains("error: there is no [[server.caller]]"));
    Ok(())
}

#[test]
fn run_now_stamps_stale_logins_and_a_batch_goes_on_past_a_refused_one() -> Result {
    let dir = tempfile::tempdir()?;
    let config = crate::common::migration_config(dir.path(), "pipeline.toml");
    let seeded = with_config(&config, &["seed", "--users", "50", "--logins", "3"]);
    assert!(seeded.status.success(), "{}", stderr(&seeded));
    let logins = dir.path().join("logins");
    // One login written long ago.
    let files = crate::common::login_files(dir.path());
    let mut stale: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&files[1])?)?;
    stale["time_ms"] = serde_json::json!(1_000_000);
    std::fs::write(&files[1], stale.to_string())?;

    let run = with_config(
        &config,
        &[
            "run",
            "--dry-run",
            "--compact",
            "--summary",
            "--login",
            logins.to_str().unwrap(),
        ],
    );
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(
        out.contains("summary: 2 logins") && out.contains("1 refused"),
        "{out}"
    );
    let named = files[1].display().to_string();
    assert!(
        stderr(&run).contains(&format!("refused {named}: invalid login: time_ms is"))
            && stderr(&run).contains("`run --now`"),
        "{}",
        stderr(&run)
    );
    assert!(stderr(&run).contains(&format!("1 of 3 login(s) refused: {named}")));

    let now = with_config(
        &config,
        &[
            "run",
            "--now",
            "--dry-run",
            "--compact",
            "--summary",
            "--login",
            logins.to_str().unwrap(),
        ],
    );
    assert!(now.status.success(), "{}", stderr(&now));
    assert!(String::from_utf8_lossy(&now.stdout).contains("summary: 3 logins"));
    Ok(())
}

#[test]
fn a_dry_run_sends_no_code_and_issues_no_resume_token() -> Result {
    let sim = Simulator::start(&["--seed-legacy", "500", "--internal", "30"]);
    let dir = tempfile::tempdir()?;
    let config = mfa_config(dir.path(), &sim);
    let seeded = with_config(&config, &["seed", "--users", "200", "--logins", "80"]);
    assert!(seeded.status.success(), "{}", stderr(&seeded));
    let logins = dir.path().join("mfa/logins");
    let db = dir.path().join("mfa/directory.db");
    let args = [
        "run",
        "--compact",
        "--summary",
        "--login",
        logins.to_str().unwrap(),
    ];
    let sent = || sim.get("/sim/stats")["sms_sent"].as_u64().unwrap();

    let dry = with_config(&config, &[&args[..], &["--dry-run"]].concat());
    assert!(dry.status.success(), "{}", stderr(&dry));
    let out = String::from_utf8_lossy(&dry.stdout);
    assert!(out.contains("\"type\":\"challenge\""), "{out}");
    assert!(!out.contains("resume_token"), "{out}");
    assert!(
        stderr(&dry).contains("would send a code for factor"),
        "{}",
        stderr(&dry)
    );
    assert_eq!(sent(), 0, "a dry run texted a code");
    assert_eq!(count_rows(&db, "resume_tokens"), 0);

    // The same batch for real does both.
    let real = with_config(&config, &args);
    assert!(real.status.success(), "{}", stderr(&real));
    assert!(sent() > 0);
    assert!(count_rows(&db, "resume_tokens") > 0);
    // The summary says what every challenge was: its kinds add up to the count.
    let out = String::from_utf8_lossy(&real.stdout);
    let line = out.lines().find(|l| l.starts_with("summary: ")).unwrap();
    let (before, kinds) = line.split_once(" challenged (").expect(line);
    let challenged: usize = before.rsplit(' ').next().unwrap().parse()?;
    let kinds = kinds.split([';', ')']).next().unwrap();
    let listed: usize = kinds
        .split(", ")
        .map(|k| k.rsplit(' ').next().unwrap().parse::<usize>().unwrap())
        .sum();
    assert!(challenged > 0 && listed == challenged, "{line}");
    assert!(
        kinds.contains("mfa ") && line.contains("SMS codes sent via"),
        "{line}"
    );
    Ok(())
}

#[test]
fn errors_say_each_cause_once_and_what_to_do() -> Result {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        "[[rule]]\nname = \"r\"\ncomponent = \"../target/rules/rule_not_built.wasm\"\n",
    )?;
    let check = with_config(&config, &["check"]);
    assert_eq!(check.status.code(), Some(2));
    let said = stderr(&check);
    assert_eq!(
        said.matches("No such file or directory").count(),
        1,
        "{said}"
    );
    assert!(said.contains("cargo xtask build-rules"), "{said}");

    let continued = portcullis(&[
        "continue",
        "--config",
        "fixtures/pipeline.toml",
        "--token",
        "junk",
        "--transaction-id",
        "t",
        "--result",
        "{}",
    ]);
    assert_eq!(continued.status.code(), Some(2), "{}", stderr(&continued));
    assert_eq!(
        stderr(&continued).matches("malformed").count(),
        1,
        "{}",
        stderr(&continued)
    );
    Ok(())
}

#[test]
fn seed_refuses_stores_holding_rows_it_did_not_make_unless_forced() -> Result {
    let dir = tempfile::tempdir()?;
    let config = crate::common::migration_config(dir.path(), "pipeline.toml");
    // Products on each backend there is a server for (SQLite for the others).
    let mut text = std::fs::read_to_string(&config)?;
    let d = dir.path().display();
    let postgres = crate::postgres::fresh_database("seedguard");
    let mysql = crate::legacy::fresh_mysql("seedguard");
    if let Some(url) = &postgres {
        text = text.replace(&format!("sqlite://{d}/legacy-paste.db"), url);
    }
    if let Some(url) = &mysql {
        text = text.replace(&format!("sqlite://{d}/legacy-collect.db"), url);
    }
    std::fs::write(&config, text)?;
    let seed = |force: bool| {
        let mut args = vec!["seed", "--users", "40", "--logins", "2"];
        if force {
            args.push("--force");
        }
        with_config(&config, &args)
    };
    let first = seed(false);
    assert!(first.status.success(), "{}", stderr(&first));
    // Seeding again over its own rows needs no --force.
    assert!(seed(false).status.success());

    let refused = |what: &str| {
        let again = seed(false);
        assert_eq!(again.status.code(), Some(2), "{what}: {}", stderr(&again));
        assert!(
            stderr(&again).contains("rows it did not make") && stderr(&again).contains("--force"),
            "{what}: {}",
            stderr(&again)
        );
        stderr(&again)
    };
    // A directory user with a real address.
    let directory = dir.path().join("directory.db");
    let real = "UPDATE users SET email = 'ana@realmail.test', email_norm = 'ana@realmail.test' WHERE id = (SELECT MIN(id) FROM users)";
    rusqlite::Connection::open(&directory)?.execute(real, [])?;
    assert!(refused("directory").contains("1 directory user(s)"));
    assert_eq!(
        count_rows(&directory, "users WHERE email_norm = 'ana@realmail.test'"),
        1,
        "the refused seed deleted the user"
    );
    rusqlite::Connection::open(&directory)?.execute(
        "UPDATE users SET email = 'ana@example.com', email_norm = 'ana@example.com' WHERE email_norm = 'ana@realmail.test'",
        [],
    )?;

    // An SQLite file at a product's path that is some other database.
    let transfer = dir.path().join("legacy-transfer.db");
    std::fs::remove_file(&transfer)?;
    rusqlite::Connection::open(&transfer)?.execute("CREATE TABLE orders (id INTEGER)", [])?;
    assert!(refused("sqlite").contains("holds tables seed does not make (orders)"));
    assert!(transfer.exists());
    std::fs::remove_file(&transfer)?;

    let foreign = "INSERT INTO {table} (legacy_id, email, email_norm, email_verified, created_at_ms, profile) \
                   VALUES ('real-1', 'Bo@RealMail.test', 'bo@realmail.test', TRUE, 0, '{}')";
    if let Some(url) = &postgres {
        let mut client = postgres::Client::connect(url, postgres::NoTls)?;
        client.batch_execute(&foreign.replace("{table}", "legacy_paste_accounts"))?;
        assert!(refused("postgres").contains("legacy_paste_accounts"));
        let left: i64 = client
            .query_one(
                "SELECT COUNT(*) FROM legacy_paste_accounts WHERE legacy_id = 'real-1'",
                &[],
            )?
            .get(0);
        assert_eq!(left, 1, "the refused seed deleted the account");
    } else {
        crate::common::not_run("PORTCULLIS_TEST_POSTGRES is not set: seed's guard on PostgreSQL");
    }
    if let Some(url) = &mysql {
        use mysql::prelude::Queryable;
        let mut conn = mysql::Conn::new(mysql::Opts::from_url(url)?)?;
        conn.query_drop(foreign.replace("{table}", "legacy_collect_accounts"))?;
        assert!(refused("mysql").contains("legacy_collect_accounts"));
        let left: Option<i64> = conn.query_first(
            "SELECT COUNT(*) FROM legacy_collect_accounts WHERE legacy_id = 'real-1'",
        )?;
        assert_eq!(left, Some(1), "the refused seed deleted the account");
    } else {
        crate::common::not_run("PORTCULLIS_TEST_MYSQL is not set: seed's guard on MariaDB");
    }

    // --force replaces them.
    let forced = seed(true);
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert!(seed(false).status.success(), "{}", stderr(&seed(false)));
    Ok(())
}

#[test]
fn check_and_mfa_status_read_a_postgres_directory() -> Result {
    let Some(url) = crate::postgres::fresh_database("checkpg") else {
        crate::common::not_run("PORTCULLIS_TEST_POSTGRES is not set");
        return Ok(());
    };
    let sim = Simulator::start(&[]);
    let dir = tempfile::tempdir()?;
    let config = mfa_config(dir.path(), &sim);
    let text = std::fs::read_to_string(&config)?.replace(
        &format!("sqlite://{}/mfa/directory.db", dir.path().display()),
        &url,
    );
    std::fs::write(&config, text)?;
    empty_legacy_stores(dir.path())?;

    let check = with_config(&config, &["check"]);
    assert_ne!(check.status.code(), Some(2), "{}", stderr(&check));
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(
        out.contains("the old SMS provider is no longer needed: none of the 0 SMS factor(s) in postgres://…@127.0.0.1"),
        "{out}{}",
        stderr(&check)
    );
    assert!(!stderr(&check).contains("there is no directory store"));
    let status = with_config(&config, &["mfa", "status"]);
    assert!(status.status.success(), "{}", stderr(&status));
    Ok(())
}

/// Logs: `PORTCULLIS_LOG`, else `RUST_LOG`, else warnings; no colour codes when stderr
/// is not a terminal (a newcomer's redirected log was full of them).
#[test]
fn logs_honour_rust_log_and_carry_no_colour_into_a_pipe() -> Result {
    let with = |vars: &[(&str, &str)]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command
            .current_dir(workspace_root())
            .args(["check", "--config", "fixtures/pipeline.toml"])
            .env_remove("PORTCULLIS_LOG")
            .env_remove("RUST_LOG");
        for (k, v) in vars {
            command.env(k, v);
        }
        let out = command.output().unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let traced = with(&[("RUST_LOG", "trace")]);
    assert!(
        traced.contains("TRACE") || traced.contains("DEBUG"),
        "RUST_LOG=trace was honoured: {traced}"
    );
    assert!(!traced.contains('\u{1b}'), "no escape codes in a pipe");
    let quiet = with(&[("RUST_LOG", "trace"), ("PORTCULLIS_LOG", "error")]);
    assert!(
        !quiet.contains("TRACE") && !quiet.contains("DEBUG"),
        "PORTCULLIS_LOG wins over RUST_LOG: {quiet}"
    );
    Ok(())
}

/// A reload `serve` did is one line in its log at the default level, saying what it
/// loaded (it said nothing before: reloads logged below the default level).
#[test]
fn serve_logs_a_reload_by_default() -> Result {
    use std::io::BufRead;
    let (_dir, config) = crate::common::seeded_dir(20, 1);
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env("PORTCULLIS_GATEWAY_TOKEN", "t".repeat(40))
        .env_remove("PORTCULLIS_LOG")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line)?;
    assert!(line.starts_with("listening on "), "{line:?}");
    let (lines, logged) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(|l| l.ok())
        {
            let _ = lines.send(line);
        }
    });
    // Without its last rule.
    let text = std::fs::read_to_string(&config)?;
    let last = text.rfind("[[rule]]").unwrap();
    std::fs::write(&config, &text[..last])?;
    // SAFETY: kill(2) on the child this test started and still holds.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGHUP) }, 0);
    let reloaded = (|| loop {
        match logged.recv_timeout(std::time::Duration::from_secs(20)) {
            Ok(line) if line.contains("reloaded") => return Some(line),
            Ok(_) => continue,
            Err(_) => return None,
        }
    })();
    let _ = child.kill();
    let _ = child.wait();
    let reloaded = reloaded.expect("a line saying the pipeline was reloaded");
    assert!(reloaded.contains("INFO"), "{reloaded}");
    assert!(
        reloaded.contains(&format!("pipeline reloaded from {}", config.display()))
            && reloaded
                .contains("3 rule(s) (bulk-imported-skip, migrate-on-login, ownership-check)")
            && reloaded.contains("removed id-propagation"),
        "{reloaded}"
    );
    Ok(())
}

/// `run` with a legacy product store that is not there: exit 2 naming it, as every
/// command that reads a store does (it printed a denial per login and exited 0), and
/// nothing created.
#[test]
fn run_with_a_legacy_store_that_is_not_there_is_exit_2_naming_it() -> Result {
    let dir = tempfile::tempdir()?;
    let config = crate::common::migration_config(dir.path(), "pipeline.toml");
    let seeded = with_config(&config, &["seed", "--users", "20", "--logins", "2"]);
    assert!(seeded.status.success(), "{}", stderr(&seeded));
    let missing = dir.path().join("legacy-collect.db");
    std::fs::remove_file(&missing)?;
    let logins = dir.path().join("logins");
    let logins = logins.to_str().unwrap();
    for args in [
        &["run", "--login", logins][..],
        &["run", "--dry-run", "--login", logins],
    ] {
        let run = with_config(&config, args);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {}", stderr(&run));
        assert!(run.stdout.is_empty(), "{args:?}: no verdict printed");
        assert!(
            stderr(&run).contains(&format!(
                "there is no legacy store for collect at {}",
                missing.display()
            )),
            "{args:?}: {}",
            stderr(&run)
        );
    }
    assert!(!missing.exists(), "run created the store");
    // The preflight finds what `run` refuses.
    let check = with_config(&config, &["check", "--json"]);
    assert_eq!(check.status.code(), Some(2), "{}", stderr(&check));
    let report: serde_json::Value = serde_json::from_slice(&check.stdout)?;
    assert!(
        report["errors"].as_array().unwrap().iter().any(|e| e
            .as_str()
            .unwrap()
            .contains("there is no legacy store for collect")),
        "{report}"
    );
    assert!(!missing.exists(), "check created the store");
    Ok(())
}

/// The leaf commands under `portcullis` (e.g. `mfa status`), from `--help`.
fn leaf_commands(path: &[&str]) -> Vec<Vec<String>> {
    let help = portcullis(&[path, &["--help"]].concat());
    let text = String::from_utf8_lossy(&help.stdout).into_owned();
    let Some(list) = text.split("Commands:\n").nth(1) else {
        return vec![path.iter().map(|s| s.to_string()).collect()];
    };
    let mut leaves = Vec::new();
    for line in list.lines().take_while(|l| l.starts_with("  ")) {
        // A command's line, not a wrapped description's.
        if line[2..].starts_with(' ') {
            continue;
        }
        let name = line.split_whitespace().next().unwrap();
        if name == "help" {
            continue;
        }
        leaves.extend(leaf_commands(&[path, &[name]].concat()));
    }
    leaves
}

/// Every command that prints results takes `--json` (its help lists it, or, for the
/// support console's calls, the help of `support`): text stays the default where a
/// command prints text; the others print JSON either way. `serve` and `completions`
/// print no results. A few commands' `--json` output parses as JSON; `continue` takes
/// `--compact` as `run` does; `support` and `import run` take `--token-env` and
/// `--token-file`.
#[test]
fn every_command_that_prints_results_takes_json() -> Result {
    let leaves = leaf_commands(&[]);
    assert!(leaves.len() >= 20, "{leaves:?}");
    let help = |command: &[String]| {
        let args: Vec<&str> = command.iter().map(String::as_str).collect();
        let out = portcullis(&[&args[..], &["--help"]].concat());
        assert!(out.status.success(), "{command:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut without = Vec::new();
    for command in &leaves {
        if ["serve", "completions"].contains(&command[0].as_str()) {
            continue;
        }
        let listed = help(command).contains("--json")
            || (command.len() > 1 && help(&command[..1]).contains("--json"));
        if !listed {
            without.push(command.join(" "));
        }
    }
    assert!(without.is_empty(), "no --json: {without:?}");
    assert!(help(&["continue".into()]).contains("--compact"));
    for command in [&["support"][..], &["import", "run"]] {
        let command: Vec<String> = command.iter().map(|s| s.to_string()).collect();
        let text = help(&command);
        assert!(
            text.contains("--token-env <NAME>") && text.contains("--token-file <PATH>"),
            "{command:?}: {text}"
        );
    }

    // Their output as JSON.
    let dir = tempfile::tempdir()?;
    let config = crate::common::migration_config(dir.path(), "pipeline.toml");
    let json = |output: &Output| -> serde_json::Value {
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}{}",
                String::from_utf8_lossy(&output.stdout),
                stderr(output)
            )
        })
    };
    let check = json(&with_config(&config, &["check", "--json"]));
    assert_eq!(check["rules"].as_array().unwrap().len(), 4, "{check}");
    assert_eq!(check["rules"][1]["name"], "migrate-on-login");
    assert!(
        check["warnings"][0]
            .as_str()
            .unwrap()
            .contains("there is no directory store"),
        "{check}"
    );
    let seeded = json(&with_config(
        &config,
        &["seed", "--users", "30", "--logins", "4", "--json"],
    ));
    assert_eq!(
        (seeded["people"].as_u64(), seeded["logins"].as_u64()),
        (Some(30), Some(4))
    );
    let logins = dir.path().join("logins");
    let run = with_config(
        &config,
        &[
            "run",
            "--login",
            logins.to_str().unwrap(),
            "--dry-run",
            "--compact",
            "--summary",
            "--json",
        ],
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&run.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 5, "four verdicts and the summary");
    assert_eq!(lines[4]["summary"]["evaluated"], 4, "{}", lines[4]);
    let replay = portcullis(&["replay", "fixtures/recordings", "--json"]);
    let replayed = json(&replay);
    assert_eq!(replayed["failed"], 0, "{replayed}");
    assert!(replayed["passed"].as_u64().unwrap() >= 3, "{replayed}");
    assert_eq!(replayed["recordings"][0]["passed"], true);
    let outbox = json(&with_config(
        &config,
        &["outbox", "run", "--until-empty", "--json"],
    ));
    assert_eq!(outbox["claimed"], 0, "a dry run enqueued nothing: {outbox}");
    Ok(())
}
