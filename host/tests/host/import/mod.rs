//! The bulk import, a module per part: the export (`export`), the import API (`api`),
//! `import run` and the unified ids (`run`), the import token as an attacker's (`attacks`),
//! the hash vectors (`hashes`); here, what they share.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use serde_json::Value;
use sha1::Digest as _;

use crate::common::Result;

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

mod api;
pub(crate) mod attacks;
mod export;
mod hashes;
mod run;

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

/// A user-import record with a legacy hash (`pw`), flagged bulk-imported.
pub(crate) fn user(email: &str) -> Value {
    let hash = portcullis::state::passwords::legacy_formats::salted_sha1("pw", "salt");
    serde_json::json!({
        "email": email,
        "email_verified": true,
        "custom_password_hash": portcullis::jobs::import::export::custom_password_hash(&hash).unwrap(),
        "app_metadata": {"bulkImported": true},
    })
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
