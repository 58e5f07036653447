//! The append-only audit log of every support agent's action and every recovery
//! step: who, what, when, why, and how it ended.
//!
//! Each row carries the MAC of the row before it and its own: HMAC-SHA256 under a key
//! kept outside the database (`[audit]`), over its contents, its position and the id
//! of the key (stored beside the MAC, so keys can rotate). Someone with a copy of the
//! database but not the key cannot recompute the chain after editing a row. Rows an
//! older version wrote carry a plain SHA-256 and no key id; they still verify, but
//! only before the first keyed row: an unkeyed row after a keyed one is refused
//! (no downgrade), when written and when verified.
//!
//! A chain that was cut short, or rewritten whole, is still a chain. Checkpoints
//! (`seq:hash`) published out of the database tell: every `checkpoint_every` rows
//! (and at the first keyed row) an outbox message `audit-checkpoint`, which the
//! dispatcher appends to `[audit] checkpoint_file` and posts to the `audit` endpoint;
//! and `audit verify --checkpoint`. `verify` checks that each checkpoint, and an
//! anchor given with `--expect-head`, is still in the chain at its position.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::StoreError;
use super::portable::{SqlStore, SqlTx, Val, transact};

type HmacSha256 = hmac::Hmac<Sha256>;

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
    hash TEXT NOT NULL,
    key_id TEXT
);
";

/// Databases an older version created have no `key_id` column.
pub const UPGRADE_POSTGRES: &str = "ALTER TABLE audit_log ADD COLUMN IF NOT EXISTS key_id TEXT;";

pub(super) fn upgrade_sqlite(conn: &rusqlite::Connection) -> Result<(), StoreError> {
    let has_key_id: bool = conn.query_row(
        "SELECT COUNT(*) FROM pragma_table_info('audit_log') WHERE name = 'key_id'",
        [],
        |row| row.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if !has_key_id {
        conn.execute_batch("ALTER TABLE audit_log ADD COLUMN key_id TEXT")?;
    }
    Ok(())
}

/// The hash before the first row.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The outbox topic of published checkpoints.
pub const CHECKPOINT_TOPIC: &str = "audit-checkpoint";

const MIN_KEY_LEN: usize = 32;
const MAX_KEY_ID_LEN: usize = 64;

/// The keys of the chain's MACs: the first signs new rows, every one verifies.
pub struct ChainKeys {
    current: String,
    keys: HashMap<String, Zeroizing<Vec<u8>>>,
    /// Publish a checkpoint every this many rows (`None`: nowhere to publish).
    checkpoint_every: Option<u64>,
}

impl fmt::Debug for ChainKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<&String> = self.keys.keys().collect();
        ids.sort();
        write!(
            f,
            "ChainKeys {{ current: {:?}, key_ids: {ids:?} }}",
            self.current
        )
    }
}

/// Why a keyed row does not verify.
enum MacProblem {
    UnknownKey,
    Mismatch,
}

impl ChainKeys {
    /// `ID:SECRET,ID:SECRET,…` (commas or line breaks between keys): key ids of
    /// letters, digits, `.`, `_`, `-`, secrets of 32+ characters. The first signs.
    pub fn parse(spec: &str, checkpoint_every: Option<u64>) -> Result<Self, String> {
        let mut current = None;
        let mut keys = HashMap::new();
        for entry in spec
            .split([',', '\n'])
            .map(str::trim)
            .filter(|e| !e.is_empty() && !e.starts_with('#'))
        {
            let (id, secret) = entry
                .split_once(':')
                .ok_or("[audit]: each key is ID:SECRET")?;
            if id.is_empty()
                || id.len() > MAX_KEY_ID_LEN
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return Err(format!(
                    "[audit]: a key id is 1 to {MAX_KEY_ID_LEN} letters, digits, '.', '_' or '-'"
                ));
            }
            if secret.len() < MIN_KEY_LEN {
                return Err(format!(
                    "[audit]: key {id:?} must hold at least {MIN_KEY_LEN} characters"
                ));
            }
            if keys
                .insert(id.to_owned(), Zeroizing::new(secret.as_bytes().to_vec()))
                .is_some()
            {
                return Err(format!("[audit]: key id {id:?} appears twice"));
            }
            current.get_or_insert_with(|| id.to_owned());
        }
        Ok(Self {
            current: current.ok_or("[audit]: no key given")?,
            keys,
            checkpoint_every: checkpoint_every.filter(|n| *n > 0),
        })
    }

    pub fn current_key_id(&self) -> &str {
        &self.current
    }

    fn mac(&self, key_id: &str, seq: i64, entry: &AuditEntry, prev: &str) -> Option<HmacSha256> {
        let key = self.keys.get(key_id)?;
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).ok()?;
        // The key id is under the MAC too: a row cannot claim another key's MAC.
        for field in ["portcullis-audit-v2", key_id] {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field.as_bytes());
        }
        for_each_field(seq, entry, prev, |bytes| mac.update(bytes));
        Some(mac)
    }

    fn sign(&self, seq: i64, entry: &AuditEntry, prev: &str) -> String {
        self.mac(&self.current, seq, entry, prev)
            .map(|mac| hex::encode(mac.finalize().into_bytes()))
            .unwrap_or_default()
    }

    /// Compares in constant time.
    fn check(&self, row: &AuditRow, key_id: &str) -> Result<(), MacProblem> {
        let mac = self
            .mac(key_id, row.seq, &row.entry, &row.prev_hash)
            .ok_or(MacProblem::UnknownKey)?;
        let stored = hex::decode(&row.hash).map_err(|_| MacProblem::Mismatch)?;
        mac.verify_slice(&stored).map_err(|_| MacProblem::Mismatch)
    }
}

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
    /// HMAC-SHA256 under `key_id`; a plain SHA-256 in rows an older version wrote.
    pub hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

/// Length-prefixed fields: no two different rows give the same text.
fn for_each_field(seq: i64, entry: &AuditEntry, prev_hash: &str, mut feed: impl FnMut(&[u8])) {
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
        feed(&(field.len() as u64).to_be_bytes());
        feed(field.as_bytes());
    }
}

/// The unkeyed hash of rows an older version wrote.
fn row_hash(seq: i64, entry: &AuditEntry, prev_hash: &str) -> String {
    let mut hasher = Sha256::new();
    for_each_field(seq, entry, prev_hash, |bytes| hasher.update(bytes));
    hex::encode(hasher.finalize())
}

/// Appends within the caller's transaction, so an action and its entry land
/// together. Writers are serialized on the table, so the chain never forks. Signed
/// with the store's `[audit]` key; a store without one refuses to append after a
/// keyed row (the row would break the chain). A checkpoint is queued in the same
/// transaction at the first keyed row and every `checkpoint_every` rows.
pub fn append(
    store: &dyn SqlStore,
    tx: &mut dyn SqlTx,
    entry: &AuditEntry,
) -> Result<i64, StoreError> {
    store.lock_table(tx, "audit_log")?;
    let last = tx.query(
        "SELECT seq, hash, key_id FROM audit_log ORDER BY seq DESC LIMIT 1",
        &[],
    )?;
    let (seq, prev, prev_keyed) = match last.first() {
        Some(row) => (
            row[0].as_int().unwrap_or(0) + 1,
            row[1].as_text().unwrap_or(GENESIS).to_owned(),
            row[2].as_text().is_some(),
        ),
        None => (1, GENESIS.to_owned(), false),
    };
    let keys = store.audit_keys();
    let (hash, key_id) = match keys {
        Some(keys) => (
            keys.sign(seq, entry, &prev),
            Some(keys.current_key_id().to_owned()),
        ),
        None if prev_keyed => {
            return Err(StoreError::Backend(
                "the audit log is keyed and this host has no [audit] key: refusing to append an unkeyed row".into(),
            ));
        }
        None => (row_hash(seq, entry, &prev), None),
    };
    tx.execute(
        "INSERT INTO audit_log (seq, at_ms, actor, action, subject, reason, outcome, details, prev_hash, hash, key_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
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
            Val::text(&hash),
            Val::Text(key_id),
        ],
    )?;
    if let Some(every) = keys.and_then(|k| k.checkpoint_every)
        && (!prev_keyed || (seq as u64).is_multiple_of(every))
    {
        queue_checkpoint(tx, &Checkpoint { seq, hash }, entry.at_ms)?;
    }
    Ok(seq)
}

/// Appends an entry on its own.
pub fn record(store: &dyn SqlStore, entry: &AuditEntry) -> Result<i64, StoreError> {
    transact(store, |tx| append(store, tx, entry))
}

/// A row's position and MAC, as published out of the database: a line of the
/// checkpoint file, an `audit-checkpoint` message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: i64,
    pub hash: String,
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

impl Checkpoint {
    /// `SEQ:HASH` (as `verify` prints its head).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (seq, hash) = text
            .trim()
            .split_once(':')
            .ok_or_else(|| "an anchor is SEQ:HASH, as `audit verify` prints its head".to_owned())?;
        let seq = seq
            .parse()
            .map_err(|_| format!("an anchor's position is a number, not {seq:?}"))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("an anchor's hash is 64 hex digits".into());
        }
        Ok(Self {
            seq,
            hash: hash.to_ascii_lowercase(),
        })
    }
}

/// Queues a checkpoint for the dispatcher (file and `audit` endpoint), within `tx`.
pub fn queue_checkpoint(
    tx: &mut dyn SqlTx,
    checkpoint: &Checkpoint,
    at_ms: u64,
) -> Result<(), StoreError> {
    let payload = serde_json::to_string(checkpoint)
        .map_err(|e| StoreError::Backend(format!("checkpoint: {e}")))?;
    let key = format!("audit:{}", checkpoint.seq);
    tx.execute(
        "INSERT INTO outbox (topic, key, payload, transaction_id, created_at_ms, next_attempt_at_ms)
         VALUES ($1, $2, $3, $2, $4, $4) ON CONFLICT (topic, key) DO NOTHING",
        &[
            Val::text(CHECKPOINT_TOPIC),
            Val::text(key),
            Val::text(payload),
            Val::int(super::sql_time(at_ms)),
        ],
    )?;
    Ok(())
}

/// Appends a checkpoint to the file (one JSON line), synced before it returns.
pub fn write_checkpoint(path: &Path, checkpoint: &Checkpoint) -> std::io::Result<()> {
    use std::io::Write;
    let mut line = serde_json::to_string(checkpoint).map_err(std::io::Error::other)?;
    line.push('\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(line.as_bytes())?;
    file.sync_data()
}

/// Every checkpoint in the file (none when it does not exist yet). A line that is
/// not a checkpoint is an error: the file is not to be trusted then.
pub fn read_checkpoints(path: &Path) -> Result<Vec<Checkpoint>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {}", path.display(), e.kind())),
    };
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map_err(|_| format!("{} line {}: not a checkpoint", path.display(), i + 1))
        })
        .collect()
}

const COLUMNS: &str =
    "seq, at_ms, actor, action, subject, reason, outcome, details, prev_hash, hash, key_id";

fn audit_row(row: Vec<Val>) -> AuditRow {
    let mut v = row.into_iter();
    let mut next = || v.next().unwrap_or(Val::Text(None));
    let seq = next().as_int().unwrap_or(0);
    let at_ms = super::stored_time(next().as_int().unwrap_or(0));
    let mut text = || next().into_text();
    let mut text_or_empty = || text().unwrap_or_default();
    AuditRow {
        seq,
        entry: AuditEntry {
            at_ms,
            actor: text_or_empty(),
            action: text_or_empty(),
            subject: text_or_empty(),
            reason: text_or_empty(),
            outcome: text_or_empty(),
            details: text_or_empty(),
        },
        prev_hash: text_or_empty(),
        hash: text_or_empty(),
        key_id: text(),
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

/// A point the chain must still pass through: a checkpoint, or `--expect-head`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub checkpoint: Checkpoint,
    /// Where it came from, for the report (`--expect-head`, the file's name).
    pub from: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub rows: u64,
    /// `SEQ:HASH` of the last row: keep it elsewhere and pass it to `--expect-head`
    /// later; it stays valid while the log only grows.
    pub head: String,
    pub ok: bool,
    /// The first row signed with a key; rows before it were written unkeyed (by an
    /// older version).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keyed_from: Option<i64>,
    /// Checkpoints and anchors the chain was checked against.
    pub anchors: usize,
    /// The first row that does not hold, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bad_seq: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl VerifyReport {
    /// The last row's position and hash.
    pub fn head(&self) -> Checkpoint {
        Checkpoint::parse(&self.head).unwrap_or(Checkpoint {
            seq: 0,
            hash: GENESIS.into(),
        })
    }

    fn fail(&mut self, seq: i64, problem: String) {
        self.ok = false;
        self.first_bad_seq = Some(seq);
        self.problem = Some(problem);
    }
}

/// Walks the whole chain with the store's keys.
pub fn verify(store: &dyn SqlStore) -> Result<VerifyReport, StoreError> {
    verify_anchored(store, &[])
}

/// Walks the whole chain a page at a time with the store's keys, and checks that it
/// passes through every anchor.
pub fn verify_anchored(
    store: &dyn SqlStore,
    anchors: &[Anchor],
) -> Result<VerifyReport, StoreError> {
    let keys = store.audit_keys();
    let mut report = VerifyReport {
        rows: 0,
        head: format!("0:{GENESIS}"),
        ok: true,
        keyed_from: None,
        anchors: anchors.len(),
        first_bad_seq: None,
        problem: None,
    };
    let mut by_seq: HashMap<i64, Vec<&Anchor>> = HashMap::new();
    for anchor in anchors {
        by_seq
            .entry(anchor.checkpoint.seq)
            .or_default()
            .push(anchor);
    }
    let mut prev = GENESIS.to_owned();
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
            break;
        }
        for row in page {
            if let Some(problem) = row_problem(&row, expected_seq, &prev, keys, report.keyed_from) {
                report.fail(expected_seq.min(row.seq), problem);
                return Ok(report);
            }
            if let Some(anchor) = by_seq
                .get(&row.seq)
                .and_then(|a| a.iter().find(|a| a.checkpoint.hash != row.hash))
            {
                report.fail(
                    row.seq,
                    format!(
                        "not the row checkpointed in {} (the chain was rewritten)",
                        anchor.from
                    ),
                );
                return Ok(report);
            }
            if row.key_id.is_some() && report.keyed_from.is_none() {
                report.keyed_from = Some(row.seq);
            }
            report.rows += 1;
            report.head = format!("{}:{}", row.seq, row.hash);
            prev = row.hash;
            expected_seq += 1;
        }
    }
    // A row below the first one read (seq 0, negative) is out of the chain too.
    let stray = transact(store, |tx| {
        Ok(tx
            .query("SELECT MIN(seq) FROM audit_log", &[])?
            .first()
            .and_then(|r| r[0].as_int()))
    })?;
    if let Some(min) = stray.filter(|m| *m < 1) {
        report.fail(min, "a row outside the chain's numbering".into());
        return Ok(report);
    }
    if let Some(anchor) = anchors
        .iter()
        .filter(|a| a.checkpoint.seq >= expected_seq)
        .min_by_key(|a| a.checkpoint.seq)
    {
        report.fail(
            anchor.checkpoint.seq,
            format!(
                "the chain ends at row {} before the row checkpointed in {} (rows were cut off)",
                expected_seq - 1,
                anchor.from
            ),
        );
    }
    Ok(report)
}

fn row_problem(
    row: &AuditRow,
    expected_seq: i64,
    prev: &str,
    keys: Option<&ChainKeys>,
    keyed_from: Option<i64>,
) -> Option<String> {
    if row.seq != expected_seq {
        return Some(format!("row {expected_seq} is missing"));
    }
    if row.prev_hash != prev {
        return Some("its link to the row before does not match".into());
    }
    match (&row.key_id, keys) {
        (None, _) if keyed_from.is_some() => {
            Some("an unkeyed row after keyed ones (rewritten without the key: no downgrade)".into())
        }
        (None, _) => (row_hash(row.seq, &row.entry, &row.prev_hash) != row.hash)
            .then(|| "its contents do not match its hash (edited)".into()),
        (Some(id), None) => Some(format!(
            "it is signed with key {id:?} and no [audit] key is configured to check it"
        )),
        (Some(id), Some(keys)) => match keys.check(row, id) {
            Ok(()) => None,
            Err(MacProblem::UnknownKey) => Some(format!(
                "it is signed with key {id:?}, which is not among [audit]'s keys"
            )),
            Err(MacProblem::Mismatch) => Some("its contents do not match its MAC (edited)".into()),
        },
    }
}
