//! Leases: a writer without the lease is fenced off; takeovers counted, three at one
//! record fail the job.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::Result;
use crate::import::Serve;

use super::{
    config_on, finished, leases_fence_writers, not_run_without_postgres, postgres_users, submitted,
    takeovers_count_where_the_checkpoint_stood, users, wait_for, wait_row, waiting_on,
};

#[test]
fn leases_fence_writers_on_sqlite() -> Result {
    let dir = tempfile::tempdir()?;
    let state = portcullis::state::SqliteState::open(&dir.path().join("directory.db"))?;
    leases_fence_writers(&state)
}

#[test]
fn leases_fence_writers_on_postgres() -> Result {
    let Some(url) = crate::postgres::fresh_database("jobs_fence") else {
        return not_run_without_postgres();
    };
    leases_fence_writers(&portcullis::state::PostgresState::connect(&url)?)
}

#[test]
fn takeovers_count_where_the_checkpoint_stood_on_sqlite() -> Result {
    let dir = tempfile::tempdir()?;
    let state = portcullis::state::SqliteState::open(&dir.path().join("directory.db"))?;
    takeovers_count_where_the_checkpoint_stood(&state)
}

#[test]
fn takeovers_count_where_the_checkpoint_stood_on_postgres() -> Result {
    let Some(url) = crate::postgres::fresh_database("jobs_takeovers") else {
        return not_run_without_postgres();
    };
    takeovers_count_where_the_checkpoint_stood(&portcullis::state::PostgresState::connect(&url)?)
}

/// A record that no instance gets past (its directory row is locked by another
/// transaction, so every holder hangs there until killed): the first holder and two
/// taker-overs are killed at it, each by `kill -9`, and the third taker-over fails the
/// job instead of running it again, saying where it stopped; the users before the
/// record stay imported, none after it is.
#[test]
fn a_job_whose_holders_die_at_one_record_is_failed_after_three_takeovers_on_postgres() -> Result {
    let Some(url) = crate::postgres::fresh_database("jobs_stall") else {
        return not_run_without_postgres();
    };
    let dir = tempfile::tempdir()?;
    let config = config_on(dir.path(), Some(&url))?;
    const FAST: &str = "users_per_second = 50\njob_lease_seconds = 2\nrequests_per_minute = 6000";
    let first = Serve::start(dir.path(), &config, FAST);
    // Record 10's user is being created by a transaction that does not end: whoever
    // imports record 10 waits for it.
    let mut blocker = postgres::Client::connect(&url, postgres::NoTls)?;
    let blocker_pid: i32 = blocker.query_one("SELECT pg_backend_pid()", &[])?.get(0);
    blocker.batch_execute(
        "BEGIN; INSERT INTO users (id, email, email_norm, email_verified, app_metadata,
             user_metadata, created_at_ms) VALUES ('usr_blocker', 'stall10@example.org',
             'stall10@example.org', true, '{}', '{}', 0)",
    )?;
    let id = submitted(&first, users("stall", 20)?, "stall")?;
    let mut watch = postgres::Client::connect(&url, postgres::NoTls)?;
    let mut holder = Some(first);
    for takeovers in 0..3 {
        // The holder hangs at record 10.
        let deadline = Instant::now() + Duration::from_secs(60);
        while waiting_on(&mut watch, blocker_pid)?.is_empty() {
            assert!(Instant::now() < deadline, "nobody reached record 10");
            std::thread::sleep(Duration::from_millis(50));
        }
        wait_row(&mut watch, &id, "taken over", |n, _| n == takeovers)?;
        drop(holder.take()); // SIGKILL.
        // The server notices a dead client only when it next speaks to it: the killed
        // instance's backend, waiting on the lock, is ended as it would be then.
        for pid in waiting_on(&mut watch, blocker_pid)? {
            watch.execute("SELECT pg_terminate_backend($1)", &[&pid])?;
        }
        holder = Some(Serve::start(dir.path(), &config, FAST));
    }
    let last = holder.take().ok_or("the last taker-over")?;
    let failed = wait_for(&last, &id, "failed", finished);
    assert_eq!(failed["status"], "failed", "{failed}");
    let details = failed["status_details"].as_str().unwrap_or_default();
    assert!(
        details.contains("taken over 3 times at user 11"),
        "{failed}"
    );
    assert_eq!(
        failed["summary"],
        json!({"failed": 0, "updated": 0, "inserted": 10, "total": 20}),
    );
    // The errors answer is the job, with why (as for a file that could not be read).
    let errors: Value = last.get(&format!("/api/v2/jobs/{id}/errors")).json()?;
    assert_eq!(errors["status_details"], failed["status_details"]);
    blocker.batch_execute("ROLLBACK")?;
    assert_eq!(postgres_users(&url, "stall")?, (10, 10));
    Ok(())
}
