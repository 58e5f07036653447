//! `portcullis import run` and `import backfill-ids`: submitting the export, resuming,
//! waiting out limits; the unified ids written back to the products.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use portcullis::PipelineConfig;
use serde_json::Value;
use sha1::Digest as _;

use super::{
    IMPORT_TOKEN, Serve, backfill_ids, directory_emails, export, exported_users, legacy_accounts,
    portcullis, unified_ids, user,
};
use crate::common::{Result, login_files, migration_config, seed_stores};

/// `portcullis import run` against `serve`; its report, or its stderr on failure.
fn import_run(config: &Path, dir: &Path, serve: &Serve, extra: &[&str]) -> (bool, Value, String) {
    std::fs::write(dir.join("run-token"), IMPORT_TOKEN).unwrap();
    let token = dir.join("run-token");
    let mut args = vec![
        "import",
        "run",
        "--config",
        config.to_str().unwrap(),
        "--dir",
        dir.to_str().unwrap(),
        "--target",
        &serve.url,
        "--token-file",
        token.to_str().unwrap(),
        "--poll-ms",
        "20",
        "--retry-after-ms",
        "100",
    ];
    args.extend_from_slice(extra);
    portcullis(&args)
}

#[test]
fn import_run_resumes_after_a_kill_without_submitting_twice_beside_lazy_migration() -> Result {
    let dir = tempfile::tempdir()?;
    let config = migration_config(dir.path(), "pipeline.toml");
    seed_stores(&PipelineConfig::load(&config)?, dir.path(), 200, 120)?;
    let out = dir.path().join("export");
    let exported = export(&config, &out, &["--max-file-kb", "20"])?;
    let serve = Serve::start(dir.path(), &config, "users_per_second = 400");

    // Lazy migration goes on meanwhile: people sign in before their file is imported.
    let mut migrated = 0;
    for (n, file) in login_files(dir.path()).iter().enumerate().take(60) {
        let login: Value = serde_json::from_str(&std::fs::read_to_string(file)?)?;
        let (Some(email), Some(password)) = (login["email"].as_str(), login["password"].as_str())
        else {
            continue;
        };
        let verdict = serve.login(email, password, &format!("tx-lazy-{n}"));
        migrated += usize::from(verdict["applied"]["created_user"] == true);
    }
    assert!(migrated >= 5, "{migrated} migrated lazily");

    // A dry run lists every file and submits none.
    let (ok, dry, _) = import_run(&config, &out, &serve, &["--dry-run"]);
    assert!(ok);
    assert_eq!(
        dry["files_to_submit"].as_array().unwrap().len(),
        exported["files"].as_array().unwrap().len()
    );
    assert_eq!(dry["submissions"], 0);

    // Killed right after the target took the first file, before its job id was written.
    let (ok, _, stderr) = import_run(&config, &out, &serve, &["--abort-after-submissions", "1"]);
    assert!(!ok && stderr.contains("fault injection"), "{stderr}");
    let (ok, report, stderr) = import_run(&config, &out, &serve, &[]);
    assert!(ok, "{stderr}");
    assert_eq!(report["jobs_found_again"], 1, "{report}");
    assert_eq!(
        report["files_completed"],
        exported["files"].as_array().unwrap().len()
    );
    assert_eq!(report["files_failed"], serde_json::json!([]));
    let first = &exported["files"][0]["sha256"];
    let jobs: Vec<Value> = serve
        .get(&format!(
            "/api/v2/jobs?external_id={}",
            first.as_str().unwrap()
        ))
        .json()?;
    assert_eq!(jobs.len(), 1, "the first file was submitted once: {jobs:?}");
    // Those lazy migration took are duplicates, reconciled; everyone else inserted.
    let users = exported["users_exported"].as_u64().unwrap();
    assert_eq!(
        report["inserted"].as_u64().unwrap() + report["duplicates"].as_u64().unwrap(),
        users
    );
    assert!(
        report["duplicates"].as_u64().unwrap() >= migrated as u64,
        "{report}"
    );
    assert_eq!(report["failed_users"], serde_json::json!({}));
    // One directory user per legacy person, no more.
    let people = legacy_accounts(dir.path()).len() as i64;
    let directory: i64 = rusqlite::Connection::open(dir.path().join("directory.db"))?.query_row(
        "SELECT COUNT(*) FROM users",
        [],
        |r| r.get(0),
    )?;
    assert_eq!(directory, people);
    // Errors are kept beside the export (the target forgets them in 24 h).
    assert!(out.join("results").read_dir()?.count() >= 1);

    // Run again: nothing to submit.
    let (ok, again, _) = import_run(&config, &out, &serve, &[]);
    assert!(ok);
    assert_eq!(again["submissions"], 0, "{again}");
    Ok(())
}

/// An export directory made by hand: these files and their manifest.
fn hand_export(dir: &Path, files: &[(&str, Vec<u8>)]) {
    std::fs::create_dir_all(dir).unwrap();
    let mut listed = Vec::new();
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
        listed.push(serde_json::json!({
            "name": name, "users": 1, "bytes": bytes.len(),
            "sha256": hex::encode(sha2::Sha256::digest(bytes)),
        }));
    }
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec(
            &serde_json::json!({"format": "auth0-users-import", "since_ms": 0, "files": listed}),
        )
        .unwrap(),
    )
    .unwrap();
}

#[test]
fn import_run_waits_out_429s_retries_failed_jobs_and_reports_what_it_gave_up() -> Result {
    let dir = tempfile::tempdir()?;
    let config = migration_config(dir.path(), "pipeline.toml");
    let serve = Serve::start(
        dir.path(),
        &config,
        "requests_per_minute = 120\nusers_per_second = 40\nmax_file_kb = 8",
    );
    // Another client spent the budget: the run starts in a 429 storm.
    let mut drained = 0;
    while serve.get("/api/v2/jobs/job_none").status() != 429 {
        drained += 1;
        assert!(drained <= 130, "never rate limited");
    }
    let batch = |from: usize| -> Vec<u8> {
        serde_json::to_vec(
            &(from..from + 12)
                .map(|n| user(&format!("p{n}@example.org")))
                .collect::<Vec<_>>(),
        )
        .unwrap()
    };
    let export = dir.path().join("export");
    hand_export(
        &export,
        &[
            ("users-000001.json", batch(0)),
            ("users-000002.json", batch(100)),
            ("users-000003.json", b"[{\"email\": ".to_vec()),
            (
                "users-000004.json",
                serde_json::to_vec(&vec![user("big@example.org"); 40])?,
            ),
        ],
    );
    let (ok, report, stderr) = import_run(&config, &export, &serve, &["--max-attempts", "2"]);
    assert!(!ok, "two files fail");
    assert!(
        stderr.contains("2 file(s) could not be imported"),
        "{stderr}"
    );
    assert!(
        report["rate_limited"].as_u64().unwrap() >= 1,
        "a 429 storm was met: {report}"
    );
    assert_eq!(report["files_completed"], 2);
    assert_eq!(report["inserted"], 24);
    let failed: BTreeMap<String, String> = report["files_failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().into(),
                f["reason"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(!failed["users-000003.json"].is_empty(), "{failed:?}");
    assert!(failed["users-000004.json"].contains("413"), "{failed:?}");
    // The broken file was tried twice, the big one once. (A submission whose answer
    // was lost in transit counts as an attempt, whether or not the target made a job.)
    let jobs: Vec<Value> = serve
        .get_patiently(&format!(
            "/api/v2/jobs?external_id={}",
            hex::encode(sha2::Sha256::digest(b"[{\"email\": "))
        ))
        .json()?;
    assert!((1..=2).contains(&jobs.len()), "{jobs:?}");
    assert!(jobs.iter().all(|j| j["status"] == "failed"), "{jobs:?}");

    // Given up on: a plain rerun submits nothing; --retry-failed submits those files
    // again, their attempts starting over (a newcomer's file sent to the wrong target
    // once stayed failed for good).
    let (_, again, _) = import_run(&config, &export, &serve, &["--max-attempts", "1"]);
    assert_eq!(again["submissions"], 0, "{again}");
    let (_, retried, _) = import_run(
        &config,
        &export,
        &serve,
        &["--max-attempts", "1", "--retry-failed"],
    );
    assert!(
        retried["submissions"].as_u64() >= Some(2),
        "both given-up files submitted again: {retried}"
    );
    Ok(())
}

/// (product, legacy id) -> unified id, from the products' SQLite files.

#[test]
fn backfill_ids_writes_each_linked_row_once_repairs_pregenerated_ids_and_keeps_conflicts() -> Result
{
    let dir = tempfile::tempdir()?;
    let config = migration_config(dir.path(), "pipeline.toml");
    seed_stores(&PipelineConfig::load(&config)?, dir.path(), 300, 0)?;
    // A product whose table predates the column.
    rusqlite::Connection::open(dir.path().join("legacy-transfer.db"))?
        .execute_batch("ALTER TABLE accounts DROP COLUMN unified_id")?;
    let (ok, _, stderr) = backfill_ids(&config, &["--pregenerate"]);
    assert!(!ok && stderr.contains("--add-column"), "{stderr}");

    // Before the migration: people in several products share an id from their email.
    let (ok, pre, stderr) = backfill_ids(&config, &["--pregenerate", "--add-column"]);
    assert!(ok, "{stderr}");
    assert_eq!(pre["columns_added"], serde_json::json!(["transfer"]));
    let accounts = legacy_accounts(dir.path());
    let shared: usize = accounts
        .values()
        .filter(|a| a.iter().map(|(p, _)| p).collect::<BTreeSet<_>>().len() > 1)
        .map(Vec::len)
        .sum();
    assert_eq!(pre["written"].as_u64().unwrap() as usize, shared, "{pre}");
    for (email, held) in &accounts {
        for (product, legacy_id) in held {
            let id = unified_ids(dir.path(), product)[legacy_id].clone();
            let expected = (held.iter().map(|(p, _)| p).collect::<BTreeSet<_>>().len() > 1)
                .then(|| portcullis::jobs::import::records::user_id_for(email));
            assert_eq!(id, expected, "{product} {legacy_id}");
        }
    }

    // Someone's row holds another person's id: left alone, reported.
    let directory = rusqlite::Connection::open(dir.path().join("directory.db"))?;
    let links: Vec<(String, String, String)> = directory
        .prepare("SELECT provider, provider_user_id, user_id FROM identities")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    assert!(links.len() > 20);
    let (victim_product, victim_id, _) = &links[0];
    rusqlite::Connection::open(dir.path().join(format!("legacy-{victim_product}.db")))?.execute(
        "UPDATE accounts SET unified_id = 'usr_someone_else' WHERE legacy_id = ?1",
        [victim_id],
    )?;

    let (ok, first, stderr) = backfill_ids(&config, &["--rate", "2000"]);
    assert!(ok, "{stderr}");
    assert_eq!(first["rows_seen"].as_u64().unwrap() as usize, links.len());
    assert!(
        first["repaired"].as_u64().unwrap() >= 1,
        "pre-generated ids superseded: {first}"
    );
    assert_eq!(first["conflicts"].as_array().unwrap().len(), 1, "{first}");
    assert_eq!(first["conflicts"][0]["holds"], "usr_someone_else");
    for (product, legacy_id, user_id) in &links[1..] {
        assert_eq!(
            unified_ids(dir.path(), product)[legacy_id].as_deref(),
            Some(user_id.as_str()),
            "{product} {legacy_id}"
        );
    }
    assert_eq!(
        unified_ids(dir.path(), victim_product)[victim_id].as_deref(),
        Some("usr_someone_else")
    );

    // A second run changes nothing.
    let (ok, second, _) = backfill_ids(&config, &[]);
    assert!(ok);
    assert_eq!(second["written"], 0, "{second}");
    assert_eq!(second["repaired"], 0);
    assert_eq!(
        second["unchanged"].as_u64().unwrap() as usize,
        links.len() - 1
    );
    Ok(())
}

#[test]
fn an_incremental_export_holds_only_people_with_an_account_created_since() -> Result {
    let dir = tempfile::tempdir()?;
    let config = migration_config(dir.path(), "pipeline.toml");
    seed_stores(&PipelineConfig::load(&config)?, dir.path(), 200, 0)?;
    // Every account's creation time, by email (spread out: the seed uses one).
    let mut created: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for product in ["paste", "collect", "transfer"] {
        let conn = rusqlite::Connection::open(dir.path().join(format!("legacy-{product}.db")))?;
        conn.execute(
            "UPDATE accounts SET created_at_ms = created_at_ms + (rowid % 97) * 86400000",
            [],
        )?;
        let mut statement = conn.prepare("SELECT email_norm, created_at_ms FROM accounts")?;
        for row in statement.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (email, at) = row?;
            created.entry(email).or_default().push(at);
        }
    }
    let mut times: Vec<i64> = created.values().flatten().copied().collect();
    times.sort_unstable();
    let since = times[times.len() / 2];
    let out = dir.path().join("since");
    export(&config, &out, &["--since", &since.to_string()])?;
    let users = exported_users(&out, 500 * 1024)?;
    let in_directory = directory_emails(dir.path());
    let expected: BTreeSet<&String> = created
        .iter()
        .filter(|(email, at)| !in_directory.contains(*email) && at.iter().any(|t| *t >= since))
        .map(|(email, _)| email)
        .collect();
    assert!(!expected.is_empty() && expected.len() < created.len() - in_directory.len());
    assert_eq!(users.keys().collect::<BTreeSet<_>>(), expected);
    // A person is exported with all their accounts, old ones included.
    for (email, user) in &users {
        assert_eq!(
            user["app_metadata"]["legacy_accounts"]
                .as_array()
                .unwrap()
                .len(),
            created[email].len()
        );
    }
    Ok(())
}

#[test]
fn a_job_running_past_its_time_limit_expires_with_what_it_did() -> Result {
    let dir = tempfile::tempdir()?;
    let config = migration_config(dir.path(), "pipeline.toml");
    let serve = Serve::start(
        dir.path(),
        &config,
        "users_per_second = 10\nmax_job_seconds = 1",
    );
    let users: Vec<Value> = (0..40)
        .map(|n| user(&format!("late{n}@example.org")))
        .collect();
    let job: Value = serve
        .submit(serde_json::to_vec(&users)?, "late", false)
        .json()?;
    let done = serve.finished(job["id"].as_str().unwrap());
    assert_eq!(done["status"], "expired", "{done}");
    let inserted = done["summary"]["inserted"].as_u64().unwrap();
    assert!((5..40).contains(&inserted), "{done}");
    Ok(())
}

/// A target without a users-imports API (here the simulator) answers 404, also when it
/// does so while a large file is still being sent (which the client saw as a broken
/// request: "submitting: request or response body error"). `import run` says so, with
/// the URL, as bad configuration (exit 2), and gives up no file: once --target is
/// right they are submitted.
#[test]
fn import_run_reports_a_target_without_the_api_as_a_404_with_its_url() -> Result {
    let sim = crate::common::Simulator::start(&[]);
    let dir = tempfile::tempdir()?;
    let config = migration_config(dir.path(), "pipeline.toml");
    drop(portcullis::state::SqliteState::open(
        &dir.path().join("directory.db"),
    )?);
    let users = |n: usize, padding: usize| -> Vec<u8> {
        let users: Vec<Value> = (0..n)
            .map(|i| serde_json::json!({"email": format!("u{i}@example.org"), "name": "x".repeat(padding)}))
            .collect();
        serde_json::to_vec(&users).unwrap()
    };
    // A large file (the 404 comes before it is sent), and a small one.
    for (name, file) in [("large", users(3000, 200)), ("small", users(2, 0))] {
        let export = dir.path().join(name);
        hand_export(&export, &[("users-000001.json", file)]);
        let run = |extra: &[&str]| {
            Command::new(env!("CARGO_BIN_EXE_portcullis"))
                .args(["import", "run", "--config"])
                .arg(&config)
                .arg("--dir")
                .arg(&export)
                .args(["--target", &sim.url, "--token-env", "PC_TEST_IMPORT_TOKEN"])
                .args(["--retry-after-ms", "50", "--poll-ms", "20"])
                .args(extra)
                .env("PC_TEST_IMPORT_TOKEN", IMPORT_TOKEN)
                .output()
                .unwrap()
        };
        let output = run(&[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{name}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "the target answered 404 for POST {}/api/v2/jobs/users-imports",
                sim.url
            )),
            "{name}: {stderr}"
        );
        assert!(!stderr.contains(IMPORT_TOKEN));
        let dry = run(&["--dry-run"]);
        let report: Value = serde_json::from_slice(&dry.stdout)?;
        assert_eq!(
            report["files_to_submit"],
            serde_json::json!(["users-000001.json"]),
            "{name}: the file is not given up"
        );
    }
    Ok(())
}
