//! `portcullis check`: the preflight lists what it loads and finds what `run` and
//! `serve` would refuse.

use std::process::Command;

use crate::common::{Result, Simulator, mfa_config, workspace_root};

use super::{empty_legacy_stores, portcullis, stderr, with_config};

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
