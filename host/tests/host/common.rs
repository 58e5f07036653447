use std::path::PathBuf;
use std::sync::OnceLock;

use portcullis::{EngineSettings, LoadError, LoginAttempt, Pipeline, PipelineConfig, Runtime};

pub type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// A test that cannot run here (a server it needs is not configured, a tool is
/// missing) says so: on stderr, and in the file `cargo xtask test` names in
/// `PORTCULLIS_TEST_SKIPS`, which it lists after the run, so a skip is never counted
/// as a pass without a word.
pub fn not_run(reason: &str) {
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    eprintln!("{test}: not run: {reason}");
    if let Some(file) = std::env::var_os("PORTCULLIS_TEST_SKIPS") {
        use std::io::Write as _;
        if let Ok(mut out) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
        {
            let _ = writeln!(out, "{test}\t{reason}");
        }
    }
}

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
        &portcullis::flows::clock::Clock::now_ms(&portcullis::flows::clock::SystemClock)
            .to_string(),
    )
}

/// A login with the directory user a gateway would have found, for pipelines
/// evaluated directly.
pub fn login(transaction_id: &str) -> LoginAttempt {
    let mut login = LoginAttempt::from_json(&login_json(transaction_id)).unwrap();
    login.user = Some(portcullis::model::DirectoryUser {
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

/// A config's text with its directory store at `url` (a PostgreSQL database; the legacy
/// stores stay where they are).
pub fn directory_at(text: &str, url: &str) -> String {
    text.lines()
        .map(|line| {
            if line.starts_with("directory = ") {
                format!("directory = \"{url}\"")
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The config file at `path` with its directory store at `url` (`directory_at`).
pub fn move_directory_to(path: &std::path::Path, url: &str) -> std::io::Result<()> {
    let text = std::fs::read_to_string(path)?;
    std::fs::write(path, directory_at(&text, url))
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
    pub clock: std::sync::Arc<portcullis::flows::clock::ManualClock>,
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
    let (state, legacy) = portcullis::jobs::seed::open_for_seed(config, false)?;
    let mfa_keys = (config.mfa.legacy_sms.is_some() || config.mfa.verify.is_some())
        .then(|| std::sync::Arc::new(config.mfa.key_ring().unwrap()));
    let options = portcullis::jobs::seed::SeedOptions {
        users,
        logins,
        seed: 42,
        mfa_keys,
    };
    portcullis::jobs::seed::seed(
        state.as_ref(),
        &legacy,
        &dir.join("logins"),
        &options,
        |_| {},
    )?;
    Ok(())
}

/// Where the MFA and recovery tests start: the provider simulator, a new directory
/// with a config (`make`, then `edit`) and its stores seeded under `seeded` with
/// `users` people and `logins` logins.
pub struct ProviderEnv {
    pub sim: Simulator,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub loaded: PipelineConfig,
}

impl ProviderEnv {
    pub fn seed(
        sim_args: &[&str],
        make: impl FnOnce(&std::path::Path, &Simulator) -> PathBuf,
        edit: impl FnOnce(String) -> String,
        (seeded, users, logins): (&str, usize, usize),
    ) -> ProviderEnv {
        let sim = Simulator::start(sim_args);
        let dir = tempfile::tempdir().unwrap();
        let config = make(dir.path(), &sim);
        let text = edit(std::fs::read_to_string(&config).unwrap());
        std::fs::write(&config, text).unwrap();
        let loaded = PipelineConfig::load(&config).unwrap();
        seed_stores(&loaded, &dir.path().join(seeded), users, logins).unwrap();
        ProviderEnv {
            sim,
            dir,
            config,
            loaded,
        }
    }
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

/// A seeded login that carries its user's right password, with that user's factors.
pub struct SeededLogin {
    /// The login file as written (what a test posts to `serve`).
    pub text: String,
    pub login: LoginAttempt,
    pub user_id: String,
    pub factors: Vec<portcullis::state::factors::Factor>,
}

/// The seeded logins under `dir`, in file order, whose directory user's factors `pick`
/// accepts and whose password is that user's (checked after `pick`: a hash each).
pub fn seeded_logins<'a>(
    state: &'a dyn portcullis::state::StateStore,
    dir: &std::path::Path,
    mut pick: impl FnMut(&[portcullis::state::factors::Factor]) -> bool + 'a,
) -> impl Iterator<Item = SeededLogin> + 'a {
    login_files(dir).into_iter().filter_map(move |file| {
        let text = std::fs::read_to_string(&file).unwrap();
        let login = LoginAttempt::from_json(&text).unwrap();
        let users = portcullis::model::Directory::find_by_email(state, &login.email).ok()?;
        let user = users.first()?;
        let factors = state.factors_of(&user.id).unwrap();
        if !pick(&factors) {
            return None;
        }
        let password = login.password.as_ref()?;
        portcullis::model::Directory::verify_password(state, &user.id, password)
            .unwrap()
            .then(|| SeededLogin {
                text,
                user_id: user.id.clone(),
                login,
                factors,
            })
    })
}

/// A user whose one factor is a phone at the new provider (the simulator texts it).
pub fn one_new_provider_phone(factors: &[portcullis::state::factors::Factor]) -> bool {
    matches!(factors, [f] if f.phone.is_some() && f.legacy_provider_user_id.is_none())
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
        let clock = portcullis::flows::clock::ManualClock::at(
            portcullis::flows::clock::Clock::now_ms(&portcullis::flows::clock::SystemClock),
        );
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
        portcullis::flows::clock::Clock::now_ms(self.clock.as_ref())
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
/// Reads the first line a server started by a test prints, "listening on ADDR", and
/// returns ADDR. Takes the child's stdout: nothing else of it is read.
pub fn listening_address(child: &mut std::process::Child, what: &str) -> String {
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout piped")),
        &mut line,
    )
    .unwrap_or_else(|e| panic!("reading what {what} printed: {e}"));
    line.trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{what} said {line:?}"))
        .to_owned()
}

pub struct Simulator {
    child: std::process::Child,
    pub url: String,
    /// Everything it printed (stdout and stderr), for the searches for secrets.
    printed: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Simulator {
    /// Starts the simulator with `args` (e.g. `--seed-legacy 100`).
    pub fn start(args: &[&str]) -> Simulator {
        use std::io::{BufRead, Read};
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis-sim"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start portcullis-sim");
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("portcullis-sim said {line:?}"))
            .to_owned();
        let printed = std::sync::Arc::new(std::sync::Mutex::new(line.into_bytes()));
        let stderr = child.stderr.take().unwrap();
        for mut stream in [Box::new(stdout) as Box<dyn Read + Send>, Box::new(stderr)] {
            let printed = printed.clone();
            std::thread::spawn(move || {
                let mut buffer = [0u8; 8192];
                while let Ok(n @ 1..) = stream.read(&mut buffer) {
                    printed.lock().unwrap().extend_from_slice(&buffer[..n]);
                }
            });
        }
        Simulator {
            child,
            url,
            printed,
        }
    }

    /// What the simulator printed so far, stdout and stderr together.
    pub fn output(&self) -> Vec<u8> {
        self.printed.lock().unwrap().clone()
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

/// Everything a run may have left a secret in, gathered for one search: each SQLite
/// database as its WAL holds it and as its main file holds it after a checkpoint
/// (recent writes sit in `-wal` until one: a check of the main file alone misses
/// them), the legacy stores beside it, any other file named, and what the server,
/// the simulator and the CLI printed.
#[derive(Default)]
pub struct Exposure {
    places: Vec<(String, Vec<u8>)>,
}

/// What may stand between the characters of a secret written out by hand or by a
/// formatter: `(650) 253-0000`, `650.253.0000`, `abcde-fghij`, `+1 650 253 0000`.
const SEPARATORS: &[u8] = b" -.()/_\t";
/// At most this many separators between two characters (`") "`, `" - "`).
const MAX_SEPARATORS: usize = 3;

impl Exposure {
    pub fn new() -> Exposure {
        Exposure::default()
    }

    /// Every SQLite database under `dir`, at any depth (the directory and the legacy
    /// stores of the fixtures all end in `.db`).
    pub fn databases_under(mut self, dir: &std::path::Path) -> Exposure {
        let mut found = Vec::new();
        let mut pending = vec![dir.to_owned()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    pending.push(path);
                } else if path.extension().is_some_and(|e| e == "db") {
                    found.push(path);
                }
            }
        }
        assert!(!found.is_empty(), "no database under {}", dir.display());
        found.sort();
        for path in found {
            self = self.database(&path);
        }
        self
    }

    /// One SQLite database: its WAL as it is now, then its main file after a
    /// checkpoint moved the WAL's pages into it.
    pub fn database(mut self, path: &std::path::Path) -> Exposure {
        let wal = PathBuf::from(format!("{}-wal", path.display()));
        if let Ok(bytes) = std::fs::read(&wal) {
            self.places.push((wal.display().to_string(), bytes));
        }
        let db = rusqlite::Connection::open(path).unwrap();
        db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
        // FULL waits for the writers of the processes still holding it open; the WAL
        // read above covers whatever a busy checkpoint leaves behind.
        let _: (i64, i64, i64) = db
            .query_row("PRAGMA wal_checkpoint(FULL)", [], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .unwrap();
        drop(db);
        self.file(path)
    }

    pub fn file(mut self, path: &std::path::Path) -> Exposure {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        self.places.push((path.display().to_string(), bytes));
        self
    }

    /// Text a process printed (`name` says which, for the failure message).
    pub fn text(mut self, name: &str, text: impl AsRef<[u8]>) -> Exposure {
        self.places.push((name.to_owned(), text.as_ref().to_vec()));
        self
    }

    /// How many places are searched (a test checks it searched what it meant to).
    pub fn places(&self) -> usize {
        self.places.len()
    }

    /// No trace of the phone number `e164` in any format it may take: E.164, with
    /// the country code as digits, national (`6502530000`), with spaces, dashes,
    /// dots or parentheses (`(650) 253-0000`). Every format holds the national
    /// number's digits in order with at most a few separators between them.
    pub fn assert_no_phone(&self, e164: &str) {
        if let Some(place) = self.phone_in(e164) {
            panic!(
                "a phone number (…{}) is in {place}",
                &e164[e164.len() - 4..]
            );
        }
    }

    /// Where the phone number `e164` is, in any format (see `assert_no_phone`).
    pub fn phone_in(&self, e164: &str) -> Option<&str> {
        let number = phonenumber::parse(None, e164)
            .unwrap_or_else(|e| panic!("not a phone number in E.164: {e}"));
        let national = number.national().value().to_string();
        assert!(
            national.len() >= 6,
            "a national number this short would match anything"
        );
        self.find(national.as_bytes(), false)
    }

    /// No trace of a recovery code (or any secret made of letters and digits) in any
    /// case, with or without its dashes or spaces.
    pub fn assert_no_code(&self, what: &str, code: &str) {
        if let Some(place) = self.code_in(code) {
            panic!("a {what} is in {place}");
        }
    }

    /// Where `code` is, in any case and with any separators.
    pub fn code_in(&self, code: &str) -> Option<&str> {
        let needle: Vec<u8> = code.bytes().filter(u8::is_ascii_alphanumeric).collect();
        assert!(needle.len() >= 8, "a code this short would match anything");
        self.find(&needle, true)
    }

    /// No copy of `secret` as it is (a password: any character may be part of it).
    pub fn assert_absent(&self, what: &str, secret: &str) {
        let needle = secret.as_bytes();
        assert!(!needle.is_empty());
        if let Some((place, _)) = self
            .places
            .iter()
            .find(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle))
        {
            panic!("a {what} is in {place}");
        }
    }

    /// The first place holding `needle` with separators allowed between its bytes.
    fn find(&self, needle: &[u8], any_case: bool) -> Option<&str> {
        let same = |a: u8, b: u8| {
            if any_case {
                a.eq_ignore_ascii_case(&b)
            } else {
                a == b
            }
        };
        let matches_at = |hay: &[u8], start: usize| {
            let mut at = start;
            for (i, &want) in needle.iter().enumerate() {
                if i > 0 {
                    let mut skipped = 0;
                    while skipped < MAX_SEPARATORS
                        && at < hay.len()
                        && SEPARATORS.contains(&hay[at])
                        && !same(hay[at], want)
                    {
                        at += 1;
                        skipped += 1;
                    }
                }
                if at >= hay.len() || !same(hay[at], want) {
                    return false;
                }
                at += 1;
            }
            true
        };
        self.places
            .iter()
            .find(|(_, hay)| (0..hay.len()).any(|start| matches_at(hay, start)))
            .map(|(place, _)| place.as_str())
    }
}

/// The python of the clients' venv `cargo xtask test` makes (the official clients of
/// host/tests/clients/requirements.txt), or why there is none.
pub fn clients_python() -> std::result::Result<PathBuf, String> {
    if let Some(python) = std::env::var_os("PORTCULLIS_TEST_PYTHON") {
        return Ok(python.into());
    }
    let made = workspace_root().join("target/clients-venv/bin/python");
    if made.exists() {
        return Ok(made);
    }
    Err(
        std::env::var("PORTCULLIS_TEST_PYTHON_MISSING").unwrap_or_else(|_| {
            "PORTCULLIS_TEST_PYTHON is unset and there is no target/clients-venv \
         (cargo xtask test makes it)"
                .into()
        }),
    )
}
