//! The outbox in the directory: messages written in the transaction that decided
//! them, claimed by dispatchers under a lease (two never hold one message at once),
//! delivered or retried or dead-lettered, fenced by that lease; secret links are
//! scrubbed from a payload once it is delivered or dead (see `scrubbed_payload`).
//! Once for both backends, over portable SQL.

use super::portable::{Row, SqlStore, Val, transact};
use serde::{Deserialize, Serialize};

use super::{SqlBacked, StoreError, new_lease_token, scrubbed_payload, sql_time};

const COLUMNS: &str = "id, topic, key, payload, status, attempts, transaction_id, lease_token";

fn message(row: Row) -> OutboxMessage {
    let text = |i: usize| row.get(i).and_then(Val::as_text).map(str::to_owned);
    let int = |i: usize| row.get(i).and_then(Val::as_int).unwrap_or(0);
    OutboxMessage {
        id: int(0),
        topic: text(1).unwrap_or_default(),
        key: text(2).unwrap_or_default(),
        payload: text(3).unwrap_or_default(),
        // Only this module writes it; an unknown name reads as dead (never retried).
        status: text(4)
            .and_then(|s| OutboxStatus::parse(&s))
            .unwrap_or(OutboxStatus::Dead),
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

/// Which dead letters [`requeue`] puts back: all of them, or those with these ids
/// and/or this topic.
#[derive(Debug, Clone, Default)]
pub struct RequeueFilter {
    pub ids: Vec<i64>,
    pub topic: Option<String>,
}

/// A dead letter put back to pending, as it was when it died.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Requeued {
    pub id: i64,
    pub topic: String,
    pub key: String,
    /// The attempts it had used (it starts again from none).
    pub attempts: u32,
    pub last_error: Option<String>,
    /// Secret links removed from it when it died (`cancel_url`, `enrol_url`): it
    /// goes again without them, since only their digests are kept at rest.
    pub links_removed: Vec<String>,
}

/// What [`requeue`] did, and what in the filter matched nothing (then it puts
/// nothing back).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RequeueReport {
    pub requeued: Vec<Requeued>,
    /// Ids asked for that name no message.
    pub unknown_ids: Vec<i64>,
    /// Ids asked for whose message is not dead-lettered, with its status.
    pub not_dead: std::collections::BTreeMap<i64, OutboxStatus>,
    /// Whether any message (of any status) has the topic asked for.
    pub topic_known: bool,
    /// Dead letters left after this (those the filter did not take).
    pub still_dead: u64,
}

/// Puts dead letters back to pending, due at `now_ms`, with their attempts starting
/// over; the last error stays until the next attempt replaces it. An id that names no
/// message, or a topic no message has, puts nothing back. In one transaction, so what
/// is reported is what was put back. (Secret links scrubbed when a message
/// died are not restored: it goes out without them.)
pub fn requeue(
    store: &dyn SqlStore,
    filter: &RequeueFilter,
    now_ms: u64,
) -> Result<RequeueReport, StoreError> {
    let mut condition = String::new();
    let mut params = Vec::new();
    if !filter.ids.is_empty() {
        let placeholders: Vec<String> = (1..=filter.ids.len()).map(|n| format!("${n}")).collect();
        condition.push_str(&format!(" AND id IN ({})", placeholders.join(", ")));
        params.extend(filter.ids.iter().map(|id| Val::int(*id)));
    }
    if let Some(topic) = &filter.topic {
        condition.push_str(&format!(" AND topic = ${}", params.len() + 1));
        params.push(Val::text(topic.clone()));
    }
    let select = format!(
        "SELECT id, topic, key, attempts, last_error, payload FROM outbox WHERE status = 'dead'{condition} ORDER BY id{}",
        store.dialect().row_lock(false)
    );
    let update = format!(
        "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at_ms = ${}, claimed_until_ms = NULL, lease_token = NULL
         WHERE status = 'dead'{condition}",
        params.len() + 1
    );
    let mut update_params = params.clone();
    update_params.push(Val::int(sql_time(now_ms)));
    transact(store, |tx| {
        let mut report = RequeueReport::default();
        for id in &filter.ids {
            let rows = tx.query("SELECT status FROM outbox WHERE id = $1", &[Val::int(*id)])?;
            match rows.first().and_then(|r| r.first()).and_then(Val::as_text) {
                Some(name) => match OutboxStatus::parse(name) {
                    Some(OutboxStatus::Dead) => {}
                    Some(status) => {
                        report.not_dead.insert(*id, status);
                    }
                    None => {
                        return Err(StoreError::Backend(format!(
                            "outbox message {id} has an unknown status {name:?}"
                        )));
                    }
                },
                None => report.unknown_ids.push(*id),
            }
        }
        report.topic_known = match &filter.topic {
            None => true,
            Some(topic) => !tx
                .query(
                    "SELECT id FROM outbox WHERE topic = $1 LIMIT 1",
                    &[Val::text(topic.clone())],
                )?
                .is_empty(),
        };
        // A filter naming what is not there is a mistake: nothing is put back.
        if report.unknown_ids.is_empty() && report.topic_known {
            report.requeued = tx
                .query(&select, &params)?
                .into_iter()
                .map(|row| {
                    let text = |i: usize| row.get(i).and_then(Val::as_text).map(str::to_owned);
                    let int = |i: usize| row.get(i).and_then(Val::as_int).unwrap_or(0);
                    Requeued {
                        id: int(0),
                        topic: text(1).unwrap_or_default(),
                        key: text(2).unwrap_or_default(),
                        attempts: u32::try_from(int(3)).unwrap_or(0),
                        last_error: text(4),
                        links_removed: links_removed(&text(5).unwrap_or_default()),
                    }
                })
                .collect();
            tx.execute(&update, &update_params)?;
        }
        let dead = tx.query("SELECT COUNT(*) FROM outbox WHERE status = 'dead'", &[])?;
        report.still_dead = dead
            .first()
            .and_then(|r| r.first())
            .and_then(Val::as_int)
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0);
        Ok(report)
    })
}

pub fn backlog(store: &dyn SqlStore) -> Result<u64, StoreError> {
    super::portable::count(
        store,
        "SELECT COUNT(*) FROM outbox WHERE status IN ('pending', 'delivering')",
        &[],
    )
}

/// The secret links [`scrubbed_payload`] removed from a payload, as it marked them.
fn links_removed(payload: &str) -> Vec<String> {
    serde_json::from_str::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| {
            v.get(super::LINKS_REMOVED).and_then(|l| {
                l.as_array().map(|names| {
                    names
                        .iter()
                        .filter_map(|n| n.as_str().map(str::to_owned))
                        .collect()
                })
            })
        })
        .unwrap_or_default()
}

/// Where an outbox message stands: waiting for its next attempt, claimed by a
/// dispatcher, delivered, or dead-lettered after its last attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutboxStatus {
    Pending,
    Delivering,
    Delivered,
    Dead,
}

crate::model::names!(OutboxStatus {
    Pending = "pending",
    Delivering = "delivering",
    Delivered = "delivered",
    Dead = "dead",
});

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxMessage {
    pub id: i64,
    pub topic: String,
    pub key: String,
    pub payload: String,
    pub status: OutboxStatus,
    pub attempts: u32,
    pub transaction_id: String,
    /// The claim this message is held under (`None` unless it is being delivered):
    /// only the dispatcher holding it may record the delivery's result.
    #[serde(default)]
    pub lease: Option<String>,
}

/// The outbox (`outbox`): one implementation for both backends.
pub trait OutboxStore: SqlBacked {
    fn outbox_messages(&self) -> Result<Vec<OutboxMessage>, StoreError> {
        messages(self.sql())
    }
    /// Reserves up to `limit` due messages for `lease_ms` (pending ones whose time has
    /// come, and claimed ones whose lease ran out) and counts the attempt. Two
    /// dispatchers never hold the same message at once.
    fn claim_outbox(
        &self,
        now_ms: u64,
        lease_ms: u64,
        limit: usize,
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        claim(self.sql(), now_ms, lease_ms, limit)
    }
    /// Records a delivery, if `lease` still holds the message; false when the lease
    /// ran out and another dispatcher claimed it since (that one records the result).
    fn outbox_delivered(&self, id: i64, lease: &str) -> Result<bool, StoreError> {
        delivered(self.sql(), id, lease)
    }
    /// A failed attempt: try again at `retry_at_ms`, or dead-letter it (`None`).
    /// Fenced by the lease as `outbox_delivered` is.
    fn outbox_failed(
        &self,
        id: i64,
        lease: &str,
        error: &str,
        retry_at_ms: Option<u64>,
    ) -> Result<bool, StoreError> {
        failed(self.sql(), id, lease, error, retry_at_ms)
    }
    /// Puts dead letters back to pending (all, or those the filter names), their
    /// attempts starting over (`portcullis outbox requeue`).
    fn outbox_requeue(
        &self,
        filter: &RequeueFilter,
        now_ms: u64,
    ) -> Result<RequeueReport, StoreError> {
        requeue(self.sql(), filter, now_ms)
    }
    /// Messages not yet delivered or dead-lettered.
    fn outbox_backlog(&self) -> Result<u64, StoreError> {
        backlog(self.sql())
    }
    /// Lets the storage forget the payloads scrubbed since the last call (SQLite:
    /// the WAL still holds the versions before the scrub). The dispatcher calls it
    /// after each round that ended messages.
    fn forget_scrubbed(&self) -> Result<(), StoreError> {
        self.sql().forget_scrubbed()
    }
}
