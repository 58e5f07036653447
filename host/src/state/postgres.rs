//! PostgreSQL, for several gateway instances sharing one state. Same tables and
//! semantics as the SQLite store; concurrency is settled by the database: unique
//! keys with `ON CONFLICT`, and `FOR UPDATE SKIP LOCKED` for outbox claims.

use crate::model::{
    ApplyReport, Directory, DirectoryUser, FactorSummary, Identity, ServiceError, normalize_email,
};
use std::collections::HashMap;

use postgres::NoTls;
use postgres::types::{ToSql, Type};
use r2d2_postgres::PostgresConnectionManager;
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

    /// The directory's users matching `clause` (on `users`, one text parameter), with
    /// their identities. Every login reads this: one statement, its identities
    /// aggregated in it, sent with its parameter's type so that it is one round trip
    /// (`query` would prepare, execute and close: three, and a second query for the
    /// identities three more).
    fn users_where(&self, clause: &str, arg: &str) -> Result<Vec<DirectoryUser>, StoreError> {
        let mut conn = self.pool.get()?;
        let rows = conn.query_typed(
            &format!(
                "SELECT id, email, email_verified, app_metadata, user_metadata, created_at_ms, last_login_ms, logins_count,
                        (SELECT COALESCE(json_agg(json_build_array(i.provider, i.provider_user_id, i.connection)
                                                  ORDER BY i.provider, i.provider_user_id), '[]')::text
                         FROM identities i WHERE i.user_id = users.id)
                 FROM users WHERE {clause} ORDER BY created_at_ms, id"
            ),
            &[(&arg, Type::TEXT)],
        )?;
        rows.iter()
            .map(|row| {
                let id: String = row.get(0);
                let identities: Vec<(String, String, String)> =
                    serde_json::from_str(row.get::<_, &str>(8)).map_err(|e| {
                        StoreError::Backend(format!("identities of user {id}: {e}"))
                    })?;
                Ok(DirectoryUser {
                    email: row.get(1),
                    email_verified: row.get(2),
                    identities: identities
                        .into_iter()
                        .map(|(provider, user_id, connection)| Identity {
                            provider,
                            user_id,
                            connection,
                        })
                        .collect(),
                    app_metadata: parse_json(row.get(3)),
                    user_metadata: parse_json(row.get(4)),
                    created_at_ms: stored_time(row.get::<_, i64>(5)),
                    last_login_ms: row.get::<_, Option<i64>>(6).map(stored_time),
                    logins_count: stored_count(row.get::<_, i32>(7).into()),
                    id,
                })
            })
            .collect()
    }
}

impl Directory for PostgresState {
    fn find_by_email(&self, email: &str) -> Result<Vec<DirectoryUser>, ServiceError> {
        self.users_where("email_norm = $1", &normalize_email(email))
            .map_err(unavailable)
    }

    fn get_user(&self, id: &str) -> Result<Option<DirectoryUser>, ServiceError> {
        Ok(self
            .users_where("id = $1", id)
            .map_err(unavailable)?
            .into_iter()
            .next())
    }

    fn verify_password(
        &self,
        user_id: &str,
        password: &SecretString,
    ) -> Result<bool, ServiceError> {
        let row = (|| -> Result<_, StoreError> {
            Ok(self.pool.get()?.query_typed_opt(
                "SELECT password_hash FROM users WHERE id = $1",
                &[(&user_id, Type::TEXT)],
            )?)
        })()
        .map_err(unavailable)?;
        check_stored_password(
            row.map(|r| r.get::<_, Option<String>>(0)),
            password,
            &format!("directory user {user_id}"),
        )
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

/// The PostgreSQL side of [`apply_effects`]: unique keys with `ON CONFLICT` settle
/// races between instances (READ COMMITTED: a conflicting insert waits for the other
/// transaction, then sees its row).
struct PostgresWriter<'a, 'b> {
    tx: &'a mut postgres::Transaction<'b>,
}

// Every statement of an apply is sent with its parameters' types (`query_typed`):
// one round trip each, where `execute` and `query` would prepare, execute and close.
const TEXT: Type = Type::TEXT;
const INT8: Type = Type::INT8;

impl PostgresWriter<'_, '_> {
    /// A typed statement's affected rows.
    fn execute(
        &mut self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<u64, StoreError> {
        super::portable::execute_typed(self.tx, sql, params)
    }

    /// A typed query's first column of its one row, if any.
    fn text_opt(
        &mut self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Option<Option<String>>, StoreError> {
        Ok(self.tx.query_typed_opt(sql, params)?.map(|row| row.get(0)))
    }
}

impl EffectWriter for PostgresWriter<'_, '_> {
    fn claim_transaction(
        &mut self,
        batch: &EffectBatch,
    ) -> Result<Option<Option<String>>, StoreError> {
        // Claimed first: a concurrent apply of the same id waits here, then finds it taken.
        let fresh = self.execute(
            "INSERT INTO applied_transactions (transaction_id, applied_at_ms) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[(&batch.transaction_id, TEXT), (&sql_time(batch.time_ms), INT8)],
        )?;
        if fresh == 1 {
            return Ok(None);
        }
        // Applied before: by whom, if a user came of it.
        let user = self.text_opt(
            "SELECT user_id FROM applied_transactions WHERE transaction_id = $1",
            &[(&batch.transaction_id, TEXT)],
        )?;
        Ok(Some(user.flatten()))
    }

    fn create_user(&mut self, user: &NewUser<'_>) -> Result<(String, bool), StoreError> {
        let inserted = self.text_opt(
            "INSERT INTO users (id, email, email_norm, email_verified, app_metadata, user_metadata,
                                password_hash, created_at_ms, logins_count)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0) ON CONFLICT (email_norm) DO NOTHING RETURNING id",
            &[
                (&user.id, TEXT),
                (&user.email, TEXT),
                (&user.email_norm, TEXT),
                (&user.email_verified, Type::BOOL),
                (&user.app_metadata, TEXT),
                (&user.user_metadata, TEXT),
                (&user.password_hash, TEXT),
                (&user.created_at_ms, INT8),
            ],
        )?;
        if let Some(Some(id)) = inserted {
            return Ok((id, true));
        }
        let existing = self
            .text_opt(
                "SELECT id FROM users WHERE email_norm = $1",
                &[(&user.email_norm, TEXT)],
            )?
            .flatten()
            .ok_or_else(|| {
                StoreError::Backend(format!("user {} neither inserted nor found", user.id))
            })?;
        Ok((existing, false))
    }

    fn patch_metadata(
        &mut self,
        user_id: &str,
        which: Metadata,
        patch: &Value,
    ) -> Result<(), StoreError> {
        let column = which.column();
        let current = self
            .text_opt(
                &format!("SELECT {column} FROM users WHERE id = $1 FOR UPDATE"),
                &[(&user_id, TEXT)],
            )?
            .flatten()
            .ok_or_else(|| StoreError::Backend(format!("user {user_id} not found")))?;
        self.execute(
            &format!("UPDATE users SET {column} = $2 WHERE id = $1"),
            &[(&user_id, TEXT), (&merged(&current, patch), TEXT)],
        )?;
        Ok(())
    }

    fn login_record(&mut self, user_id: &str) -> Result<(String, bool), StoreError> {
        // Locked: a login's bookkeeping on this user waits for the import, or was first.
        let row = self
            .tx
            .query_typed_opt(
                "SELECT app_metadata, logins_count > 0 OR last_login_ms IS NOT NULL
                 FROM users WHERE id = $1 FOR UPDATE",
                &[(&user_id, TEXT)],
            )?
            .ok_or_else(|| StoreError::Backend(format!("user {user_id} not found")))?;
        Ok((row.get(0), row.get(1)))
    }

    fn link_owner(&mut self, product: &str, legacy_id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .text_opt(
                "SELECT user_id FROM identities WHERE provider = $1 AND provider_user_id = $2",
                &[(&product, TEXT), (&legacy_id, TEXT)],
            )?
            .flatten())
    }

    fn insert_link(
        &mut self,
        product: &str,
        legacy_id: &str,
        user_id: &str,
    ) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO identities (provider, provider_user_id, user_id, connection) VALUES ($1, $2, $3, $1)
             ON CONFLICT DO NOTHING",
            &[(&product, TEXT), (&legacy_id, TEXT), (&user_id, TEXT)],
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
        Ok(self.execute(
            "INSERT INTO outbox (topic, key, payload, transaction_id, created_at_ms, next_attempt_at_ms)
             VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (topic, key) DO NOTHING",
            &[
                (&topic, TEXT),
                (&key, TEXT),
                (&payload, TEXT),
                (&batch.transaction_id, TEXT),
                (&sql_time(batch.time_ms), INT8),
            ],
        )? as usize)
    }

    fn finish(&mut self, batch: &EffectBatch, user_id: Option<&str>) -> Result<(), StoreError> {
        if let Some(id) = user_id {
            let time = sql_time(batch.time_ms);
            self.execute(
                "UPDATE users SET last_login_ms = $2, logins_count = logins_count + 1 WHERE id = $1",
                &[(&id, TEXT), (&time, INT8)],
            )?;
            self.execute(
                "UPDATE applied_transactions SET user_id = $2 WHERE transaction_id = $1",
                &[(&batch.transaction_id, TEXT), (&id, TEXT)],
            )?;
        }
        Ok(())
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

impl super::SqlBacked for PostgresState {
    fn sql(&self) -> &dyn super::portable::SqlStore {
        self
    }
}

impl super::FactorStore for PostgresState {}

impl super::BackfillStore for PostgresState {}

impl super::ImportStore for PostgresState {}

impl super::OutboxStore for PostgresState {}

impl StateStore for PostgresState {
    fn apply(&self, batch: &EffectBatch) -> Result<ApplyReport, StoreError> {
        let mut conn = self.pool.get()?;
        let mut tx = conn.transaction()?;
        let report = apply_effects(&mut PostgresWriter { tx: &mut tx }, batch)?;
        tx.commit()?;
        Ok(report)
    }

    fn import_user(&self, record: &ImportRecord) -> Result<ImportOutcome, StoreError> {
        let mut conn = self.pool.get()?;
        let mut tx = conn.transaction()?;
        let outcome = import_user(&mut PostgresWriter { tx: &mut tx }, record)?;
        tx.commit()?;
        Ok(outcome)
    }

    fn upgrade_password(&self, user_id: &str, password: &SecretString) -> Result<bool, StoreError> {
        let stored: Option<String> = self
            .pool
            .get()?
            .query_opt("SELECT password_hash FROM users WHERE id = $1", &[&user_id])?
            .and_then(|row| row.get(0));
        let Some(new) = super::upgraded_hash(stored.as_deref(), password) else {
            return Ok(false);
        };
        Ok(self.pool.get()?.execute(
            "UPDATE users SET password_hash = $3 WHERE id = $1 AND password_hash = $2",
            &[&user_id, &stored, &new],
        )? == 1)
    }

    fn record_logins(&self, marks: &[LoginMark]) -> Result<usize, StoreError> {
        let mut conn = self.pool.get()?;
        let mut tx = conn.transaction()?;
        let mut per_user: HashMap<&str, (u64, i64)> = HashMap::new();
        let mut counted = 0;
        let applied = tx.prepare(
            "INSERT INTO applied_transactions (transaction_id, user_id, applied_at_ms) VALUES ($1, $2, $3)
             ON CONFLICT (transaction_id) DO NOTHING",
        )?;
        for mark in marks {
            let time = sql_time(mark.time_ms);
            if tx.execute(&applied, &[&mark.transaction_id, &mark.user_id, &time])? == 0 {
                continue; // applied before: counted then
            }
            counted += 1;
            if let Some(user) = &mark.user_id {
                let entry = per_user.entry(user).or_insert((0, 0));
                *entry = (entry.0.max(mark.time_ms), entry.1 + 1);
            }
        }
        let update = tx.prepare(
            "UPDATE users SET last_login_ms = GREATEST(COALESCE(last_login_ms, 0), $2),
                              logins_count = logins_count + $3 WHERE id = $1",
        )?;
        for (user, (last, count)) in &per_user {
            let count = i32::try_from(*count).unwrap_or(i32::MAX);
            tx.execute(&update, &[user, &sql_time(*last), &count])?;
        }
        tx.commit()?;
        Ok(counted)
    }
}
