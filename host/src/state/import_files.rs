//! What `portcullis import run` keeps in the directory: one row per export file, by
//! the file's SHA-256 (also the job's `external_id`), with where it stands. A rerun
//! reads it and goes on: a completed file is never submitted again, and a file caught
//! between submitting and recording its job is looked up by its external id first.
//!
//! SQL is written once with PostgreSQL placeholders; SQLite takes `?` for `$`.

use serde::Serialize;

use super::{SqlBacked, StoreError, users};
use crate::model::DirectoryUser;

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

/// The import's reads and writes, once for both backends.
pub(super) mod rows {
    use super::super::portable::{SqlStore, Val, transact};
    use super::super::{StoreError, sql_time};
    use super::{ImportFileState, LIST, REGISTER, UPDATE, from_row};

    fn big(n: u64) -> Val {
        Val::int(i64::try_from(n).unwrap_or(i64::MAX))
    }

    pub fn register(
        store: &dyn SqlStore,
        files: &[(String, String, u64)],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        transact(store, |tx| {
            for (sha, name, users) in files {
                tx.execute(
                    REGISTER,
                    &[
                        Val::text(sha),
                        Val::text(name),
                        big(*users),
                        Val::int(sql_time(now_ms)),
                    ],
                )?;
            }
            Ok(())
        })
    }

    pub fn list(store: &dyn SqlStore) -> Result<Vec<ImportFileState>, StoreError> {
        let rows = transact(store, |tx| tx.query(LIST, &[]))?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let text = |i: usize| row.get(i).and_then(Val::as_text).map(str::to_owned);
                let int = |i: usize| row.get(i).and_then(Val::as_int).unwrap_or(0);
                from_row((
                    text(0).unwrap_or_default(),
                    text(1).unwrap_or_default(),
                    int(2),
                    text(3).unwrap_or_default(),
                    text(4),
                    int(5),
                    int(6),
                    int(7),
                    int(8),
                    int(9),
                    text(10),
                    int(11),
                ))
            })
            .collect())
    }

    pub fn update(
        store: &dyn SqlStore,
        f: &ImportFileState,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        transact(store, |tx| {
            tx.execute(
                UPDATE,
                &[
                    Val::text(&f.sha256),
                    Val::text(f.status.name()),
                    Val::Text(f.job_id.clone()),
                    Val::int(i64::from(f.attempts)),
                    big(f.inserted),
                    big(f.updated),
                    big(f.failed),
                    big(f.duplicates),
                    Val::Text(f.last_error.clone()),
                    Val::int(sql_time(f.retry_at_ms)),
                    Val::int(sql_time(now_ms)),
                ],
            )
        })?;
        Ok(())
    }

    /// Which of these normalized emails a directory user holds: an `IN` list per
    /// chunk (SQLite takes at most 32,766 parameters, PostgreSQL 65,535).
    pub fn emails_in_directory(
        store: &dyn SqlStore,
        emails: &[&str],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let mut found = std::collections::HashSet::new();
        for chunk in emails.chunks(10_000) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT email_norm FROM users WHERE email_norm IN ({})",
                marks.join(", ")
            );
            let params: Vec<Val> = chunk.iter().map(|e| Val::text(*e)).collect();
            for row in transact(store, |tx| tx.query(&sql, &params))? {
                found.extend(row.into_iter().next().and_then(Val::into_text));
            }
        }
        Ok(found)
    }

    pub fn legacy_links_page(
        store: &dyn SqlStore,
        product: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = transact(store, |tx| {
            tx.query(
                "SELECT provider_user_id, user_id FROM identities
                 WHERE provider = $1 AND provider_user_id > $2 ORDER BY provider_user_id LIMIT $3",
                &[
                    Val::text(product),
                    Val::text(after),
                    Val::int(i64::try_from(limit).unwrap_or(i64::MAX)),
                ],
            )
        })?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let mut row = row.into_iter();
                let legacy = row.next().and_then(Val::into_text).unwrap_or_default();
                let user = row.next().and_then(Val::into_text).unwrap_or_default();
                (legacy, user)
            })
            .collect())
    }
}

/// The bulk import's files and the lookups the export and the id backfill make
/// (`import_files::rows`), and the directory as seeding writes it (`users`).
pub trait ImportStore: SqlBacked {
    /// Which of these normalized emails a directory user holds (the export asks for a
    /// page of people at once).
    fn emails_in_directory(
        &self,
        emails: &[&str],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        rows::emails_in_directory(self.sql(), emails)
    }
    /// Up to `limit` links of directory users to accounts of `product`, by legacy id
    /// after `after`: (legacy id, user id).
    fn legacy_links_page(
        &self,
        product: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        rows::legacy_links_page(self.sql(), product, after, limit)
    }
    /// Records an import's files (sha256, name, users) as pending unless known.
    fn import_files_register(
        &self,
        files: &[(String, String, u64)],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        rows::register(self.sql(), files, now_ms)
    }
    /// Every import file's state, by name.
    fn import_files(&self) -> Result<Vec<ImportFileState>, StoreError> {
        rows::list(self.sql())
    }
    /// Writes one file's state (by its sha256).
    fn import_file_update(&self, file: &ImportFileState, now_ms: u64) -> Result<(), StoreError> {
        rows::update(self.sql(), file, now_ms)
    }
    /// Inserts or replaces a user (seeding, tests).
    fn put_user(
        &self,
        user: &DirectoryUser,
        password_hash: Option<&str>,
    ) -> Result<(), StoreError> {
        users::put(self.sql(), user, password_hash)
    }
    fn user_count(&self) -> Result<u64, StoreError> {
        users::count(self.sql())
    }
    /// Deletes every user, link, factor, outbox message, token and applied transaction
    /// (seeding only).
    fn clear(&self) -> Result<(), StoreError> {
        users::clear(self.sql())
    }
}
