//! Consecutive wrong second-factor codes, per factor, across challenges, and the
//! password resets they make the host require.
//!
//! A challenge allows a few wrong codes and the host a few challenges an hour, but
//! neither bounds guessing over weeks: someone holding the password could try again
//! every hour for ever. NIST SP 800-63B bounds consecutive failures on one account
//! (100); these rows count them in the shared state, so every gateway instance
//! agrees, on the host's clock:
//!
//! - each check *claims* an attempt first (counted as a failure before the provider
//!   answers), so parallel checks on several challenges cannot slip past a delay or
//!   the stop; a right code deletes the row, an answer that says nothing about the
//!   code (expired, provider down) gives the attempt back;
//! - past `slow_after` failures every attempt (a code sent or checked) waits a delay
//!   doubling from one second ([`Throttle`]); at `max_failures` the factor takes no
//!   more codes;
//! - a row belongs to the password it was counted under (a digest of the stored
//!   hash): once the password changes, whoever guessed no longer has it, and the
//!   count and any reset mark are void.

use sha2::{Digest, Sha256};

use super::StoreError;
use super::portable::{SqlStore, SqlTx, Val, transact};
use super::recovery::Throttle;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS factor_failures (
    user_id TEXT NOT NULL,
    factor_id TEXT NOT NULL,
    failures BIGINT NOT NULL,
    last_failure_ms BIGINT NOT NULL,
    password_digest TEXT NOT NULL,
    warned_at_ms BIGINT,
    PRIMARY KEY (user_id, factor_id)
);
CREATE TABLE IF NOT EXISTS password_resets_required (
    user_id TEXT PRIMARY KEY,
    password_digest TEXT NOT NULL,
    since_ms BIGINT NOT NULL,
    reason TEXT NOT NULL
);
";

/// Whether a factor may take an attempt now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Yes; `failures` consecutive failures so far (with this attempt, once claimed).
    Open { failures: i64 },
    /// Not before `retry_at_ms` (the host's clock).
    Wait { retry_at_ms: i64 },
    /// No more codes until the password changes or support lifts it.
    Stopped,
}

/// A digest of the user's stored password hash (empty when none): what a count and
/// a reset mark are bound to, never the hash itself.
fn password_digest(tx: &mut dyn SqlTx, user_id: &str) -> Result<String, StoreError> {
    let rows = tx.query(
        "SELECT password_hash FROM users WHERE id = $1",
        &[Val::text(user_id)],
    )?;
    let hash = rows
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next())
        .and_then(Val::into_text)
        .unwrap_or_default();
    let mut digest = Sha256::new();
    digest.update(b"portcullis-password-in-force\0");
    digest.update(hash.as_bytes());
    Ok(hex::encode(digest.finalize()))
}

/// The gate, reading (and clearing a count the password outlived) in `tx`.
fn gate_in(
    tx: &mut dyn SqlTx,
    user_id: &str,
    factor_id: &str,
    now_ms: i64,
    throttle: Throttle,
) -> Result<(Gate, String), StoreError> {
    let current = password_digest(tx, user_id)?;
    let row = tx
        .query(
            "SELECT failures, last_failure_ms, password_digest FROM factor_failures
             WHERE user_id = $1 AND factor_id = $2",
            &[Val::text(user_id), Val::text(factor_id)],
        )?
        .into_iter()
        .next();
    let Some(row) = row else {
        return Ok((Gate::Open { failures: 0 }, current));
    };
    let failures = row[0].as_int().unwrap_or(0);
    let last = row[1].as_int().unwrap_or(0);
    if row[2].as_text() != Some(current.as_str()) {
        // The password changed since: the guesser's password is gone, and so is
        // the count.
        tx.execute(
            "DELETE FROM factor_failures WHERE user_id = $1 AND factor_id = $2",
            &[Val::text(user_id), Val::text(factor_id)],
        )?;
        return Ok((Gate::Open { failures: 0 }, current));
    }
    if failures >= throttle.max_failures {
        return Ok((Gate::Stopped, current));
    }
    let retry_at_ms = throttle.next_attempt_ms(failures, last);
    if now_ms < retry_at_ms {
        return Ok((Gate::Wait { retry_at_ms }, current));
    }
    Ok((Gate::Open { failures }, current))
}

/// Whether a code may be sent for this factor now (nothing is counted).
pub fn gate(
    store: &dyn SqlStore,
    user_id: &str,
    factor_id: &str,
    now_ms: u64,
    throttle: Throttle,
) -> Result<Gate, StoreError> {
    let now = super::sql_time(now_ms);
    transact(store, |tx| {
        gate_in(tx, user_id, factor_id, now, throttle).map(|(g, _)| g)
    })
}

/// Claims one attempt at a code: if the gate is open, counts it as a failure now
/// (a right code then [`passed`], a meaningless answer [`give_back`]).
pub fn claim(
    store: &dyn SqlStore,
    user_id: &str,
    factor_id: &str,
    now_ms: u64,
    throttle: Throttle,
) -> Result<Gate, StoreError> {
    let now = super::sql_time(now_ms);
    transact(store, |tx| {
        let (gate, digest) = gate_in(tx, user_id, factor_id, now, throttle)?;
        let Gate::Open { .. } = gate else {
            return Ok(gate);
        };
        let rows = tx.query(
            "INSERT INTO factor_failures (user_id, factor_id, failures, last_failure_ms, password_digest)
             VALUES ($1, $2, 1, $3, $4)
             ON CONFLICT (user_id, factor_id) DO UPDATE SET failures = factor_failures.failures + 1,
                 last_failure_ms = excluded.last_failure_ms
             RETURNING failures",
            &[
                Val::text(user_id),
                Val::text(factor_id),
                Val::int(now),
                Val::text(digest),
            ],
        )?;
        let failures = rows
            .first()
            .and_then(|r| r.first())
            .and_then(Val::as_int)
            .ok_or_else(|| StoreError::Backend("factor failure count missing".into()))?;
        Ok(Gate::Open { failures })
    })
}

/// A right code: the count starts again from zero.
pub fn passed(store: &dyn SqlStore, user_id: &str, factor_id: &str) -> Result<(), StoreError> {
    transact(store, |tx| {
        tx.execute(
            "DELETE FROM factor_failures WHERE user_id = $1 AND factor_id = $2",
            &[Val::text(user_id), Val::text(factor_id)],
        )?;
        Ok(())
    })
}

/// The claimed attempt said nothing about the code (expired, provider down).
pub fn give_back(store: &dyn SqlStore, user_id: &str, factor_id: &str) -> Result<(), StoreError> {
    transact(store, |tx| {
        tx.execute(
            "UPDATE factor_failures SET failures = failures - 1
             WHERE user_id = $1 AND factor_id = $2 AND failures > 0",
            &[Val::text(user_id), Val::text(factor_id)],
        )?;
        Ok(())
    })
}

/// Marks the streak as told, in `tx`, if it reached `slow_after` and was not told
/// yet; true when this call is the one that must tell (once per streak).
pub fn take_warning(
    tx: &mut dyn SqlTx,
    user_id: &str,
    factor_id: &str,
    slow_after: i64,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let n = tx.execute(
        "UPDATE factor_failures SET warned_at_ms = $3
         WHERE user_id = $1 AND factor_id = $2 AND failures >= $4 AND warned_at_ms IS NULL",
        &[
            Val::text(user_id),
            Val::text(factor_id),
            Val::int(super::sql_time(now_ms)),
            Val::int(slow_after),
        ],
    )?;
    Ok(n == 1)
}

/// The user must change their password before a sign-in completes; bound to the
/// password in force now, so changing it lifts the mark.
pub fn require_reset(
    tx: &mut dyn SqlTx,
    user_id: &str,
    reason: &str,
    now_ms: u64,
) -> Result<(), StoreError> {
    let digest = password_digest(tx, user_id)?;
    tx.execute(
        "INSERT INTO password_resets_required (user_id, password_digest, since_ms, reason)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (user_id) DO UPDATE SET password_digest = excluded.password_digest,
             since_ms = excluded.since_ms, reason = excluded.reason",
        &[
            Val::text(user_id),
            Val::text(digest),
            Val::int(super::sql_time(now_ms)),
            Val::text(reason),
        ],
    )?;
    Ok(())
}

/// Whether the user must still change their password (a mark whose password is
/// still in force; one the password outlived is removed).
pub fn reset_required(store: &dyn SqlStore, user_id: &str) -> Result<bool, StoreError> {
    transact(store, |tx| {
        let Some(marked) = tx
            .query(
                "SELECT password_digest FROM password_resets_required WHERE user_id = $1",
                &[Val::text(user_id)],
            )?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .and_then(Val::into_text)
        else {
            return Ok(false);
        };
        if marked == password_digest(tx, user_id)? {
            return Ok(true);
        }
        tx.execute(
            "DELETE FROM password_resets_required WHERE user_id = $1",
            &[Val::text(user_id)],
        )?;
        Ok(false)
    })
}

/// Support lifted a stop: every factor of the user takes codes again, from zero.
pub fn clear_user(tx: &mut dyn SqlTx, user_id: &str) -> Result<u64, StoreError> {
    tx.execute(
        "DELETE FROM factor_failures WHERE user_id = $1",
        &[Val::text(user_id)],
    )
}

/// One factor's count as stored: (failures, last failure, told at), for support's
/// lookup and tests.
pub fn count_of(
    store: &dyn SqlStore,
    user_id: &str,
    factor_id: &str,
) -> Result<Option<(i64, i64, Option<i64>)>, StoreError> {
    transact(store, |tx| {
        Ok(tx
            .query(
                "SELECT failures, last_failure_ms, warned_at_ms FROM factor_failures
                 WHERE user_id = $1 AND factor_id = $2",
                &[Val::text(user_id), Val::text(factor_id)],
            )?
            .into_iter()
            .next()
            .map(|r| {
                (
                    r[0].as_int().unwrap_or(0),
                    r[1].as_int().unwrap_or(0),
                    r[2].as_int(),
                )
            }))
    })
}
