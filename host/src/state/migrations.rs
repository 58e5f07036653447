//! Versioned migrations of the directory's schema: one numbered migration per change,
//! in both dialects, applied at open in one transaction and recorded in
//! `schema_migrations` (version, name, when). PostgreSQL applies them under an
//! advisory lock, so instances opening one directory together apply each once.
//!
//! Databases made before the table existed (every schema shipped up to version 11)
//! are adopted: migrations 1–11 are written so they apply to any of those shapes
//! (`IF NOT EXISTS`, and column additions that look first), and they run once on
//! such a database too. From 12 on, a migration runs exactly once and need not be
//! idempotent. `tests/host/schema.rs` opens a database made by each earlier schema.
//!
//! A database whose recorded version is newer than this build's is refused: an older
//! binary would otherwise write rows the newer schema does not expect.

use rusqlite::Connection;

use super::StoreError;

/// One step of a SQLite migration: SQL, or code where SQLite has no `IF NOT EXISTS`
/// (adding a column).
pub(super) enum SqliteStep {
    Sql(&'static str),
    Code(fn(&Connection) -> Result<(), StoreError>),
}

pub(super) struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sqlite: &'static [SqliteStep],
    pub postgres: &'static str,
}

use SqliteStep::{Code, Sql};

pub(super) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "users, identities, applied transactions, outbox, factors, the phone export's ledger, resume tokens",
        sqlite: &[Sql(super::sqlite::SCHEMA)],
        postgres: super::postgres::SCHEMA,
    },
    Migration {
        version: 2,
        name: "outbox claims and lease tokens, factor cohorts and reverts (databases made before them)",
        sqlite: &[Code(outbox_leases_and_cohorts)],
        // PostgreSQL's are `ADD COLUMN IF NOT EXISTS` in migration 1.
        postgres: "",
    },
    Migration {
        version: 3,
        name: "bulk import files",
        sqlite: &[Sql(super::import_files::SCHEMA)],
        postgres: super::import_files::SCHEMA,
    },
    Migration {
        version: 4,
        name: "recovery: codes, throttle, recoveries, session revocations, sightings",
        sqlite: &[Sql(super::recovery::SCHEMA)],
        postgres: super::recovery::SCHEMA,
    },
    Migration {
        version: 5,
        name: "audit log",
        sqlite: &[Sql(super::audit::SCHEMA)],
        postgres: super::audit::SCHEMA,
    },
    Migration {
        version: 6,
        name: "support requests",
        sqlite: &[Sql(super::support::SCHEMA)],
        postgres: super::support::SCHEMA,
    },
    Migration {
        version: 7,
        name: "rate windows in the shared state",
        sqlite: &[Sql(super::rate_windows::SCHEMA)],
        postgres: super::rate_windows::SCHEMA,
    },
    Migration {
        version: 8,
        name: "proofs and the enrolments they started",
        sqlite: &[Sql(super::proofs::SCHEMA)],
        postgres: super::proofs::SCHEMA,
    },
    Migration {
        version: 9,
        name: "audit key ids (a keyed chain)",
        sqlite: &[Code(super::audit::upgrade_sqlite)],
        postgres: super::audit::UPGRADE_POSTGRES,
    },
    Migration {
        version: 10,
        name: "consecutive code failures per factor, password resets required",
        sqlite: &[Sql(super::factor_failures::SCHEMA)],
        postgres: super::factor_failures::SCHEMA,
    },
    Migration {
        version: 11,
        name: "recognised device tokens",
        sqlite: &[Sql(super::devices::SCHEMA)],
        postgres: super::devices::SCHEMA,
    },
    Migration {
        version: 12,
        name: "users-imports jobs in the shared state, under leases",
        sqlite: &[Sql(super::import_jobs::SCHEMA_SQLITE)],
        postgres: super::import_jobs::SCHEMA_POSTGRES,
    },
    Migration {
        version: 13,
        name: "codes a provider holds open (to cancel when a login or recovery is abandoned)",
        sqlite: &[Sql(super::open_codes::SCHEMA)],
        postgres: super::open_codes::SCHEMA,
    },
    Migration {
        version: 14,
        name: "import jobs: the users file sealed at rest; takeovers at a checkpoint that does not move",
        sqlite: &[Sql(super::import_jobs::SEALED_FILES_SQLITE)],
        postgres: super::import_jobs::SEALED_FILES_POSTGRES,
    },
];

/// The schema version this build writes.
pub const LATEST: u32 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// Portable: SQLite and PostgreSQL both take it.
const TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at_ms BIGINT NOT NULL
)";

/// What `schema_migrations` holds must be versions 1..=N, each once: anything else
/// (gaps, a table of another tool's shape) is not a directory this code made.
fn recorded(count: i64, max: i64) -> Result<u32, StoreError> {
    match u32::try_from(max) {
        Ok(max) if i64::from(max) == count => Ok(max),
        _ => Err(StoreError::Backend(format!(
            "the directory's schema_migrations holds {count} versions up to {max}, not 1 to \
             {max} each once: it was not made by Portcullis, or was edited; restore it from a backup"
        ))),
    }
}

fn newer(found: u32) -> StoreError {
    StoreError::Backend(format!(
        "the directory's schema is version {found}, newer than this build's {LATEST}: \
         it was opened by a newer Portcullis; run that version (or newer) against it"
    ))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Applies what `conn` lacks, in one immediate transaction; returns the versions
/// applied now.
pub(super) fn apply_sqlite(conn: &mut Connection) -> Result<Vec<u32>, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(TABLE)?;
    let (count, max): (i64, i64) = tx.query_row(
        "SELECT COUNT(DISTINCT version), COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    let found = recorded(count, max)?;
    if found > LATEST {
        return Err(newer(found));
    }
    let mut applied = Vec::new();
    for migration in MIGRATIONS.iter().filter(|m| m.version > found) {
        for step in migration.sqlite {
            match step {
                Sql(sql) => tx.execute_batch(sql)?,
                Code(step) => step(&tx)?,
            }
        }
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (?1, ?2, ?3)",
            rusqlite::params![migration.version, migration.name, now_ms()],
        )?;
        applied.push(migration.version);
    }
    tx.commit()?;
    Ok(applied)
}

/// Applies what the database lacks inside `tx` (which holds the schema lock).
pub(super) fn apply_postgres(tx: &mut postgres::Transaction<'_>) -> Result<Vec<u32>, StoreError> {
    tx.batch_execute(TABLE)?;
    let row = tx.query_one(
        "SELECT COUNT(DISTINCT version)::BIGINT, COALESCE(MAX(version), 0)::BIGINT FROM schema_migrations",
        &[],
    )?;
    let found = recorded(row.try_get(0)?, row.try_get(1)?)?;
    if found > LATEST {
        return Err(newer(found));
    }
    let mut applied = Vec::new();
    for migration in MIGRATIONS.iter().filter(|m| m.version > found) {
        if !migration.postgres.is_empty() {
            tx.batch_execute(migration.postgres)?;
        }
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES ($1, $2, $3)",
            &[
                &i32::try_from(migration.version).unwrap_or(i32::MAX),
                &migration.name,
                &now_ms(),
            ],
        )?;
        applied.push(migration.version);
    }
    Ok(applied)
}

/// Columns added to SQLite tables after they first shipped; SQLite has no
/// `ADD COLUMN IF NOT EXISTS`.
fn outbox_leases_and_cohorts(conn: &Connection) -> Result<(), StoreError> {
    let has = |table: &str, column: &str| -> Result<bool, StoreError> {
        Ok(conn.query_row(
            "SELECT COUNT(*) FROM pragma_table_info(?1) WHERE name = ?2",
            [table, column],
            |row| row.get::<_, i64>(0).map(|n| n > 0),
        )?)
    };
    // The first directories (before the dispatcher's leases) had neither.
    if !has("outbox", "claimed_until_ms")? {
        conn.execute_batch("ALTER TABLE outbox ADD COLUMN claimed_until_ms INTEGER")?;
    }
    if !has("outbox", "lease_token")? {
        conn.execute_batch("ALTER TABLE outbox ADD COLUMN lease_token TEXT")?;
    }
    if !has("factors", "cohort")? {
        conn.execute_batch(
            "ALTER TABLE factors ADD COLUMN cohort TEXT;
             ALTER TABLE factors ADD COLUMN reverted INTEGER NOT NULL DEFAULT 0;",
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_up_from_one_without_gaps() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "{}", m.name);
        }
    }
}
