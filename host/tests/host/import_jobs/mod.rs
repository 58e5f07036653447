//! The users-imports API's jobs in the shared state (`state::import_jobs`), with real
//! `portcullis serve` processes: two over one PostgreSQL directory answer for each
//! other's jobs, keep Auth0's limit of 2 active jobs between them, and one takes up a
//! job whose instance was killed (`kill -9`) once its lease ran out, without importing
//! anyone twice, share one rate limit, and fail a job whose holders keep dying at the
//! same record; on SQLite a job survives its instance's restart. A job's users file
//! is sealed in the database while the job runs. The PostgreSQL tests run when
//! PORTCULLIS_TEST_POSTGRES is set (and say so when they do not).
//!
//! Jobs are made slow with `users_per_second` (the API's own pacing knob), never by
//! sleeping in the test: the test waits for what it needs to see (a job processing,
//! then finished), each wait bounded.
//! A module per part; here, what they share.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use portcullis::mfa::sealed::KeyRing;
use portcullis::state::import_jobs::{
    Admission, JobStatus, JobStep, NewImportJob, StepOutcome, USERS_FILE_PURPOSE, UsersFile,
};
use portcullis::state::{ImportRecord, StateStore};
use serde_json::{Value, json};

use crate::common::{Exposure, Result, migration_config};
use crate::import::{Serve, user};

mod instances;
mod leases;
mod sealed;

/// A job slow enough to kill its instance in the middle (20 users/s), whose lease a
/// taker-over waits out (2 s); a rate limit the tests' polling stays under.
const SLOW: &str = "users_per_second = 20\njob_lease_seconds = 2\nrequests_per_minute = 6000";

/// The migration fixture with its directory on `url` (else SQLite in `dir`).
fn config_on(dir: &Path, url: Option<&str>) -> Result<PathBuf> {
    let config = migration_config(dir, "pipeline.toml");
    if let Some(url) = url {
        crate::common::move_directory_to(&config, url)?;
    }
    Ok(config)
}

fn users(prefix: &str, n: usize) -> Result<Vec<u8>> {
    let users: Vec<Value> = (0..n)
        .map(|i| user(&format!("{prefix}{i}@example.org")))
        .collect();
    Ok(serde_json::to_vec(&users)?)
}

fn submitted(serve: &Serve, file: Vec<u8>, external_id: &str) -> Result<String> {
    let response = serve.submit(file, external_id, false);
    assert_eq!(response.status(), 201);
    let job: Value = response.json()?;
    Ok(job["id"].as_str().ok_or("a job id")?.to_owned())
}

/// Polls a job on `serve` until `done` holds of it; the job as last seen.
fn wait_for(serve: &Serve, id: &str, what: &str, mut done: impl FnMut(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let job: Value = serve
            .get_patiently(&format!("/api/v2/jobs/{id}"))
            .json()
            .unwrap();
        if done(&job) {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} never {what}: {job}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn percentage(job: &Value) -> u64 {
    job["percentage_done"].as_u64().unwrap_or(0)
}

fn processing_past(job: &Value, at_least: u64) -> bool {
    job["status"] == "processing" && percentage(job) >= at_least
}

fn finished(job: &Value) -> bool {
    !matches!(job["status"].as_str(), Some("pending" | "processing"))
}

fn not_run_without_postgres() -> Result {
    crate::common::not_run("PORTCULLIS_TEST_POSTGRES is not set");
    Ok(())
}

/// Users whose email starts with `prefix`: how many rows, how many distinct emails.
fn postgres_users(url: &str, prefix: &str) -> Result<(i64, i64)> {
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    let row = client.query_one(
        "SELECT COUNT(*), COUNT(DISTINCT email_norm) FROM users WHERE email_norm LIKE $1",
        &[&format!("{prefix}%")],
    )?;
    Ok((row.get(0), row.get(1)))
}

fn too_many(response: reqwest::blocking::Response) -> Result {
    assert_eq!(response.status(), 429);
    let body: Value = response.json()?;
    assert_eq!(body["statusCode"], 429, "{body}");
    assert_eq!(body["error"], "Too Many Requests", "{body}");
    assert_eq!(body["errorCode"], "too_many_requests", "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("There are 2 active import users jobs")),
        "{body}"
    );
    Ok(())
}

/// The store's side, on the host's clock as given: a lease held is not claimed again
/// until it runs out; a writer whose lease was taken over writes nothing (not the
/// user, not the checkpoint); a record written once is not written again; the limit
/// of active jobs; an ended job past its retention is gone.
fn keys() -> KeyRing {
    KeyRing::parse("t1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap()
}

fn stored_job(id: &str, file: &[u8]) -> NewImportJob {
    NewImportJob {
        id: id.into(),
        connection_id: "con_portcullis".into(),
        external_id: Some("fence".into()),
        upsert: false,
        send_completion_email: false,
        users_file: keys().seal_bytes(USERS_FILE_PURPOSE, file, id),
        created_at_ms: 1_000,
    }
}

fn leases_fence_writers(state: &dyn StateStore) -> Result {
    let job = |id: &str| stored_job(id, b"[{}]");
    assert_eq!(
        state.insert_import_job(&job("job_1"), 2)?,
        Admission::Stored
    );
    assert_eq!(
        state.insert_import_job(&job("job_2"), 2)?,
        Admission::Stored
    );
    assert_eq!(
        state.insert_import_job(&job("job_3"), 2)?,
        Admission::TooMany { active: 2 }
    );

    let claimed = state
        .claim_import_job("a", 2_000, 3_000)?
        .ok_or("a claims")?;
    assert_eq!(claimed.job.id, "job_1", "oldest first");
    let UsersFile::Sealed(sealed) = &claimed.users_file else {
        panic!("stored in clear: {:?}", claimed.users_file)
    };
    assert_eq!(
        &keys().open_bytes(sealed, USERS_FILE_PURPOSE, "job_1")?[..],
        b"[{}]"
    );
    assert_eq!(claimed.stalled_takeovers, 0, "nobody held it");
    let other = state
        .claim_import_job("b", 2_500, 3_500)?
        .ok_or("b claims")?;
    assert_eq!(other.job.id, "job_2", "a's job is held");
    assert!(state.claim_import_job("c", 2_900, 3_900)?.is_none());
    assert!(state.start_import_job("job_1", "a", 2, 2_000, 3_000)?);

    // a's lease runs out; c takes job_1 over.
    let taken = state
        .claim_import_job("c", 3_000, 4_000)?
        .ok_or("c claims")?;
    assert_eq!((taken.job.id.as_str(), taken.job.done), ("job_1", 0));
    assert_eq!(taken.stalled_takeovers, 1, "a's lease ran out at record 0");
    let record = ImportRecord {
        id: "usr_fence".into(),
        email: "fence@example.org".into(),
        email_verified: true,
        app_metadata: serde_json::json!({}),
        user_metadata: serde_json::json!({}),
        password_hash: None,
        legacy_accounts: Vec::new(),
        upsert: false,
        protected_app_metadata: Vec::new(),
        time_ms: 3_000,
        factors: Vec::new(),
    };
    let duplicate = || serde_json::json!({"user": {}, "errors": []});
    let step = JobStep::Import {
        record: &record,
        duplicate: &duplicate,
        factors_refused: &duplicate,
    };
    let late = state.import_job_step("job_1", "a", 0, &step, 3_100, 4_100)?;
    assert_eq!(late, StepOutcome::LeaseLost);
    assert!(state.find_by_email("fence@example.org")?.is_empty());
    assert_eq!(
        state.import_job_step("job_1", "c", 0, &step, 3_100, 4_100)?,
        StepOutcome::Inserted
    );
    // Record 0 again (a worker that did not see its own commit): nothing more.
    assert_eq!(
        state.import_job_step("job_1", "c", 0, &step, 3_200, 4_200)?,
        StepOutcome::LeaseLost
    );
    let refused = JobStep::Refuse(serde_json::json!({"user": {}, "errors": [{"code": "FORMAT"}]}));
    assert_eq!(
        state.import_job_step("job_1", "c", 1, &refused, 3_300, 4_300)?,
        StepOutcome::Refused
    );
    assert!(!state.finish_import_job("job_1", "a", JobStatus::Completed, None, 3_400)?);
    assert!(state.finish_import_job("job_1", "c", JobStatus::Completed, None, 3_400)?);
    let done = state.import_job("job_1", 3_500, 10_000)?.ok_or("kept")?;
    assert_eq!((done.status, done.done), (JobStatus::Completed, 2));
    assert_eq!(
        (
            done.summary.inserted,
            done.summary.failed,
            done.summary.total
        ),
        (1, 1, 2)
    );
    assert_eq!(state.import_job_errors("job_1")?.len(), 1);

    // Past its retention (counted from its creation): gone, and then deleted.
    assert!(state.import_job("job_1", 11_001, 10_000)?.is_none());
    assert!(
        state.import_job("job_2", 11_001, 10_000)?.is_some(),
        "active: kept"
    );
    assert_eq!(state.forget_expired_import_jobs(11_001, 10_000)?, 1);
    assert!(state.import_job_errors("job_1")?.is_empty());
    Ok(())
}

/// Takeovers of a lease that ran out are counted at the checkpoint they found, again
/// from 1 once it moved, and not at all after a holder let go of the job.
fn takeovers_count_where_the_checkpoint_stood(state: &dyn StateStore) -> Result {
    assert_eq!(
        state.insert_import_job(&stored_job("job_t", b"[{}, {}]"), 2)?,
        Admission::Stored
    );
    let claim = |owner: &str, at: u64| -> Result<u64> {
        let claimed = state
            .claim_import_job(owner, at, at + 1_000)?
            .ok_or("claimed")?;
        Ok(claimed.stalled_takeovers)
    };
    assert_eq!(claim("a", 2_000)?, 0);
    assert_eq!(claim("b", 3_000)?, 1);
    assert_eq!(claim("c", 4_000)?, 2);
    let refused = JobStep::Refuse(json!({"user": {}, "errors": []}));
    assert_eq!(
        state.import_job_step("job_t", "c", 0, &refused, 4_100, 5_000)?,
        StepOutcome::Refused
    );
    assert_eq!(claim("d", 5_000)?, 1, "the checkpoint moved: counted again");
    assert_eq!(claim("e", 6_000)?, 2);
    state.release_import_job("job_t", "e", 6_100)?;
    assert_eq!(claim("f", 6_200)?, 0, "e let go: no takeover");
    Ok(())
}

/// A users file with password hashes, and a phone at its end (refused when its turn
/// comes: the migration fixture has no new SMS provider; it is in the file all the
/// same).
const PHONE: &str = "+14155552679";

fn secret_file(prefix: &str, n: usize) -> Result<(Vec<u8>, String)> {
    let hash = portcullis::state::passwords::legacy_formats::bcrypt("pw-held", "2b", [3; 16]);
    let mut users: Vec<Value> = (0..n)
        .map(|i| user(&format!("{prefix}{i}@example.org")))
        .collect();
    users.push(
        json!({"email": format!("{prefix}-last@example.org"), "password_hash": hash,
                      "mfa_factors": [{"phone": {"value": PHONE}}]}),
    );
    let file = serde_json::to_vec(&users)?;
    // The test can fail: the file holds both in clear.
    let plain = Exposure::new().text("the file", &file);
    assert!(plain.phone_in(PHONE).is_some());
    Ok((file, hash))
}

/// Submits the file to a slow instance, and kills it mid-job: the job is held by a
/// dead instance, its file in the database.
fn held_mid_job(dir: &Path, config: &Path, file: Vec<u8>) -> Result<String> {
    let serve = Serve::start(dir, config, "users_per_second = 5\njob_lease_seconds = 30");
    let id = submitted(&serve, file, "held")?;
    wait_for(&serve, &id, "ran", |job| processing_past(job, 10));
    drop(serve); // SIGKILL mid-job.
    Ok(id)
}

/// The backends of `url`'s database that wait on a lock `blocker` holds.
fn waiting_on(client: &mut postgres::Client, blocker: i32) -> Result<Vec<i32>> {
    Ok(client
        .query(
            "SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
            &[&blocker],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Waits until `what` holds of the job's row, read straight from the database.
fn wait_row(
    client: &mut postgres::Client,
    id: &str,
    what: &str,
    done: impl Fn(i64, Option<&str>) -> bool,
) -> Result {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let row = client.query_one(
            "SELECT takeovers, status FROM import_jobs WHERE id = $1",
            &[&id],
        )?;
        if done(row.get(0), row.get::<_, Option<&str>>(1)) {
            return Ok(());
        }
        assert!(Instant::now() < deadline, "never {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
