//! `[server]`: `portcullis serve`, its callers and the users-imports API.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// `portcullis serve` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Environment variable holding the bearer token for /admin endpoints (32+
    /// characters). Unset: the admin endpoints answer 404.
    pub admin_token_env: Option<String>,
    /// Largest request body accepted.
    pub max_body_kb: usize,
    /// Run the outbox dispatcher inside the server.
    pub dispatch_outbox: bool,
    /// Evaluations running at once; more requests wait their turn. Bounds memory
    /// (each first login hashes a password with argon2id, ~19 MiB) and the instance
    /// pool. Default: four per core.
    pub max_concurrent_evaluations: Option<usize>,
    /// The gateways allowed to call /v1/login and /v1/continue. None: the login
    /// endpoints refuse every request.
    #[serde(rename = "caller")]
    pub callers: Vec<CallerSettings>,
    /// Connections open at once. At the cap a new connection closes the oldest one
    /// that has not shown a token; with none, it is answered 503 and closed.
    pub max_connections: usize,
    /// A client must send a request's headers within this (slow-loris). A connection
    /// that has not shown a token closes this long after its last request, and twice
    /// this long after it opened.
    pub header_timeout_ms: u64,
    /// A request must be answered within this, body included.
    pub request_timeout_ms: u64,
    /// An idle keep-alive connection that has shown a token is closed after this.
    pub idle_timeout_ms: u64,
    /// Requests served on one connection before it is closed.
    pub max_requests_per_connection: u64,
    /// The Auth0-compatible bulk user-import API (`/api/v2/jobs/…`) on the directory.
    /// Unset: those endpoints answer 404.
    pub import_api: Option<ImportApiSettings>,
}

/// `[server.import_api]`: Auth0's users-imports endpoints with Auth0's limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportApiSettings {
    /// The API token (bearer), from an environment variable or a file.
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    /// The one connection users are imported into.
    #[serde(default = "default_import_connection")]
    pub connection_id: String,
    /// Largest users file (Auth0: 500 KB).
    #[serde(default = "default_import_file_kb")]
    pub max_file_kb: usize,
    /// Jobs pending or processing at once (Auth0: 2); one more is a 429.
    #[serde(default = "default_import_jobs")]
    pub max_concurrent_jobs: usize,
    /// Requests per minute to these endpoints, a burst of that many at most; over it,
    /// 429 with `x-ratelimit-*` headers.
    #[serde(default = "default_import_rate")]
    pub requests_per_minute: u32,
    /// How long a job and its errors are kept after it was created (Auth0: 24 h).
    #[serde(default = "default_import_retention")]
    pub job_retention_seconds: u64,
    /// A job still running after this stops and is `expired` (Auth0: 2 h).
    #[serde(default = "default_import_job_seconds")]
    pub max_job_seconds: u64,
    /// Users imported per second per job (0: as fast as the directory takes them).
    #[serde(default)]
    pub users_per_second: u32,
    /// How long an instance holds a job it runs without renewing (each record renews
    /// it): after a crash, another instance takes the job up this long after the
    /// crashed one last wrote. At least 2.
    #[serde(default = "default_import_lease")]
    pub job_lease_seconds: u64,
}

fn default_import_connection() -> String {
    "con_portcullis".into()
}
fn default_import_file_kb() -> usize {
    500
}
fn default_import_jobs() -> usize {
    2
}
fn default_import_rate() -> u32 {
    120
}
fn default_import_retention() -> u64 {
    24 * 3600
}
fn default_import_job_seconds() -> u64 {
    2 * 3600
}
fn default_import_lease() -> u64 {
    30
}

/// One gateway allowed to send logins: its bearer token comes from an environment
/// variable or a file (never the config itself).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerSettings {
    pub name: String,
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    /// May send logins without a password: the caller vouches that it authenticated
    /// the user (a session, SSO, a passkey).
    #[serde(default)]
    pub vouches: bool,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            admin_token_env: None,
            max_body_kb: 64,
            dispatch_outbox: true,
            max_concurrent_evaluations: None,
            callers: Vec::new(),
            max_connections: 1024,
            header_timeout_ms: 5_000,
            request_timeout_ms: 30_000,
            idle_timeout_ms: 30_000,
            max_requests_per_connection: 10_000,
            import_api: None,
        }
    }
}

impl ServerSettings {
    pub(super) fn with_token_files_from(mut self, base: &Path) -> Self {
        if let Some(api) = &mut self.import_api {
            api.token_file = api.token_file.take().map(|f| base.join(f));
        }
        for caller in &mut self.callers {
            caller.token_file = caller.token_file.take().map(|f| base.join(f));
        }
        self
    }
}
