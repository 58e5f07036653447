//! PostgreSQL, for several gateway instances sharing one state. Same tables and
//! semantics as the SQLite store; concurrency is settled by the database: unique
//! keys with `ON CONFLICT`, and `FOR UPDATE SKIP LOCKED` for outbox claims.

use postgres::NoTls;
use r2d2_postgres::PostgresConnectionManager;

use super::StoreError;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL,
    email_norm TEXT NOT NULL UNIQUE,
    email_verified BOOLEAN NOT NULL,
    app_metadata TEXT NOT NULL,
    user_metadata TEXT NOT NULL,
    password_hash TEXT,
    created_at_ms BIGINT NOT NULL,
    last_login_ms BIGINT,
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
    applied_at_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id BIGSERIAL PRIMARY KEY,
    topic TEXT NOT NULL,
    key TEXT NOT NULL,
    payload TEXT NOT NULL,
    transaction_id TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms BIGINT NOT NULL,
    last_error TEXT,
    claimed_until_ms BIGINT,
    lease_token TEXT,
    UNIQUE (topic, key)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(status, next_attempt_at_ms);
-- Older databases: the lease token that fences a dispatcher's updates to its claim.
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS lease_token TEXT;
CREATE TABLE IF NOT EXISTS factors (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    kind TEXT NOT NULL,
    provider TEXT NOT NULL,
    legacy_provider_user_id TEXT,
    phone_ciphertext BYTEA,
    phone_nonce BYTEA,
    phone_key_id TEXT,
    status TEXT NOT NULL,
    enrolled_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    last_used_ms BIGINT,
    cohort TEXT,
    reverted BOOLEAN NOT NULL DEFAULT false,
    -- A sealed phone is all three parts or none.
    CHECK ((phone_ciphertext IS NULL) = (phone_nonce IS NULL)
           AND (phone_nonce IS NULL) = (phone_key_id IS NULL))
);
CREATE INDEX IF NOT EXISTS factors_user ON factors(user_id);
-- Older databases: the rollout cohort and the operator's revert.
ALTER TABLE factors ADD COLUMN IF NOT EXISTS cohort TEXT;
ALTER TABLE factors ADD COLUMN IF NOT EXISTS reverted BOOLEAN NOT NULL DEFAULT false;
CREATE TABLE IF NOT EXISTS mfa_exports (
    id BIGSERIAL PRIMARY KEY,
    factor_id TEXT NOT NULL,
    provider_user_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    attempted_at_ms BIGINT NOT NULL,
    -- NULL: the call was made, or about to be, and its result never written.
    outcome TEXT
);
CREATE INDEX IF NOT EXISTS mfa_exports_user ON mfa_exports(provider_user_id, attempted_at_ms);
CREATE TABLE IF NOT EXISTS mfa_backfill (
    factor_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    reason TEXT,
    lease_token TEXT,
    lease_until_ms BIGINT,
    run_id TEXT,
    updated_at_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS mfa_audit (
    id BIGSERIAL PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    user_id TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS resume_tokens (
    jti TEXT PRIMARY KEY,
    transaction_id TEXT NOT NULL,
    record TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    used_at_ms BIGINT
);
";

/// Serializes schema creation between instances starting together.
const SCHEMA_LOCK: i64 = 0x706f_7274_6375_6c6c;

type Pool = r2d2::Pool<PostgresConnectionManager<NoTls>>;

pub struct PostgresState {
    pool: Pool,
    audit_keys: Option<super::audit::ChainKeys>,
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        StoreError::Backend(match e.as_db_error() {
            Some(db) => format!("postgres: {}", db.message()),
            None => format!("postgres: {e}"),
        })
    }
}

impl From<r2d2::Error> for StoreError {
    fn from(e: r2d2::Error) -> Self {
        StoreError::Backend(format!("postgres pool: {e}"))
    }
}

impl PostgresState {
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        let config: postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Backend(format!("postgres URL: {e}")))?;
        let manager = PostgresConnectionManager::new(config, NoTls);
        let pool = r2d2::Pool::builder()
            .max_size(16)
            .connection_timeout(std::time::Duration::from_secs(5))
            .build(manager)?;
        let mut conn = pool.get()?;
        let mut tx = conn.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])?;
        super::migrations::apply_postgres(&mut tx)?;
        tx.commit()?;
        Ok(Self {
            pool,
            audit_keys: None,
        })
    }

    /// Signs the audit rows this store appends with `keys` (`[audit]`).
    pub fn with_audit_keys(mut self, keys: Option<super::audit::ChainKeys>) -> Self {
        self.audit_keys = keys;
        self
    }
}

impl super::portable::SqlStore for PostgresState {
    fn dialect(&self) -> super::portable::Dialect {
        super::portable::Dialect::Postgres
    }

    fn transact(
        &self,
        work: &mut dyn FnMut(&mut dyn super::portable::SqlTx) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut conn = self.pool.get()?;
        let mut tx = conn.transaction()?;
        work(&mut super::portable::PostgresTx(&mut tx))?;
        tx.commit()?;
        Ok(())
    }

    fn read(
        &self,
        work: &mut dyn FnMut(&mut dyn super::portable::SqlTx) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut conn = self.pool.get()?;
        work(&mut super::portable::PostgresTx(&mut *conn))
    }

    fn lock_table(
        &self,
        tx: &mut dyn super::portable::SqlTx,
        table: &str,
    ) -> Result<(), StoreError> {
        // Readers go on; a second appender waits for this transaction's end.
        tx.execute(
            &format!("LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE"),
            &[],
        )?;
        Ok(())
    }

    fn audit_keys(&self) -> Option<&super::audit::ChainKeys> {
        self.audit_keys.as_ref()
    }
}
