//! Codes a provider holds open for a user (a Verify-like verification still pending),
//! kept so the host can cancel one when what it was sent for is abandoned: a login
//! challenge replaced by a new one for the same user or past its resume token's
//! expiry, an enrolment whose recovery another recovery replaced. Otherwise its code
//! would keep working until the provider's own ten minutes ran out. Only the
//! provider's reference (the verification's SID: an id, not a secret) is kept; never
//! the phone, never the code.

use super::portable::{Row, SqlStore, Val, transact};
use super::{StoreError, sql_time, stored_time};
use crate::model::FactorProvider;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS open_codes (
    reference TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    factor_id TEXT NOT NULL,
    purpose TEXT NOT NULL,
    via TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS open_codes_user ON open_codes (user_id, purpose);
CREATE INDEX IF NOT EXISTS open_codes_expiry ON open_codes (expires_at_ms);
";

/// What a code was sent for.
pub const LOGIN: &str = "login";
pub const ENROL: &str = "enrol";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenCode {
    pub reference: String,
    pub user_id: String,
    pub factor_id: String,
    pub purpose: String,
    pub via: FactorProvider,
    /// When what it was sent for is abandoned if still open (the parked login's
    /// expiry, or the enrolment's).
    pub expires_at_ms: u64,
}

const COLUMNS: &str = "reference, user_id, factor_id, purpose, via, expires_at_ms";

fn open_code(row: Row) -> Result<OpenCode, StoreError> {
    let mut row = row.into_iter();
    let mut text = || row.next().and_then(Val::into_text).unwrap_or_default();
    let (reference, user_id, factor_id, purpose, via) = (text(), text(), text(), text(), text());
    let expires = row.next().and_then(|v| v.as_int()).unwrap_or(0);
    Ok(OpenCode {
        reference,
        user_id,
        factor_id,
        purpose,
        via: FactorProvider::parse(&via).ok_or_else(|| {
            StoreError::Backend(format!("unknown provider {via:?} in the open_codes table"))
        })?,
        expires_at_ms: stored_time(expires),
    })
}

fn taken(rows: Vec<Row>) -> Result<Vec<OpenCode>, StoreError> {
    rows.into_iter().map(open_code).collect()
}

/// Notes a code sent (a resend within the same verification keeps one row).
pub fn open(store: &dyn SqlStore, code: &OpenCode) -> Result<(), StoreError> {
    transact(store, |tx| {
        tx.execute(
            "INSERT INTO open_codes (reference, user_id, factor_id, purpose, via, expires_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (reference) DO UPDATE SET expires_at_ms = excluded.expires_at_ms
             WHERE open_codes.user_id = excluded.user_id",
            &[
                Val::text(&code.reference),
                Val::text(&code.user_id),
                Val::text(&code.factor_id),
                Val::text(&code.purpose),
                Val::text(code.via.name()),
                Val::int(sql_time(code.expires_at_ms)),
            ],
        )
    })?;
    Ok(())
}

/// Removes and returns the user's open codes sent for `purpose`: the caller cancels
/// them (once: a concurrent caller gets none of the same rows).
pub fn take(
    store: &dyn SqlStore,
    user_id: &str,
    purpose: &str,
) -> Result<Vec<OpenCode>, StoreError> {
    taken(transact(store, |tx| {
        tx.query(
            &format!(
                "DELETE FROM open_codes WHERE user_id = $1 AND purpose = $2 RETURNING {COLUMNS}"
            ),
            &[Val::text(user_id), Val::text(purpose)],
        )
    })?)
}

/// Removes and returns up to `limit` codes whose purpose was abandoned by `now_ms`.
pub fn take_expired(
    store: &dyn SqlStore,
    now_ms: u64,
    limit: usize,
) -> Result<Vec<OpenCode>, StoreError> {
    taken(transact(store, |tx| {
        tx.query(
            &format!(
                "DELETE FROM open_codes WHERE reference IN (
                     SELECT reference FROM open_codes WHERE expires_at_ms <= $1
                     ORDER BY expires_at_ms LIMIT $2)
                 RETURNING {COLUMNS}"
            ),
            &[
                Val::int(sql_time(now_ms)),
                Val::int(i64::try_from(limit).unwrap_or(i64::MAX)),
            ],
        )
    })?)
}

/// Forgets a code that was used (approved): nothing is left to cancel.
pub fn forget(store: &dyn SqlStore, user_id: &str, reference: &str) -> Result<(), StoreError> {
    transact(store, |tx| {
        tx.execute(
            "DELETE FROM open_codes WHERE reference = $1 AND user_id = $2",
            &[Val::text(reference), Val::text(user_id)],
        )
    })?;
    Ok(())
}

/// Removes and returns the codes sent for one of the user's factors (an enrolment
/// confirmed, failed or replaced).
pub fn take_factor(
    store: &dyn SqlStore,
    user_id: &str,
    factor_id: &str,
) -> Result<Vec<OpenCode>, StoreError> {
    taken(transact(store, |tx| {
        tx.query(
            &format!(
                "DELETE FROM open_codes WHERE user_id = $1 AND factor_id = $2 RETURNING {COLUMNS}"
            ),
            &[Val::text(user_id), Val::text(factor_id)],
        )
    })?)
}
