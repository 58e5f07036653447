//! The embedded default: directory, outbox and resume tokens in one SQLite file.

use crate::model::{
    ApplyReport, Directory, DirectoryUser, FactorSummary, Identity, ServiceError, normalize_email,
};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use secrecy::SecretString;
use serde_json::Value;

use super::apply::{
    EffectWriter, ImportOutcome, ImportRecord, Metadata, NewUser, apply_effects, import_user,
    merged,
};
use super::login_stats::LoginMark;
use super::{
    EffectBatch, StateStore, StoreError, check_stored_password, parse_json, sql_time, stored_count,
    stored_time, unavailable,
};

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

    fn users_where(&self, clause: &str, arg: &str) -> Result<Vec<DirectoryUser>, StoreError> {
        let conn = self.lock();
        let mut statement = conn.prepare_cached(&format!(
            "SELECT id, email, email_verified, app_metadata, user_metadata, created_at_ms, last_login_ms, logins_count
             FROM users WHERE {clause} ORDER BY created_at_ms, id"
        ))?;
        let rows = statement.query_map([arg], |row| {
            Ok(DirectoryUser {
                id: row.get(0)?,
                email: row.get(1)?,
                email_verified: row.get(2)?,
                identities: Vec::new(),
                app_metadata: parse_json(row.get::<_, String>(3)?),
                user_metadata: parse_json(row.get::<_, String>(4)?),
                created_at_ms: stored_time(row.get(5)?),
                last_login_ms: row.get::<_, Option<i64>>(6)?.map(stored_time),
                logins_count: stored_count(row.get(7)?),
            })
        })?;
        let mut users = rows.collect::<Result<Vec<_>, _>>()?;
        let mut identities = conn.prepare_cached(
            "SELECT provider, provider_user_id, connection FROM identities WHERE user_id = ?1 ORDER BY provider, provider_user_id",
        )?;
        for user in &mut users {
            user.identities = identities
                .query_map([&user.id], |row| {
                    Ok(Identity {
                        provider: row.get(0)?,
                        user_id: row.get(1)?,
                        connection: row.get(2)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
        }
        Ok(users)
    }
}

impl Directory for SqliteState {
    fn find_by_email(&self, email: &str) -> Result<Vec<DirectoryUser>, ServiceError> {
        self.users_where("email_norm = ?1", &normalize_email(email))
            .map_err(unavailable)
    }

    fn get_user(&self, id: &str) -> Result<Option<DirectoryUser>, ServiceError> {
        Ok(self
            .users_where("id = ?1", id)
            .map_err(unavailable)?
            .into_iter()
            .next())
    }

    fn verify_password(
        &self,
        user_id: &str,
        password: &SecretString,
    ) -> Result<bool, ServiceError> {
        let stored: Option<Option<String>> = self
            .lock()
            .query_row(
                "SELECT password_hash FROM users WHERE id = ?1",
                [user_id],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| unavailable(e.into()))?;
        check_stored_password(stored, password, &format!("directory user {user_id}"))
    }

    fn list_factors(&self, user_id: &str) -> Result<Vec<FactorSummary>, ServiceError> {
        Ok(super::factors::rows::active_of_user(self, user_id)
            .map_err(unavailable)?
            .iter()
            .map(FactorSummary::of)
            .collect())
    }
    fn recovery_facts(
        &self,
        user_id: &str,
        ask: &crate::model::RecoveryAsk,
    ) -> Result<crate::model::RecoveryFacts, ServiceError> {
        super::recovery::facts(self, user_id, ask).map_err(unavailable)
    }
}

/// The SQLite side of [`apply_effects`]. Statements on the login path are prepared
/// once per connection.
struct SqliteWriter<'a> {
    tx: &'a rusqlite::Transaction<'a>,
}

impl EffectWriter for SqliteWriter<'_> {
    fn claim_transaction(
        &mut self,
        batch: &EffectBatch,
    ) -> Result<Option<Option<String>>, StoreError> {
        // The IMMEDIATE transaction holds the write lock: checking here and recording
        // the transaction in `finish` cannot race another writer.
        Ok(self
            .tx
            .prepare_cached("SELECT user_id FROM applied_transactions WHERE transaction_id = ?1")?
            .query_row([&batch.transaction_id], |row| row.get(0))
            .optional()?)
    }

    fn create_user(&mut self, user: &NewUser<'_>) -> Result<(String, bool), StoreError> {
        let existing: Option<String> = self
            .tx
            .query_row(
                "SELECT id FROM users WHERE email_norm = ?1",
                [&user.email_norm],
                |row| row.get(0),
            )
            .optional()?;
        if let Some(existing) = existing {
            return Ok((existing, false));
        }
        self.tx.execute(
            "INSERT INTO users (id, email, email_norm, email_verified, app_metadata, user_metadata,
                                password_hash, created_at_ms, logins_count)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0)",
            params![
                user.id,
                user.email,
                user.email_norm,
                user.email_verified,
                user.app_metadata,
                user.user_metadata,
                user.password_hash,
                user.created_at_ms
            ],
        )?;
        Ok((user.id.to_owned(), true))
    }

    fn patch_metadata(
        &mut self,
        user_id: &str,
        which: Metadata,
        patch: &Value,
    ) -> Result<(), StoreError> {
        let column = which.column();
        let current: String = self.tx.query_row(
            &format!("SELECT {column} FROM users WHERE id = ?1"),
            [user_id],
            |row| row.get(0),
        )?;
        self.tx.execute(
            &format!("UPDATE users SET {column} = ?2 WHERE id = ?1"),
            params![user_id, merged(&current, patch)],
        )?;
        Ok(())
    }

    fn login_record(&mut self, user_id: &str) -> Result<(String, bool), StoreError> {
        // The import's transaction is IMMEDIATE: no login writes meanwhile.
        Ok(self.tx.query_row(
            "SELECT app_metadata, logins_count > 0 OR last_login_ms IS NOT NULL FROM users WHERE id = ?1",
            [user_id],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?)
    }

    fn link_owner(&mut self, product: &str, legacy_id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .tx
            .query_row(
                "SELECT user_id FROM identities WHERE provider = ?1 AND provider_user_id = ?2",
                params![product, legacy_id],
                |row| row.get(0),
            )
            .optional()?)
    }

    fn insert_link(
        &mut self,
        product: &str,
        legacy_id: &str,
        user_id: &str,
    ) -> Result<(), StoreError> {
        self.tx.execute(
            "INSERT INTO identities (provider, provider_user_id, user_id, connection) VALUES (?1, ?2, ?3, ?1)
             ON CONFLICT (provider, provider_user_id) DO NOTHING",
            params![product, legacy_id, user_id],
        )?;
        Ok(())
    }

    fn enqueue(
        &mut self,
        batch: &EffectBatch,
        topic: &str,
        key: &str,
        payload: &str,
    ) -> Result<usize, StoreError> {
        Ok(self.tx.execute(
            "INSERT INTO outbox (topic, key, payload, transaction_id, created_at_ms, next_attempt_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT (topic, key) DO NOTHING",
            params![topic, key, payload, batch.transaction_id, sql_time(batch.time_ms)],
        )?)
    }

    fn finish(&mut self, batch: &EffectBatch, user_id: Option<&str>) -> Result<(), StoreError> {
        if let Some(id) = user_id {
            self.tx
                .prepare_cached("UPDATE users SET last_login_ms = ?2, logins_count = logins_count + 1 WHERE id = ?1")?
                .execute(params![id, sql_time(batch.time_ms)])?;
        }
        self.tx
            .prepare_cached(
                "INSERT INTO applied_transactions (transaction_id, user_id, applied_at_ms) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![batch.transaction_id, user_id, sql_time(batch.time_ms)])?;
        Ok(())
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
}

impl super::SqlBacked for SqliteState {
    fn sql(&self) -> &dyn super::portable::SqlStore {
        self
    }
}

impl super::FactorStore for SqliteState {}

impl super::BackfillStore for SqliteState {}

impl super::ImportStore for SqliteState {}

impl super::OutboxStore for SqliteState {
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

impl StateStore for SqliteState {
    fn apply(&self, batch: &EffectBatch) -> Result<ApplyReport, StoreError> {
        let mut conn = self.lock();
        // IMMEDIATE: take the write lock first, so the idempotency check and the
        // writes see the same database even with another process writing.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let report = apply_effects(&mut SqliteWriter { tx: &tx }, batch)?;
        tx.commit()?;
        Ok(report)
    }

    fn import_user(&self, record: &ImportRecord) -> Result<ImportOutcome, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let outcome = import_user(&mut SqliteWriter { tx: &tx }, record)?;
        tx.commit()?;
        Ok(outcome)
    }

    fn upgrade_password(&self, user_id: &str, password: &SecretString) -> Result<bool, StoreError> {
        let stored: Option<Option<String>> = self
            .lock()
            .query_row(
                "SELECT password_hash FROM users WHERE id = ?1",
                [user_id],
                |row| row.get(0),
            )
            .optional()?;
        let stored = stored.flatten();
        // Hashed outside the lock: argon2id takes milliseconds.
        let Some(new) = super::upgraded_hash(stored.as_deref(), password) else {
            return Ok(false);
        };
        Ok(self.lock().execute(
            "UPDATE users SET password_hash = ?3 WHERE id = ?1 AND password_hash = ?2",
            params![user_id, stored, new],
        )? == 1)
    }

    fn record_logins(&self, marks: &[LoginMark]) -> Result<usize, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut per_user: HashMap<&str, (u64, i64)> = HashMap::new();
        let mut counted = 0;
        {
            let mut applied = tx.prepare_cached(
                "INSERT INTO applied_transactions (transaction_id, user_id, applied_at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (transaction_id) DO NOTHING",
            )?;
            for mark in marks {
                if applied.execute(params![
                    mark.transaction_id,
                    mark.user_id,
                    sql_time(mark.time_ms)
                ])? == 0
                {
                    continue; // applied before: counted then
                }
                counted += 1;
                if let Some(user) = &mark.user_id {
                    let entry = per_user.entry(user).or_insert((0, 0));
                    *entry = (entry.0.max(mark.time_ms), entry.1 + 1);
                }
            }
            let mut update = tx.prepare_cached(
                "UPDATE users SET last_login_ms = MAX(COALESCE(last_login_ms, 0), ?2),
                                  logins_count = logins_count + ?3 WHERE id = ?1",
            )?;
            for (user, (last, count)) in &per_user {
                update.execute(params![user, sql_time(*last), count])?;
            }
        }
        tx.commit()?;
        Ok(counted)
    }
}
