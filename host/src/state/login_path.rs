//! The login path's writes and reads of the directory, once for both backends: the
//! [`EffectWriter`] an `apply` or an import runs inside one transaction, and the user
//! lookups behind the `directory` capability. Statements are prepared once per
//! connection (SQLite's statement cache) or sent typed in one round trip (PostgreSQL).

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde_json::Value;

use super::apply::{
    EffectWriter, ImportOutcome, ImportRecord, Metadata, NewUser, apply_effects, import_user,
    merged,
};
use super::login_stats::LoginMark;
use super::portable::{Dialect, Row, SqlStore, SqlTx, Val, read, transact};
use super::{
    EffectBatch, SqlBacked, StoreError, check_stored_password, parse_json, sql_time, stored_count,
    stored_time, unavailable,
};
use crate::model::{
    ApplyReport, Directory, DirectoryUser, FactorSummary, Identity, RecoveryAsk, RecoveryFacts,
    ServiceError, normalize_email,
};

/// An [`EffectWriter`] over one portable transaction.
pub(super) struct SqlWriter<'a> {
    pub tx: &'a mut dyn SqlTx,
    pub dialect: Dialect,
}

impl SqlWriter<'_> {
    /// The first column of the first row, if any row came back.
    fn first_text(
        &mut self,
        sql: &str,
        params: &[Val],
    ) -> Result<Option<Option<String>>, StoreError> {
        Ok(self
            .tx
            .query(sql, params)?
            .into_iter()
            .next()
            .map(|row| row.into_iter().next().and_then(Val::into_text)))
    }
}

impl EffectWriter for SqlWriter<'_> {
    fn claim_transaction(
        &mut self,
        batch: &EffectBatch,
    ) -> Result<Option<Option<String>>, StoreError> {
        let previous = "SELECT user_id FROM applied_transactions WHERE transaction_id = $1";
        if self.dialect == Dialect::Sqlite {
            // The immediate transaction holds SQLite's one write lock: checking here
            // and recording the id in `finish` cannot race another writer, and the id's
            // row is written once (with `secure_delete`, a rewrite zeroes the old copy).
            let user = self.first_text(previous, &[Val::text(&batch.transaction_id)])?;
            return Ok(user);
        }
        // Claimed first: a concurrent apply of the same id waits on the key, then
        // finds it taken.
        let fresh = self.tx.execute(
            "INSERT INTO applied_transactions (transaction_id, applied_at_ms) VALUES ($1, $2)
             ON CONFLICT (transaction_id) DO NOTHING",
            &[
                Val::text(&batch.transaction_id),
                Val::int(sql_time(batch.time_ms)),
            ],
        )?;
        if fresh == 1 {
            return Ok(None);
        }
        // Applied before: by whom, if a user came of it.
        let user = self.first_text(previous, &[Val::text(&batch.transaction_id)])?;
        Ok(Some(user.flatten()))
    }

    fn create_user(&mut self, user: &NewUser<'_>) -> Result<(String, bool), StoreError> {
        let inserted = self.first_text(
            "INSERT INTO users (id, email, email_norm, email_verified, app_metadata, user_metadata,
                                password_hash, created_at_ms, logins_count)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0) ON CONFLICT (email_norm) DO NOTHING RETURNING id",
            &[
                Val::text(user.id),
                Val::text(user.email),
                Val::text(&user.email_norm),
                Val::Bool(Some(user.email_verified)),
                Val::text(&user.app_metadata),
                Val::text(&user.user_metadata),
                Val::Text(user.password_hash.map(str::to_owned)),
                Val::int(user.created_at_ms),
            ],
        )?;
        if let Some(Some(id)) = inserted {
            return Ok((id, true));
        }
        let existing = self
            .first_text(
                "SELECT id FROM users WHERE email_norm = $1",
                &[Val::text(&user.email_norm)],
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
        let lock = self.dialect.row_lock(false);
        let current = self
            .first_text(
                &format!("SELECT {column} FROM users WHERE id = $1{lock}"),
                &[Val::text(user_id)],
            )?
            .flatten()
            .ok_or_else(|| StoreError::Backend(format!("user {user_id} not found")))?;
        self.tx.execute(
            &format!("UPDATE users SET {column} = $2 WHERE id = $1"),
            &[Val::text(user_id), Val::text(merged(&current, patch))],
        )?;
        Ok(())
    }

    fn login_record(&mut self, user_id: &str) -> Result<(String, bool), StoreError> {
        // Locked on PostgreSQL: a login's bookkeeping on this user waits for the
        // import, or was first (SQLite's immediate transaction holds its one lock).
        let lock = self.dialect.row_lock(false);
        let row = self
            .tx
            .query(
                &format!(
                    "SELECT app_metadata, CASE WHEN logins_count > 0 OR last_login_ms IS NOT NULL THEN 1 ELSE 0 END
                     FROM users WHERE id = $1{lock}"
                ),
                &[Val::text(user_id)],
            )?
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Backend(format!("user {user_id} not found")))?;
        let mut row = row.into_iter();
        let metadata = row.next().and_then(Val::into_text).unwrap_or_default();
        let logged_in = row.next().and_then(|v| v.as_int()).unwrap_or(0) != 0;
        Ok((metadata, logged_in))
    }

    fn link_owner(&mut self, product: &str, legacy_id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .first_text(
                "SELECT user_id FROM identities WHERE provider = $1 AND provider_user_id = $2",
                &[Val::text(product), Val::text(legacy_id)],
            )?
            .flatten())
    }

    fn insert_link(
        &mut self,
        product: &str,
        legacy_id: &str,
        user_id: &str,
    ) -> Result<(), StoreError> {
        self.tx.execute(
            "INSERT INTO identities (provider, provider_user_id, user_id, connection) VALUES ($1, $2, $3, $1)
             ON CONFLICT (provider, provider_user_id) DO NOTHING",
            &[Val::text(product), Val::text(legacy_id), Val::text(user_id)],
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
             VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (topic, key) DO NOTHING",
            &[
                Val::text(topic),
                Val::text(key),
                Val::text(payload),
                Val::text(&batch.transaction_id),
                Val::int(sql_time(batch.time_ms)),
            ],
        )? as usize)
    }

    fn insert_factor(&mut self, factor: &super::factors::Factor) -> Result<(), StoreError> {
        super::factors::rows::put_in(self.tx, factor)
    }

    fn finish(&mut self, batch: &EffectBatch, user_id: Option<&str>) -> Result<(), StoreError> {
        let time = Val::int(sql_time(batch.time_ms));
        if let Some(id) = user_id {
            self.tx.execute(
                "UPDATE users SET last_login_ms = $2, logins_count = logins_count + 1 WHERE id = $1",
                &[Val::text(id), time.clone()],
            )?;
        }
        let user = Val::Text(user_id.map(str::to_owned));
        match self.dialect {
            // Recorded here, once (see `claim_transaction`).
            Dialect::Sqlite => self.tx.execute(
                "INSERT INTO applied_transactions (transaction_id, user_id, applied_at_ms) VALUES ($1, $2, $3)",
                &[Val::text(&batch.transaction_id), user, time],
            )?,
            Dialect::Postgres if user_id.is_some() => self.tx.execute(
                "UPDATE applied_transactions SET user_id = $2 WHERE transaction_id = $1",
                &[Val::text(&batch.transaction_id), user],
            )?,
            Dialect::Postgres => 0,
        };
        Ok(())
    }
}

/// Directory users matching `clause` (over `$1`), each with their identities. On
/// PostgreSQL in one statement (the identities as a JSON array the server builds: one
/// round trip); SQLite, in process, reads them with a second prepared statement, which
/// costs it less than building and parsing the JSON.
pub(super) fn users_where(
    store: &dyn SqlStore,
    clause: &str,
    arg: &str,
) -> Result<Vec<DirectoryUser>, StoreError> {
    let identities = match store.dialect() {
        Dialect::Sqlite => "NULL",
        Dialect::Postgres => {
            "(SELECT COALESCE(json_agg(json_build_array(i.provider, i.provider_user_id, i.connection)
                                       ORDER BY i.provider, i.provider_user_id), '[]')::text
              FROM identities i WHERE i.user_id = users.id)"
        }
    };
    let sql = format!(
        "SELECT id, email, email_verified, app_metadata, user_metadata, created_at_ms, last_login_ms,
                logins_count, {identities}
         FROM users WHERE {clause} ORDER BY created_at_ms, id"
    );
    read(store, |tx| {
        let mut users = tx
            .query(&sql, &[Val::text(arg)])?
            .into_iter()
            .map(user_of)
            .collect::<Result<Vec<_>, _>>()?;
        if store.dialect() == Dialect::Sqlite {
            for user in &mut users {
                user.identities = tx
                    .query(
                        "SELECT provider, provider_user_id, connection FROM identities
                         WHERE user_id = $1 ORDER BY provider, provider_user_id",
                        &[Val::text(&user.id)],
                    )?
                    .into_iter()
                    .map(|row| {
                        let mut row = row.into_iter().map(|v| v.into_text().unwrap_or_default());
                        let mut next = || row.next().unwrap_or_default();
                        Identity {
                            provider: next(),
                            user_id: next(),
                            connection: next(),
                        }
                    })
                    .collect();
            }
        }
        Ok(users)
    })
}

fn user_of(row: Row) -> Result<DirectoryUser, StoreError> {
    let mut row = row.into_iter();
    let mut next = || row.next().unwrap_or(Val::Text(None));
    let id = next().into_text().unwrap_or_default();
    let email = next().into_text();
    let email_verified = next().as_int().unwrap_or(0) != 0;
    let app_metadata = parse_json(next().into_text().unwrap_or_default());
    let user_metadata = parse_json(next().into_text().unwrap_or_default());
    let created_at_ms = stored_time(next().as_int().unwrap_or(0));
    let last_login_ms = next().as_int().map(stored_time);
    let logins_count = stored_count(next().as_int().unwrap_or(0));
    let identities: Vec<(String, String, String)> =
        serde_json::from_str(next().as_text().unwrap_or("[]"))
            .map_err(|e| StoreError::Backend(format!("identities of user {id}: {e}")))?;
    Ok(DirectoryUser {
        id,
        email,
        email_verified,
        identities: identities
            .into_iter()
            .map(|(provider, user_id, connection)| Identity {
                provider,
                user_id,
                connection,
            })
            .collect(),
        app_metadata,
        user_metadata,
        created_at_ms,
        last_login_ms,
        logins_count,
    })
}

/// The stored hash of a directory user's password: `None` for no such user,
/// `Some(None)` for a user without one.
pub(super) fn password_hash(
    store: &dyn SqlStore,
    user_id: &str,
) -> Result<Option<Option<String>>, StoreError> {
    let rows = read(store, |tx| {
        tx.query(
            "SELECT password_hash FROM users WHERE id = $1",
            &[Val::text(user_id)],
        )
    })?;
    Ok(rows
        .into_iter()
        .next()
        .map(|row| row.into_iter().next().and_then(Val::into_text)))
}

/// Replaces `stored` with `new` unless the hash changed meanwhile.
pub(super) fn replace_password_hash(
    store: &dyn SqlStore,
    user_id: &str,
    stored: Option<&str>,
    new: &str,
) -> Result<bool, StoreError> {
    Ok(transact(store, |tx| {
        tx.execute(
            "UPDATE users SET password_hash = $3 WHERE id = $1 AND password_hash = $2",
            &[
                Val::text(user_id),
                Val::Text(stored.map(str::to_owned)),
                Val::text(new),
            ],
        )
    })? == 1)
}

/// Logins written behind (`login_stats`): each transaction as applied, and per user
/// their latest login and how many there were. A transaction applied before counts
/// nothing twice.
pub(super) fn record_logins(
    store: &dyn SqlStore,
    marks: &[LoginMark],
) -> Result<usize, StoreError> {
    let update = format!(
        "UPDATE users SET last_login_ms = {}(COALESCE(last_login_ms, 0), $2),
                          logins_count = logins_count + $3 WHERE id = $1",
        store.dialect().greatest()
    );
    transact(store, |tx| {
        // In key order: two writers (PostgreSQL) lock users in the same order, never in a cycle.
        let mut per_user: BTreeMap<&str, (u64, i64)> = BTreeMap::new();
        let mut counted = 0;
        for mark in marks {
            let fresh = tx.execute(
                "INSERT INTO applied_transactions (transaction_id, user_id, applied_at_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (transaction_id) DO NOTHING",
                &[
                    Val::text(&mark.transaction_id),
                    Val::Text(mark.user_id.clone()),
                    Val::int(sql_time(mark.time_ms)),
                ],
            )?;
            if fresh == 0 {
                continue; // applied before: counted then
            }
            counted += 1;
            if let Some(user) = &mark.user_id {
                let entry = per_user.entry(user).or_insert((0, 0));
                *entry = (entry.0.max(mark.time_ms), entry.1 + 1);
            }
        }
        for (user, (last, count)) in &per_user {
            tx.execute(
                &update,
                &[
                    Val::text(*user),
                    Val::int(sql_time(*last)),
                    Val::int(*count),
                ],
            )?;
        }
        Ok(counted)
    })
}

/// Applies a finished pipeline's effects in one transaction.
pub(super) fn apply(store: &dyn SqlStore, batch: &EffectBatch) -> Result<ApplyReport, StoreError> {
    let dialect = store.dialect();
    transact(store, |tx| {
        apply_effects(&mut SqlWriter { tx, dialect }, batch)
    })
}

/// Imports one user of a bulk import in one transaction.
pub(super) fn import(
    store: &dyn SqlStore,
    record: &ImportRecord,
) -> Result<ImportOutcome, StoreError> {
    let dialect = store.dialect();
    transact(store, |tx| {
        import_user(&mut SqlWriter { tx, dialect }, record)
    })
}

/// The `directory` capability over either backend.
impl<T: SqlBacked> Directory for T {
    fn find_by_email(&self, email: &str) -> Result<Vec<DirectoryUser>, ServiceError> {
        users_where(self.sql(), "email_norm = $1", &normalize_email(email)).map_err(unavailable)
    }

    fn get_user(&self, id: &str) -> Result<Option<DirectoryUser>, ServiceError> {
        Ok(users_where(self.sql(), "id = $1", id)
            .map_err(unavailable)?
            .into_iter()
            .next())
    }

    fn verify_password(
        &self,
        user_id: &str,
        password: &SecretString,
    ) -> Result<bool, ServiceError> {
        let stored = password_hash(self.sql(), user_id).map_err(unavailable)?;
        check_stored_password(stored, password, &format!("directory user {user_id}"))
    }

    fn list_factors(&self, user_id: &str) -> Result<Vec<FactorSummary>, ServiceError> {
        Ok(super::factors::rows::active_of_user(self.sql(), user_id)
            .map_err(unavailable)?
            .iter()
            .map(FactorSummary::of)
            .collect())
    }

    fn recovery_facts(
        &self,
        user_id: &str,
        ask: &RecoveryAsk,
    ) -> Result<RecoveryFacts, ServiceError> {
        super::recovery::facts(self.sql(), user_id, ask).map_err(unavailable)
    }
}
