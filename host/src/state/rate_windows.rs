//! Attempts counted per key per hour of the host's clock, in the shared state.
//!
//! The limits on sending codes and on starting recoveries protect users and the SMS
//! bill from whoever repeats a request: they must hold however many gateway
//! instances share the directory, and follow the host's clock (tests and replays
//! move it). An in-process limiter (governor) holds neither, so these counts live
//! beside the state they protect: one row per key and window, incremented atomically
//! (`ON CONFLICT … DO UPDATE` on both backends). A fixed window lets a burst of up to
//! twice the limit straddle a window's end; the limits here are per hour, where that is
//! an acceptable price for one indexed row per key.

use super::StoreError;
use super::portable::{SqlStore, Val, transact};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS rate_windows (
    key TEXT NOT NULL,
    window_ms BIGINT NOT NULL,
    hits BIGINT NOT NULL,
    PRIMARY KEY (key, window_ms)
);
CREATE INDEX IF NOT EXISTS rate_windows_window ON rate_windows(window_ms);
";

/// The window every limit here is counted in. One size for all, so that forgetting
/// the windows before the current one never forgets a longer window still running.
pub const WINDOW_MS: u64 = 3_600_000;

/// One limit: at most `max` hits of `key` per hour.
#[derive(Debug, Clone, Copy)]
pub struct Limit<'a> {
    pub key: &'a str,
    pub max: u32,
}

/// Counts one hit of each limit's key, in order, in the hour that holds `now_ms`
/// (hours counted from the Unix epoch), and says whether all of them are within their limit. Counting stops
/// at the first limit exceeded, so a later key is not charged for a request an earlier
/// one refused (an address over its allowance does not use up a user's). Windows that
/// ended before the current one are forgotten in the same transaction.
pub fn hit(store: &dyn SqlStore, limits: &[Limit<'_>], now_ms: u64) -> Result<bool, StoreError> {
    let start = now_ms - now_ms % WINDOW_MS;
    let start =
        i64::try_from(start).map_err(|_| StoreError::Backend("time out of range".into()))?;
    transact(store, |tx| {
        tx.execute(
            "DELETE FROM rate_windows WHERE window_ms < $1",
            &[Val::int(start)],
        )?;
        for limit in limits {
            let rows = tx.query(
                "INSERT INTO rate_windows (key, window_ms, hits) VALUES ($1, $2, 1)
                 ON CONFLICT (key, window_ms) DO UPDATE SET hits = rate_windows.hits + 1
                 RETURNING hits",
                &[Val::text(limit.key), Val::int(start)],
            )?;
            let hits = rows
                .first()
                .and_then(|row| row.first())
                .and_then(Val::as_int)
                .ok_or_else(|| StoreError::Backend("rate window count missing".into()))?;
            if hits > i64::from(limit.max) {
                return Ok(false);
            }
        }
        Ok(true)
    })
}

/// A request counted against a limit per `window_ms` (a divisor of [`WINDOW_MS`], so
/// an hour's windows forget it in time): the hits of `key` in the window that holds
/// `now_ms`, this one included, and when that window ends. Refused requests count
/// too (the caller compares). The key's earlier windows are forgotten here.
pub fn count_in(
    store: &dyn SqlStore,
    key: &str,
    window_ms: u64,
    now_ms: u64,
) -> Result<(u64, u64), StoreError> {
    let window_ms = window_ms.clamp(1, WINDOW_MS);
    let start = now_ms - now_ms % window_ms;
    let at = i64::try_from(start).map_err(|_| StoreError::Backend("time out of range".into()))?;
    let hits = transact(store, |tx| {
        tx.execute(
            "DELETE FROM rate_windows WHERE key = $1 AND window_ms < $2",
            &[Val::text(key), Val::int(at)],
        )?;
        let rows = tx.query(
            "INSERT INTO rate_windows (key, window_ms, hits) VALUES ($1, $2, 1)
             ON CONFLICT (key, window_ms) DO UPDATE SET hits = rate_windows.hits + 1
             RETURNING hits",
            &[Val::text(key), Val::int(at)],
        )?;
        rows.first()
            .and_then(|row| row.first())
            .and_then(Val::as_int)
            .ok_or_else(|| StoreError::Backend("rate window count missing".into()))
    })?;
    Ok((u64::try_from(hits).unwrap_or(0), start + window_ms))
}
