//! Older directories upgraded in place.

use portcullis::state::factors::FactorStore;

use crate::common::Result;

#[test]
fn an_older_directory_is_upgraded_in_place() -> Result {
    // A directory as the first release wrote it (no factors, no lease token): opened,
    // it gains what is new and keeps its users.
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("directory.db");
    {
        let db = rusqlite::Connection::open(&path)?;
        db.execute_batch(
            "CREATE TABLE users (id TEXT PRIMARY KEY, email TEXT NOT NULL, email_norm TEXT NOT NULL UNIQUE,
                 email_verified INTEGER NOT NULL, app_metadata TEXT NOT NULL, user_metadata TEXT NOT NULL,
                 password_hash TEXT, created_at_ms INTEGER NOT NULL, last_login_ms INTEGER,
                 logins_count INTEGER NOT NULL DEFAULT 0);
             CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, key TEXT NOT NULL,
                 payload TEXT NOT NULL, transaction_id TEXT NOT NULL, created_at_ms INTEGER NOT NULL,
                 status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
                 next_attempt_at_ms INTEGER NOT NULL, last_error TEXT, claimed_until_ms INTEGER,
                 UNIQUE (topic, key));
             INSERT INTO users VALUES ('usr_old', 'old@example.com', 'old@example.com', 1, '{}', '{}', NULL, 5, NULL, 3);",
        )?;
    }
    let state = portcullis::state::SqliteState::open(&path)?;
    use portcullis::model::Directory;
    let users = state.find_by_email("old@example.com")?;
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].logins_count, 3);
    assert!(state.factors_of("usr_old")?.is_empty());
    Ok(())
}

#[test]
fn a_directory_with_the_first_factors_table_gains_cohorts_in_place() -> Result {
    // A directory as the commit that brought factors made it (no cohort, no revert;
    // tests/host/schemas), with a factor in it.
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("directory.db");
    {
        let db = rusqlite::Connection::open(&path)?;
        db.execute_batch(&std::fs::read_to_string(
            crate::common::workspace_root().join("host/tests/host/schemas/sqlite-04-adf7076.sql"),
        )?)?;
        db.execute_batch(
            "INSERT INTO users (id, email, email_norm, email_verified, app_metadata, user_metadata, created_at_ms)
                 VALUES ('usr_f', 'f@example.com', 'f@example.com', 1, '{}', '{}', 5);
             INSERT INTO factors VALUES ('fac_f', 'usr_f', 'sms', 'legacy-sms', '1000009', NULL, NULL, NULL,
                 'active', 10, 10, NULL);",
        )?;
    }
    let state = portcullis::state::SqliteState::open(&path)?;
    let factors = state.factors_of("usr_f")?;
    assert_eq!(factors.len(), 1);
    assert_eq!(
        factors[0].legacy_provider_user_id.as_deref(),
        Some("1000009")
    );
    assert_eq!(
        (factors[0].cohort.as_deref(), factors[0].reverted),
        (None, false)
    );
    // And it takes the new columns.
    state.put_factor(&portcullis::state::factors::Factor {
        cohort: Some("internal".into()),
        reverted: true,
        ..factors[0].clone()
    })?;
    let again = state.factors_of("usr_f")?;
    assert_eq!(
        (again[0].cohort.as_deref(), again[0].reverted),
        (Some("internal"), true)
    );
    Ok(())
}
