//! The embedded default: directory, outbox and resume tokens in one SQLite file.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OpenFlags};

use super::StoreError;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL,
    email_norm TEXT NOT NULL UNIQUE,
    email_verified INTEGER NOT NULL,
    app_metadata TEXT NOT NULL,
    user_metadata TEXT NOT NULL,
    password_hash TEXT,
    created_at_ms INTEGER NOT NULL,
    last_login_ms INTEGER,
    logins_count INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS identities (
    provider TEXT NOT NULL,
    provider_user_id TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id),
    connection TEXT NOT NULL,
    PRIMARY KEY (provider, provider_user_id)
);
CREATE INDEX IF NOT EXISTS identities_user ON identities(user_id);
CREATE TABLE IF NOT EXISTS applied_transactions (
    transaction_id TEXT PRIMARY KEY,
    user_id TEXT,
    applied_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    key TEXT NOT NULL,
    payload TEXT NOT NULL,
    transaction_id TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms INTEGER NOT NULL,
    last_error TEXT,
    claimed_until_ms INTEGER,
    lease_token TEXT,
    UNIQUE (topic, key)
);
CREATE TABLE IF NOT EXISTS factors (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    kind TEXT NOT NULL,
    provider TEXT NOT NULL,
    legacy_provider_user_id TEXT,
    phone_ciphertext BLOB,
    phone_nonce BLOB,
    phone_key_id TEXT,
    status TEXT NOT NULL,
    enrolled_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    last_used_ms INTEGER,
    cohort TEXT,
    reverted INTEGER NOT NULL DEFAULT 0,
    -- A sealed phone is all three parts or none.
    CHECK ((phone_ciphertext IS NULL) = (phone_nonce IS NULL)
           AND (phone_nonce IS NULL) = (phone_key_id IS NULL))
);
CREATE INDEX IF NOT EXISTS factors_user ON factors(user_id);
CREATE TABLE IF NOT EXISTS mfa_exports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    factor_id TEXT NOT NULL,
    provider_user_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    attempted_at_ms INTEGER NOT NULL,
    -- NULL: the call was made, or about to be, and its result never written.
    outcome TEXT
);
CREATE INDEX IF NOT EXISTS mfa_exports_user ON mfa_exports(provider_user_id, attempted_at_ms);
CREATE TABLE IF NOT EXISTS mfa_backfill (
    factor_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    reason TEXT,
    lease_token TEXT,
    lease_until_ms INTEGER,
    run_id TEXT,
    updated_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS mfa_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    user_id TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS resume_tokens (
    jti TEXT PRIMARY KEY,
    transaction_id TEXT NOT NULL,
    record TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    used_at_ms INTEGER
);
";

pub struct SqliteState {
    conn: Mutex<Connection>,
    audit_keys: Option<super::audit::ChainKeys>,
    /// A payload was scrubbed since the WAL was last truncated (`forget_scrubbed`).
    scrubbed: std::sync::atomic::AtomicBool,
}

const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl SqliteState {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Backend(format!("{}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
        Self::init(conn)
    }

    /// Opens a store that must already exist: the commands that only read one (or need
    /// what it holds) never leave an empty file behind a wrong path.
    pub fn open_existing(path: &Path) -> Result<Self, StoreError> {
        if !path.is_file() {
            return Err(StoreError::Missing(path.to_owned()));
        }
        // Without SQLITE_OPEN_CREATE: a file removed since the check is not made again.
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_URI
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
        Self::init(conn)
    }

    /// A private database that lives as long as this value (replay, tests).
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self, StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Deleted and overwritten content is zeroed, not left in free space: a
        // scrubbed secret (see `finish_outbox`) does not outlive its row in the file.
        conn.pragma_update(None, "secure_delete", "ON")?;
        // With WAL, NORMAL syncs at checkpoints rather than at every commit: a crash of
        // the process loses nothing, a power cut may lose the last commits.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Every statement is prepared once per connection (`prepare_cached`): the
        // login path and the jobs beside it use more than rusqlite's default 16.
        conn.set_prepared_statement_cache_capacity(128);
        super::migrations::apply_sqlite(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
            audit_keys: None,
            scrubbed: Default::default(),
        })
    }

    /// Signs the audit rows this store appends with `keys` (`[audit]`).
    pub fn with_audit_keys(mut self, keys: Option<super::audit::ChainKeys>) -> Self {
        self.audit_keys = keys;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (its own
        // transaction rolls back), so a poisoned lock is still usable.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl super::portable::SqlStore for SqliteState {
    fn dialect(&self) -> super::portable::Dialect {
        super::portable::Dialect::Sqlite
    }

    fn scrubbed(&self) {
        self.scrubbed
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn transact(
        &self,
        work: &mut dyn FnMut(&mut dyn super::portable::SqlTx) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        work(&mut super::portable::SqliteTx(&tx))?;
        tx.commit()?;
        Ok(())
    }

    fn read(
        &self,
        work: &mut dyn FnMut(&mut dyn super::portable::SqlTx) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        work(&mut super::portable::SqliteTx(&self.lock()))
    }

    fn lock_table(
        &self,
        _tx: &mut dyn super::portable::SqlTx,
        _table: &str,
    ) -> Result<(), StoreError> {
        // An immediate transaction holds SQLite's one write lock already.
        Ok(())
    }

    fn audit_keys(&self) -> Option<&super::audit::ChainKeys> {
        self.audit_keys.as_ref()
    }

    fn forget_scrubbed(&self) -> Result<(), StoreError> {
        if !self
            .scrubbed
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            return Ok(());
        }
        // The payload before the scrub is still in WAL frames (and, until the next
        // checkpoint, in the page the main file holds): copy the WAL into the file
        // (secure_delete zeroes the freed bytes) and truncate it. Without waiting: a
        // reader in another process makes it busy, and the next round tries again.
        let conn = self.lock();
        conn.busy_timeout(std::time::Duration::ZERO)?;
        let busy = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
            row.get::<_, i64>(0)
        });
        conn.busy_timeout(BUSY_TIMEOUT)?;
        if busy.unwrap_or(1) != 0 {
            self.scrubbed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }
}
