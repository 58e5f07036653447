//! Durable state: the directory, the legacy product stores of a migration, the outbox
//! and resume tokens. One trait, with SQLite as the embedded default.

mod apply;
pub mod audit;
pub use apply::{ImportOutcome, ImportRecord};
pub mod devices;
pub mod factor_failures;
pub mod factors;
pub mod import_files;
pub mod import_jobs;
pub mod legacy_export;
pub mod legacy_ids;
mod legacy_sql;
pub mod legacy_sqlite;
mod login_path;
pub mod login_stats;
pub mod migrations;
pub mod open_codes;
pub mod outbox;
pub mod passwords;
pub mod phone_export;
pub mod portable;
mod postgres;
pub mod proofs;
pub mod rate_windows;
pub mod recovery;
pub mod resume_tokens;
mod sqlite;
pub mod support;
pub mod users;

use crate::model::{ApplyReport, Directory, Effect};
use factors::FactorStore;
use import_files::ImportStore;
use import_jobs::ImportJobStore;
use outbox::OutboxStore;
use phone_export::PhoneExportStore;
use resume_tokens::{ResumeRecord, TakenResume};

pub use legacy_sql::LegacyProducts;
pub use legacy_sqlite::SqliteLegacyStores;
pub use postgres::PostgresState;
pub use sqlite::SqliteState;

use secrecy::SecretString;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store: {0}")]
    Backend(String),
    #[error("cannot apply effects: {0}")]
    Conflict(String),
    /// An operation that would destroy what it must not (`seed` over rows it did not
    /// make); the message says why and how to go ahead anyway.
    #[error("{0}")]
    Refused(String),
    /// A command that reads a store found none where the config says it is.
    #[error(
        "there is no store at {}: is the config's path right? (`serve`, `run` and `seed` create it; this command only opens one that exists)",
        .0.display()
    )]
    Missing(std::path::PathBuf),
    #[error(
        "invalid store URL {0:?}: expected sqlite://PATH, postgres://… or (legacy stores) mysql://…"
    )]
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

/// The one way to the database: portable SQL, the same text on either backend
/// (`portable`). The per-concern stores below are written once over it.
pub trait SqlBacked: Send + Sync {
    fn sql(&self) -> &dyn portable::SqlStore;
}

pub trait StateStore:
    Directory + SqlBacked + FactorStore + PhoneExportStore + ImportStore + ImportJobStore + OutboxStore
{
    /// Applies a batch in one transaction; a transaction id applied before changes
    /// nothing.
    fn apply(&self, batch: &EffectBatch) -> Result<ApplyReport, StoreError> {
        login_path::apply(self.sql(), batch)
    }
    /// Imports one user of a bulk import in one transaction (see `apply::import_user`).
    fn import_user(&self, record: &ImportRecord) -> Result<ImportOutcome, StoreError> {
        login_path::import(self.sql(), record)
    }
    /// Re-hashes a user's password with argon2id if the stored hash is another format
    /// (an imported legacy hash) and `password` matches it; true when upgraded. Only
    /// the hash that was read is replaced (a concurrent change wins).
    fn upgrade_password(&self, user_id: &str, password: &SecretString) -> Result<bool, StoreError> {
        let stored = login_path::password_hash(self.sql(), user_id)?.flatten();
        // Hashed outside any transaction: argon2id takes milliseconds.
        let Some(new) = upgraded_hash(stored.as_deref(), password) else {
            return Ok(false);
        };
        login_path::replace_password_hash(self.sql(), user_id, stored.as_deref(), &new)
    }
    /// Writes logins' bookkeeping in one transaction (see `login_stats`): each
    /// transaction id is recorded as applied once, and only then counted on its
    /// user. Returns how many were counted.
    fn record_logins(&self, marks: &[login_stats::LoginMark]) -> Result<usize, StoreError> {
        login_path::record_logins(self.sql(), marks)
    }
    fn save_resume(&self, record: &ResumeRecord) -> Result<(), StoreError> {
        resume_tokens::save(self.sql(), record)
    }
    /// Marks the record used and returns it, atomically: a token works once.
    fn take_resume(&self, jti: &str, now_ms: u64) -> Result<TakenResume, StoreError> {
        resume_tokens::take(self.sql(), jti, now_ms)
    }
}

// Every store of portable SQL is each of them: the per-concern traits are written once
// over `sql()`, and the two backends differ only below `portable::SqlStore`.
impl<T: portable::SqlStore> SqlBacked for T {
    fn sql(&self) -> &dyn portable::SqlStore {
        self
    }
}
impl<T: SqlBacked> FactorStore for T {}
impl<T: SqlBacked> PhoneExportStore for T {}
impl<T: SqlBacked> ImportStore for T {}
impl<T: SqlBacked> ImportJobStore for T {}
impl<T: SqlBacked> OutboxStore for T {}
impl<T: SqlBacked> StateStore for T {}

/// Opens the state store a URL names: `sqlite://PATH` (relative to `base`) or
/// `postgres://…`.
pub fn open_state(
    url: &str,
    base: &std::path::Path,
) -> Result<std::sync::Arc<dyn StateStore>, StoreError> {
    open_state_keyed(url, base, None)
}

/// As `open_state`, signing the audit rows it appends with `audit_keys`.
pub fn open_state_keyed(
    url: &str,
    base: &std::path::Path,
    audit_keys: Option<audit::ChainKeys>,
) -> Result<std::sync::Arc<dyn StateStore>, StoreError> {
    open(url, base, audit_keys, SqliteState::open)
}

/// As `open_state`, for the commands that only read the store or need what it holds:
/// an SQLite store that is not there is `StoreError::Missing`, never created.
/// (Connecting to PostgreSQL creates no database.)
pub fn open_existing_state(
    url: &str,
    base: &std::path::Path,
    audit_keys: Option<audit::ChainKeys>,
) -> Result<std::sync::Arc<dyn StateStore>, StoreError> {
    open(url, base, audit_keys, SqliteState::open_existing)
}

fn open(
    url: &str,
    base: &std::path::Path,
    audit_keys: Option<audit::ChainKeys>,
    open_sqlite: fn(&std::path::Path) -> Result<SqliteState, StoreError>,
) -> Result<std::sync::Arc<dyn StateStore>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(std::sync::Arc::new(
            PostgresState::connect(url)?.with_audit_keys(audit_keys),
        ));
    }
    Ok(std::sync::Arc::new(
        open_sqlite(&sqlite_path(url, base)?)?.with_audit_keys(audit_keys),
    ))
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
) -> Result<bool, crate::model::ServiceError> {
    use crate::model::ServiceError;
    match stored {
        None => Err(ServiceError::not_found(format!("no {account}"))),
        Some(None) => Ok(false),
        Some(Some(hash)) => {
            crate::state::passwords::verify(&hash, secrecy::ExposeSecret::expose_secret(password))
                .map_err(|e| match e {
                    crate::state::passwords::HashError::TooCostly(..) => {
                        ServiceError::refused(format!("{account}: {e}"))
                    }
                    _ => ServiceError::invalid_argument(format!("{account}: {e}")),
                })
        }
    }
}

/// A stored metadata document; a row that is not JSON reads as an empty object.
pub(crate) fn parse_json(text: String) -> serde_json::Value {
    serde_json::from_str(&text).unwrap_or_else(|_| serde_json::Value::Object(Default::default()))
}

/// A store that failed, as the rule sees it: worth retrying.
pub(crate) fn unavailable(e: StoreError) -> crate::model::ServiceError {
    crate::model::ServiceError::unavailable(e.to_string())
}

/// Fields of an outbox payload that carry a secret link (a notice's cancel link, an
/// assisted recovery's enrolment link): kept until the message is delivered or
/// dead-lettered, then removed.
pub const SECRET_PAYLOAD_FIELDS: &[&str] = &["cancel_url", "enrol_url"];

/// Where a scrubbed payload names the secret fields it lost: a notice sent again
/// (`outbox requeue`) goes without its link, and the notifier can say so.
pub const LINKS_REMOVED: &str = "links_removed";

/// The payload without its secret fields, naming them under [`LINKS_REMOVED`];
/// `None` when it has none.
pub(crate) fn scrubbed_payload(payload: &str) -> Option<String> {
    let mut value: serde_json::Value = serde_json::from_str(payload).ok()?;
    let object = value.as_object_mut()?;
    let removed: Vec<&str> = SECRET_PAYLOAD_FIELDS
        .iter()
        .copied()
        .filter(|field| object.remove(*field).is_some())
        .collect();
    if removed.is_empty() {
        return None;
    }
    object.insert(LINKS_REMOVED.into(), serde_json::json!(removed));
    Some(value.to_string())
}

/// A fresh lease token for one outbox claim: 128 random bits, as a token id.
pub(crate) fn new_lease_token() -> String {
    crate::model::random_id()
}

/// What the stores keep of a bearer token the host issued (proofs, devices): its
/// SHA-256, so a copy of the database holds nothing that can be presented.
pub(crate) fn token_digest(token: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// A time as the stores keep it (a signed 64-bit integer). Times are bounded where
/// they enter (`login::MAX_TIME_MS`); saturating here keeps a sum of a time and a
/// duration from ever wrapping negative.
pub(crate) fn sql_time(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// A time read back: rows an older version wrote may hold a negative number (it
/// stored unchecked client times); they read as the epoch instead of failing the
/// whole lookup, which locked the user out.
pub(crate) fn stored_time(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0)
}

/// A counter read back, clamped for the same reason.
pub(crate) fn stored_count(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

/// The argon2id hash replacing `stored` for `password`, if `stored` is another format
/// that `password` matches (the upgrade of an imported legacy hash).
pub(crate) fn upgraded_hash(stored: Option<&str>, password: &SecretString) -> Option<String> {
    use secrecy::ExposeSecret;
    let stored = stored?;
    if stored.starts_with("$argon2id$") {
        return None;
    }
    passwords::verify(stored, password.expose_secret())
        .ok()
        .filter(|ok| *ok)
        .map(|_| passwords::hash_argon2id(password.expose_secret()))
}
