//! The append-only audit log of every support agent's action and every recovery
//! step: who, what, when, why, and how it ended. Each row carries the SHA-256 of the
//! row before it and its own, over its contents, so an edited or deleted row breaks
//! the chain and `portcullis audit verify` names the first row that does not hold.
//! (Cutting rows off the end leaves a valid, shorter chain: compare the head the
//! verifier prints with one kept elsewhere, `--expect-head`.)

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::StoreError;
use super::portable::{SqlStore, SqlTx, Val, transact};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit_log (
    seq BIGINT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    reason TEXT NOT NULL,
    outcome TEXT NOT NULL,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
";

/// The hash before the first row.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One thing that happened. `actor` is `agent:<name>`, `user:<id>` or `host`;
/// `subject` the user (or request) it concerns. Never a secret: codes, phones and
/// passwords are not audit material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub at_ms: u64,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub reason: String,
    pub outcome: String,
    /// JSON object.
    pub details: String,
}

impl AuditEntry {
    pub fn new(at_ms: u64, actor: impl Into<String>, action: &str, subject: &str) -> Self {
        Self {
            at_ms,
            actor: actor.into(),
            action: action.into(),
            subject: subject.into(),
            reason: String::new(),
            outcome: "ok".into(),
            details: "{}".into(),
        }
    }

    pub fn reason(mut self, reason: &str) -> Self {
        self.reason = reason.into();
        self
    }

    pub fn outcome(mut self, outcome: &str) -> Self {
        self.outcome = outcome.into();
        self
    }

    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details.to_string();
        self
    }
}

/// A row as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRow {
    pub seq: i64,
    #[serde(flatten)]
    pub entry: AuditEntry,
    pub prev_hash: String,
    pub hash: String,
}

fn row_hash(seq: i64, entry: &AuditEntry, prev_hash: &str) -> String {
    // Length-prefixed fields: no two different rows hash the same text.
    let mut hasher = Sha256::new();
    for field in [
        prev_hash,
        &seq.to_string(),
        &entry.at_ms.to_string(),
        &entry.actor,
        &entry.action,
        &entry.subject,
        &entry.reason,
        &entry.outcome,
        &entry.details,
    ] {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// Appends within the caller's transaction, so an action and its entry land
/// together. Writers are serialized on the table, so the chain never forks.
pub fn append(
    store: &dyn SqlStore,
    tx: &mut dyn SqlTx,
    entry: &AuditEntry,
) -> Result<i64, StoreError> {
    store.lock_table(tx, "audit_log")?;
    let last = tx.query(
        "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
        &[],
    )?;
    let (seq, prev) = match last.first() {
        Some(row) => (
            row[0].as_int().unwrap_or(0) + 1,
            row[1].as_text().unwrap_or(GENESIS).to_owned(),
        ),
        None => (1, GENESIS.to_owned()),
    };
    let hash = row_hash(seq, entry, &prev);
    tx.execute(
        "INSERT INTO audit_log (seq, at_ms, actor, action, subject, reason, outcome, details, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            Val::int(seq),
            Val::int(super::sql_time(entry.at_ms)),
            Val::text(&entry.actor),
            Val::text(&entry.action),
            Val::text(&entry.subject),
            Val::text(&entry.reason),
            Val::text(&entry.outcome),
            Val::text(&entry.details),
            Val::text(prev),
            Val::text(hash),
        ],
    )?;
    Ok(seq)
}

/// Appends an entry on its own.
pub fn record(store: &dyn SqlStore, entry: &AuditEntry) -> Result<i64, StoreError> {
    transact(store, |tx| append(store, tx, entry))
}

const COLUMNS: &str =
    "seq, at_ms, actor, action, subject, reason, outcome, details, prev_hash, hash";

fn audit_row(row: Vec<Val>) -> AuditRow {
    let mut v = row.into_iter();
    let mut next = || v.next().unwrap_or(Val::Text(None));
    let seq = next().as_int().unwrap_or(0);
    let at_ms = super::stored_time(next().as_int().unwrap_or(0));
    let mut text = || next().into_text().unwrap_or_default();
    AuditRow {
        seq,
        entry: AuditEntry {
            at_ms,
            actor: text(),
            action: text(),
            subject: text(),
            reason: text(),
            outcome: text(),
            details: text(),
        },
        prev_hash: text(),
        hash: text(),
    }
}

/// Rows about one subject (a user or a request), oldest first.
pub fn rows_about(store: &dyn SqlStore, subject: &str) -> Result<Vec<AuditRow>, StoreError> {
    transact(store, |tx| {
        Ok(tx
            .query(
                &format!("SELECT {COLUMNS} FROM audit_log WHERE subject = $1 ORDER BY seq"),
                &[Val::text(subject)],
            )?
            .into_iter()
            .map(audit_row)
            .collect())
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub rows: u64,
    /// The last row's hash: keep it elsewhere to detect rows cut off the end.
    pub head: String,
    pub ok: bool,
    /// The first row that does not hold, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bad_seq: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Walks the whole chain a page at a time.
pub fn verify(store: &dyn SqlStore) -> Result<VerifyReport, StoreError> {
    let mut report = VerifyReport {
        rows: 0,
        head: GENESIS.to_owned(),
        ok: true,
        first_bad_seq: None,
        problem: None,
    };
    let mut expected_seq = 1i64;
    loop {
        let page = transact(store, |tx| {
            Ok(tx
                .query(
                    &format!(
                        "SELECT {COLUMNS} FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT 1000"
                    ),
                    &[Val::int(expected_seq)],
                )?
                .into_iter()
                .map(audit_row)
                .collect::<Vec<_>>())
        })?;
        if page.is_empty() {
            // A row below the first one read (seq 0, negative) is out of the chain too.
            let stray = transact(store, |tx| {
                Ok(tx
                    .query("SELECT MIN(seq) FROM audit_log", &[])?
                    .first()
                    .and_then(|r| r[0].as_int()))
            })?;
            if let Some(min) = stray.filter(|m| *m < 1) {
                report.ok = false;
                report.first_bad_seq = Some(min);
                report.problem = Some("a row outside the chain's numbering".into());
            }
            return Ok(report);
        }
        for row in page {
            let problem = if row.seq != expected_seq {
                Some(format!("row {expected_seq} is missing"))
            } else if row.prev_hash != report.head {
                Some("its link to the row before does not match".to_owned())
            } else if row_hash(row.seq, &row.entry, &row.prev_hash) != row.hash {
                Some("its contents do not match its hash (edited)".to_owned())
            } else {
                None
            };
            if let Some(problem) = problem {
                report.ok = false;
                report.first_bad_seq = Some(expected_seq.min(row.seq));
                report.problem = Some(problem);
                return Ok(report);
            }
            report.rows += 1;
            report.head = row.hash;
            expected_seq += 1;
        }
    }
}
