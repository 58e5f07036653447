//! The users-imports API's jobs (`server::import_api`), kept in the directory so that
//! every `serve` instance answers for every job and a job outlives the instance that
//! accepted it. One row per job: its options, its users file (until it ends), where it
//! stands (the records done, the summary) and the lease of the instance running it;
//! one row per refused record in `import_job_errors`.
//!
//! A job runs under a lease (an instance id and an expiry on the host's clock) that
//! each record renews. A record's directory write and the job's checkpoint are one
//! transaction, fenced by the lease and by the records done: an instance whose lease
//! was taken over writes nothing more, and whoever holds the job goes on from the
//! first record not written. So a job taken over after a crash continues where the
//! last commit left it; no record is imported twice, and none is skipped.
//!
//! The users file (password hashes, phone numbers) is sealed at rest (`mfa::sealed`,
//! under the `[mfa]` key ring, bound to the job's id) from the submission on: only the
//! worker running the job opens it, in memory. A job stored by an earlier version
//! (migration 14 found a clear file, its key id NULL) is read as it was stored, and
//! its file dropped when it ends as before.
//!
//! A holder that dies at the same record again and again (a record that crashes or
//! hangs whoever takes it, or a directory that never answers for it) would be taken
//! over forever: each takeover of a lease that ran out (never a release) is counted
//! at the checkpoint it found, and the count starts again when the checkpoint moved.
//! The worker fails the job at [`MAX_STALLED_TAKEOVERS`].
//!
//! SQL is written once with PostgreSQL placeholders; SQLite takes `?` for `$`.

use serde_json::Value;

use super::apply::{ImportOutcome, ImportRecord, import_user};
use super::login_path::SqlWriter;
use super::portable::{Row, SqlStore, SqlTx, Val, transact};
use super::{SqlBacked, StoreError, sql_time, stored_time};
use crate::mfa::sealed::Sealed;

/// The tables, with the users file's column type as each backend names bytes.
macro_rules! schema {
    ($bytes:literal) => {
        concat!(
            "
CREATE TABLE IF NOT EXISTS import_jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    connection_id TEXT NOT NULL,
    external_id TEXT,
    upsert BIGINT NOT NULL,
    send_completion_email BIGINT NOT NULL,
    users_file ",
            $bytes,
            ",
    total BIGINT,
    done BIGINT NOT NULL,
    inserted BIGINT NOT NULL,
    updated BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    status_details TEXT,
    created_at_ms BIGINT NOT NULL,
    started_at_ms BIGINT,
    updated_at_ms BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until_ms BIGINT
);
CREATE INDEX IF NOT EXISTS import_jobs_status ON import_jobs(status, created_at_ms);
CREATE INDEX IF NOT EXISTS import_jobs_external_id ON import_jobs(external_id);
CREATE TABLE IF NOT EXISTS import_job_errors (
    job_id TEXT NOT NULL,
    record BIGINT NOT NULL,
    error TEXT NOT NULL,
    PRIMARY KEY (job_id, record)
);
"
        )
    };
}

pub(super) const SCHEMA_SQLITE: &str = schema!("BLOB");
pub(super) const SCHEMA_POSTGRES: &str = schema!("BYTEA");

/// Migration 14: the users file sealed (its key id and nonce beside the ciphertext in
/// `users_file`; NULL key id: a clear file from before), and the takeovers counted at
/// a checkpoint that did not move.
macro_rules! sealed_files {
    ($bytes:literal) => {
        concat!(
            "
ALTER TABLE import_jobs ADD COLUMN users_file_key_id TEXT;
ALTER TABLE import_jobs ADD COLUMN users_file_nonce ",
            $bytes,
            ";
ALTER TABLE import_jobs ADD COLUMN stalled_at BIGINT;
ALTER TABLE import_jobs ADD COLUMN takeovers BIGINT NOT NULL DEFAULT 0;
"
        )
    };
}

pub(super) const SEALED_FILES_SQLITE: &str = sealed_files!("BLOB");
pub(super) const SEALED_FILES_POSTGRES: &str = sealed_files!("BYTEA");

/// What a users file is sealed for (with the job's id as the row).
pub const USERS_FILE_PURPOSE: &str = "import-users-file";

/// Takeovers at one checkpoint after which the job is failed rather than run again:
/// its first holder and two taker-overs each died there.
pub const MAX_STALLED_TAKEOVERS: u64 = 3;

/// Where a job stands, as Auth0 names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    /// Accepted; its file not read yet.
    Pending,
    Processing,
    Completed,
    /// Failed as a whole (its file unreadable, the directory or a legacy store down).
    Failed,
    /// Ran past `max_job_seconds`.
    Expired,
}

impl JobStatus {
    pub const ALL: [JobStatus; 5] = [
        JobStatus::Pending,
        JobStatus::Processing,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Expired,
    ];

    pub fn name(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Processing => "processing",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Expired => "expired",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Counts against the limit of jobs at once, and is run by some instance.
    pub fn active(self) -> bool {
        matches!(self, JobStatus::Pending | JobStatus::Processing)
    }
}

/// A job as submitted.
#[derive(Debug, Clone)]
pub struct NewImportJob {
    pub id: String,
    pub connection_id: String,
    pub external_id: Option<String>,
    pub upsert: bool,
    pub send_completion_email: bool,
    /// The users file as uploaded (bounded by `max_file_kb`), sealed for
    /// [`USERS_FILE_PURPOSE`] and this job's id.
    pub users_file: Sealed,
    pub created_at_ms: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobSummary {
    pub inserted: u64,
    pub updated: u64,
    pub failed: u64,
    /// Users in the file; 0 until it was read.
    pub total: u64,
}

/// A job as stored (without its file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportJob {
    pub id: String,
    pub status: JobStatus,
    pub connection_id: String,
    pub external_id: Option<String>,
    pub upsert: bool,
    pub send_completion_email: bool,
    /// Records taken up so far: the checkpoint a worker continues from.
    pub done: u64,
    pub summary: JobSummary,
    /// Why a failed or expired job ended (Auth0's `status_details`).
    pub status_details: Option<String>,
    pub created_at_ms: u64,
    /// When some instance first read its file (the time limit counts from here).
    pub started_at_ms: Option<u64>,
    pub updated_at_ms: u64,
    pub lease_owner: Option<String>,
    pub lease_until_ms: Option<u64>,
}

const COLUMNS: &str = "id, status, connection_id, external_id, upsert, send_completion_email, \
    done, inserted, updated, failed, total, status_details, created_at_ms, started_at_ms, \
    updated_at_ms, lease_owner, lease_until_ms";

fn job(row: &Row) -> ImportJob {
    let text = |i: usize| row.get(i).and_then(Val::as_text).map(str::to_owned);
    let int = |i: usize| row.get(i).and_then(Val::as_int);
    let count = |i: usize| stored_time(int(i).unwrap_or(0));
    ImportJob {
        id: text(0).unwrap_or_default(),
        // A status this version does not know reads as ended: never run twice.
        status: text(1)
            .and_then(|s| JobStatus::parse(&s))
            .unwrap_or(JobStatus::Failed),
        connection_id: text(2).unwrap_or_default(),
        external_id: text(3),
        upsert: int(4) == Some(1),
        send_completion_email: int(5) == Some(1),
        done: count(6),
        summary: JobSummary {
            inserted: count(7),
            updated: count(8),
            failed: count(9),
            total: count(10),
        },
        status_details: text(11),
        created_at_ms: count(12),
        started_at_ms: int(13).map(stored_time),
        updated_at_ms: count(14),
        lease_owner: text(15),
        lease_until_ms: int(16).map(stored_time),
    }
}

fn big(n: u64) -> Val {
    Val::int(sql_time(n))
}

fn active_names() -> String {
    JobStatus::ALL
        .into_iter()
        .filter(|s| s.active())
        .map(|s| format!("'{}'", s.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a submission found: the job was stored, or this many were active already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Stored,
    TooMany { active: u64 },
}

/// Stores a new job unless `max_active` jobs are pending or processing, checked in the
/// same transaction under a lock every submitter takes (PostgreSQL: the table's
/// `SHARE ROW EXCLUSIVE`; SQLite: its one write lock), so instances submitting at once
/// cannot both pass the check.
pub fn insert(
    store: &dyn SqlStore,
    new: &NewImportJob,
    max_active: u64,
) -> Result<Admission, StoreError> {
    let count = format!(
        "SELECT COUNT(*) FROM import_jobs WHERE status IN ({})",
        active_names()
    );
    transact(store, |tx| {
        store.lock_table(tx, "import_jobs")?;
        let active = tx
            .query(&count, &[])?
            .first()
            .and_then(|r| r.first())
            .and_then(Val::as_int)
            .map_or(0, stored_time);
        if active >= max_active {
            return Ok(Admission::TooMany { active });
        }
        tx.execute(
            "INSERT INTO import_jobs (id, status, connection_id, external_id, upsert,
                 send_completion_email, users_file, users_file_key_id, users_file_nonce,
                 total, done, inserted, updated, failed, created_at_ms, updated_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $9, $10, NULL, 0, 0, 0, 0, $8, $8)",
            &[
                Val::text(&new.id),
                Val::text(JobStatus::Pending.name()),
                Val::text(&new.connection_id),
                Val::Text(new.external_id.clone()),
                Val::int(i64::from(new.upsert)),
                Val::int(i64::from(new.send_completion_email)),
                Val::Bytes(Some(new.users_file.ciphertext.clone())),
                big(new.created_at_ms),
                Val::text(&new.users_file.key_id),
                Val::Bytes(Some(new.users_file.nonce.clone())),
            ],
        )?;
        Ok(Admission::Stored)
    })
}

/// Whether a job is still kept: an active one always, an ended one until
/// `retention_ms` after it was created (as at Auth0: then it is gone, 404).
fn kept_condition(now: i64, retention_ms: i64) -> (String, [Val; 2]) {
    (
        format!(
            "(status IN ({}) OR created_at_ms > $1 - $2)",
            active_names()
        ),
        [Val::int(now), Val::int(retention_ms)],
    )
}

/// A job by id, if it is still kept.
pub fn get(
    store: &dyn SqlStore,
    id: &str,
    now_ms: u64,
    retention_ms: u64,
) -> Result<Option<ImportJob>, StoreError> {
    let (kept, [now, retention]) = kept_condition(sql_time(now_ms), sql_time(retention_ms));
    let sql = format!("SELECT {COLUMNS} FROM import_jobs WHERE {kept} AND id = $3");
    let rows = transact(store, |tx| {
        tx.query(&sql, &[now.clone(), retention.clone(), Val::text(id)])
    })?;
    Ok(rows.first().map(job))
}

/// The jobs submitted with this external id that are still kept, oldest first.
pub fn by_external_id(
    store: &dyn SqlStore,
    external_id: &str,
    now_ms: u64,
    retention_ms: u64,
) -> Result<Vec<ImportJob>, StoreError> {
    let (kept, [now, retention]) = kept_condition(sql_time(now_ms), sql_time(retention_ms));
    let sql = format!(
        "SELECT {COLUMNS} FROM import_jobs WHERE {kept} AND external_id = $3
         ORDER BY created_at_ms, id"
    );
    let rows = transact(store, |tx| {
        tx.query(
            &sql,
            &[now.clone(), retention.clone(), Val::text(external_id)],
        )
    })?;
    Ok(rows.iter().map(job).collect())
}

/// A job's refused records (each an Auth0 error entry, redacted), in file order.
pub fn errors(store: &dyn SqlStore, id: &str) -> Result<Vec<Value>, StoreError> {
    let rows = transact(store, |tx| {
        tx.query(
            "SELECT error FROM import_job_errors WHERE job_id = $1 ORDER BY record",
            &[Val::text(id)],
        )
    })?;
    Ok(rows
        .into_iter()
        .filter_map(|row| row.into_iter().next().and_then(Val::into_text))
        .map(|text| serde_json::from_str(&text).unwrap_or(Value::Null))
        .collect())
}

/// A users file as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsersFile {
    Sealed(Sealed),
    /// Stored in clear by a version before migration 14 (a job running across the
    /// upgrade): read as it is.
    Clear(Vec<u8>),
}

/// A job claimed by one instance, with its users file.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub job: ImportJob,
    pub users_file: UsersFile,
    /// Takeovers in a row at this checkpoint (this claim included) of a lease that
    /// ran out: 0 for a job nobody held or whose holder let go of it.
    pub stalled_takeovers: u64,
}

/// Takes up the oldest active job nobody holds (never leased, or its lease run out:
/// the instance running it died or stopped) for `owner` until `lease_until_ms`.
/// PostgreSQL: instances claiming at once skip each other's row (`SKIP LOCKED`);
/// SQLite: the immediate transaction's write lock serializes them. Taking over a lease
/// that ran out (its holder is still named) counts a takeover at the job's checkpoint;
/// one at a checkpoint that moved since the last takeover starts the count again.
pub fn claim(
    store: &dyn SqlStore,
    owner: &str,
    now_ms: u64,
    lease_until_ms: u64,
) -> Result<Option<ClaimedJob>, StoreError> {
    let sql = format!(
        "UPDATE import_jobs SET lease_owner = $1, lease_until_ms = $2, updated_at_ms = $3,
             takeovers = CASE WHEN lease_owner IS NULL THEN 0
                              WHEN stalled_at = done THEN takeovers + 1 ELSE 1 END,
             stalled_at = CASE WHEN lease_owner IS NULL THEN NULL ELSE done END
         WHERE id IN (SELECT id FROM import_jobs
                      WHERE status IN ({}) AND (lease_until_ms IS NULL OR lease_until_ms <= $3)
                      ORDER BY created_at_ms, id LIMIT 1{})
         RETURNING {COLUMNS}, users_file, users_file_key_id, users_file_nonce, takeovers",
        active_names(),
        store.dialect().row_lock(true)
    );
    let params = [Val::text(owner), big(lease_until_ms), big(now_ms)];
    let rows = transact(store, |tx| tx.query(&sql, &params))?;
    Ok(rows.into_iter().next().map(|row| {
        let job = job(&row);
        let stalled_takeovers = row.get(20).and_then(Val::as_int).map_or(0, stored_time);
        let mut rest = row.into_iter().skip(17);
        let (ciphertext, key_id, nonce) = (
            rest.next().and_then(Val::into_bytes).unwrap_or_default(),
            rest.next().and_then(Val::into_text),
            rest.next().and_then(Val::into_bytes),
        );
        let users_file = match key_id {
            Some(key_id) => UsersFile::Sealed(Sealed {
                key_id,
                nonce: nonce.unwrap_or_default(),
                ciphertext,
            }),
            None => UsersFile::Clear(ciphertext),
        };
        ClaimedJob {
            job,
            users_file,
            stalled_takeovers,
        }
    }))
}

/// The fence every write of a running job passes: `owner` still holds it and it is
/// still active. Parameters `$1` id, `$2` owner.
fn held() -> String {
    format!(
        "id = $1 AND lease_owner = $2 AND status IN ({})",
        active_names()
    )
}

/// `UPDATE import_jobs SET {set}` on a job `owner` still holds (`$1` id, `$2` owner,
/// `values` from `$3`); false when it lost the job.
fn update_held(
    store: &dyn SqlStore,
    set: &str,
    id: &str,
    owner: &str,
    values: &[Val],
) -> Result<bool, StoreError> {
    let sql = format!("UPDATE import_jobs SET {set} WHERE {}", held());
    let mut params = vec![Val::text(id), Val::text(owner)];
    params.extend_from_slice(values);
    Ok(transact(store, |tx| tx.execute(&sql, &params))? == 1)
}

/// The file was read: the job is processing, with `total` users, its start time kept
/// from the first instance that read it. False when `owner` lost the job.
pub fn start(
    store: &dyn SqlStore,
    id: &str,
    owner: &str,
    total: u64,
    now_ms: u64,
    lease_until_ms: u64,
) -> Result<bool, StoreError> {
    update_held(
        store,
        "status = $3, total = $4, started_at_ms = COALESCE(started_at_ms, $5),
         updated_at_ms = $5, lease_until_ms = $6",
        id,
        owner,
        &[
            Val::text(JobStatus::Processing.name()),
            big(total),
            big(now_ms),
            big(lease_until_ms),
        ],
    )
}

/// Keeps `owner`'s lease on a job until `lease_until_ms`; false when it lost the job.
pub fn renew(
    store: &dyn SqlStore,
    id: &str,
    owner: &str,
    now_ms: u64,
    lease_until_ms: u64,
) -> Result<bool, StoreError> {
    update_held(
        store,
        "lease_until_ms = $3, updated_at_ms = $4",
        id,
        owner,
        &[big(lease_until_ms), big(now_ms)],
    )
}

/// Ends a job `owner` holds (completed, failed or expired, with why), lets go of its
/// lease and drops its users file (nobody reads it again). False when it lost the job.
pub fn finish(
    store: &dyn SqlStore,
    id: &str,
    owner: &str,
    status: JobStatus,
    details: Option<&str>,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let ended = update_held(
        store,
        "status = $3, status_details = $4, updated_at_ms = $5,
         users_file = NULL, users_file_key_id = NULL, users_file_nonce = NULL,
         lease_owner = NULL, lease_until_ms = NULL",
        id,
        owner,
        &[
            Val::text(status.name()),
            Val::Text(details.map(str::to_owned)),
            big(now_ms),
        ],
    )?;
    // The file held password hashes and phones: on SQLite its pages leave the
    // write-ahead log too, now (a job ends rarely; a busy reader defers it to the
    // next scrub).
    store.scrubbed();
    store.forget_scrubbed()?;
    Ok(ended)
}

/// Lets go of a job `owner` holds without ending it (an instance shutting down), so
/// another instance takes it up at once instead of after the lease.
pub fn release(store: &dyn SqlStore, id: &str, owner: &str, now_ms: u64) -> Result<(), StoreError> {
    update_held(
        store,
        "lease_owner = NULL, lease_until_ms = NULL, updated_at_ms = $3",
        id,
        owner,
        &[big(now_ms)],
    )?;
    Ok(())
}

/// Deletes the ended jobs past their retention, and their errors; how many.
pub fn forget_expired(
    store: &dyn SqlStore,
    now_ms: u64,
    retention_ms: u64,
) -> Result<u64, StoreError> {
    let (kept, [now, retention]) = kept_condition(sql_time(now_ms), sql_time(retention_ms));
    let gone = format!("SELECT id FROM import_jobs WHERE NOT {kept}");
    let deleted = transact(store, |tx| {
        tx.execute(
            &format!("DELETE FROM import_job_errors WHERE job_id IN ({gone})"),
            &[now.clone(), retention.clone()],
        )?;
        tx.execute(
            &format!("DELETE FROM import_jobs WHERE NOT {kept}"),
            &[now.clone(), retention.clone()],
        )
    })?;
    if deleted > 0 {
        store.scrubbed();
        store.forget_scrubbed()?;
    }
    Ok(deleted)
}

/// One record of a running job, as its worker hands it over.
pub enum JobStep<'a> {
    /// A record that passed the checks: into the directory. A user that holds the
    /// email already (and no upsert) is refused with `duplicate` (its error entry).
    Import {
        record: &'a ImportRecord,
        duplicate: &'a dyn Fn() -> Value,
        /// An existing user (upsert) whose record brings second factors: an import
        /// never replaces a user's factors. Its error entry.
        factors_refused: &'a dyn Fn() -> Value,
    },
    /// A record refused before the directory: its error entry.
    Refuse(Value),
}

/// What became of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    Inserted,
    Updated,
    Refused,
    /// `owner` no longer holds the job at record `index` (its lease ran out and
    /// another instance took it up, or it ended): nothing was written.
    LeaseLost,
}

/// Takes record `index` of a job `owner` holds, in one transaction: the directory's
/// write, the job's checkpoint (`done` = index + 1) and summary, the error entry,
/// and the lease renewed until `lease_until_ms`. The fence (`done` = index under this
/// lease) comes first, so on PostgreSQL the job's row is locked before the directory
/// is touched. A directory error (a conflicting legacy link, the directory down) rolls
/// it all back and is returned: the record is then refused or the job failed by the
/// caller, still at `index`.
pub fn step(
    store: &dyn SqlStore,
    id: &str,
    owner: &str,
    index: u64,
    record: &JobStep<'_>,
    now_ms: u64,
    lease_until_ms: u64,
) -> Result<StepOutcome, StoreError> {
    let dialect = store.dialect();
    transact(store, |tx| {
        if !advance(tx, id, owner, index, now_ms, lease_until_ms)? {
            return Ok(StepOutcome::LeaseLost);
        }
        let refused = match record {
            JobStep::Refuse(error) => error.clone(),
            JobStep::Import {
                record,
                duplicate,
                factors_refused,
            } => match import_user(&mut SqlWriter { tx, dialect }, record)? {
                ImportOutcome::Inserted(_) => return count(tx, id, StepOutcome::Inserted),
                ImportOutcome::Updated(_) => return count(tx, id, StepOutcome::Updated),
                ImportOutcome::Duplicate(_) => duplicate(),
                ImportOutcome::FactorsRefused(_) => factors_refused(),
            },
        };
        tx.execute(
            "INSERT INTO import_job_errors (job_id, record, error) VALUES ($1, $2, $3)",
            &[Val::text(id), big(index), Val::text(refused.to_string())],
        )?;
        count(tx, id, StepOutcome::Refused)
    })
}

/// Moves the checkpoint past record `index` if `owner` holds the job there.
fn advance(
    tx: &mut dyn SqlTx,
    id: &str,
    owner: &str,
    index: u64,
    now_ms: u64,
    lease_until_ms: u64,
) -> Result<bool, StoreError> {
    let sql = format!(
        "UPDATE import_jobs SET done = done + 1, lease_until_ms = $4, updated_at_ms = $5
         WHERE {} AND done = $3",
        held()
    );
    let n = tx.execute(
        &sql,
        &[
            Val::text(id),
            Val::text(owner),
            big(index),
            big(lease_until_ms),
            big(now_ms),
        ],
    )?;
    Ok(n == 1)
}

/// Counts a record's outcome in the job's summary.
fn count(tx: &mut dyn SqlTx, id: &str, outcome: StepOutcome) -> Result<StepOutcome, StoreError> {
    let column = match outcome {
        StepOutcome::Inserted => "inserted",
        StepOutcome::Updated => "updated",
        StepOutcome::Refused | StepOutcome::LeaseLost => "failed",
    };
    tx.execute(
        &format!("UPDATE import_jobs SET {column} = {column} + 1 WHERE id = $1"),
        &[Val::text(id)],
    )?;
    Ok(outcome)
}

/// The users-imports API's jobs under leases (`import_jobs`): one implementation for
/// both backends. Times are the host's clock.
pub trait ImportJobStore: SqlBacked {
    /// Stores a new job unless `max_active` are pending or processing (checked in the
    /// same transaction, across instances).
    fn insert_import_job(
        &self,
        job: &NewImportJob,
        max_active: u64,
    ) -> Result<Admission, StoreError> {
        insert(self.sql(), job, max_active)
    }
    /// A job, unless it ended and is past `retention_ms` since it was created.
    fn import_job(
        &self,
        id: &str,
        now_ms: u64,
        retention_ms: u64,
    ) -> Result<Option<ImportJob>, StoreError> {
        get(self.sql(), id, now_ms, retention_ms)
    }
    /// The kept jobs submitted with this external id.
    fn import_jobs_by_external_id(
        &self,
        external_id: &str,
        now_ms: u64,
        retention_ms: u64,
    ) -> Result<Vec<ImportJob>, StoreError> {
        by_external_id(self.sql(), external_id, now_ms, retention_ms)
    }
    /// A job's error entries, in file order.
    fn import_job_errors(&self, id: &str) -> Result<Vec<serde_json::Value>, StoreError> {
        errors(self.sql(), id)
    }
    /// Takes up the oldest active job nobody holds, for `owner`.
    fn claim_import_job(
        &self,
        owner: &str,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> Result<Option<ClaimedJob>, StoreError> {
        claim(self.sql(), owner, now_ms, lease_until_ms)
    }
    /// Marks a held job processing with `total` users; false when the lease was lost.
    fn start_import_job(
        &self,
        id: &str,
        owner: &str,
        total: u64,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> Result<bool, StoreError> {
        start(self.sql(), id, owner, total, now_ms, lease_until_ms)
    }
    /// Renews a held job's lease; false when it was lost.
    fn renew_import_job(
        &self,
        id: &str,
        owner: &str,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> Result<bool, StoreError> {
        renew(self.sql(), id, owner, now_ms, lease_until_ms)
    }
    /// Record `index` of a held job and its checkpoint, in one transaction.
    fn import_job_step(
        &self,
        id: &str,
        owner: &str,
        index: u64,
        step: &JobStep<'_>,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> Result<StepOutcome, StoreError> {
        self::step(self.sql(), id, owner, index, step, now_ms, lease_until_ms)
    }
    /// Ends a held job; false when the lease was lost.
    fn finish_import_job(
        &self,
        id: &str,
        owner: &str,
        status: JobStatus,
        details: Option<&str>,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        finish(self.sql(), id, owner, status, details, now_ms)
    }
    /// Lets go of a held job without ending it (shutdown).
    fn release_import_job(&self, id: &str, owner: &str, now_ms: u64) -> Result<(), StoreError> {
        release(self.sql(), id, owner, now_ms)
    }
    /// Deletes ended jobs past their retention; how many.
    fn forget_expired_import_jobs(
        &self,
        now_ms: u64,
        retention_ms: u64,
    ) -> Result<u64, StoreError> {
        forget_expired(self.sql(), now_ms, retention_ms)
    }
}
