//! What `portcullis import run` keeps in the directory: one row per export file, by
//! the file's SHA-256 (also the job's `external_id`), with where it stands. A rerun
//! reads it and goes on: a completed file is never submitted again, and a file caught
//! between submitting and recording its job is looked up by its external id first.
//!
//! SQL is written once with PostgreSQL placeholders; SQLite takes `?` for `$`.

use serde::Serialize;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS import_files (
    sha256 TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    users BIGINT NOT NULL,
    status TEXT NOT NULL,
    job_id TEXT,
    attempts INTEGER NOT NULL,
    inserted BIGINT NOT NULL,
    updated BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    duplicates BIGINT NOT NULL,
    last_error TEXT,
    retry_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
";

pub(super) const REGISTER: &str = "
INSERT INTO import_files (sha256, name, users, status, job_id, attempts, inserted, updated,
    failed, duplicates, last_error, retry_at_ms, updated_at_ms)
VALUES ($1, $2, $3, 'pending', NULL, 0, 0, 0, 0, 0, NULL, 0, $4)
ON CONFLICT (sha256) DO NOTHING";

pub(super) const LIST: &str = "
SELECT sha256, name, users, status, job_id, attempts, inserted, updated, failed, duplicates,
    last_error, retry_at_ms
FROM import_files ORDER BY name, sha256";

pub(super) const UPDATE: &str = "
UPDATE import_files SET status = $2, job_id = $3, attempts = $4, inserted = $5, updated = $6,
    failed = $7, duplicates = $8, last_error = $9, retry_at_ms = $10, updated_at_ms = $11
WHERE sha256 = $1";

/// Where one file of an import stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    /// Not submitted yet.
    Pending,
    /// About to be submitted (or submitted, and the process died before the job's id
    /// was written): looked up by external id before submitting again.
    Submitting,
    /// A job is running for it.
    Submitted,
    Completed,
    /// Its job failed or the submission did; tried again after `retry_at_ms`.
    Retrying,
    /// Given up on (too large, or out of attempts): the report says why.
    Failed,
}

impl FileStatus {
    pub fn name(self) -> &'static str {
        match self {
            FileStatus::Pending => "pending",
            FileStatus::Submitting => "submitting",
            FileStatus::Submitted => "submitted",
            FileStatus::Completed => "completed",
            FileStatus::Retrying => "retrying",
            FileStatus::Failed => "failed",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        [
            FileStatus::Pending,
            FileStatus::Submitting,
            FileStatus::Submitted,
            FileStatus::Completed,
            FileStatus::Retrying,
            FileStatus::Failed,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImportFileState {
    pub sha256: String,
    pub name: String,
    pub users: u64,
    pub status: FileStatus,
    pub job_id: Option<String>,
    pub attempts: u32,
    pub inserted: u64,
    pub updated: u64,
    pub failed: u64,
    /// Users the target already had (`DUPLICATED_USER`): lazy migration got there.
    pub duplicates: u64,
    pub last_error: Option<String>,
    pub retry_at_ms: u64,
}

/// A row as both backends read it.
pub(super) type Row = (
    String,
    String,
    i64,
    String,
    Option<String>,
    i64,
    i64,
    i64,
    i64,
    i64,
    Option<String>,
    i64,
);

pub(super) fn from_row(row: Row) -> ImportFileState {
    let n = |v: i64| v.max(0) as u64;
    ImportFileState {
        sha256: row.0,
        name: row.1,
        users: n(row.2),
        // A status this version does not know is treated as not yet done.
        status: FileStatus::parse(&row.3).unwrap_or(FileStatus::Pending),
        job_id: row.4,
        attempts: row.5.clamp(0, u32::MAX as i64) as u32,
        inserted: n(row.6),
        updated: n(row.7),
        failed: n(row.8),
        duplicates: n(row.9),
        last_error: row.10,
        retry_at_ms: n(row.11),
    }
}
