//! Second factors in the directory: one row per enrolled factor. An SMS factor is
//! either the old provider's (which keeps the phone; we hold its user id) or the new
//! provider's (which needs the phone on every request; we hold it sealed, see
//! `mfa::sealed`). Never a plaintext phone, never a code.

use super::{SqlBacked, StoreError};
use crate::mfa::sealed::Sealed;
use crate::model::{FactorKind, FactorProvider, FactorStatus, FactorSummary};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Factor {
    pub id: String,
    pub user_id: String,
    pub kind: FactorKind,
    pub provider: FactorProvider,
    /// The old provider's id for this user (legacy-sms factors).
    pub legacy_provider_user_id: Option<String>,
    /// The phone number, sealed with this user's and factor's ids.
    pub phone: Option<Sealed>,
    pub status: FactorStatus,
    pub enrolled_at_ms: u64,
    pub updated_at_ms: u64,
    pub last_used_ms: Option<u64>,
    /// The rollout cohort (e.g. `internal`), for routing and the backfill.
    pub cohort: Option<String>,
    /// Put back on the old provider by an operator; routing honours it.
    pub reverted: bool,
}

/// Inserts a factor or replaces the one with its id, never moving it to another user.
/// PostgreSQL placeholders; SQLite takes the same text with `?` for `$`.
pub(super) const UPSERT: &str =
    "INSERT INTO factors (id, user_id, kind, provider, legacy_provider_user_id, phone_ciphertext,
                          phone_nonce, phone_key_id, status, enrolled_at_ms, updated_at_ms, last_used_ms,
                          cohort, reverted)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
     ON CONFLICT (id) DO UPDATE SET
         provider = excluded.provider, legacy_provider_user_id = excluded.legacy_provider_user_id,
         phone_ciphertext = excluded.phone_ciphertext, phone_nonce = excluded.phone_nonce,
         phone_key_id = excluded.phone_key_id, status = excluded.status,
         updated_at_ms = excluded.updated_at_ms, last_used_ms = excluded.last_used_ms,
         cohort = excluded.cohort, reverted = excluded.reverted
     WHERE factors.user_id = excluded.user_id";

/// Replaces a sealed phone only if it is still the one read.
pub(super) const RESEAL: &str =
    "UPDATE factors SET phone_ciphertext = $2, phone_nonce = $3, phone_key_id = $4
     WHERE id = $1 AND phone_key_id = $5 AND phone_nonce = $6 AND phone_ciphertext = $7";

/// The columns a factor is read from, in `Factor`'s order.
pub(super) const COLUMNS: &str = "id, user_id, kind, provider, legacy_provider_user_id, phone_ciphertext, \
     phone_nonce, phone_key_id, status, enrolled_at_ms, updated_at_ms, last_used_ms, cohort, reverted";

/// The SQL that reads, writes and reseals factors, once for both backends.
pub mod rows {
    use super::super::portable::{Row, SqlStore, Val, transact};
    use super::super::{StoreError, sql_time, stored_time};
    use super::{COLUMNS, Factor, FactorKind, FactorProvider, FactorStatus, RESEAL, UPSERT};
    use crate::mfa::sealed::Sealed;

    /// Only this module writes them: an unknown name is a store edited by hand.
    fn named<T>(parse: fn(&str) -> Option<T>, what: &str, name: &str) -> Result<T, StoreError> {
        parse(name).ok_or_else(|| {
            StoreError::Backend(format!("unknown {what} {name:?} in the factors table"))
        })
    }

    fn factor(row: Row) -> Result<Factor, StoreError> {
        let mut row = row.into_iter();
        let mut next = || row.next().unwrap_or(Val::Text(None));
        let text = |v: Val| v.into_text().unwrap_or_default();
        let id = text(next());
        let user_id = text(next());
        let kind = named(FactorKind::parse, "kind", &text(next()))?;
        let provider = named(FactorProvider::parse, "provider", &text(next()))?;
        let legacy_provider_user_id = next().into_text();
        let (ciphertext, nonce, key_id) =
            (next().into_bytes(), next().into_bytes(), next().into_text());
        let status = named(FactorStatus::parse, "status", &text(next()))?;
        let enrolled = next().as_int().unwrap_or(0);
        let updated = next().as_int().unwrap_or(0);
        let used = next().as_int();
        let cohort = next().into_text();
        let reverted = next().as_int().unwrap_or(0) != 0;
        Ok(Factor {
            id,
            user_id,
            kind,
            provider,
            legacy_provider_user_id,
            phone: match (ciphertext, nonce, key_id) {
                (Some(ciphertext), Some(nonce), Some(key_id)) => Some(Sealed {
                    key_id,
                    nonce,
                    ciphertext,
                }),
                _ => None,
            },
            status,
            enrolled_at_ms: stored_time(enrolled),
            updated_at_ms: stored_time(updated),
            last_used_ms: used.map(stored_time),
            cohort,
            reverted,
        })
    }

    /// The factors matching `clause` (PostgreSQL placeholders).
    pub fn matching(
        store: &dyn SqlStore,
        clause: &str,
        params: &[Val],
    ) -> Result<Vec<Factor>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM factors WHERE {clause}");
        transact(store, |tx| tx.query(&sql, params))?
            .into_iter()
            .map(factor)
            .collect()
    }

    pub fn of_user(store: &dyn SqlStore, user_id: &str) -> Result<Vec<Factor>, StoreError> {
        matching(
            store,
            "user_id = $1 ORDER BY enrolled_at_ms, id",
            &[Val::text(user_id)],
        )
    }

    /// What rules may see: active factors only.
    pub fn active_of_user(store: &dyn SqlStore, user_id: &str) -> Result<Vec<Factor>, StoreError> {
        matching(
            store,
            "user_id = $1 AND status = 'active' ORDER BY enrolled_at_ms, id",
            &[Val::text(user_id)],
        )
    }

    pub fn by_ids(store: &dyn SqlStore, ids: &[String]) -> Result<Vec<Factor>, StoreError> {
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            found.extend(matching(store, "id = $1", &[Val::text(id)])?);
        }
        Ok(found)
    }

    pub fn sealed_with_other_keys(
        store: &dyn SqlStore,
        key_id: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<Factor>, StoreError> {
        matching(
            store,
            "phone_key_id IS NOT NULL AND phone_key_id <> $1 AND id > $2 ORDER BY id LIMIT $3",
            &[
                Val::text(key_id),
                Val::text(after),
                Val::int(i64::try_from(limit).unwrap_or(i64::MAX)),
            ],
        )
    }

    pub fn put(store: &dyn SqlStore, factor: &Factor) -> Result<(), StoreError> {
        transact(store, |tx| put_in(tx, factor))
    }

    /// [`put`] inside a transaction (an import writes the user and the factor in one).
    pub fn put_in(
        tx: &mut dyn super::super::portable::SqlTx,
        factor: &Factor,
    ) -> Result<(), StoreError> {
        let phone = factor.phone.as_ref();
        tx.execute(
            UPSERT,
            &[
                Val::text(&factor.id),
                Val::text(&factor.user_id),
                Val::text(factor.kind.name()),
                Val::text(factor.provider.name()),
                Val::Text(factor.legacy_provider_user_id.clone()),
                Val::Bytes(phone.map(|p| p.ciphertext.clone())),
                Val::Bytes(phone.map(|p| p.nonce.clone())),
                Val::Text(phone.map(|p| p.key_id.clone())),
                Val::text(factor.status.name()),
                Val::int(sql_time(factor.enrolled_at_ms)),
                Val::int(sql_time(factor.updated_at_ms)),
                Val::Int(factor.last_used_ms.map(sql_time)),
                Val::Text(factor.cohort.clone()),
                Val::Bool(Some(factor.reverted)),
            ],
        )?;
        Ok(())
    }

    pub fn mark_used(
        store: &dyn SqlStore,
        user_id: &str,
        id: &str,
        at_ms: u64,
    ) -> Result<(), StoreError> {
        transact(store, |tx| {
            tx.execute(
                "UPDATE factors SET last_used_ms = $3 WHERE id = $1 AND user_id = $2",
                &[Val::text(id), Val::text(user_id), Val::int(sql_time(at_ms))],
            )
        })?;
        Ok(())
    }

    pub fn delete(
        store: &dyn SqlStore,
        user_id: &str,
        id: &str,
        status: FactorStatus,
    ) -> Result<bool, StoreError> {
        Ok(transact(store, |tx| {
            tx.execute(
                "DELETE FROM factors WHERE id = $1 AND user_id = $2 AND status = $3",
                &[Val::text(id), Val::text(user_id), Val::text(status.name())],
            )
        })? == 1)
    }

    /// Serializes every change to which of a user's factors are active: the user's
    /// row, locked for the transaction on PostgreSQL (under READ COMMITTED two
    /// transactions would each see the other's factor still active); SQLite's
    /// immediate transaction holds its one write lock already.
    pub fn lock_factor_set(
        tx: &mut dyn super::super::portable::SqlTx,
        dialect: super::super::portable::Dialect,
        user_id: &str,
    ) -> Result<(), StoreError> {
        if dialect == super::super::portable::Dialect::Postgres {
            tx.query(
                "SELECT id FROM users WHERE id = $1 FOR UPDATE",
                &[Val::text(user_id)],
            )?;
        }
        Ok(())
    }

    /// The user's active SMS factors other than `except`, inside the transaction.
    pub fn active_sms_count(
        tx: &mut dyn super::super::portable::SqlTx,
        user_id: &str,
        except: &str,
    ) -> Result<i64, StoreError> {
        let rows = tx.query(
            "SELECT COUNT(*) FROM factors WHERE user_id = $1 AND id <> $2 AND kind = 'sms' AND status = 'active'",
            &[Val::text(user_id), Val::text(except)],
        )?;
        Ok(rows
            .first()
            .and_then(|r| r.first())
            .and_then(Val::as_int)
            .unwrap_or(0))
    }

    /// A pending enrolment becomes `status` (confirmed by its code): one row, or none
    /// when the enrolment went meanwhile (replaced, or timed out).
    pub fn settle_pending(
        tx: &mut dyn super::super::portable::SqlTx,
        user_id: &str,
        id: &str,
        status: FactorStatus,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        tx.execute(
            "UPDATE factors SET status = $3, enrolled_at_ms = $4, updated_at_ms = $4
             WHERE user_id = $1 AND id = $2 AND status = 'pending'",
            &[
                Val::text(user_id),
                Val::text(id),
                Val::text(status.name()),
                Val::int(sql_time(now_ms)),
            ],
        )
    }

    pub fn reseal(
        store: &dyn SqlStore,
        id: &str,
        old: &Sealed,
        new: &Sealed,
    ) -> Result<bool, StoreError> {
        Ok(transact(store, |tx| {
            tx.execute(
                RESEAL,
                &[
                    Val::text(id),
                    Val::Bytes(Some(new.ciphertext.clone())),
                    Val::Bytes(Some(new.nonce.clone())),
                    Val::text(&new.key_id),
                    Val::text(&old.key_id),
                    Val::Bytes(Some(old.nonce.clone())),
                    Val::Bytes(Some(old.ciphertext.clone())),
                ],
            )
        })? == 1)
    }
}

impl FactorSummary {
    pub fn of(factor: &Factor) -> Self {
        Self {
            id: factor.id.clone(),
            kind: factor.kind,
            provider: factor.provider,
            enrolled_at_ms: factor.enrolled_at_ms,
            last_used_ms: factor.last_used_ms,
            phone_on_file: factor.phone.is_some(),
            legacy_id_on_file: factor.legacy_provider_user_id.is_some(),
            cohort: factor.cohort.clone(),
            reverted: factor.reverted,
        }
    }
}

/// Second factors: one implementation for both backends (`factors::rows`).
pub trait FactorStore: SqlBacked {
    /// Inserts a factor, or replaces the one with its id.
    fn put_factor(&self, factor: &Factor) -> Result<(), StoreError> {
        rows::put(self.sql(), factor)
    }
    /// Notes that a factor passed a challenge at `at_ms` (only that column).
    fn mark_factor_used(&self, user_id: &str, id: &str, at_ms: u64) -> Result<(), StoreError> {
        rows::mark_used(self.sql(), user_id, id, at_ms)
    }
    /// Deletes a user's factor if it has this status; true when deleted.
    fn delete_factor(
        &self,
        user_id: &str,
        id: &str,
        status: FactorStatus,
    ) -> Result<bool, StoreError> {
        rows::delete(self.sql(), user_id, id, status)
    }
    /// A user's factors, oldest enrolment first.
    fn factors_of(&self, user_id: &str) -> Result<Vec<Factor>, StoreError> {
        rows::of_user(self.sql(), user_id)
    }
    fn factors_by_ids(&self, ids: &[String]) -> Result<Vec<Factor>, StoreError> {
        rows::by_ids(self.sql(), ids)
    }
    /// Up to `limit` factors whose phone is sealed with a key other than `key_id`,
    /// by id after `after` (a cursor, so a row that cannot be re-sealed is passed).
    fn factors_sealed_with_other_keys(
        &self,
        key_id: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<Factor>, StoreError> {
        rows::sealed_with_other_keys(self.sql(), key_id, after, limit)
    }
    /// Replaces a factor's sealed phone, only if it is still `old` (a concurrent
    /// change wins); true when replaced.
    fn reseal_factor(
        &self,
        id: &str,
        old: &crate::mfa::sealed::Sealed,
        new: &crate::mfa::sealed::Sealed,
    ) -> Result<bool, StoreError> {
        rows::reseal(self.sql(), id, old, new)
    }
}
