//! The `portcullis` binary: exit 0 with JSON for any verdict, exit 2 with one clear
//! line for bad input, never a panic.

use std::process::{Command, Output};

use crate::common::{Result, rule, workspace_root};

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
    let output = portcullis(&["check", "--config", "fixtures/pipeline.toml"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("1. tag-login"), "{stdout}");
    assert!(stdout.contains("grants:  log, config"), "{stdout}");
    assert!(
        stdout.contains("imports: portcullis:rule/log@0.1.0  [capability: log]"),
        "{stdout}"
    );
}

#[test]
fn run_prints_a_verdict_per_login() -> Result {
    let output = portcullis(&[
        "run",
        "--config",
        "fixtures/pipeline.toml",
        "--login",
        "fixtures/logins",
        "--compact",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout)?;
    let verdicts: Vec<serde_json::Value> = stdout
        .lines()
        .map(serde_json::from_str)
        .collect::<std::result::Result<_, _>>()?;
    assert_eq!(
        verdicts.len(),
        std::fs::read_dir(workspace_root().join("fixtures/logins"))?.count()
    );
    for verdict in &verdicts {
        assert_eq!(verdict["decision"]["type"], "allow", "{verdict}");
        assert_eq!(
            verdict["trace"][1]["result"], "fault",
            "the buggy rule fails open: {verdict}"
        );
    }
    assert!(
        !stdout.contains("alice@example.com"),
        "emails are redacted by default"
    );
    assert!(!stdout.contains("correct horse battery staple"));
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
    let good_login = "fixtures/logins/first-login.json";
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
