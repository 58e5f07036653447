//! Exit codes and errors: bad input is one line and exit 2, help is exit 0, a closed pipe\n//! is quiet, every cause said once with what to do.

use std::process::Command;

use crate::common::{Result, Simulator, mfa_config, rule, workspace_root};

use super::{assert_bad_input, portcullis, stderr, with_config};

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
