//! Second factors carried through the bulk import: `import export --from-directory`
//! writes a user's SMS factor as Auth0's `mfa_factors` phone, and the import API of a
//! fresh directory seals it as enrolment would, under the new provider. The simulator
//! and `serve` run as processes, over HTTP.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use portcullis::PipelineConfig;
use portcullis::mfa::sealed::KeyRing;
use portcullis::model::{DirectoryUser, FactorKind, FactorProvider, FactorStatus};
use portcullis::state::factors::Factor;
use serde_json::{Value, json};

use crate::common::{Exposure, Result, Simulator, mfa_config, seed_stores};
use crate::import::{GATEWAY, IMPORT_TOKEN};

const PHONE: &str = "+14155552671";
const PASSWORD: &str = "carried-password-1";
const EMAIL: &str = "carried@example.net";

/// `portcullis serve` with the import API on (import.rs's), its debug log kept in a
/// file (searched for phones).
struct Serve {
    inner: crate::import::Serve,
    log: PathBuf,
}

impl Serve {
    fn start(dir: &Path, config: &Path) -> Serve {
        let log = dir.join("serve.log");
        let inner = crate::import::Serve::start_logging(dir, config, "", Some(&log));
        Serve { inner, log }
    }

    fn post(&self, path: &str, body: &Value) -> Value {
        self.inner
            .client
            .post(format!("{}{path}", self.inner.url))
            .bearer_auth(GATEWAY)
            .json(body)
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    fn login(&self, tx: &str) -> Value {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        self.post(
            "/v1/login",
            &json!({
                "transaction_id": tx, "time_ms": now, "connection": "db",
                "client_id": "paste-web", "email": EMAIL, "password": PASSWORD,
                "request": {"ip": "192.0.2.1", "user_agent": "test"},
            }),
        )
    }

    /// Submits a users file to the import API and waits for its job's end; the job
    /// and its errors (`[]` when there are none).
    fn import(&self, users: &Value) -> (Value, Value) {
        let form = reqwest::blocking::multipart::Form::new()
            .part(
                "users",
                reqwest::blocking::multipart::Part::bytes(users.to_string().into_bytes())
                    .file_name("users.json"),
            )
            .text("connection_id", "con_portcullis");
        let job: Value = self
            .inner
            .client
            .post(format!("{}/api/v2/jobs/users-imports", self.inner.url))
            .bearer_auth(IMPORT_TOKEN)
            .multipart(form)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let id = job["id"].as_str().unwrap().to_owned();
        for _ in 0..300 {
            let job: Value = self.get(&format!("/api/v2/jobs/{id}")).json().unwrap();
            if !matches!(job["status"].as_str(), Some("pending" | "processing")) {
                let errors = self.get(&format!("/api/v2/jobs/{id}/errors"));
                let errors = if errors.status() == 204 {
                    json!([])
                } else {
                    errors.json().unwrap()
                };
                return (job, errors);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("job {id} did not finish");
    }

    fn get(&self, path: &str) -> reqwest::blocking::Response {
        self.inner
            .client
            .get(format!("{}{path}", self.inner.url))
            .bearer_auth(IMPORT_TOKEN)
            .send()
            .unwrap()
    }
}

fn factor(user_id: &str, n: u32) -> Factor {
    Factor {
        id: format!("fac_{user_id}_{n}"),
        user_id: user_id.into(),
        kind: FactorKind::Sms,
        provider: FactorProvider::Verify,
        legacy_provider_user_id: None,
        phone: None,
        status: FactorStatus::Active,
        enrolled_at_ms: 1_000,
        updated_at_ms: 1_000,
        last_used_ms: None,
        cohort: None,
        reverted: false,
    }
}

fn user(id: &str, email: &str) -> DirectoryUser {
    DirectoryUser {
        id: id.into(),
        email: Some(email.into()),
        email_verified: true,
        identities: Vec::new(),
        app_metadata: json!({"migrated": true}),
        user_metadata: json!({"name": id}),
        created_at_ms: 1_000,
        last_login_ms: None,
        logins_count: 0,
    }
}

/// The source directory: the user with a new-provider SMS factor and a password
/// they know, a user whose factor's phone is only at the old provider (held back),
/// and one with an enrolment never confirmed (exported without a factor).
fn source(dir: &Path, sim: &Simulator) -> Result<PathBuf> {
    let config = mfa_config(dir, sim);
    let loaded = PipelineConfig::load(&config)?;
    let settings = loaded.state.as_ref().unwrap();
    let state = portcullis::state::open_state(&settings.directory, &loaded.base_dir)?;
    let keys = loaded.mfa.key_ring()?;
    let hash = portcullis::state::passwords::legacy_formats::argon2id(PASSWORD, &[9; 16]);
    state.put_user(&user("usr_carried", EMAIL), Some(hash.as_str()))?;
    let mut carried = factor("usr_carried", 1);
    carried.phone = Some(keys.seal(PHONE, "usr_carried", &carried.id));
    state.put_factor(&carried)?;
    state.put_user(
        &user("usr_oldonly", "oldonly@example.net"),
        Some(hash.as_str()),
    )?;
    state.put_factor(&Factor {
        provider: FactorProvider::LegacySms,
        legacy_provider_user_id: Some("1000007".into()),
        ..factor("usr_oldonly", 1)
    })?;
    state.put_user(
        &user("usr_pending", "pending@example.net"),
        Some(hash.as_str()),
    )?;
    let mut pending = factor("usr_pending", 1);
    pending.status = FactorStatus::Pending;
    pending.phone = Some(keys.seal("+14155552672", "usr_pending", &pending.id));
    state.put_factor(&pending)?;
    Ok(config)
}

/// A fresh directory beside the same simulator, sealing with a key of its own.
fn target(dir: &Path, sim: &Simulator) -> Result<PathBuf> {
    let config = mfa_config(dir, sim);
    let key = base64::engine::general_purpose::STANDARD.encode([42u8; 32]);
    std::fs::write(dir.join("demo-mfa.keys"), format!("fresh1:{key}\n"))?;
    seed_stores(&PipelineConfig::load(&config)?, &dir.join("mfa"), 0, 0)?;
    Ok(config)
}

fn cli(args: &[&str], env: &[(&str, &str)]) -> (bool, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.success(),
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Exports the source directory's users; checks what the files hold and how they are
/// kept. Returns the export's directory and what the CLI printed.
fn export_source(a: &Path, sim: &Simulator) -> Result<(PathBuf, String)> {
    let source_config = source(a, sim)?;
    let export_dir = a.join("export");
    let (ok, report, printed) = cli(
        &[
            "import",
            "export",
            "--from-directory",
            "--config",
            source_config.to_str().unwrap(),
            "--out",
            export_dir.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "{printed}");
    assert_eq!(report["users_exported"], 2, "{report}");
    assert_eq!(report["factors_exported"], 1, "{report}");
    assert_eq!(report["held_back"], 1, "{report}");
    assert_eq!(
        report["problems"][0]["legacy_id"], "usr_oldonly",
        "{report}"
    );

    // The file holds the phone in clear, so only its owner may read it.
    let name = report["files"][0]["name"].as_str().unwrap();
    let file = export_dir.join(name);
    use std::os::unix::fs::PermissionsExt;
    for path in [&file, &export_dir.join("manifest.json")] {
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
    assert_eq!(
        std::fs::metadata(&export_dir)?.permissions().mode() & 0o777,
        0o700
    );
    let users: Vec<Value> = serde_json::from_slice(&std::fs::read(&file)?)?;
    let carried = users.iter().find(|u| u["email"] == EMAIL).unwrap();
    assert_eq!(carried["mfa_factors"], json!([{"phone": {"value": PHONE}}]));
    assert_eq!(carried["custom_password_hash"]["algorithm"], "argon2");
    let pending = users
        .iter()
        .find(|u| u["email"] == "pending@example.net")
        .unwrap();
    assert!(pending.get("mfa_factors").is_none(), "{pending}");

    Ok((export_dir, printed))
}

#[test]
fn a_users_sms_factor_moves_to_a_fresh_directory_and_its_login_texts_the_same_phone() -> Result {
    let sim = Simulator::start(&[]);
    let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (export_dir, printed) = export_source(a.path(), &sim)?;
    // Into a fresh directory with its own key, through the import client.
    let target_config = target(b.path(), &sim)?;
    let serve = Serve::start(b.path(), &target_config);
    let (ok, imported, run_printed) = cli(
        &[
            "import",
            "run",
            "--config",
            target_config.to_str().unwrap(),
            "--dir",
            export_dir.to_str().unwrap(),
            "--target",
            &serve.inner.url,
        ],
        &[("PORTCULLIS_IMPORT_TOKEN", IMPORT_TOKEN)],
    );
    assert!(ok, "{run_printed}");
    assert_eq!(imported["inserted"], 2, "{imported}");

    // Sealed under the fresh directory's key, for the new provider, as enrolment does.
    let loaded = PipelineConfig::load(&target_config)?;
    let state =
        portcullis::state::open_state(&loaded.state.as_ref().unwrap().directory, &loaded.base_dir)?;
    let user_id = portcullis::jobs::import::records::user_id_for(EMAIL);
    let factors = state.factors_of(&user_id)?;
    assert_eq!(factors.len(), 1, "{factors:?}");
    let sealed = factors[0].phone.as_ref().unwrap();
    assert_eq!(sealed.key_id, "fresh1");
    assert_eq!(factors[0].provider, FactorProvider::Verify);
    assert_eq!(factors[0].status, FactorStatus::Active);
    let fresh = KeyRing::from_file(&b.path().join("demo-mfa.keys"))?;
    assert_eq!(
        fresh.open(sealed, &user_id, &factors[0].id)?.as_str(),
        PHONE
    );

    // The login reaches an SMS challenge on the new provider, and the code goes to
    // the same phone.
    let texts_before = sim
        .get(&format!("/sim/inbox?to={}", PHONE.replace('+', "%2B")))
        .as_array()
        .unwrap()
        .len();
    let verdict = serve.login("tx-carried-1");
    assert_eq!(verdict["decision"]["type"], "challenge", "{verdict}");
    assert_eq!(verdict["decision"]["via"], "verify", "{verdict}");
    let inbox = sim.get(&format!("/sim/inbox?to={}", PHONE.replace('+', "%2B")));
    let inbox = inbox.as_array().unwrap();
    assert_eq!(inbox.len(), texts_before + 1, "{inbox:?}");
    assert_eq!(inbox.last().unwrap()["provider"], "verify");
    let done = serve.post(
        "/v1/continue",
        &json!({
            "token": verdict["resume_token"],
            "transaction_id": verdict["transaction_id"],
            "result": {"code": sim.last_code(PHONE)},
        }),
    );
    assert_eq!(done["decision"]["type"], "allow", "{done}");

    // The phone is in the export file only: not in what anything printed or logged,
    // the import's saved results, or either directory's database.
    let mut exposure = Exposure::new()
        .databases_under(a.path())
        .databases_under(b.path())
        .text("export", &printed)
        .text("import run", &run_printed)
        .file(&serve.log);
    if let Ok(results) = std::fs::read_dir(export_dir.join("results")) {
        for entry in results {
            exposure = exposure.file(&entry?.path());
        }
    }
    assert!(exposure.places() >= 5, "{}", exposure.places());
    exposure.assert_no_phone(PHONE);
    Ok(())
}

#[test]
fn an_imported_factor_the_directory_cannot_honour_fails_its_record_and_is_masked() -> Result {
    let sim = Simulator::start(&[]);
    let b = tempfile::tempdir()?;
    let config = target(b.path(), &sim)?;
    let serve = Serve::start(b.path(), &config);
    let hash = portcullis::jobs::import::export::custom_password_hash(
        &portcullis::state::passwords::legacy_formats::salted_sha1("pw", "salt"),
    )
    .unwrap();
    let record = |email: &str, factors: Value| json!({"email": email, "custom_password_hash": hash, "mfa_factors": factors});
    let (job, errors) = serve.import(&json!([
        record(
            "good@example.net",
            json!([{"phone": {"value": "+14155552673"}}])
        ),
        // No such area code: never stored as some other number.
        record(
            "badphone@example.net",
            json!([{"phone": {"value": "+11115552674"}}])
        ),
        // Spaces: not E.164.
        record(
            "spaced@example.net",
            json!([{"phone": {"value": "+1 415 555 2675"}}])
        ),
        record(
            "totp@example.net",
            json!([{"totp": {"secret": "JBTWY3DPEHPK3PNP"}}])
        ),
        record(
            "email@example.net",
            json!([{"email": {"value": "email@example.net"}}])
        ),
    ]));
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["summary"]["inserted"], 1, "{job}");
    assert_eq!(job["summary"]["failed"], 4, "{job}");
    let codes: Vec<(String, String)> = errors
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["errors"][0]["code"].as_str().unwrap().to_owned(),
                e["errors"][0]["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        codes,
        [
            ("FORMAT", "mfa_factors.0.phone.value"),
            ("PATTERN", "mfa_factors.0.phone.value"),
            ("ENUM_MISMATCH", "mfa_factors.0.totp"),
            ("ENUM_MISMATCH", "mfa_factors.0.email"),
        ]
        .map(|(c, p)| (c.to_owned(), p.to_owned()))
    );
    // The errors answer masks every factor's value, as Auth0 does.
    for error in errors.as_array().unwrap() {
        let factor = error["user"]["mfa_factors"][0].as_object().unwrap();
        for fields in factor.values() {
            for value in fields.as_object().unwrap().values() {
                assert_eq!(value, "*****", "{error}");
            }
        }
    }
    let shown = errors.to_string();
    for secret in ["5552674", "555 2675", "JBTWY3DPEHPK3PNP"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    // Refused records left no user behind.
    let loaded = PipelineConfig::load(&config)?;
    let state =
        portcullis::state::open_state(&loaded.state.as_ref().unwrap().directory, &loaded.base_dir)?;
    for email in [
        "badphone@example.net",
        "totp@example.net",
        "email@example.net",
    ] {
        assert!(
            portcullis::model::Directory::find_by_email(state.as_ref(), email)?.is_empty(),
            "{email}"
        );
    }
    let good = portcullis::jobs::import::records::user_id_for("good@example.net");
    assert_eq!(state.factors_of(&good)?.len(), 1);
    Exposure::new()
        .databases_under(b.path())
        .file(&serve.log)
        .assert_no_phone("+11115552674");
    Ok(())
}

/// `--out` naming a directory that exists: refused unless it is closed to the group
/// and others and owned by whoever exports (the files hold hashes and phones), with a
/// message saying why and nothing written; accepted once it is.
#[test]
fn an_export_refuses_a_directory_others_may_open_or_own_and_writes_nothing() -> Result {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let sim = Simulator::start(&[]);
    let a = tempfile::tempdir()?;
    let config = source(a.path(), &sim)?;
    let out = a.path().join("existing");
    std::fs::create_dir(&out)?;
    let export = || {
        cli(
            &[
                "import",
                "export",
                "--from-directory",
                "--config",
                config.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
            &[],
        )
    };
    let nothing_in = |dir: &Path| std::fs::read_dir(dir).unwrap().next().is_none();
    for (mode, shown) in [
        (0o755, "mode 755"),
        (0o750, "mode 750"),
        (0o701, "mode 701"),
    ] {
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(mode))?;
        let (ok, _, printed) = export();
        assert!(!ok, "{mode:o}: {printed}");
        assert!(
            printed.contains("is open to its group or others") && printed.contains(shown),
            "{printed}"
        );
        assert!(nothing_in(&out), "{mode:o}: something was written");
        Exposure::new()
            .text("export", &printed)
            .assert_no_phone(PHONE);
    }
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o700))?;
    let me = std::fs::metadata(a.path())?.uid();
    if me == 0 {
        // Root may give it away: owned by another user, it is refused too.
        std::os::unix::fs::chown(&out, Some(65534), None)?;
        let (ok, _, printed) = export();
        assert!(!ok, "{printed}");
        assert!(printed.contains("belongs to another user"), "{printed}");
        assert!(nothing_in(&out));
        std::os::unix::fs::chown(&out, Some(me), None)?;
    } else {
        crate::common::not_run("a directory owned by another user (needs root to make one)");
    }
    let (ok, report, printed) = export();
    assert!(ok, "{printed}");
    assert_eq!(report["users_exported"], 2, "{report}");
    Ok(())
}

/// `--out` that is a symbolic link to a private directory of the exporter's, or a
/// private directory under one others may write (its parent or higher): whoever owns
/// the link (or may write there) can swap in a directory of their own between the
/// check and the writes,
/// then rename or replace the files `import run` later submits. Both are refused with
/// nothing written; in a sticky parent (as `/tmp`) the export goes ahead.
#[test]
fn an_export_refuses_a_directory_another_user_could_swap_under_it() -> Result {
    use std::os::unix::fs::PermissionsExt;
    let sim = Simulator::start(&[]);
    let a = tempfile::tempdir()?;
    let config = source(a.path(), &sim)?;
    let export = |out: &Path| {
        cli(
            &[
                "import",
                "export",
                "--from-directory",
                "--config",
                config.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
            &[],
        )
    };
    let nothing_in = |dir: &Path| std::fs::read_dir(dir).unwrap().next().is_none();
    let mine = a.path().join("mine");
    std::fs::create_dir(&mine)?;
    std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o700))?;
    let link = a.path().join("link");
    std::os::unix::fs::symlink(&mine, &link)?;
    let (ok, _, printed) = export(&link);
    assert!(!ok, "a symbolic link was followed: {printed}");
    assert!(printed.contains("symbolic link"), "{printed}");
    assert!(nothing_in(&mine), "something was written through the link");

    let shared = a.path().join("shared");
    std::fs::create_dir(&shared)?;
    let out = shared.join("out");
    std::fs::create_dir(&out)?;
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o700))?;
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777))?;
    let (ok, _, printed) = export(&out);
    assert!(!ok, "a parent others may write was accepted: {printed}");
    assert!(
        printed.contains("its group or others may write") && printed.contains("mode 777"),
        "{printed}"
    );
    assert!(nothing_in(&out));
    Exposure::new()
        .text("export", &printed)
        .assert_no_phone(PHONE);

    // Higher up too: whoever may write there renames the directory holding it.
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o700))?;
    std::fs::set_permissions(a.path(), std::fs::Permissions::from_mode(0o777))?;
    let (ok, _, printed) = export(&out);
    std::fs::set_permissions(a.path(), std::fs::Permissions::from_mode(0o700))?;
    assert!(
        !ok,
        "a directory others may write above it was accepted: {printed}"
    );
    assert!(printed.contains("mode 777"), "{printed}");
    assert!(nothing_in(&out));

    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777))?;
    let (ok, report, printed) = export(&out);
    assert!(ok, "{printed}");
    assert_eq!(report["users_exported"], 2, "{report}");
    Ok(())
}

/// An import-token holder who knows a legacy user's password (the email has an
/// account in a product, not yet in the directory) imports that email with their own
/// phone: the record is refused for its factor (a factor would outlive the password
/// reset the owner's ownership check leads to), so no directory user is made by it.
#[test]
fn an_import_cannot_give_a_legacy_users_email_a_phone() -> Result {
    let sim = Simulator::start(&[]);
    let b = tempfile::tempdir()?;
    let config = mfa_config(b.path(), &sim);
    seed_stores(
        &PipelineConfig::load(&config)?,
        &b.path().join("mfa"),
        30,
        30,
    )?;
    let loaded = PipelineConfig::load(&config)?;
    let state =
        portcullis::state::open_state(&loaded.state.as_ref().unwrap().directory, &loaded.base_dir)?;
    // A seeded login of a legacy user the directory does not have yet.
    let (email, password) = crate::common::login_files(&b.path().join("mfa"))
        .iter()
        .filter_map(|f| {
            let login: Value = serde_json::from_str(&std::fs::read_to_string(f).ok()?).ok()?;
            Some((
                login["email"].as_str()?.to_owned(),
                login["password"].as_str()?.to_owned(),
            ))
        })
        .find(|(email, _)| {
            portcullis::model::Directory::find_by_email(state.as_ref(), email)
                .unwrap()
                .is_empty()
        })
        .ok_or("a legacy user not migrated yet")?;
    let serve = Serve::start(b.path(), &config);
    let attacker_phone = "+14155552677";
    let hash = portcullis::jobs::import::export::custom_password_hash(
        &portcullis::state::passwords::legacy_formats::salted_sha1(&password, "salt"),
    )
    .unwrap();
    let (job, errors) = serve.import(&json!([{
        "email": email, "custom_password_hash": hash,
        "mfa_factors": [{"phone": {"value": attacker_phone}}],
    }]));
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["summary"]["failed"], 1, "{job}");
    assert_eq!(errors[0]["errors"][0]["code"], "CONFLICT", "{errors}");
    assert_eq!(errors[0]["errors"][0]["path"], "mfa_factors", "{errors}");
    assert!(
        portcullis::model::Directory::find_by_email(state.as_ref(), &email)?.is_empty(),
        "no user made by the refused record"
    );
    let shown = errors.to_string();
    assert!(
        !shown.contains("5552677") && !shown.contains(&password),
        "{shown}"
    );
    Exposure::new()
        .databases_under(b.path())
        .file(&serve.log)
        .assert_no_phone(attacker_phone);
    Ok(())
}
