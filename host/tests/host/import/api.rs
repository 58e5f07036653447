//! `serve`'s import API: Auth0's job endpoints and limits, and the official client.

use std::collections::BTreeSet;
use std::process::Command;

use portcullis::PipelineConfig;
use serde_json::Value;

use super::{
    IMPORT_TOKEN, Serve, auth0_verifies, export, exported_users, fresh_minute, stored_hash, user,
};
use crate::common::{Result, login_files, migration_config, seed_stores};

#[test]
fn imported_users_sign_in_with_their_legacy_password_which_then_becomes_argon2id() -> Result {
    let dir = tempfile::tempdir()?;
    let config = migration_config(dir.path(), "pipeline.toml");
    seed_stores(&PipelineConfig::load(&config)?, dir.path(), 200, 120)?;
    let out = dir.path().join("export");
    let report = export(&config, &out, &["--max-file-kb", "40"])?;
    let serve = Serve::start(dir.path(), &config, "");
    let (mut inserted, mut failed) = (0, 0);
    for file in report["files"].as_array().unwrap() {
        let bytes = std::fs::read(out.join(file["name"].as_str().unwrap()))?;
        let response = serve.submit(bytes, file["sha256"].as_str().unwrap(), false);
        assert_eq!(response.status(), 201);
        let job: Value = response.json()?;
        assert_eq!(job["external_id"], file["sha256"]);
        let done = serve.finished(job["id"].as_str().unwrap());
        assert_eq!(done["status"], "completed", "{done}");
        inserted += done["summary"]["inserted"].as_u64().unwrap();
        failed += done["summary"]["failed"].as_u64().unwrap();
    }
    assert_eq!(inserted, report["users_exported"].as_u64().unwrap());
    assert_eq!(failed, 0);

    // Imported with one product's hash: the password they know, checked host-side,
    // then stored as argon2id. With several products: a reset first.
    let users = exported_users(&out, 500 * 1024)?;
    let (mut upgraded, mut reset) = (0, 0);
    for (n, file) in login_files(dir.path()).iter().enumerate() {
        let login: Value = serde_json::from_str(&std::fs::read_to_string(file)?)?;
        let email = login["email"].as_str().unwrap().to_lowercase();
        let (Some(user), Some(password)) = (users.get(&email), login["password"].as_str()) else {
            continue;
        };
        let custom = &user["custom_password_hash"];
        let forced = user["app_metadata"]["forcePasswordReset"] == true;
        if !forced && !auth0_verifies(custom, password) {
            continue;
        }
        let before = stored_hash(dir.path(), &email);
        let verdict = serve.login(&email, password, &format!("tx-import-{n}"));
        if forced {
            assert_eq!(verdict["decision"]["type"], "challenge", "{verdict}");
            reset += 1;
            continue;
        }
        assert_eq!(verdict["decision"]["type"], "allow", "{email}: {verdict}");
        let after = stored_hash(dir.path(), &email).unwrap();
        assert!(
            after.starts_with("$argon2id$"),
            "{email} still has {after:.12}"
        );
        // A product that used argon2id already keeps its hash.
        if before.as_deref().unwrap().starts_with("$argon2id$") {
            assert_eq!(before.as_deref(), Some(after.as_str()));
        } else {
            upgraded += 1;
        }
        // The upgraded hash still takes the password, and only it.
        let again = serve.login(&email, password, &format!("tx-again-{n}"));
        assert_eq!(again["decision"]["type"], "allow");
        let wrong = serve.login(&email, &format!("{password}-no"), &format!("tx-wrong-{n}"));
        assert_eq!(wrong["decision"]["type"], "deny");
    }
    assert!(
        upgraded >= 5 && reset >= 1,
        "{upgraded} upgraded, {reset} reset"
    );
    Ok(())
}

#[test]
fn the_import_api_keeps_auth0s_limits_and_fails_records_alone() -> Result {
    let dir = tempfile::tempdir()?;
    let config = migration_config(dir.path(), "pipeline.toml");
    seed_stores(&PipelineConfig::load(&config)?, dir.path(), 60, 0)?;
    let serve = Serve::start(
        dir.path(),
        &config,
        "users_per_second = 10\nmax_file_kb = 8",
    );
    let slow: Vec<Value> = (0..30)
        .map(|n| user(&format!("slow{n}@example.org")))
        .collect();
    let slow = serde_json::to_vec(&slow)?;

    // Two jobs at once, not three.
    let first: Value = serve.submit(slow.clone(), "a", false).json()?;
    assert_eq!(first["status"], "pending");
    assert_eq!(serve.submit(slow.clone(), "b", false).status(), 201);
    let third = serve.submit(slow.clone(), "c", false);
    assert_eq!(third.status(), 429);
    assert!(third.text()?.contains("2 active import users jobs"));
    let running: Value = serve
        .get(&format!("/api/v2/jobs/{}", first["id"].as_str().unwrap()))
        .json()?;
    assert!(
        matches!(running["status"].as_str(), Some("pending" | "processing")),
        "{running}"
    );

    // A file over the limit, no token, a wrong token, an unknown job.
    let big = serde_json::to_vec(&vec![user("big@example.org"); 60])?;
    assert!(big.len() > 8 * 1024);
    assert_eq!(serve.submit(big, "big", false).status(), 413);
    let anonymous = serve
        .client
        .get(format!("{}/api/v2/jobs/job_x", serve.url))
        .send()?;
    assert_eq!(anonymous.status(), 401);
    let wrong = serve
        .client
        .get(format!("{}/api/v2/jobs/job_x", serve.url))
        .bearer_auth("test-import-api-token-0123456789abcdeX")
        .send()?;
    assert_eq!(wrong.status(), 401);
    let unknown = serve.get("/api/v2/jobs/job_nope");
    assert_eq!(unknown.status(), 404);
    assert!(unknown.headers().contains_key("x-ratelimit-limit"));

    // Lazy migration got to one user first: DUPLICATED_USER, never a second user;
    // bad records fail alone, and their hashes are not shown.
    let existing: String = rusqlite::Connection::open(dir.path().join("directory.db"))?.query_row(
        "SELECT email FROM users LIMIT 1",
        [],
        |r| r.get(0),
    )?;
    let mut reserved = user("reserved@example.org");
    reserved["app_metadata"]["email"] = serde_json::json!("x");
    let mixed = serde_json::to_vec(&serde_json::json!([
        user("fresh@example.org"),
        user(&existing),
        user("not-an-address"),
        reserved,
    ]))?;
    serve.finished(first["id"].as_str().unwrap());
    let found: Vec<Value> = serve.get("/api/v2/jobs?external_id=b").json()?;
    assert_eq!(found.len(), 1, "the job is found by its external id");
    serve.finished(found[0]["id"].as_str().unwrap());
    let job: Value = serve.submit(mixed.clone(), "mixed", false).json()?;
    let done = serve.finished(job["id"].as_str().unwrap());
    assert_eq!(done["status"], "completed");
    assert_eq!(
        done["summary"],
        serde_json::json!({"failed": 3, "updated": 0, "inserted": 1, "total": 4})
    );
    let errors: Vec<Value> = serve
        .get(&format!(
            "/api/v2/jobs/{}/errors",
            job["id"].as_str().unwrap()
        ))
        .json()?;
    let codes: BTreeSet<&str> = errors
        .iter()
        .flat_map(|e| e["errors"].as_array().unwrap())
        .map(|e| e["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        BTreeSet::from(["DUPLICATED_USER", "FORMAT", "NOT_PASSED"])
    );
    // Redacted as Auth0 redacts them: the shape stays, the hash does not.
    assert!(errors.iter().all(|e| {
        e["user"]["custom_password_hash"]["hash"]["value"] == "*****"
            && e["user"]["custom_password_hash"]["algorithm"] == "sha1"
    }));
    let users: i64 = rusqlite::Connection::open(dir.path().join("directory.db"))?.query_row(
        "SELECT COUNT(*) FROM users WHERE email_norm = ?1",
        [existing.to_lowercase()],
        |r| r.get(0),
    )?;
    assert_eq!(users, 1);

    // With upsert the records merge into the user that exists.
    let mut merged = user(&existing);
    merged["app_metadata"]["imported_wave"] = serde_json::json!(2);
    let job: Value = serve
        .submit(serde_json::to_vec(&[merged])?, "upsert", true)
        .json()?;
    let done = serve.finished(job["id"].as_str().unwrap());
    assert_eq!(done["summary"]["updated"], 1, "{done}");
    let metadata: String = rusqlite::Connection::open(dir.path().join("directory.db"))?.query_row(
        "SELECT app_metadata FROM users WHERE email_norm = ?1",
        [existing.to_lowercase()],
        |r| r.get(0),
    )?;
    assert!(metadata.contains("imported_wave"), "{metadata}");
    let no_errors = serve.get(&format!(
        "/api/v2/jobs/{}/errors",
        job["id"].as_str().unwrap()
    ));
    assert_eq!(no_errors.status(), 204);

    // A file that is not JSON: the job fails.
    let job: Value = serve
        .submit(b"[{\"email\": ".to_vec(), "broken", false)
        .json()?;
    let done = serve.finished(job["id"].as_str().unwrap());
    assert_eq!(done["status"], "failed", "{done}");
    // Why, where Auth0 says it; its errors are the job itself, as Auth0 answers them.
    assert!(
        done["status_details"]
            .as_str()
            .is_some_and(|d| d.contains("parse")),
        "{done}"
    );
    let failed: Value = serve
        .get(&format!(
            "/api/v2/jobs/{}/errors",
            job["id"].as_str().unwrap()
        ))
        .json()?;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["status_details"], done["status_details"]);
    Ok(())
}

#[test]
fn the_import_api_rate_limits_and_forgets_jobs_after_their_retention() -> Result {
    let dir = tempfile::tempdir()?;
    let config = migration_config(dir.path(), "pipeline.toml");
    let serve = Serve::start(
        dir.path(),
        &config,
        "requests_per_minute = 4\njob_retention_seconds = 1",
    );
    fresh_minute();
    let job: Value = serve
        .submit(serde_json::to_vec(&[user("one@example.org")])?, "r", false)
        .json()?;
    let id = job["id"].as_str().unwrap().to_owned();
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..5 {
        let response = serve.get(&format!("/api/v2/jobs/{id}"));
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
    }
    let limited = limited.unwrap_or_else(|| panic!("never limited: {statuses:?}"));
    let header = |name: &str| -> u64 { limited.headers()[name].to_str().unwrap().parse().unwrap() };
    assert_eq!(header("x-ratelimit-limit"), 4);
    assert_eq!(header("x-ratelimit-remaining"), 0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    // The minute's window ends: then the requests come back, and the job is gone.
    assert!(header("x-ratelimit-reset") > now && header("x-ratelimit-reset") <= now + 61);
    let wait = header("retry-after");
    assert!((1..=61).contains(&wait), "{wait}");
    std::thread::sleep(std::time::Duration::from_secs(wait));
    assert_eq!(serve.get(&format!("/api/v2/jobs/{id}")).status(), 404);
    Ok(())
}

#[test]
fn auth0_python_imports_polls_and_reads_errors() -> Result {
    let python = match crate::common::clients_python() {
        Ok(python) => python,
        Err(why) => {
            crate::common::not_run(&why);
            return Ok(());
        }
    };
    let dir = tempfile::tempdir()?;
    let config = migration_config(dir.path(), "pipeline.toml");
    seed_stores(&PipelineConfig::load(&config)?, dir.path(), 10, 0)?;
    let serve = Serve::start(dir.path(), &config, "");
    let script = crate::common::workspace_root().join("host/tests/clients/auth0_import.py");
    let output = Command::new(&python)
        .arg(&script)
        .args([serve.url.as_str(), "con_portcullis"])
        .env("AUTH0_TOKEN", IMPORT_TOKEN)
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let seen: Value = serde_json::from_slice(&output.stdout)?;

    assert_eq!(seen["job"]["status"], "completed", "{seen}");
    assert_eq!(
        seen["job"]["summary"],
        serde_json::json!({"failed": 5, "updated": 0, "inserted": 2, "total": 7})
    );
    // Each refused record with Auth0's code, the one that is not an object as `{}`.
    let mut codes: Vec<(String, String, String)> = seen["errors"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| {
            let email = e["user"]["email"].as_str().unwrap_or("").to_owned();
            e["errors"].as_array().unwrap().iter().map(move |x| {
                (
                    email.clone(),
                    x["code"].as_str().unwrap().to_owned(),
                    x["path"].as_str().unwrap_or("").to_owned(),
                )
            })
        })
        .collect();
    codes.sort();
    let expected: Vec<(String, String, String)> = [
        ("", "INVALID_TYPE", ""),
        ("not-an-address", "FORMAT", "email"),
        (
            "sdk-bad-salt@example.org",
            "FORMAT",
            "custom_password_hash.salt.value",
        ),
        (
            "sdk-bcrypt-salt@example.org",
            "NOT_PASSED",
            "custom_password_hash.salt",
        ),
        (
            "sdk-extra@example.org",
            "OBJECT_ADDITIONAL_PROPERTIES",
            "favourite_colour",
        ),
    ]
    .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()))
    .into();
    assert_eq!(codes, expected);
    assert!(
        seen["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["user"] == serde_json::json!({})),
        "{seen}"
    );
    assert!(
        !seen["errors"].to_string().contains("nFguVi9L"),
        "a hash shown"
    );

    // A file that is not JSON: failed, and why, in the job and in its errors.
    assert_eq!(seen["failed_job"]["status"], "failed");
    assert!(seen["failed_job"]["status_details"].is_string());
    assert_eq!(
        seen["failed_errors"]["status_details"],
        seen["failed_job"]["status_details"]
    );

    // The md5 user whose salt came in hex, after the password, signs in with it.
    let wrong = serve.login("sdk-md5@example.org", "pw-suffiX", "tx-sdk-wrong");
    assert_eq!(wrong["decision"]["type"], "deny", "{wrong}");
    let right = serve.login("sdk-md5@example.org", "pw-suffix", "tx-sdk-right");
    assert_eq!(right["decision"]["type"], "allow", "{right}");
    Ok(())
}
