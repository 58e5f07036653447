//! What each store keeps, the same on SQLite and PostgreSQL.

use std::sync::{Arc, Barrier};

use portcullis::state::{PostgresState, SqlBacked};

use crate::common::Result;

use super::{
    fresh_database, keeps_backfill_state, keeps_factors, keeps_import_state, keeps_recovery_state,
    records_logins_once, skipped,
};

#[test]
fn login_statistics_are_counted_once_in_sqlite() -> Result {
    let dir = tempfile::tempdir()?;
    let state = portcullis::state::SqliteState::open(&dir.path().join("directory.db"))?;
    records_logins_once(&state)
}

#[test]
fn login_statistics_are_counted_once_in_postgres() -> Result {
    let Some(url) = fresh_database("stats") else {
        return skipped("login_statistics_are_counted_once_in_postgres");
    };
    records_logins_once(&PostgresState::connect(&url)?)
}

#[test]
fn factors_are_kept_in_sqlite() -> Result {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("directory.db");
    keeps_factors(&portcullis::state::SqliteState::open(&path)?)?;
    // No plaintext phone, in any format, in the database file or its WAL.
    crate::common::Exposure::new()
        .database(&path)
        .assert_no_phone("+14155552671");
    Ok(())
}

#[test]
fn factors_are_kept_in_postgres() -> Result {
    let Some(url) = fresh_database("factors") else {
        return skipped("factors_are_kept_in_postgres");
    };
    keeps_factors(&PostgresState::connect(&url)?)
}

#[test]
fn backfill_state_is_kept_in_sqlite() -> Result {
    let dir = tempfile::tempdir()?;
    keeps_backfill_state(&portcullis::state::SqliteState::open(
        &dir.path().join("directory.db"),
    )?)
}

#[test]
fn backfill_state_is_kept_in_postgres() -> Result {
    let Some(url) = fresh_database("backfill") else {
        return skipped("backfill_state_is_kept_in_postgres");
    };
    keeps_backfill_state(&PostgresState::connect(&url)?)
}

#[test]
fn import_state_is_kept_in_sqlite() -> Result {
    let dir = tempfile::tempdir()?;
    keeps_import_state(&portcullis::state::SqliteState::open(
        &dir.path().join("directory.db"),
    )?)
}

#[test]
fn import_state_is_kept_in_postgres() -> Result {
    let Some(url) = fresh_database("import") else {
        return skipped("import_state_is_kept_in_postgres");
    };
    keeps_import_state(&PostgresState::connect(&url)?)
}

#[test]
fn recovery_state_is_kept_in_sqlite() -> Result {
    let dir = tempfile::tempdir()?;
    keeps_recovery_state(&portcullis::state::SqliteState::open(
        &dir.path().join("d.db"),
    )?)
}

#[test]
fn recovery_state_is_kept_in_postgres() -> Result {
    let Some(url) = fresh_database("recovery") else {
        return skipped("recovery_state_is_kept_in_postgres");
    };
    let state = PostgresState::connect(&url)?;
    keeps_recovery_state(&state)?;
    // Two writers append to the audit chain at once: it never forks.
    let state = Arc::new(state);
    let barrier = Arc::new(Barrier::new(4));
    let writers: Vec<_> = (0..4)
        .map(|i| {
            let (state, barrier) = (state.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for n in 0..25 {
                    portcullis::state::audit::record(
                        state.sql(),
                        &portcullis::state::audit::AuditEntry::new(
                            n,
                            format!("agent:{i}"),
                            "x",
                            "y",
                        ),
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let report = portcullis::state::audit::verify(state.sql())?;
    assert!(report.ok, "{report:?}");
    Ok(())
}
