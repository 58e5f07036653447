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

/// A guest component from rules/testing/, e.g. `guest("infinite-loop")`.
pub fn guest(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let path = target
        .join("wasm32-wasip2/guest")
        .join(format!("guest_{}.wasm", name.replace('-', "_")));
    assert!(
        path.exists(),
        "{} is missing: build the guests with `cargo xtask build-rules` (or run `cargo xtask test`)",
        path.display()
    );
    path
}

/// One `[[rule]]` entry; `extra` is more TOML lines for it.
pub fn rule(name: &str, guest_name: &str, extra: &str) -> String {
    format!(
        "[[rule]]\nname = \"{name}\"\ncomponent = \"{}\"\n{extra}\n",
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

pub fn login_json(transaction_id: &str, with_user: bool) -> String {
    let user = if with_user {
        r#", "user": {"id": "usr_1", "email": "carol@example.com", "email_verified": true}"#
    } else {
        ""
    };
    format!(
        r#"{{"transaction_id": "{transaction_id}", "time_ms": 1764403200000,
            "connection": "db", "client_id": "paste-web", "email": "carol@example.com",
            "password": "s3cret-Passw0rd!", "request": {{"ip": "192.0.2.1", "user_agent": "test"}}{user}}}"#
    )
}

pub fn login(transaction_id: &str) -> LoginAttempt {
    LoginAttempt::from_json(&login_json(transaction_id, true)).unwrap()
}
