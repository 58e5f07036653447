//! The commands' work and output: seed, run, record and replay without a secret, keys,\n//! bench, JSON from every command that prints results.

use std::process::{Command, Output};

use crate::common::{Result, Simulator, mfa_config};

use super::{count_rows, leaf_commands, portcullis, stderr, with_config};

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
