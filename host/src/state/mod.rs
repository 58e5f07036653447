//! Durable state: the directory, the legacy product stores of a migration, the outbox
//! and resume tokens. One trait, with SQLite as the embedded default.

mod apply;
pub mod legacy_sqlite;
mod postgres;
mod sqlite;

use serde::{Deserialize, Serialize};

pub use legacy_sqlite::SqliteLegacyStores;
pub use postgres::PostgresState;
pub use sqlite::SqliteState;

use crate::login::{DirectoryUser, LoginAttempt};
use crate::services::Directory;
use crate::verdict::Effect;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store: {0}")]
    Backend(String),
    #[error("cannot apply effects: {0}")]
    Conflict(String),
    #[error("invalid store URL {0:?}: expected sqlite://PATH or postgres://…")]
    Url(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

/// Everything one finished pipeline asks the host to write, applied in one
/// transaction.
#[derive(Debug, Clone)]
pub struct EffectBatch {
    pub transaction_id: String,
    pub time_ms: u64,
    /// The directory user the login matched, if any.
    pub user_id: Option<String>,
    /// The id `create-user` gives a new user.
    pub new_user_id: String,
    pub effects: Vec<Effect>,
    /// argon2id of the login's password, for `create-user {password_from_login}`.
    pub password_hash: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApplyReport {
    /// False when this transaction id had been applied before (nothing changed).
    pub applied: bool,
    pub user_id: Option<String>,
    pub created_user: bool,
    pub outbox_messages: usize,
}

/// A redirected login waiting for its resume token. Never holds the password.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResumeRecord {
    pub jti: String,
    pub transaction_id: String,
    /// The user the token is bound to (the directory user, or the one to be created).
    pub subject: String,
    pub rule: String,
    pub rule_index: usize,
    pub state: String,
    pub login: StoredLogin,
    pub pending: Vec<Effect>,
    pub password_hash: Option<String>,
    pub expires_at_ms: u64,
}

/// A login as kept for a resume: everything but the password.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredLogin {
    pub transaction_id: String,
    pub time_ms: u64,
    pub connection: String,
    pub client_id: String,
    pub email: String,
    pub request: crate::login::RequestInfo,
    pub user: Option<DirectoryUser>,
}

impl StoredLogin {
    pub fn from_attempt(attempt: &LoginAttempt) -> Self {
        Self {
            transaction_id: attempt.transaction_id.clone(),
            time_ms: attempt.time_ms,
            connection: attempt.connection.clone(),
            client_id: attempt.client_id.clone(),
            email: attempt.email.clone(),
            request: attempt.request.clone(),
            user: attempt.user.clone(),
        }
    }

    pub fn to_attempt(&self, time_ms: u64) -> LoginAttempt {
        LoginAttempt {
            transaction_id: self.transaction_id.clone(),
            time_ms,
            connection: self.connection.clone(),
            client_id: self.client_id.clone(),
            email: self.email.clone(),
            password: None,
            request: self.request.clone(),
            user: self.user.clone(),
        }
    }
}

/// What taking a resume record found.
#[derive(Debug)]
pub enum TakenResume {
    Taken(Box<ResumeRecord>),
    Unknown,
    AlreadyUsed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxMessage {
    pub id: i64,
    pub topic: String,
    pub key: String,
    pub payload: String,
    pub status: String,
    pub attempts: u32,
    pub transaction_id: String,
}

pub trait StateStore: Directory {
    /// Applies a batch in one transaction; a transaction id applied before changes
    /// nothing.
    fn apply(&self, batch: &EffectBatch) -> Result<ApplyReport, StoreError>;
    fn save_resume(&self, record: &ResumeRecord) -> Result<(), StoreError>;
    /// Marks the record used and returns it, atomically: a token works once.
    fn take_resume(&self, jti: &str, now_ms: u64) -> Result<TakenResume, StoreError>;
    fn outbox_messages(&self) -> Result<Vec<OutboxMessage>, StoreError>;
    /// Reserves up to `limit` due messages for `lease_ms` (pending ones whose time has
    /// come, and claimed ones whose lease ran out) and counts the attempt. Two
    /// dispatchers never hold the same message at once.
    fn claim_outbox(
        &self,
        now_ms: u64,
        lease_ms: u64,
        limit: usize,
    ) -> Result<Vec<OutboxMessage>, StoreError>;
    fn outbox_delivered(&self, id: i64) -> Result<(), StoreError>;
    /// A failed attempt: try again at `retry_at_ms`, or dead-letter it (`None`).
    fn outbox_failed(
        &self,
        id: i64,
        error: &str,
        retry_at_ms: Option<u64>,
    ) -> Result<(), StoreError>;
    /// Messages not yet delivered or dead-lettered.
    fn outbox_backlog(&self) -> Result<u64, StoreError>;
    /// Inserts or replaces a user (seeding, tests).
    fn put_user(&self, user: &DirectoryUser, password_hash: Option<&str>)
    -> Result<(), StoreError>;
    fn user_count(&self) -> Result<u64, StoreError>;
    /// Deletes every user, link, outbox message, token and applied transaction
    /// (seeding only).
    fn clear(&self) -> Result<(), StoreError>;
}

/// Opens the state store a URL names: `sqlite://PATH` (relative to `base`) or
/// `postgres://…`.
pub fn open_state(
    url: &str,
    base: &std::path::Path,
) -> Result<std::sync::Arc<dyn StateStore>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(std::sync::Arc::new(PostgresState::connect(url)?));
    }
    Ok(std::sync::Arc::new(SqliteState::open(&sqlite_path(
        url, base,
    )?)?))
}

/// `sqlite://relative/or/absolute.db`, resolved against `base`.
pub(crate) fn sqlite_path(
    url: &str,
    base: &std::path::Path,
) -> Result<std::path::PathBuf, StoreError> {
    let path = url
        .strip_prefix("sqlite://")
        .ok_or_else(|| StoreError::Url(url.to_owned()))?;
    if path.is_empty() {
        return Err(StoreError::Url(url.to_owned()));
    }
    Ok(base.join(path))
}

/// Checks a login's password against what a store holds for one account: no such
/// account is `not_found`, an account without a password never matches, and a hash
/// nobody can read is that account's `invalid_argument`.
pub(crate) fn check_stored_password(
    stored: Option<Option<String>>,
    password: &secrecy::SecretString,
    account: &str,
) -> Result<bool, crate::services::ServiceError> {
    use crate::services::ServiceError;
    match stored {
        None => Err(ServiceError::not_found(format!("no {account}"))),
        Some(None) => Ok(false),
        Some(Some(hash)) => {
            crate::passwords::verify(&hash, secrecy::ExposeSecret::expose_secret(password))
                .map_err(|e| ServiceError::invalid_argument(format!("{account}: {e}")))
        }
    }
}

/// A stored metadata document; a row that is not JSON reads as an empty object.
pub(crate) fn parse_json(text: String) -> serde_json::Value {
    serde_json::from_str(&text).unwrap_or_else(|_| serde_json::Value::Object(Default::default()))
}

/// A store that failed, as the rule sees it: worth retrying.
pub(crate) fn unavailable(e: StoreError) -> crate::services::ServiceError {
    crate::services::ServiceError::unavailable(e.to_string())
}

/// Lower-cased, trimmed: how emails are compared everywhere.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}
