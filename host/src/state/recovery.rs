//! Recovery state in the directory: saved recovery codes (keyed digests only), the
//! failure count that throttles them, recoveries under way (a waiting period or a
//! code, until a new factor is enrolled), session revocations, and the sightings
//! (keyed digests of device, network and country) a recovery's risk is judged by.
//!
//! Every change that must be told to the user is written with its notices (outbox
//! rows) and its audit entry in one transaction: nothing is recorded unannounced.

use serde::Serialize;
use subtle::ConstantTimeEq;

use super::StoreError;
use super::audit::{self, AuditEntry};
use super::portable::{SqlStore, SqlTx, Val, transact};
use crate::model::{RecoveryPath, RecoveryStage};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS recovery_codes (
    user_id TEXT NOT NULL,
    slot BIGINT NOT NULL,
    digest TEXT NOT NULL,
    issued_at_ms BIGINT NOT NULL,
    used_at_ms BIGINT,
    PRIMARY KEY (user_id, slot)
);
CREATE TABLE IF NOT EXISTS recovery_throttle (
    user_id TEXT PRIMARY KEY,
    failures BIGINT NOT NULL,
    last_failure_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS recoveries (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    path TEXT NOT NULL,
    status TEXT NOT NULL,
    requested_at_ms BIGINT NOT NULL,
    ready_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    reasons TEXT NOT NULL,
    cancel_digest TEXT NOT NULL,
    finished_at_ms BIGINT,
    outcome TEXT
);
CREATE INDEX IF NOT EXISTS recoveries_user ON recoveries(user_id);
CREATE UNIQUE INDEX IF NOT EXISTS recoveries_open ON recoveries(user_id)
    WHERE status IN ('waiting', 'enrolling');
CREATE TABLE IF NOT EXISTS session_revocations (
    user_id TEXT PRIMARY KEY,
    revoked_at_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS login_sightings (
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    digest TEXT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, kind, digest)
);
";

/// How saved codes are throttled (NIST SP 800-63B-4: at most 100 consecutive
/// failures, delays before that).
#[derive(Debug, Clone, Copy)]
pub struct Throttle {
    /// Failures after which the method is disabled until the user signs in.
    pub max_failures: i64,
    /// Failures allowed back to back before delays start.
    pub free_failures: i64,
    /// The longest delay between two attempts, ms.
    pub max_delay_ms: i64,
}

impl Default for Throttle {
    fn default() -> Self {
        Self {
            max_failures: 100,
            free_failures: 5,
            max_delay_ms: 3_600_000,
        }
    }
}

impl Throttle {
    /// When the next attempt may be made after `failures` consecutive failures, the
    /// last at `last_ms`: the delay doubles from one second.
    pub fn next_attempt_ms(&self, failures: i64, last_ms: i64) -> i64 {
        if failures < self.free_failures {
            return i64::MIN;
        }
        let exponent = (failures - self.free_failures).min(30) as u32;
        last_ms.saturating_add((1000i64 << exponent).min(self.max_delay_ms))
    }
}

/// What checking a recovery code did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeCheck {
    /// Right and unused: it is burnt now; `left` unused codes remain.
    Burnt { left: u32 },
    /// Wrong, burnt, regenerated away or none issued; the failure is counted.
    Wrong { failures: i64 },
    /// Too soon after the last failure: not checked, not counted.
    Throttled { retry_at_ms: i64 },
    /// Too many failures: disabled until the user signs in with their factor.
    Disabled,
}

/// A notice to deliver through the outbox, keyed `notify:<id>:<event>:<channel>:<email "primary" or factor id>`.
#[derive(Debug, Clone, Serialize)]
pub struct Notice {
    #[serde(skip)]
    pub key: String,
    pub user_id: String,
    /// `email` or `sms`.
    pub channel: String,
    /// The address for email; for SMS the factor id (the notifier sends through the
    /// factor's provider, and the phone never leaves the host in a notice).
    pub to: String,
    pub event: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_url: Option<String>,
    /// Support's single-use link to enrol a new factor (assisted recovery), sent to the
    /// channel the agents verified only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enrol_url: Option<String>,
    pub dispute: String,
}

pub fn enqueue(
    tx: &mut dyn SqlTx,
    notices: &[Notice],
    at_ms: u64,
    transaction: &str,
) -> Result<(), StoreError> {
    for notice in notices {
        let payload = serde_json::to_string(notice)
            .map_err(|e| StoreError::Backend(format!("notice: {e}")))?;
        tx.execute(
            "INSERT INTO outbox (topic, key, payload, transaction_id, created_at_ms, next_attempt_at_ms)
             VALUES ('notify', $1, $2, $3, $4, $4) ON CONFLICT (topic, key) DO NOTHING",
            &[
                Val::text(&notice.key),
                Val::text(payload),
                Val::text(transaction),
                Val::int(super::sql_time(at_ms)),
            ],
        )?;
    }
    Ok(())
}

/// Replaces every code of the user with these digests (the earlier ones stop
/// working), notifying and auditing in the same transaction. The failure count is
/// kept: issuing codes does not buy more guesses.
pub fn replace_codes(
    store: &dyn SqlStore,
    user_id: &str,
    digests: &[String],
    now_ms: u64,
    notices: &[Notice],
    entry: &AuditEntry,
) -> Result<(), StoreError> {
    transact(store, |tx| {
        tx.execute(
            "DELETE FROM recovery_codes WHERE user_id = $1",
            &[Val::text(user_id)],
        )?;
        for (slot, digest) in digests.iter().enumerate() {
            tx.execute(
                "INSERT INTO recovery_codes (user_id, slot, digest, issued_at_ms) VALUES ($1, $2, $3, $4)",
                &[
                    Val::text(user_id),
                    Val::int(slot as i64),
                    Val::text(digest),
                    Val::int(super::sql_time(now_ms)),
                ],
            )?;
        }
        enqueue(tx, notices, now_ms, &entry.subject)?;
        audit::append(store, tx, entry)?;
        Ok(())
    })
}

/// Unused codes left to the user.
pub fn codes_left(store: &dyn SqlStore, user_id: &str) -> Result<u32, StoreError> {
    transact(store, |tx| {
        let rows = tx.query(
            "SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at_ms IS NULL",
            &[Val::text(user_id)],
        )?;
        Ok(rows
            .first()
            .and_then(|r| r[0].as_int())
            .unwrap_or(0)
            .try_into()
            .unwrap_or(0))
    })
}

/// Checks a code's digest against every unused code of the user, in constant time
/// (all are compared, none stops early), and burns the one it matches. Throttled
/// as [`Throttle`] says; the count survives new codes and is reset by
/// [`reset_failures`].
pub fn check_code(
    store: &dyn SqlStore,
    user_id: &str,
    digest: &[u8],
    now_ms: u64,
    throttle: Throttle,
) -> Result<CodeCheck, StoreError> {
    let now = super::sql_time(now_ms);
    transact(store, |tx| {
        let (failures, last) = tx
            .query(
                "SELECT failures, last_failure_ms FROM recovery_throttle WHERE user_id = $1",
                &[Val::text(user_id)],
            )?
            .first()
            .map(|r| (r[0].as_int().unwrap_or(0), r[1].as_int().unwrap_or(0)))
            .unwrap_or((0, 0));
        if failures >= throttle.max_failures {
            return Ok(CodeCheck::Disabled);
        }
        let retry_at_ms = throttle.next_attempt_ms(failures, last);
        if now < retry_at_ms {
            return Ok(CodeCheck::Throttled { retry_at_ms });
        }
        let codes = tx.query(
            "SELECT slot, digest FROM recovery_codes WHERE user_id = $1 AND used_at_ms IS NULL",
            &[Val::text(user_id)],
        )?;
        let mut matched: Option<i64> = None;
        for row in &codes {
            let stored = hex::decode(row[1].as_text().unwrap_or_default()).unwrap_or_default();
            let equal: bool = stored.as_slice().ct_eq(digest).into();
            if equal {
                matched = row[0].as_int();
            }
        }
        if let Some(slot) = matched {
            let burnt = tx.execute(
                "UPDATE recovery_codes SET used_at_ms = $3 WHERE user_id = $1 AND slot = $2 AND used_at_ms IS NULL",
                &[Val::text(user_id), Val::int(slot), Val::int(now)],
            )?;
            if burnt == 1 {
                // The failures stay until the login completes (a successful login).
                return Ok(CodeCheck::Burnt {
                    left: codes.len().saturating_sub(1) as u32,
                });
            }
        }
        tx.execute(
            "INSERT INTO recovery_throttle (user_id, failures, last_failure_ms) VALUES ($1, 1, $2)
             ON CONFLICT (user_id) DO UPDATE SET failures = recovery_throttle.failures + 1,
                 last_failure_ms = excluded.last_failure_ms",
            &[Val::text(user_id), Val::int(now)],
        )?;
        Ok(CodeCheck::Wrong {
            failures: failures + 1,
        })
    })
}

/// A successful sign-in with the user's factor: guesses start again from zero.
pub fn reset_failures(store: &dyn SqlStore, user_id: &str) -> Result<(), StoreError> {
    transact(store, |tx| {
        tx.execute(
            "DELETE FROM recovery_throttle WHERE user_id = $1",
            &[Val::text(user_id)],
        )?;
        Ok(())
    })
}

/// A recovery as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recovery {
    pub id: String,
    pub user_id: String,
    pub path: RecoveryPath,
    pub status: RecoveryStage,
    pub requested_at_ms: u64,
    pub ready_at_ms: u64,
    pub expires_at_ms: u64,
    pub reasons: Vec<String>,
    pub finished_at_ms: Option<u64>,
    pub outcome: Option<String>,
    #[serde(skip)]
    pub cancel_digest: String,
}

const RECOVERY_COLUMNS: &str = "id, user_id, path, status, requested_at_ms, ready_at_ms, expires_at_ms, reasons, \
    finished_at_ms, outcome, cancel_digest";

fn recovery_row(row: Vec<Val>) -> Result<Recovery, StoreError> {
    let mut v = row.into_iter();
    let mut next = || v.next().unwrap_or(Val::Text(None));
    let text = |v: Val| v.into_text().unwrap_or_default();
    let time = |v: Val| super::stored_time(v.as_int().unwrap_or(0));
    let id = text(next());
    let user_id = text(next());
    let (path, status) = (text(next()), text(next()));
    // Only this module writes them: anything else is a store someone edited by hand,
    // and an unknown stage must not read as an open (or a closed) recovery.
    let unknown = |what: &str, value: &str| {
        StoreError::Backend(format!("recovery {id} has an unknown {what} {value:?}"))
    };
    Ok(Recovery {
        path: RecoveryPath::parse(&path).ok_or_else(|| unknown("path", &path))?,
        status: RecoveryStage::parse(&status).ok_or_else(|| unknown("status", &status))?,
        id,
        user_id,
        requested_at_ms: time(next()),
        ready_at_ms: time(next()),
        expires_at_ms: time(next()),
        reasons: serde_json::from_str(&text(next())).unwrap_or_default(),
        finished_at_ms: next().as_int().map(super::stored_time),
        outcome: next().into_text(),
        cancel_digest: text(next()),
    })
}

/// The user's recovery under way (waiting or enrolling), with a waiting one past
/// its enrolment window marked expired first.
pub fn open_recovery(
    store: &dyn SqlStore,
    user_id: &str,
    now_ms: u64,
) -> Result<Option<Recovery>, StoreError> {
    transact(store, |tx| open_in(tx, user_id, now_ms))
}

pub fn open_in(
    tx: &mut dyn SqlTx,
    user_id: &str,
    now_ms: u64,
) -> Result<Option<Recovery>, StoreError> {
    let expired = tx.query(
        "UPDATE recoveries SET status = 'expired', finished_at_ms = $2, outcome = 'enrolment window passed'
         WHERE user_id = $1 AND status IN ('waiting', 'enrolling') AND expires_at_ms < $2
         RETURNING id",
        &[Val::text(user_id), Val::int(super::sql_time(now_ms))],
    )?;
    // What an expired recovery's proof enrolled ends with it, as with a cancelled one.
    for id in expired
        .iter()
        .filter_map(|r| r.first().and_then(Val::as_text))
    {
        disable_enrolled_by(tx, id, now_ms)?;
    }
    tx.query(
        &format!(
            "SELECT {RECOVERY_COLUMNS} FROM recoveries WHERE user_id = $1 AND status IN ('waiting', 'enrolling')"
        ),
        &[Val::text(user_id)],
    )?
    .into_iter()
    .next()
    .map(recovery_row)
    .transpose()
}

/// Every recovery of the user, newest first (the support console's view).
pub fn recoveries_of(store: &dyn SqlStore, user_id: &str) -> Result<Vec<Recovery>, StoreError> {
    transact(store, |tx| {
        tx.query(
            &format!(
                "SELECT {RECOVERY_COLUMNS} FROM recoveries WHERE user_id = $1 ORDER BY requested_at_ms DESC, id"
            ),
            &[Val::text(user_id)],
        )?
        .into_iter()
        .map(recovery_row)
        .collect()
    })
}

pub fn recovery_by_id(store: &dyn SqlStore, id: &str) -> Result<Option<Recovery>, StoreError> {
    transact(store, |tx| {
        tx.query(
            &format!("SELECT {RECOVERY_COLUMNS} FROM recoveries WHERE id = $1"),
            &[Val::text(id)],
        )?
        .into_iter()
        .next()
        .map(recovery_row)
        .transpose()
    })
}

/// What starting a recovery did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// A new one, notified.
    New(Recovery),
    /// One was under way already: kept exactly as it was (a second request neither
    /// restarts nor shortens the wait), nothing sent again.
    Existing(Recovery),
}

/// Starts a recovery unless one is under way, with its notices and audit entry in
/// the same transaction.
pub fn start_recovery(
    store: &dyn SqlStore,
    recovery: &Recovery,
    now_ms: u64,
    notices: &[Notice],
    entry: &AuditEntry,
) -> Result<Started, StoreError> {
    transact(store, |tx| {
        if let Some(open) = open_in(tx, &recovery.user_id, now_ms)? {
            return Ok(Started::Existing(open));
        }
        insert(tx, recovery)?;
        enqueue(tx, notices, now_ms, &recovery.id)?;
        audit::append(store, tx, entry)?;
        Ok(Started::New(recovery.clone()))
    })
}

/// Stores a new recovery (the caller made sure none is open: the unique index
/// refuses a second).
pub fn insert(tx: &mut dyn SqlTx, recovery: &Recovery) -> Result<(), StoreError> {
    tx.execute(
            "INSERT INTO recoveries (id, user_id, path, status, requested_at_ms, ready_at_ms, expires_at_ms,
                                     reasons, cancel_digest)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                Val::text(&recovery.id),
                Val::text(&recovery.user_id),
                Val::text(recovery.path.name()),
                Val::text(recovery.status.name()),
                Val::int(super::sql_time(recovery.requested_at_ms)),
                Val::int(super::sql_time(recovery.ready_at_ms)),
                Val::int(super::sql_time(recovery.expires_at_ms)),
                Val::text(serde_json::to_string(&recovery.reasons).unwrap_or_else(|_| "[]".into())),
                Val::text(&recovery.cancel_digest),
            ],
        )?;
    Ok(())
}

/// Moves a recovery on within the caller's transaction; true when it was in `from`.
pub fn set_status(
    tx: &mut dyn SqlTx,
    id: &str,
    from: RecoveryStage,
    to: RecoveryStage,
    outcome: &str,
    now_ms: u64,
) -> Result<bool, StoreError> {
    Ok(tx.execute(
        "UPDATE recoveries SET status = $3, outcome = $4,
             finished_at_ms = CASE WHEN $3 IN ('cancelled', 'completed', 'expired') THEN CAST($5 AS BIGINT) ELSE NULL END
         WHERE id = $1 AND status = $2",
        &[
            Val::text(id),
            Val::text(from.name()),
            Val::text(to.name()),
            Val::text(outcome),
            Val::int(super::sql_time(now_ms)),
        ],
    )? == 1)
}

/// Disables every active factor of the user but `keep` (the one just enrolled):
/// the lost factor opens nothing any more.
/// The factor a recovery's login confirmed becomes active as the recovery completes.
pub fn activate_confirmed(
    tx: &mut dyn SqlTx,
    user_id: &str,
    factor_id: &str,
    now_ms: u64,
) -> Result<u64, StoreError> {
    tx.execute(
        "UPDATE factors SET status = 'active', updated_at_ms = $3
         WHERE user_id = $1 AND id = $2 AND status = 'confirmed'",
        &[
            Val::text(user_id),
            Val::text(factor_id),
            Val::int(super::sql_time(now_ms)),
        ],
    )
}

pub fn disable_other_factors(
    tx: &mut dyn SqlTx,
    user_id: &str,
    keep: &str,
    now_ms: u64,
) -> Result<u64, StoreError> {
    tx.execute(
        "UPDATE factors SET status = 'disabled', updated_at_ms = $3
         WHERE user_id = $1 AND id <> $2 AND status IN ('active', 'confirmed')",
        &[
            Val::text(user_id),
            Val::text(keep),
            Val::int(super::sql_time(now_ms)),
        ],
    )
}

/// Moves an open recovery from one status to another (`waiting` → `enrolling`, or
/// to `cancelled` / `completed`), with notices and an audit entry; false when it was
/// no longer in `from` (someone else moved it first).
#[allow(clippy::too_many_arguments)]
pub fn finish_recovery(
    store: &dyn SqlStore,
    id: &str,
    from: &[RecoveryStage],
    to: RecoveryStage,
    outcome: &str,
    now_ms: u64,
    notices: &[Notice],
    entry: &AuditEntry,
) -> Result<bool, StoreError> {
    transact(store, |tx| {
        let mut moved = false;
        for &status in from {
            moved |= set_status(tx, id, status, to, outcome, now_ms)?;
        }
        if !moved {
            return Ok(false);
        }
        if to != RecoveryStage::Enrolling {
            disable_enrolled_by(tx, id, now_ms)?;
        }
        enqueue(tx, notices, now_ms, id)?;
        audit::append(store, tx, entry)?;
        Ok(true)
    })
}

/// A recovery that ends without completing (cancelled, expired) takes with it every
/// factor its own proofs enrolled: a factor confirmed but not yet continued with must
/// not outlive the recovery that let it in.
pub fn disable_enrolled_by(
    tx: &mut dyn SqlTx,
    recovery_id: &str,
    now_ms: u64,
) -> Result<u64, StoreError> {
    tx.execute(
        "UPDATE factors SET status = 'disabled', updated_at_ms = $2
         WHERE status IN ('active', 'pending', 'confirmed') AND id IN (
             SELECT e.factor_id FROM enrolments e JOIN proofs p ON p.id = e.proof_id
             WHERE p.recovery_id = $1)",
        &[Val::text(recovery_id), Val::int(super::sql_time(now_ms))],
    )
}

/// Revokes every session of the user issued before now: the row the gateway's
/// session check reads, and a message to the gateway's session endpoint.
pub fn revoke_sessions(tx: &mut dyn SqlTx, user_id: &str, now_ms: u64) -> Result<(), StoreError> {
    // Every proof a sign-in or a recovery was given ends with the sessions.
    super::proofs::revoke_user(tx, user_id, now_ms)?;
    let at = super::sql_time(now_ms);
    tx.execute(
        "INSERT INTO session_revocations (user_id, revoked_at_ms) VALUES ($1, $2)
         ON CONFLICT (user_id) DO UPDATE SET revoked_at_ms = excluded.revoked_at_ms",
        &[Val::text(user_id), Val::int(at)],
    )?;
    tx.execute(
        "INSERT INTO outbox (topic, key, payload, transaction_id, created_at_ms, next_attempt_at_ms)
         VALUES ('session-revocation', $1, $2, $3, $4, $4) ON CONFLICT (topic, key) DO NOTHING",
        &[
            Val::text(format!("sessions:{user_id}:{at}")),
            Val::text(serde_json::json!({"user_id": user_id, "revoked_before_ms": at}).to_string()),
            Val::text(format!("revoke:{user_id}:{at}")),
            Val::int(at),
        ],
    )?;
    Ok(())
}

/// When the user's sessions were last revoked.
pub fn sessions_revoked_at(store: &dyn SqlStore, user_id: &str) -> Result<Option<u64>, StoreError> {
    transact(store, |tx| {
        Ok(tx
            .query(
                "SELECT revoked_at_ms FROM session_revocations WHERE user_id = $1",
                &[Val::text(user_id)],
            )?
            .first()
            .and_then(|r| r[0].as_int())
            .map(super::stored_time))
    })
}

/// Keyed digests of where a login came from (`device`, `network`, `country`).
pub type Sighting = (&'static str, String);

/// Remembers where a user signed in from (an allowed login).
pub fn record_sightings(
    store: &dyn SqlStore,
    user_id: &str,
    sightings: &[Sighting],
    now_ms: u64,
) -> Result<(), StoreError> {
    record_sightings_batch(store, &[(user_id, sightings, now_ms)])
}

/// [`record_sightings`] for many logins in one transaction (written behind).
pub fn record_sightings_batch(
    store: &dyn SqlStore,
    logins: &[(&str, &[Sighting], u64)],
) -> Result<(), StoreError> {
    if logins.is_empty() {
        return Ok(());
    }
    transact(store, |tx| {
        for (user_id, sightings, now_ms) in logins {
            for (kind, digest) in *sightings {
                tx.execute(
                "INSERT INTO login_sightings (user_id, kind, digest, last_seen_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (user_id, kind, digest) DO UPDATE SET last_seen_ms = excluded.last_seen_ms",
                &[
                    Val::text(*user_id),
                    Val::text(*kind),
                    Val::text(digest),
                    Val::int(super::sql_time(*now_ms)),
                ],
            )?;
            }
        }
        Ok(())
    })
}

/// Which of these sightings the user has not been seen with since `since_ms`.
pub fn unseen(
    store: &dyn SqlStore,
    user_id: &str,
    sightings: &[Sighting],
    since_ms: u64,
) -> Result<Vec<&'static str>, StoreError> {
    transact(store, |tx| {
        let mut new = Vec::new();
        for (kind, digest) in sightings {
            let seen = tx.query(
                "SELECT 1 FROM login_sightings WHERE user_id = $1 AND kind = $2 AND digest = $3 AND last_seen_ms >= $4",
                &[
                    Val::text(user_id),
                    Val::text(*kind),
                    Val::text(digest),
                    Val::int(super::sql_time(since_ms)),
                ],
            )?;
            if seen.is_empty() {
                new.push(*kind);
            }
        }
        Ok(new)
    })
}

/// The `recovery` capability's answer from the directory's own tables.
pub fn facts(
    store: &dyn SqlStore,
    user_id: &str,
    ask: &crate::model::RecoveryAsk,
) -> Result<crate::model::RecoveryFacts, StoreError> {
    use crate::model::{RecoveryFacts, RecoveryStatus};
    let has_factors = transact(store, |tx| {
        Ok(!tx
            .query(
                "SELECT 1 FROM factors WHERE user_id = $1 AND status = 'active' LIMIT 1",
                &[Val::text(user_id)],
            )?
            .is_empty())
    })?;
    let open = open_recovery(store, user_id, ask.now_ms)?;
    // A code's recovery waiting for its enrolment belongs to the login that showed the
    // code: another login (with the password only) sees a recovery it cannot use.
    let status = match &open {
        None => RecoveryStatus::None,
        Some(r) if r.status == RecoveryStage::Waiting && ask.now_ms < r.ready_at_ms => {
            RecoveryStatus::Waiting
        }
        Some(r) if r.path == RecoveryPath::Code => RecoveryStatus::Waiting,
        Some(_) => RecoveryStatus::Ready,
    };
    let new = unseen(store, user_id, &ask.sightings, ask.known_since_ms)?;
    Ok(RecoveryFacts {
        has_code: ask.has_code,
        has_factors,
        status,
        wait_ends_ms: open.map(|r| r.ready_at_ms),
        new_device: new.contains(&"device"),
        new_network: new.contains(&"network"),
        new_country: new.contains(&"country"),
    })
}
