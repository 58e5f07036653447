use std::path::PathBuf;
use std::sync::OnceLock;

use portcullis::{EngineSettings, LoadError, LoginAttempt, Pipeline, PipelineConfig, Runtime};

pub type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// A built component under the target directory; says how to build it when missing.
fn built(relative: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let path = target.join(relative);
    assert!(
        path.exists(),
        "{} is missing: build the guests with `cargo xtask build-rules` (or run `cargo xtask test`)",
        path.display()
    );
    path
}

/// A guest component from rules/testing/, e.g. `guest("infinite-loop")`.
pub fn guest(name: &str) -> PathBuf {
    built(&format!(
        "wasm32-wasip2/guest/guest_{}.wasm",
        name.replace('-', "_")
    ))
}

/// A rule built without WASI (`cargo xtask build-rules` writes them to target/rules).
pub fn core_rule_component(crate_name: &str) -> PathBuf {
    built(&format!("rules/{}.wasm", crate_name.replace('-', "_")))
}

/// One `[[rule]]` entry; `extra` is more TOML lines for it. Unless `extra` says
/// otherwise, the rule may return the effects the test guests return (claims and
/// metadata patches); effects are otherwise denied by default.
pub fn rule(name: &str, guest_name: &str, extra: &str) -> String {
    let effects = if extra.contains("effects =") {
        ""
    } else {
        "effects = [\"add_claim\", \"set_app_metadata\", \"set_user_metadata\"]\n"
    };
    format!(
        "[[rule]]\nname = \"{name}\"\ncomponent = \"{}\"\n{effects}{extra}\n",
        guest(guest_name).display()
    )
}

/// One engine for the whole test binary, as in a real process; its compile cache
/// lives in a temporary directory so each component is compiled once per run.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<(Runtime, tempfile::TempDir)> = OnceLock::new();
    &RUNTIME
        .get_or_init(|| {
            let cache = tempfile::tempdir().unwrap();
            let settings = EngineSettings {
                cache_dir: Some(cache.path().to_owned()),
                ..EngineSettings::default()
            };
            (Runtime::new(&settings).unwrap(), cache)
        })
        .0
}

pub fn load(rules: &[String]) -> std::result::Result<Pipeline, LoadError> {
    let config = PipelineConfig::parse(&rules.concat(), &workspace_root())?;
    runtime().load(&config)
}

/// The time test logins happen at (a pipeline evaluated directly has no clock; a
/// gateway in a test is given a `ManualClock` at this time).
pub const LOGIN_TIME_MS: u64 = 1_764_403_200_000;

/// A login as a gateway sends it (the host finds the user itself).
pub fn login_json(transaction_id: &str) -> String {
    format!(
        r#"{{"transaction_id": "{transaction_id}", "time_ms": {LOGIN_TIME_MS},
            "connection": "db", "client_id": "paste-web", "email": "carol@example.com",
            "password": "s3cret-Passw0rd!", "request": {{"ip": "192.0.2.1", "user_agent": "test"}}}}"#
    )
}

/// The same login, happening now (for a gateway on the system clock).
pub fn login_json_now(transaction_id: &str) -> String {
    login_json(transaction_id).replace(
        &LOGIN_TIME_MS.to_string(),
        &portcullis::clock::Clock::now_ms(&portcullis::clock::SystemClock).to_string(),
    )
}

/// A login with the directory user a gateway would have found, for pipelines
/// evaluated directly.
pub fn login(transaction_id: &str) -> LoginAttempt {
    let mut login = LoginAttempt::from_json(&login_json(transaction_id)).unwrap();
    login.user = Some(portcullis::login::DirectoryUser {
        id: "usr_1".into(),
        email: Some("carol@example.com".into()),
        email_verified: true,
        identities: Vec::new(),
        app_metadata: serde_json::json!({}),
        user_metadata: serde_json::json!({}),
        created_at_ms: 0,
        last_login_ms: None,
        logins_count: 0,
    });
    login
}

/// The migration pipeline of fixtures/pipeline.toml with its stores in `dir`: the
/// same rules and settings, private state.
pub fn migration_config(dir: &std::path::Path, variant: &str) -> PathBuf {
    let root = workspace_root();
    let text = std::fs::read_to_string(root.join("fixtures").join(variant)).unwrap();
    let text = text
        .replace("../target/demo-state/", &format!("{}/", dir.display()))
        .replace("../target/", &format!("{}/target/", root.display()));
    let path = dir.join(variant);
    std::fs::write(&path, text).unwrap();
    path
}

/// A seeded migration environment in a temporary directory.
pub struct Demo {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub gateway: portcullis::Gateway,
    /// The gateway's clock: it starts at the time the logins were seeded.
    pub clock: std::sync::Arc<portcullis::clock::ManualClock>,
}

/// Seeds demo stores (seed 42) in a new temporary directory; returns it with the
/// path of its copy of fixtures/pipeline.toml.
pub fn seeded_dir(users: usize, logins: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config_path = migration_config(dir.path(), "pipeline.toml");
    seed_stores(
        &PipelineConfig::load(&config_path).unwrap(),
        dir.path(),
        users,
        logins,
    )
    .unwrap();
    (dir, config_path)
}

/// Seeds the stores a config names (seed 42), with its logins in `dir/logins`.
pub fn seed_stores(
    config: &PipelineConfig,
    dir: &std::path::Path,
    users: usize,
    logins: usize,
) -> std::result::Result<(), portcullis::state::StoreError> {
    let (state, legacy) = portcullis::seed::open_for_seed(config)?;
    let mfa_keys = (config.mfa.legacy_sms.is_some() || config.mfa.verify.is_some())
        .then(|| std::sync::Arc::new(config.mfa.key_ring().unwrap()));
    let options = portcullis::seed::SeedOptions {
        users,
        logins,
        seed: 42,
        mfa_keys,
    };
    portcullis::seed::seed(
        state.as_ref(),
        &legacy,
        &dir.join("logins"),
        &options,
        |_| {},
    )?;
    Ok(())
}

/// The login files a seeded directory holds, in order.
pub fn login_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("logins"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// The first seeded login whose dry verdict matches `pick`.
pub fn find_login(
    demo: &Demo,
    pick: impl Fn(&portcullis::Verdict, &serde_json::Value) -> bool,
) -> LoginAttempt {
    let dry = portcullis::Gateway::open(&PipelineConfig::load(&demo.config).unwrap(), runtime())
        .unwrap()
        .without_applying();
    demo.logins()
        .into_iter()
        .find(|(attempt, json)| pick(&dry.login(attempt).unwrap(), json))
        .map(|(attempt, _)| attempt)
        .expect("the seeded batch has such a login")
}

/// Whether a verdict creates a directory user (a first login, migrated).
pub fn creates_user(verdict: &portcullis::Verdict) -> bool {
    verdict
        .effects
        .iter()
        .any(|e| matches!(e, portcullis::Effect::CreateUser { .. }))
}

impl Demo {
    pub fn new(users: usize, logins: usize) -> Demo {
        let (dir, config_path) = seeded_dir(users, logins);
        let config = PipelineConfig::load(&config_path).unwrap();
        let clock = portcullis::clock::ManualClock::at(portcullis::clock::Clock::now_ms(
            &portcullis::clock::SystemClock,
        ));
        let gateway = portcullis::Gateway::open(&config, runtime())
            .unwrap()
            .with_clock(clock.clone());
        Demo {
            dir,
            config: config_path,
            gateway,
            clock,
        }
    }

    pub fn clock_now(&self) -> u64 {
        portcullis::clock::Clock::now_ms(self.clock.as_ref())
    }

    /// The seeded login attempts, with their files' JSON.
    pub fn logins(&self) -> Vec<(LoginAttempt, serde_json::Value)> {
        login_files(self.dir.path())
            .iter()
            .map(|f| {
                let text = std::fs::read_to_string(f).unwrap();
                (
                    LoginAttempt::from_json(&text).unwrap(),
                    serde_json::from_str(&text).unwrap(),
                )
            })
            .collect()
    }

    pub fn sql<T: rusqlite::types::FromSql>(&self, query: &str) -> T {
        let db = rusqlite::Connection::open(self.dir.path().join("directory.db")).unwrap();
        db.query_row(query, [], |row| row.get(0)).unwrap()
    }
}

/// A directory user created as a first login would create it (tx `tx-<id>`).
pub fn create_user(state: &dyn portcullis::state::StateStore, id: &str, email: &str) -> Result {
    let report = state.apply(&portcullis::state::EffectBatch {
        transaction_id: format!("tx-{id}"),
        time_ms: 1_000,
        user_id: None,
        new_user_id: id.into(),
        effects: vec![portcullis::Effect::CreateUser {
            email: email.into(),
            email_verified: true,
            app_metadata: serde_json::json!({}),
            user_metadata: serde_json::json!({}),
            password_from_login: false,
        }],
        password_hash: None,
    })?;
    assert!(report.created_user, "{report:?}");
    Ok(())
}

/// `portcullis-sim` running as its own process on a free port; killed on drop.
pub struct Simulator {
    child: std::process::Child,
    pub url: String,
}

impl Simulator {
    /// Starts the simulator with `args` (e.g. `--seed-legacy 100`).
    pub fn start(args: &[&str]) -> Simulator {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis-sim"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start portcullis-sim");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("portcullis-sim said {line:?}"))
            .to_owned();
        Simulator { child, url }
    }

    pub fn get(&self, path: &str) -> serde_json::Value {
        reqwest::blocking::get(format!("{}{path}", self.url))
            .unwrap()
            .json()
            .unwrap()
    }

    pub fn send(&self, method: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
        reqwest::blocking::Client::new()
            .request(method.parse().unwrap(), format!("{}{path}", self.url))
            .json(&body)
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    /// The last code texted to `to` (E.164), as the phone's owner would read it.
    pub fn last_code(&self, to: &str) -> String {
        let inbox = self.get(&format!("/sim/inbox?to={}", to.replace('+', "%2B")));
        inbox
            .as_array()
            .and_then(|m| m.last())
            .expect("a text was sent")["code"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// fixtures/pipeline-mfa.toml with its stores in `dir`, its providers at `sim`, and
/// their secrets in files beside it.
pub fn mfa_config(dir: &std::path::Path, sim: &Simulator) -> PathBuf {
    provider_config(dir, sim, "pipeline-mfa.toml")
}

/// A fixtures pipeline with SMS providers (`variant`), as [`mfa_config`] sets it up.
pub fn provider_config(dir: &std::path::Path, sim: &Simulator, variant: &str) -> PathBuf {
    let path = migration_config(dir, variant);
    std::fs::copy(
        workspace_root().join("fixtures/demo-mfa.keys"),
        dir.join("demo-mfa.keys"),
    )
    .unwrap();
    std::fs::write(dir.join("legacy.key"), "sim-legacy-key\n").unwrap();
    std::fs::write(dir.join("verify.token"), "sim-verify-token\n").unwrap();
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("http://127.0.0.1:7879", &sim.url)
        .replace(
            "api_key_env = \"PORTCULLIS_LEGACY_SMS_KEY\"",
            "api_key_file = \"legacy.key\"",
        )
        .replace(
            "auth_token_env = \"PORTCULLIS_VERIFY_AUTH_TOKEN\"",
            "auth_token_file = \"verify.token\"",
        );
    std::fs::write(&path, text).unwrap();
    path
}

/// `portcullis ARGS --config CONFIG`, its logs at `log` (the binary's default when
/// `None`): stdout and stderr together, and the exit status.
pub fn cli_logging(
    config: &std::path::Path,
    args: &[&str],
    log: Option<&str>,
) -> (String, std::process::ExitStatus) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
    command
        .args(args)
        .args(["--config", config.to_str().unwrap()]);
    if let Some(level) = log {
        command.env("PORTCULLIS_LOG", level);
    }
    let out = command.output().unwrap();
    (
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        out.status,
    )
}
