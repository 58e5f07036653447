//! The bulk import: `portcullis import export` into Auth0's user-import files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use portcullis::PipelineConfig;
use serde_json::Value;
use sha1::Digest as _;

use crate::common::{Result, login_files, migration_config, seed_stores};

/// Runs the CLI: (succeeded, its JSON report or null, its stderr).
fn portcullis(args: &[&str]) -> (bool, Value, String) {
    let output: Output = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("the binary runs");
    (
        output.status.success(),
        serde_json::from_slice(&output.stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn export(config: &Path, out: &Path, extra: &[&str]) -> Result<Value> {
    let mut args = vec![
        "import",
        "export",
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (ok, report, stderr) = portcullis(&args);
    assert!(ok, "{stderr}");
    Ok(report)
}

/// Whether Auth0 would accept `password` for this `custom_password_hash`: each
/// algorithm as Auth0's bulk-import documentation defines it, written here apart from
/// the host's own verification.
fn auth0_verifies(custom: &Value, password: &str) -> bool {
    let value = custom["hash"]["value"].as_str().unwrap();
    match custom["algorithm"].as_str().unwrap() {
        "bcrypt" => bcrypt::verify(password, value).unwrap(),
        "argon2" => {
            use argon2::password_hash::PasswordVerifier;
            let hash = argon2::password_hash::phc::PasswordHash::new(value).unwrap();
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        }
        "pbkdf2" => {
            // $pbkdf2-sha256$i=N,l=L$salt$hash, unpadded base64.
            let parts: Vec<&str> = value.split('$').collect();
            assert_eq!(parts[1], "pbkdf2-sha256");
            let params: BTreeMap<&str, u32> = parts[2]
                .split(',')
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap();
                    (k, v.parse().unwrap())
                })
                .collect();
            let salt = STANDARD_NO_PAD.decode(parts[3]).unwrap();
            let expected = STANDARD_NO_PAD.decode(parts[4]).unwrap();
            let mut out = vec![0u8; params["l"] as usize];
            pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password.as_bytes(), &salt, params["i"], &mut out);
            out == expected
        }
        algorithm @ ("sha1" | "md5") => {
            assert_eq!(custom["hash"]["encoding"], "hex");
            assert_eq!(custom["salt"]["position"], "prefix");
            let salted = format!("{}{password}", custom["salt"]["value"].as_str().unwrap());
            let digest = if algorithm == "sha1" {
                sha1::Sha1::digest(salted.as_bytes()).to_vec()
            } else {
                md5::Md5::digest(salted.as_bytes()).to_vec()
            };
            hex::encode(digest) == value
        }
        // The hash no password matches: random bytes.
        "sha256" => hex::encode(sha2::Sha256::digest(password.as_bytes())) == value,
        other => panic!("unexpected algorithm {other}"),
    }
}

/// Every exported user, by normalized email, checking each file against the
/// manifest and the size limit.
fn exported_users(out: &Path, max_bytes: usize) -> Result<BTreeMap<String, Value>> {
    let manifest: Value = serde_json::from_slice(&std::fs::read(out.join("manifest.json"))?)?;
    let mut users = BTreeMap::new();
    for file in manifest["files"].as_array().unwrap() {
        let bytes = std::fs::read(out.join(file["name"].as_str().unwrap()))?;
        assert!(
            bytes.len() <= max_bytes,
            "{} is {} bytes",
            file["name"],
            bytes.len()
        );
        assert_eq!(bytes.len() as u64, file["bytes"].as_u64().unwrap());
        assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), file["sha256"]);
        let list: Vec<Value> = serde_json::from_slice(&bytes)?;
        assert_eq!(list.len() as u64, file["users"].as_u64().unwrap());
        for user in list {
            let email = user["email"].as_str().unwrap().to_lowercase();
            assert!(
                users.insert(email.clone(), user).is_none(),
                "{email} is exported twice"
            );
        }
    }
    Ok(users)
}

/// Every legacy account in the SQLite stores of `dir`, by normalized email.
fn legacy_accounts(dir: &Path) -> BTreeMap<String, Vec<(String, String)>> {
    let mut by_email: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for product in ["paste", "collect", "transfer"] {
        let conn = rusqlite::Connection::open(dir.join(format!("legacy-{product}.db"))).unwrap();
        let mut statement = conn
            .prepare("SELECT email_norm, legacy_id FROM accounts")
            .unwrap();
        for row in statement
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .unwrap()
        {
            let (email, id) = row.unwrap();
            by_email
                .entry(email)
                .or_default()
                .push((product.to_owned(), id));
        }
    }
    by_email
}

fn directory_emails(dir: &Path) -> BTreeSet<String> {
    let conn = rusqlite::Connection::open(dir.join("directory.db")).unwrap();
    let mut statement = conn.prepare("SELECT email FROM users").unwrap();
    statement
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|e| e.unwrap().to_lowercase())
        .collect()
}

#[test]
fn the_export_holds_each_user_the_directory_lacks_once_with_hashes_auth0_verifies() -> Result {
    let dir = tempfile::tempdir()?;
    let config = migration_config(dir.path(), "pipeline.toml");
    seed_stores(&PipelineConfig::load(&config)?, dir.path(), 400, 150)?;
    let out = dir.path().join("export");
    let report = export(&config, &out, &["--max-file-kb", "20"])?;
    let users = exported_users(&out, 20 * 1024)?;
    assert!(users.len() > 300, "{} users", users.len());
    assert!(report["files"].as_array().unwrap().len() > 5, "{report}");
    let report_text = report.to_string();
    for secret in [
        "$2a$",
        "$2b$",
        "$2y$",
        "$argon2",
        "pbkdf2_sha256$",
        "sha1$",
        "md5$",
    ] {
        assert!(
            !report_text.contains(secret),
            "the report quotes a hash: {secret}"
        );
    }

    // Exactly the legacy users without a directory user.
    let legacy = legacy_accounts(dir.path());
    let in_directory = directory_emails(dir.path());
    let expected: BTreeSet<&String> = legacy
        .keys()
        .filter(|e| !in_directory.contains(*e))
        .collect();
    assert_eq!(users.keys().collect::<BTreeSet<_>>(), expected);
    assert_eq!(
        report["skipped_in_directory"].as_u64().unwrap() as usize,
        legacy.len() - expected.len()
    );

    for (email, user) in &users {
        let accounts = &legacy[email];
        let metadata = &user["app_metadata"];
        assert_eq!(metadata["bulkImported"], true);
        let listed: BTreeSet<(String, String)> = metadata["legacy_accounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["product"].as_str().unwrap().into(),
                    a["legacy_id"].as_str().unwrap().into(),
                )
            })
            .collect();
        assert_eq!(listed, accounts.iter().cloned().collect(), "{email}");
        if accounts.len() > 1 {
            // Several products, several passwords maybe: none usable, a reset.
            assert_eq!(metadata["forcePasswordReset"], true, "{email}");
            assert_eq!(user["custom_password_hash"]["algorithm"], "sha256");
        }
    }

    // A single product's user signs in with the password they know, as Auth0 would
    // check it; a wrong one does not.
    let (mut verified, mut refused) = (0, 0);
    let mut algorithms = BTreeSet::new();
    for file in login_files(dir.path()) {
        let login: Value = serde_json::from_str(&std::fs::read_to_string(file)?)?;
        let email = login["email"].as_str().unwrap().to_lowercase();
        let (Some(user), Some(password)) = (users.get(&email), login["password"].as_str()) else {
            continue;
        };
        if user["app_metadata"]["forcePasswordReset"] == true {
            assert!(!auth0_verifies(&user["custom_password_hash"], password));
            continue;
        }
        let custom = &user["custom_password_hash"];
        algorithms.insert(custom["algorithm"].as_str().unwrap().to_owned());
        if auth0_verifies(custom, password) {
            verified += 1;
        } else {
            refused += 1;
        }
        assert!(
            !auth0_verifies(custom, &format!("{password}-not")),
            "{email}"
        );
    }
    assert!(verified >= 20, "{verified} verified, {refused} refused");
    assert!(
        refused >= 1,
        "the seeded wrong passwords are refused: {refused}"
    );
    assert!(algorithms.len() >= 3, "{algorithms:?}");

    // The directory is new or empty: a second export there is refused.
    let again = portcullis(&[
        "import",
        "export",
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!again.0);
    assert!(again.2.contains("not empty"));
    Ok(())
}

#[test]
fn a_malformed_legacy_row_is_reported_and_the_rest_goes_on() -> Result {
    use portcullis::state::legacy_sqlite::LegacyRow;
    let dir = tempfile::tempdir()?;
    let config = migration_config(dir.path(), "pipeline.toml");
    seed_stores(&PipelineConfig::load(&config)?, dir.path(), 50, 0)?;
    let profile = serde_json::json!({"plan": "free"});
    let hash = portcullis::state::passwords::legacy_formats::salted_sha1("pw-one", "s1");
    let rows = [
        LegacyRow {
            legacy_id: "good-1",
            email: "good.one@example.net",
            email_verified: true,
            password_hash: Some(&hash),
            created_at_ms: 1,
            profile: &profile,
        },
        LegacyRow {
            legacy_id: "bad-email",
            email: "not an address",
            email_verified: false,
            password_hash: Some(&hash),
            created_at_ms: 1,
            profile: &profile,
        },
        LegacyRow {
            legacy_id: "huge",
            email: "huge@example.net",
            email_verified: false,
            password_hash: Some(&hash),
            created_at_ms: 1,
            profile: &serde_json::json!({"bio": "x".repeat(4000)}),
        },
    ];
    portcullis::state::LegacyProducts::replace(
        "transfer",
        &format!("sqlite://{}/legacy-transfer.db", dir.path().display()),
        dir.path(),
        &rows,
    )?;
    let out = dir.path().join("export");
    let report = export(&config, &out, &["--max-file-kb", "2"])?;
    let problems: BTreeMap<String, String> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["legacy_id"].as_str().unwrap().into(),
                p["reason"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        problems["bad-email"].contains("not an address"),
        "{problems:?}"
    );
    assert!(
        problems["huge"].contains("larger than a file"),
        "{problems:?}"
    );
    let users = exported_users(&out, 2048)?;
    let good = &users["good.one@example.net"];
    assert!(auth0_verifies(&good["custom_password_hash"], "pw-one"));
    assert!(!users.contains_key("huge@example.net"));
    assert!(
        users.len() > 20,
        "the other products' users are exported too"
    );
    Ok(())
}

#[test]
fn the_same_people_on_postgres_and_mariadb_export_as_from_sqlite() -> Result {
    let (Some(postgres), Some(mysql)) = (
        crate::postgres::fresh_database("export"),
        crate::legacy::fresh_mysql("export"),
    ) else {
        crate::common::not_run("PORTCULLIS_TEST_POSTGRES or PORTCULLIS_TEST_MYSQL is not set");
        return Ok(());
    };
    let sqlite_dir = tempfile::tempdir()?;
    let sqlite_config = migration_config(sqlite_dir.path(), "pipeline.toml");
    seed_stores(
        &PipelineConfig::load(&sqlite_config)?,
        sqlite_dir.path(),
        300,
        0,
    )?;
    let mixed_dir = tempfile::tempdir()?;
    let mixed_config = crate::legacy::config_with_legacy(
        mixed_dir.path(),
        &[("paste", &postgres), ("collect", &mysql)],
    );
    seed_stores(
        &PipelineConfig::load(&mixed_config)?,
        mixed_dir.path(),
        300,
        0,
    )?;
    // Page size 7: many pages, so keyset paging and grouping across pages is crossed.
    let shape = |dir: &Path, config: &Path| -> Result<BTreeMap<String, Value>> {
        let out = dir.join("export");
        export(config, &out, &["--page", "7"])?;
        Ok(exported_users(&out, 500 * 1024)?
            .into_iter()
            .map(|(email, user)| {
                let metadata = &user["app_metadata"];
                (
                    email,
                    serde_json::json!([
                        metadata["legacy_accounts"],
                        metadata["forcePasswordReset"],
                        user["custom_password_hash"]["algorithm"],
                        user["email_verified"],
                    ]),
                )
            })
            .collect())
    };
    let from_sqlite = shape(sqlite_dir.path(), &sqlite_config)?;
    let from_servers = shape(mixed_dir.path(), &mixed_config)?;
    assert!(from_sqlite.len() > 200);
    assert_eq!(from_sqlite, from_servers);

    // The unified ids go back into the products alike, and a second run writes none.
    let counts = |config: &Path| -> Vec<Value> {
        let mut seen = Vec::new();
        for extra in [&["--pregenerate"][..], &[], &[]] {
            let (ok, report, stderr) = backfill_ids(config, extra);
            assert!(ok, "{stderr}");
            seen.push(serde_json::json!([
                report["written"],
                report["repaired"],
                report["unchanged"],
                report["rows_seen"]
            ]));
        }
        seen
    };
    let on_sqlite = counts(&sqlite_config);
    assert!(on_sqlite[0][0].as_u64().unwrap() > 0 && on_sqlite[1][0].as_u64().unwrap() > 0);
    assert_eq!(on_sqlite[2][0], 0);
    assert_eq!(on_sqlite, counts(&mixed_config));
    Ok(())
}

/// The import API counts requests per minute of the host's clock: a test that counts
/// them starts early in a minute, so that its requests fall in one.
pub(crate) fn fresh_minute() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let into = now.as_millis() % 60_000;
    if into > 40_000 {
        std::thread::sleep(std::time::Duration::from_millis(
            (60_000 - into) as u64 + 100,
        ));
    }
}

pub(crate) const IMPORT_TOKEN: &str = "test-import-api-token-0123456789abcdef";
pub(crate) const GATEWAY: &str = "test-gateway-token-0123456789abcdef";

/// `portcullis serve` as a process with the import API on, stopped on drop.
pub(crate) struct Serve {
    child: std::process::Child,
    pub(crate) url: String,
    pub(crate) client: reqwest::blocking::Client,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    pub(crate) fn start(dir: &Path, config: &Path, import_api: &str) -> Serve {
        Self::start_logging(dir, config, import_api, None)
    }

    /// As [`Serve::start`]; with `log`, its debug log goes to that file (searched for
    /// secrets by the tests that pass one).
    pub(crate) fn start_logging(
        dir: &Path,
        config: &Path,
        import_api: &str,
        log: Option<&Path>,
    ) -> Serve {
        std::fs::write(dir.join("import-token"), IMPORT_TOKEN).unwrap();
        let mut text = std::fs::read_to_string(config).unwrap();
        // Users files are sealed at rest under the [mfa] keys: a pipeline without
        // them gets the demo's.
        if !text.contains("\n[mfa]") {
            std::fs::copy(
                crate::common::workspace_root().join("fixtures/demo-mfa.keys"),
                dir.join("import-file.keys"),
            )
            .unwrap();
            text.push_str("\n[mfa]\nkeys_file = \"import-file.keys\"\n");
        }
        let with_api =
            format!("{text}\n[server.import_api]\ntoken_file = \"import-token\"\n{import_api}\n");
        let served = dir.join("serve.toml");
        std::fs::write(&served, with_api).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&served)
            .env("PORTCULLIS_GATEWAY_TOKEN", GATEWAY)
            .stdout(std::process::Stdio::piped());
        match log {
            Some(log) => command
                .env("PORTCULLIS_LOG", "debug")
                .stderr(std::fs::File::create(log).unwrap()),
            // The fixture's outbox endpoints are the simulator's, not started here: no
            // delivery warnings.
            None => command.env("PORTCULLIS_LOG", "error"),
        };
        let mut child = command.spawn().unwrap();
        let addr = crate::common::listening_address(&mut child, "serve");
        Serve {
            child,
            url: format!("http://{addr}"),
            client: reqwest::blocking::Client::new(),
        }
    }

    pub(crate) fn submit(
        &self,
        users: Vec<u8>,
        external_id: &str,
        upsert: bool,
    ) -> reqwest::blocking::Response {
        let form = reqwest::blocking::multipart::Form::new()
            .part(
                "users",
                reqwest::blocking::multipart::Part::bytes(users).file_name("users.json"),
            )
            .text("connection_id", "con_portcullis")
            .text("external_id", external_id.to_owned())
            .text("upsert", upsert.to_string());
        self.client
            .post(format!("{}/api/v2/jobs/users-imports", self.url))
            .bearer_auth(IMPORT_TOKEN)
            .multipart(form)
            .send()
            .unwrap()
    }

    /// A GET that waits out the rate limit (tests that drain it on purpose).
    pub(crate) fn get_patiently(&self, path: &str) -> reqwest::blocking::Response {
        loop {
            let response = self.get(path);
            if response.status() != 429 {
                return response;
            }
            let wait: u64 = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            std::thread::sleep(std::time::Duration::from_secs(wait.max(1)));
        }
    }

    pub(crate) fn get(&self, path: &str) -> reqwest::blocking::Response {
        self.client
            .get(format!("{}{path}", self.url))
            .bearer_auth(IMPORT_TOKEN)
            .send()
            .unwrap()
    }

    /// Polls a job until it is no longer pending or processing.
    pub(crate) fn finished(&self, id: &str) -> Value {
        for _ in 0..300 {
            let job: Value = self
                .get_patiently(&format!("/api/v2/jobs/{id}"))
                .json()
                .unwrap();
            if !matches!(job["status"].as_str(), Some("pending" | "processing")) {
                return job;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("job {id} did not finish");
    }

    pub(crate) fn login(&self, email: &str, password: &str, tx: &str) -> Value {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        self.client
            .post(format!("{}/v1/login", self.url))
            .bearer_auth(GATEWAY)
            .json(&serde_json::json!({
                "transaction_id": tx, "time_ms": now, "connection": "db",
                "client_id": "paste-web", "email": email, "password": password,
                "request": {"ip": "192.0.2.1", "user_agent": "test"},
            }))
            .send()
            .unwrap()
            .json()
            .unwrap()
    }
}

fn stored_hash(dir: &Path, email: &str) -> Option<String> {
    rusqlite::Connection::open(dir.join("directory.db"))
        .unwrap()
        .query_row(
            "SELECT password_hash FROM users WHERE email_norm = ?1",
            [email.to_lowercase()],
            |r| r.get(0),
        )
        .unwrap()
}

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

pub(crate) fn user(email: &str) -> Value {
    let hash = portcullis::state::passwords::legacy_formats::salted_sha1("pw", "salt");
    serde_json::json!({
        "email": email,
        "email_verified": true,
        "custom_password_hash": portcullis::jobs::import::export::custom_password_hash(&hash).unwrap(),
        "app_metadata": {"bulkImported": true},
    })
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

fn backfill_ids(config: &Path, extra: &[&str]) -> (bool, Value, String) {
    let mut args = vec![
        "import",
        "backfill-ids",
        "--config",
        config.to_str().unwrap(),
        "--chunk",
        "17",
    ];
    args.extend_from_slice(extra);
    portcullis(&args)
}

/// (product, legacy id) -> unified id, from the products' SQLite files.
fn unified_ids(dir: &Path, product: &str) -> BTreeMap<String, Option<String>> {
    let conn = rusqlite::Connection::open(dir.join(format!("legacy-{product}.db"))).unwrap();
    let mut statement = conn
        .prepare("SELECT legacy_id, unified_id FROM accounts")
        .unwrap();
    statement
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|row| row.unwrap())
        .collect()
}

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

// The import token as an attacker's: two parties, a victim and an attacker, over
// HTTP against `serve`'s import API; the victim must keep the account.

const VICTIM: &str = "victim.one@victim.example";
const VICTIM_PASSWORD: &str = "victim-one-legacy-password";
const SECOND: &str = "victim.two@victim.example";
const SECOND_PASSWORD: &str = "victim-two-legacy-password";
const ATTACKER: &str = "attacker@evil.example";

/// A seeded migration (directory on `directory_url`, else SQLite) with the victims'
/// legacy accounts: VICTIM in paste (`P-victim-1`), SECOND in collect (`C-victim-2`),
/// and a bystander who holds `T-legit` in transfer under a differently cased email.
fn attack_setup(directory_url: Option<&str>) -> Result<(tempfile::TempDir, std::path::PathBuf)> {
    let dir = tempfile::tempdir()?;
    let config = migration_config(dir.path(), "pipeline.toml");
    if let Some(url) = directory_url {
        let text = std::fs::read_to_string(&config)?;
        let line = text
            .lines()
            .find(|l| l.starts_with("directory = "))
            .unwrap()
            .to_owned();
        std::fs::write(
            &config,
            text.replace(&line, &format!("directory = \"{url}\"")),
        )?;
    }
    seed_stores(&PipelineConfig::load(&config)?, dir.path(), 20, 0)?;
    let hash = portcullis::state::passwords::legacy_formats::salted_sha1;
    for (product, legacy_id, email, password_hash) in [
        ("paste", "P-victim-1", VICTIM, hash(VICTIM_PASSWORD, "s1")),
        ("collect", "C-victim-2", SECOND, hash(SECOND_PASSWORD, "s2")),
        (
            "transfer",
            "T-legit",
            "Legit.Person@Victim.Example",
            hash("legit", "s3"),
        ),
    ] {
        rusqlite::Connection::open(dir.path().join(format!("legacy-{product}.db")))?.execute(
            "INSERT INTO accounts (legacy_id, email, email_norm, email_verified, password_hash,
                 created_at_ms, profile) VALUES (?1, ?2, ?3, 1, ?4, 1, '{}')",
            rusqlite::params![legacy_id, email, email.to_lowercase(), password_hash],
        )?;
    }
    Ok((dir, config))
}

fn directory_user(config: &Path, email: &str) -> Result<Option<portcullis::model::DirectoryUser>> {
    let config = PipelineConfig::load(config)?;
    let state =
        portcullis::state::open_state(&config.state.as_ref().unwrap().directory, &config.base_dir)?;
    Ok(state.find_by_email(email)?.into_iter().next())
}

fn submit_and_finish(
    serve: &Serve,
    users: &Value,
    external_id: &str,
    upsert: bool,
) -> Result<(Value, Vec<Value>)> {
    let response = serve.submit(serde_json::to_vec(users)?, external_id, upsert);
    assert_eq!(response.status(), 201);
    let job: Value = response.json()?;
    let id = job["id"].as_str().unwrap();
    let done = serve.finished(id);
    assert_eq!(done["status"], "completed", "{done}");
    let errors = serve.get(&format!("/api/v2/jobs/{id}/errors"));
    let errors = if errors.status() == 204 {
        Vec::new()
    } else {
        errors.json()?
    };
    Ok((done, errors))
}

/// (a) The attacker upserts a victim who has signed in, setting the reset and bulk
/// flags and dropping `migrated`: the victim still signs in with their password, and
/// those keys are as they were. A user nobody has seen sign in still takes a re-import's
/// flags.
pub(crate) fn an_upsert_leaves_a_signed_in_users_flags_alone(
    directory_url: Option<&str>,
) -> Result {
    let (dir, config) = attack_setup(directory_url)?;
    let serve = Serve::start(dir.path(), &config, "");
    let first = serve.login(VICTIM, VICTIM_PASSWORD, "tx-victim-migrates");
    assert_eq!(first["decision"]["type"], "allow", "{first}");
    let before = directory_user(&config, VICTIM)?.expect("the victim was migrated");
    assert_eq!(before.app_metadata["migrated"], true);

    // Imported earlier, never signed in: a later wave may still flag them.
    submit_and_finish(
        &serve,
        &serde_json::json!([user("dormant@victim.example")]),
        "wave-1",
        false,
    )?;

    let mut attack = user("Victim.One@VICTIM.example");
    attack["app_metadata"] = serde_json::json!({
        "bulkImported": true, "forcePasswordReset": true, "migrated": null, "imported_wave": 2,
    });
    let mut dormant = user("dormant@victim.example");
    dormant["app_metadata"]["forcePasswordReset"] = serde_json::json!(true);
    let (done, _) = submit_and_finish(
        &serve,
        &serde_json::json!([attack, dormant]),
        "attack-upsert",
        true,
    )?;
    assert_eq!(done["summary"]["updated"], 2, "{done}");

    let mut broken = Vec::new();
    let after = directory_user(&config, VICTIM)?.unwrap();
    for key in ["migrated", "bulkImported", "forcePasswordReset"] {
        if after.app_metadata.get(key) != before.app_metadata.get(key) {
            broken.push(format!(
                "the victim's {key} went from {:?} to {:?}",
                before.app_metadata.get(key),
                after.app_metadata.get(key)
            ));
        }
    }
    let again = serve.login(VICTIM, VICTIM_PASSWORD, "tx-victim-after-upsert");
    if again["decision"]["type"] != "allow" {
        broken.push(format!(
            "the victim no longer signs in: {}",
            again["decision"]
        ));
    }
    assert!(broken.is_empty(), "{broken:#?}");
    // The rest of the upsert is merged; the dormant user took the reset flag.
    assert_eq!(after.app_metadata["imported_wave"], 2);
    let dormant = directory_user(&config, "dormant@victim.example")?.unwrap();
    assert_eq!(dormant.app_metadata["forcePasswordReset"], true);
    Ok(())
}

/// (b) The attacker imports a new user whose `legacy_accounts` names the victim's
/// unlinked legacy account (another email): refused as CONFLICT; the victim then
/// migrates lazily with their legacy password, and `backfill-ids` gives the victim's
/// product row the victim's id, never the attacker's. A link under the record's own
/// email (in another case) is taken.
pub(crate) fn an_imported_link_to_someone_elses_account_is_refused(
    directory_url: Option<&str>,
) -> Result {
    let (dir, config) = attack_setup(directory_url)?;
    let serve = Serve::start(dir.path(), &config, "");
    let mut attack = user(ATTACKER);
    attack["app_metadata"]["legacy_accounts"] =
        serde_json::json!([{"product": "collect", "legacy_id": "C-victim-2"}]);
    let mut nowhere = user("nowhere@evil.example");
    nowhere["app_metadata"]["legacy_accounts"] =
        serde_json::json!([{"product": "paste", "legacy_id": "P-does-not-exist"}]);
    let mut legit = user("legit.person@victim.example");
    legit["app_metadata"]["legacy_accounts"] =
        serde_json::json!([{"product": "transfer", "legacy_id": "T-legit"}]);
    let (done, errors) = submit_and_finish(
        &serve,
        &serde_json::json!([attack, nowhere, legit]),
        "attack-links",
        false,
    )?;

    let mut broken = Vec::new();
    let login = serve.login(SECOND, SECOND_PASSWORD, "tx-second-migrates");
    if login["decision"]["type"] != "allow" {
        broken.push(format!("the victim cannot migrate: {}", login["decision"]));
    }
    let (ok, report, stderr) = backfill_ids(&config, &[]);
    assert!(ok, "{stderr}");
    let attacker_id = portcullis::jobs::import::records::user_id_for(ATTACKER);
    let row = unified_ids(dir.path(), "collect")["C-victim-2"].clone();
    let victim_id = directory_user(&config, SECOND)?.map(|u| u.id);
    if row.as_deref() == Some(attacker_id.as_str()) || row != victim_id {
        broken.push(format!(
            "the victim's product row holds {row:?}, not the victim's {victim_id:?} ({report})"
        ));
    }
    let refused: BTreeMap<String, Vec<String>> = errors
        .iter()
        .map(|e| {
            (
                e["user"]["email"].as_str().unwrap().to_owned(),
                e["errors"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["code"].as_str().unwrap().to_owned())
                    .collect(),
            )
        })
        .collect();
    let expected = BTreeMap::from([
        (ATTACKER.to_owned(), vec!["CONFLICT".to_owned()]),
        (
            "nowhere@evil.example".to_owned(),
            vec!["CONFLICT".to_owned()],
        ),
    ]);
    if refused != expected {
        broken.push(format!("refused {refused:?} ({done})"));
    }
    assert!(broken.is_empty(), "{broken:#?}");
    assert!(directory_user(&config, ATTACKER)?.is_none());
    assert_eq!(done["summary"]["inserted"], 1, "{done}");
    let legit = directory_user(&config, "legit.person@victim.example")?.unwrap();
    assert_eq!(legit.identities.len(), 1, "{legit:?}");
    assert_eq!(
        unified_ids(dir.path(), "transfer")["T-legit"].as_deref(),
        Some(legit.id.as_str())
    );
    Ok(())
}

#[test]
fn an_upsert_leaves_a_signed_in_users_flags_alone_on_sqlite() -> Result {
    an_upsert_leaves_a_signed_in_users_flags_alone(None)
}

#[test]
fn an_imported_link_to_someone_elses_account_is_refused_on_sqlite() -> Result {
    an_imported_link_to_someone_elses_account_is_refused(None)
}

/// The vectors `fixtures/import/hash_vectors.py` made with implementations apart from
/// the directory's (hashlib, pycryptodome, bcrypt, argon2-cffi).
fn hash_vectors() -> Vec<Value> {
    let path = crate::common::workspace_root().join("fixtures/import/hash-vectors.json");
    let file: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    file["vectors"].as_array().unwrap().clone()
}

#[test]
fn every_hash_vector_signs_in_with_its_password_and_no_other() -> Result {
    let vectors = hash_vectors();
    // Every algorithm Auth0 documents but scrypt, each encoding of the hash, the salt
    // (and no salt), both salt positions and every password encoding.
    let seen = |key: &str| -> BTreeSet<String> {
        vectors
            .iter()
            .filter_map(|v| v["combination"][key].as_str().map(String::from))
            .collect()
    };
    assert_eq!(
        seen("algorithm").into_iter().collect::<Vec<_>>(),
        [
            "argon2", "bcrypt", "hmac", "ldap", "md4", "md5", "pbkdf2", "sha1", "sha256", "sha512"
        ]
    );
    assert_eq!(seen("salt.position").len(), 2);
    assert_eq!(seen("salt.encoding").len(), 3);
    assert_eq!(seen("hash.encoding").len(), 4);
    assert_eq!(seen("password.encoding").len(), 6);
    assert_eq!(seen("hash.digest").len(), 8);
    assert_eq!(seen("digest").len(), 8, "PBKDF2 over every digest");

    let dir = tempfile::tempdir()?;
    let config = migration_config(dir.path(), "pipeline.toml");
    seed_stores(&PipelineConfig::load(&config)?, dir.path(), 10, 0)?;
    let serve = Serve::start(dir.path(), &config, "");
    let records: Vec<&Value> = vectors.iter().map(|v| &v["record"]).collect();
    let job: Value = serve
        .submit(serde_json::to_vec(&records)?, "vectors", false)
        .json()?;
    let done = serve.finished(job["id"].as_str().unwrap());
    let errors = serve
        .get(&format!(
            "/api/v2/jobs/{}/errors",
            job["id"].as_str().unwrap()
        ))
        .text()?;
    assert_eq!(
        done["summary"]["inserted"],
        vectors.len(),
        "{done} {errors}"
    );

    // Through the login's own path: a wrong password first (the right one replaces
    // the imported hash with argon2id), then the right one.
    let mut failures = Vec::new();
    for (n, vector) in vectors.iter().enumerate() {
        let email = vector["record"]["email"].as_str().unwrap();
        // The stored format's name and parameters, not its salt or hash.
        let stored = stored_hash(dir.path(), email).unwrap();
        let format = stored.rsplitn(3, '$').last().unwrap_or_default().to_owned();
        let wrong = serve.login(
            email,
            vector["wrong_password"].as_str().unwrap(),
            &format!("tx-wrong-{n}"),
        );
        let right = serve.login(
            email,
            vector["password"].as_str().unwrap(),
            &format!("tx-right-{n}"),
        );
        if wrong["decision"]["type"] != "deny" || right["decision"]["type"] != "allow" {
            failures.push(format!(
                "{} (stored as {format}$…): wrong {}, right {}",
                vector["name"], wrong["decision"], right["decision"]
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
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
