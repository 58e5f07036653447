//! The outbox in the directory: messages written in the transaction that decided
//! them, claimed by dispatchers under a lease (two never hold one message at once),
//! delivered or retried or dead-lettered, fenced by that lease; secret links are
//! scrubbed from a payload once it is delivered or dead (see `scrubbed_payload`).
//! Once for both backends, over portable SQL.

use super::portable::{Row, SqlStore, Val, transact};
use super::{OutboxMessage, StoreError, new_lease_token, scrubbed_payload, sql_time};

const COLUMNS: &str = "id, topic, key, payload, status, attempts, transaction_id, lease_token";

fn message(row: Row) -> OutboxMessage {
    let text = |i: usize| row.get(i).and_then(Val::as_text).map(str::to_owned);
    let int = |i: usize| row.get(i).and_then(Val::as_int).unwrap_or(0);
    OutboxMessage {
        id: int(0),
        topic: text(1).unwrap_or_default(),
        key: text(2).unwrap_or_default(),
        payload: text(3).unwrap_or_default(),
        status: text(4).unwrap_or_default(),
        attempts: u32::try_from(int(5)).unwrap_or(0),
        transaction_id: text(6).unwrap_or_default(),
        lease: text(7),
    }
}

pub fn messages(store: &dyn SqlStore) -> Result<Vec<OutboxMessage>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM outbox ORDER BY id");
    Ok(transact(store, |tx| tx.query(&sql, &[]))?
        .into_iter()
        .map(message)
        .collect())
}

/// Reserves up to `limit` due messages for `lease_ms` and counts the attempt.
pub fn claim(
    store: &dyn SqlStore,
    now_ms: u64,
    lease_ms: u64,
    limit: usize,
) -> Result<Vec<OutboxMessage>, StoreError> {
    // PostgreSQL: dispatchers skip each other's rows instead of waiting for them.
    let sql = format!(
        "UPDATE outbox SET status = 'delivering', attempts = attempts + 1, claimed_until_ms = $2, lease_token = $4
         WHERE id IN (SELECT id FROM outbox
                      WHERE (status = 'pending' AND next_attempt_at_ms <= $1)
                         OR (status = 'delivering' AND claimed_until_ms <= $1)
                      ORDER BY id LIMIT $3{})
         RETURNING {COLUMNS}",
        store.dialect().row_lock(true)
    );
    let params = [
        Val::int(sql_time(now_ms)),
        Val::int(sql_time(now_ms.saturating_add(lease_ms))),
        Val::int(i64::try_from(limit).unwrap_or(i64::MAX)),
        Val::text(new_lease_token()),
    ];
    let mut claimed: Vec<OutboxMessage> = transact(store, |tx| tx.query(&sql, &params))?
        .into_iter()
        .map(message)
        .collect();
    // RETURNING gives no order; the dispatcher delivers oldest first.
    claimed.sort_by_key(|m| m.id);
    Ok(claimed)
}

/// Ends a message (`set`: its status, and `last_error = $4` when `error` is given) if
/// `lease` still holds it, and scrubs the secrets from its payload in the same
/// transaction (a cancel link is of no use to anyone once sent).
fn finish(
    store: &dyn SqlStore,
    id: i64,
    lease: &str,
    set: &str,
    error: Option<&str>,
) -> Result<bool, StoreError> {
    let select = format!(
        "SELECT payload FROM outbox WHERE id = $1 AND status = 'delivering' AND lease_token = $2{}",
        store.dialect().row_lock(false)
    );
    let update = format!(
        "UPDATE outbox SET {set}, claimed_until_ms = NULL, lease_token = NULL, payload = COALESCE($3, payload)
         WHERE id = $1 AND status = 'delivering' AND lease_token = $2"
    );
    let (updated, scrubbed) = transact(store, |tx| {
        let rows = tx.query(&select, &[Val::int(id), Val::text(lease)])?;
        let Some(payload) = rows.first().and_then(|r| r.first()).and_then(Val::as_text) else {
            return Ok((0, false));
        };
        let scrubbed = scrubbed_payload(payload);
        let mut params = vec![Val::int(id), Val::text(lease), Val::Text(scrubbed.clone())];
        if let Some(error) = error {
            params.push(Val::text(error));
        }
        Ok((tx.execute(&update, &params)?, scrubbed.is_some()))
    })?;
    if scrubbed {
        store.scrubbed();
    }
    Ok(updated == 1)
}

pub fn delivered(store: &dyn SqlStore, id: i64, lease: &str) -> Result<bool, StoreError> {
    finish(
        store,
        id,
        lease,
        "status = 'delivered', last_error = NULL",
        None,
    )
}

/// A failed attempt: try again at `retry_at_ms`, or dead-letter it (`None`).
pub fn failed(
    store: &dyn SqlStore,
    id: i64,
    lease: &str,
    error: &str,
    retry_at_ms: Option<u64>,
) -> Result<bool, StoreError> {
    match retry_at_ms {
        Some(at) => Ok(transact(store, |tx| {
            tx.execute(
                "UPDATE outbox SET status = 'pending', claimed_until_ms = NULL, lease_token = NULL, last_error = $3, next_attempt_at_ms = $4
                 WHERE id = $1 AND status = 'delivering' AND lease_token = $2",
                &[Val::int(id), Val::text(lease), Val::text(error), Val::int(sql_time(at))],
            )
        })? == 1),
        None => finish(
            store,
            id,
            lease,
            "status = 'dead', last_error = $4",
            Some(error),
        ),
    }
}

pub fn backlog(store: &dyn SqlStore) -> Result<u64, StoreError> {
    super::portable::count(
        store,
        "SELECT COUNT(*) FROM outbox WHERE status IN ('pending', 'delivering')",
        &[],
    )
}
