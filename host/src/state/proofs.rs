//! Proofs the host issued, kept server-side behind opaque tokens (the model is
//! `flows::proof`), and which proof started each enrolment.
//!
//! A token is never stored: the key of its row is the token's SHA-256, so a copy of
//! the database holds nothing that can be presented. A row says whose proof it is,
//! what was shown, for which recovery (if any), until when, and whether a single-use
//! proof has been spent.

use super::StoreError;
use super::portable::{SqlStore, SqlTx, Val, transact};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS proofs (
    digest TEXT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    shown TEXT NOT NULL,
    recovery_id TEXT,
    issued_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    single_use BIGINT NOT NULL,
    used_at_ms BIGINT
);
CREATE INDEX IF NOT EXISTS proofs_expiry ON proofs(expires_at_ms);
CREATE TABLE IF NOT EXISTS enrolments (
    factor_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    proof_id TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
";

/// A proof as the store keeps it (the token itself is not here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofRow {
    pub id: String,
    pub user_id: String,
    /// What was shown, as the model names it (`password`, `factor`, …), comma-separated.
    pub shown: String,
    pub recovery_id: Option<String>,
    pub issued_at_ms: u64,
    pub expires_at_ms: u64,
    pub single_use: bool,
    pub used_at_ms: Option<u64>,
}

/// Saves a proof under the digest of its token; proofs expired a day ago are dropped
/// in the same transaction (they can no longer be presented, and nothing refers to
/// them but enrolments, which keep their own row).
pub fn insert(store: &dyn SqlStore, digest: &str, proof: &ProofRow) -> Result<(), StoreError> {
    transact(store, |tx| insert_in(tx, digest, proof))
}

pub fn insert_in(tx: &mut dyn SqlTx, digest: &str, proof: &ProofRow) -> Result<(), StoreError> {
    let now = super::sql_time(proof.issued_at_ms);
    tx.execute(
        "DELETE FROM proofs WHERE expires_at_ms < $1",
        &[Val::int(now.saturating_sub(86_400_000))],
    )?;
    tx.execute(
        "INSERT INTO proofs (digest, id, user_id, shown, recovery_id, issued_at_ms,
                             expires_at_ms, single_use)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            Val::text(digest),
            Val::text(&proof.id),
            Val::text(&proof.user_id),
            Val::text(&proof.shown),
            Val::Text(proof.recovery_id.clone()),
            Val::int(now),
            Val::int(super::sql_time(proof.expires_at_ms)),
            Val::int(i64::from(proof.single_use)),
        ],
    )?;
    Ok(())
}

const COLUMNS: &str =
    "id, user_id, shown, recovery_id, issued_at_ms, expires_at_ms, single_use, used_at_ms";

fn row(values: Vec<Val>) -> ProofRow {
    let mut v = values.into_iter();
    let mut next = || v.next().unwrap_or(Val::Text(None));
    let text = |v: Val| v.into_text().unwrap_or_default();
    let time = |v: Val| v.as_int().map(super::stored_time);
    ProofRow {
        id: text(next()),
        user_id: text(next()),
        shown: text(next()),
        recovery_id: next().into_text(),
        issued_at_ms: time(next()).unwrap_or(0),
        expires_at_ms: time(next()).unwrap_or(0),
        single_use: next().as_int().unwrap_or(1) != 0,
        used_at_ms: time(next()),
    }
}

/// The proof whose token has this digest, whatever its state (the model decides).
pub fn by_digest(store: &dyn SqlStore, digest: &str) -> Result<Option<ProofRow>, StoreError> {
    transact(store, |tx| {
        Ok(tx
            .query(
                &format!("SELECT {COLUMNS} FROM proofs WHERE digest = $1"),
                &[Val::text(digest)],
            )?
            .into_iter()
            .next()
            .map(row))
    })
}

/// Spends a single-use proof, inside the transaction that uses it: true only for the
/// one caller that spent it.
pub fn spend(tx: &mut dyn SqlTx, id: &str, now_ms: u64) -> Result<bool, StoreError> {
    Ok(tx.execute(
        "UPDATE proofs SET used_at_ms = $2 WHERE id = $1 AND used_at_ms IS NULL",
        &[Val::text(id), Val::int(super::sql_time(now_ms))],
    )? == 1)
}

/// Ends every proof of a user still open (the password changed, support acted).
pub fn revoke_user(tx: &mut dyn SqlTx, user_id: &str, now_ms: u64) -> Result<u64, StoreError> {
    tx.execute(
        "UPDATE proofs SET expires_at_ms = $2 WHERE user_id = $1 AND expires_at_ms > $2",
        &[Val::text(user_id), Val::int(super::sql_time(now_ms))],
    )
}

/// Records which proof started the enrolment of this (pending) factor.
pub fn record_enrolment(
    store: &dyn SqlStore,
    factor_id: &str,
    user_id: &str,
    proof_id: &str,
    now_ms: u64,
) -> Result<(), StoreError> {
    transact(store, |tx| {
        tx.execute(
            "INSERT INTO enrolments (factor_id, user_id, proof_id, created_at_ms)
             VALUES ($1, $2, $3, $4)",
            &[
                Val::text(factor_id),
                Val::text(user_id),
                Val::text(proof_id),
                Val::int(super::sql_time(now_ms)),
            ],
        )?;
        Ok(())
    })
}

/// The proof that started the enrolment of this factor, if one did.
pub fn enrolled_by(store: &dyn SqlStore, factor_id: &str) -> Result<Option<String>, StoreError> {
    transact(store, |tx| {
        Ok(tx
            .query(
                "SELECT proof_id FROM enrolments WHERE factor_id = $1",
                &[Val::text(factor_id)],
            )?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .and_then(Val::into_text))
    })
}
