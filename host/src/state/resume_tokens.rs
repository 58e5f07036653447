//! Resume tokens' records: a parked login kept server-side behind its token's id,
//! taken once, before it expires by the host's clock. Once for both backends.

use super::portable::{SqlStore, Val, transact};
use super::{ResumeRecord, StoreError, TakenResume, sql_time};

pub fn save(store: &dyn SqlStore, record: &ResumeRecord) -> Result<(), StoreError> {
    let text = serde_json::to_string(record).map_err(|e| StoreError::Backend(e.to_string()))?;
    transact(store, |tx| {
        tx.execute(
            "INSERT INTO resume_tokens (jti, transaction_id, record, expires_at_ms) VALUES ($1, $2, $3, $4)",
            &[
                Val::text(&record.jti),
                Val::text(&record.transaction_id),
                Val::text(text.clone()),
                Val::int(sql_time(record.expires_at_ms)),
            ],
        )
    })?;
    Ok(())
}

/// Marks the record used and returns it, atomically: a token works once. An expired
/// token is not spent (the host's clock decides, not the order of requests).
pub fn take(store: &dyn SqlStore, jti: &str, now_ms: u64) -> Result<TakenResume, StoreError> {
    let now = sql_time(now_ms);
    let (taken, used) = transact(store, |tx| {
        let taken = tx.query(
            "UPDATE resume_tokens SET used_at_ms = $2
             WHERE jti = $1 AND used_at_ms IS NULL AND expires_at_ms > $2 RETURNING record",
            &[Val::text(jti), Val::int(now)],
        )?;
        if let Some(text) = taken.into_iter().next().and_then(|r| r.into_iter().next()) {
            return Ok((text.into_text(), None));
        }
        // Not taken: say why.
        let row = tx.query(
            "SELECT used_at_ms FROM resume_tokens WHERE jti = $1",
            &[Val::text(jti)],
        )?;
        Ok((
            None,
            Some(
                row.first()
                    .map(|r| r.first().and_then(Val::as_int).is_some()),
            ),
        ))
    })?;
    Ok(match (taken, used) {
        (Some(text), _) => TakenResume::Taken(Box::new(
            serde_json::from_str(&text).map_err(|e| StoreError::Backend(e.to_string()))?,
        )),
        (None, Some(Some(true))) => TakenResume::AlreadyUsed,
        (None, Some(Some(false))) => TakenResume::Expired,
        (None, _) => TakenResume::Unknown,
    })
}
