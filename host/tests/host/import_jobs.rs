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

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use portcullis::mfa::sealed::KeyRing;
use portcullis::state::import_jobs::{
    Admission, JobStatus, JobStep, NewImportJob, StepOutcome, USERS_FILE_PURPOSE, UsersFile,
};
use portcullis::state::{ImportRecord, StateStore};
use serde_json::{Value, json};

use crate::common::{Exposure, Result, migration_config};
use crate::import::{Serve, fresh_minute, user};

/// A job slow enough to kill its instance in the middle (20 users/s), whose lease a
/// taker-over waits out (2 s); a rate limit the tests' polling stays under.
const SLOW: &str = "users_per_second = 20\njob_lease_seconds = 2\nrequests_per_minute = 6000";

/// The migration fixture with its directory on `url` (else SQLite in `dir`).
fn config_on(dir: &Path, url: Option<&str>) -> Result<PathBuf> {
    let config = migration_config(dir, "pipeline.toml");
    if let Some(url) = url {
        let text = std::fs::read_to_string(&config)?;
        let line = text
            .lines()
            .find(|l| l.starts_with("directory = "))
            .ok_or("the fixture names its directory")?
            .to_owned();
        std::fs::write(
            &config,
            text.replace(&line, &format!("directory = \"{url}\"")),
        )?;
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

#[test]
fn a_job_submitted_to_one_instance_is_answered_by_the_other_on_postgres() -> Result {
    let Some(url) = crate::postgres::fresh_database("jobs_read") else {
        return not_run_without_postgres();
    };
    let dir = tempfile::tempdir()?;
    let config = config_on(dir.path(), Some(&url))?;
    let (a, b) = (
        Serve::start(dir.path(), &config, ""),
        Serve::start(dir.path(), &config, ""),
    );
    let mut file: Vec<Value> = serde_json::from_slice(&users("shared", 2)?)?;
    file.push(user("not-an-address"));
    let id = submitted(&a, serde_json::to_vec(&file)?, "shared-file")?;

    // B knows it at once, and follows it to its end.
    let seen = b.get(&format!("/api/v2/jobs/{id}"));
    assert_eq!(seen.status(), 200);
    let done = wait_for(&b, &id, "finished", finished);
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        done["summary"],
        serde_json::json!({"failed": 1, "updated": 0, "inserted": 2, "total": 3})
    );
    let on_a: Value = a.get(&format!("/api/v2/jobs/{id}")).json()?;
    assert_eq!(on_a, done, "both instances answer the same");
    let errors: Vec<Value> = b.get(&format!("/api/v2/jobs/{id}/errors")).json()?;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["errors"][0]["code"], "FORMAT");
    assert!(
        errors[0]["user"]["custom_password_hash"]["hash"]["value"] == "*****",
        "masked as before: {errors:?}"
    );
    let found: Vec<Value> = b.get("/api/v2/jobs?external_id=shared-file").json()?;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["id"], id.as_str());
    assert_eq!(b.get("/api/v2/jobs/job_nope").status(), 404);
    Ok(())
}

#[test]
fn a_job_whose_instance_is_killed_is_finished_by_the_other_once_its_lease_runs_out_on_postgres()
-> Result {
    let Some(url) = crate::postgres::fresh_database("jobs_kill") else {
        return not_run_without_postgres();
    };
    let dir = tempfile::tempdir()?;
    let config = config_on(dir.path(), Some(&url))?;
    let total = 200;
    let a = Serve::start(dir.path(), &config, SLOW);
    let id = submitted(&a, users("killed", total)?, "killed")?;
    // A runs it (B is not up yet, so it cannot be B).
    let before = wait_for(&a, &id, "ran on A", |job| processing_past(job, 10));
    let b = Serve::start(dir.path(), &config, SLOW);
    let on_b: Value = b.get(&format!("/api/v2/jobs/{id}")).json()?;
    assert!(processing_past(&on_b, percentage(&before)), "{on_b}");
    drop(a); // SIGKILL: A lets go of nothing.

    let after_kill: Value = b.get(&format!("/api/v2/jobs/{id}")).json()?;
    assert!(
        after_kill["status"] == "processing" && percentage(&after_kill) < 100,
        "A was killed in the middle: {after_kill}"
    );
    // B takes it up where A's last commit left it: progress never goes back.
    let mut last = percentage(&after_kill);
    let done = wait_for(&b, &id, "finished on B", |job| {
        let now = percentage(job);
        assert!(
            finished(job) || now >= last,
            "went back from {last}%: {job}"
        );
        last = last.max(now);
        finished(job)
    });
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        done["summary"],
        serde_json::json!({"failed": 0, "updated": 0, "inserted": total, "total": total}),
        "a record done twice would be a DUPLICATED_USER failure"
    );
    assert_eq!(b.get(&format!("/api/v2/jobs/{id}/errors")).status(), 204);
    assert_eq!(
        postgres_users(&url, "killed")?,
        (total as i64, total as i64)
    );
    Ok(())
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

#[test]
fn two_instances_keep_two_active_jobs_between_them_on_postgres() -> Result {
    let Some(url) = crate::postgres::fresh_database("jobs_limit") else {
        return not_run_without_postgres();
    };
    let dir = tempfile::tempdir()?;
    let config = config_on(dir.path(), Some(&url))?;
    let (a, b) = (
        Serve::start(dir.path(), &config, SLOW),
        Serve::start(dir.path(), &config, SLOW),
    );
    let first = submitted(&a, users("limit-a", 40)?, "a")?;
    let second = submitted(&b, users("limit-b", 40)?, "b")?;
    too_many(a.submit(users("limit-c", 1)?, "c", false))?;
    too_many(b.submit(users("limit-c", 1)?, "c", false))?;
    for id in [&first, &second] {
        let done = wait_for(&a, id, "finished", finished);
        assert_eq!(done["status"], "completed", "{done}");
    }

    // Four at once, two on each instance: two are taken, whoever sent them.
    let file = users("race", 40)?;
    let answers: Vec<u16> = std::thread::scope(|scope| {
        let sends: Vec<_> = [&a, &b, &a, &b]
            .into_iter()
            .enumerate()
            .map(|(n, serve)| {
                let file = file.clone();
                scope.spawn(move || serve.submit(file, &format!("race-{n}"), false).status())
            })
            .collect();
        sends
            .into_iter()
            .map(|s| s.join().unwrap().as_u16())
            .collect()
    });
    let mut sorted = answers.clone();
    sorted.sort();
    assert_eq!(sorted, [201, 201, 429, 429], "{answers:?}");
    Ok(())
}

#[test]
fn a_job_survives_its_instances_restart_on_sqlite() -> Result {
    let dir = tempfile::tempdir()?;
    let config = config_on(dir.path(), None)?;
    let total = 200;
    let first = Serve::start(dir.path(), &config, SLOW);
    let id = submitted(&first, users("restart", total)?, "restart")?;
    let before = wait_for(&first, &id, "ran", |job| processing_past(job, 10));
    drop(first); // SIGKILL, mid-job.

    let again = Serve::start(dir.path(), &config, SLOW);
    let resumed: Value = again.get(&format!("/api/v2/jobs/{id}")).json()?;
    assert!(
        processing_past(&resumed, percentage(&before)) && percentage(&resumed) < 100,
        "the job is still there, where it was: {resumed}"
    );
    let done = wait_for(&again, &id, "finished after the restart", finished);
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        done["summary"],
        serde_json::json!({"failed": 0, "updated": 0, "inserted": total, "total": total})
    );
    let rows: i64 = rusqlite::Connection::open(dir.path().join("directory.db"))?.query_row(
        "SELECT COUNT(*) FROM users WHERE email_norm LIKE 'restart%'",
        [],
        |r| r.get(0),
    )?;
    assert_eq!(rows, total as i64);
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

#[test]
fn two_instances_share_one_rate_limit_on_postgres() -> Result {
    let Some(url) = crate::postgres::fresh_database("jobs_rate") else {
        return not_run_without_postgres();
    };
    let dir = tempfile::tempdir()?;
    let config = config_on(dir.path(), Some(&url))?;
    let limit = "requests_per_minute = 4";
    let (a, b) = (
        Serve::start(dir.path(), &config, limit),
        Serve::start(dir.path(), &config, limit),
    );
    // Counted per minute of the host's clock: all in one minute.
    fresh_minute();
    let mut seen = Vec::new();
    for serve in [&a, &b, &a, &b, &a, &b] {
        let response = serve.get("/api/v2/jobs/job_nope");
        let remaining = response.headers()["x-ratelimit-remaining"]
            .to_str()?
            .parse::<u64>()?;
        seen.push((response.status().as_u16(), remaining));
    }
    // Each instance saw three requests: under a limit of 4 each, none would be refused.
    assert_eq!(
        seen,
        [(404, 3), (404, 2), (404, 1), (404, 0), (429, 0), (429, 0)]
    );
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

#[test]
fn a_running_jobs_users_file_is_sealed_in_sqlite_and_its_wal() -> Result {
    let dir = tempfile::tempdir()?;
    let config = config_on(dir.path(), None)?;
    let (file, hash) = secret_file("held", 40)?;
    held_mid_job(dir.path(), &config, file)?;
    let exposure = Exposure::new().databases_under(dir.path());
    exposure.assert_no_phone(PHONE);
    exposure.assert_absent("password hash", &hash);
    Ok(())
}

#[test]
fn a_running_jobs_users_file_is_sealed_in_postgres() -> Result {
    let Some(url) = crate::postgres::fresh_database("jobs_sealed") else {
        return not_run_without_postgres();
    };
    let dir = tempfile::tempdir()?;
    let config = config_on(dir.path(), Some(&url))?;
    let (file, hash) = secret_file("held", 40)?;
    let id = held_mid_job(dir.path(), &config, file)?;
    let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
    let row = client.query_one(
        "SELECT status, users_file, users_file_key_id, t::text FROM import_jobs t WHERE id = $1",
        &[&id],
    )?;
    assert_eq!(row.get::<_, String>(0), "processing");
    let stored: Vec<u8> = row.get(1);
    assert!(!stored.is_empty(), "the file is kept while the job runs");
    assert!(
        row.get::<_, Option<String>>(2).is_some(),
        "sealed: a key id"
    );
    let exposure = Exposure::new()
        .text("import_jobs.users_file", &stored)
        .text("import_jobs row", row.get::<_, String>(3));
    exposure.assert_no_phone(PHONE);
    exposure.assert_absent("password hash", &hash);
    Ok(())
}

/// A job stored by the version before the file was sealed, its file in clear, left
/// running by an instance that died: today's instance upgrades the database, reads the
/// clear file as it is, and finishes the job (which then drops the file).
#[test]
fn a_clear_file_from_before_the_upgrade_is_still_run() -> Result {
    let dir = tempfile::tempdir()?;
    let config = config_on(dir.path(), None)?;
    // A directory at version 13: today's, without what migration 14 added.
    drop(portcullis::state::SqliteState::open(
        &dir.path().join("directory.db"),
    )?);
    let db = rusqlite::Connection::open(dir.path().join("directory.db"))?;
    db.execute_batch(
        "ALTER TABLE import_jobs DROP COLUMN users_file_key_id;
         ALTER TABLE import_jobs DROP COLUMN users_file_nonce;
         ALTER TABLE import_jobs DROP COLUMN stalled_at;
         ALTER TABLE import_jobs DROP COLUMN takeovers;
         DELETE FROM schema_migrations WHERE version = 14;",
    )?;
    db.execute(
        "INSERT INTO import_jobs (id, status, connection_id, upsert, send_completion_email,
             users_file, total, done, inserted, updated, failed, created_at_ms, started_at_ms,
             updated_at_ms, lease_owner, lease_until_ms)
         VALUES ('job_old', 'processing', 'con_portcullis', 0, 0, ?1, 3, 1, 1, 0, 0, ?2, ?2, ?2,
                 'serve-dead', 0)",
        rusqlite::params![
            users("old", 3)?,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis() as i64
        ],
    )?;
    drop(db);
    let serve = Serve::start(dir.path(), &config, "");
    let done = wait_for(&serve, "job_old", "finished", finished);
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        done["summary"],
        json!({"failed": 0, "updated": 0, "inserted": 3, "total": 3}),
        "went on from record 1"
    );
    let db = rusqlite::Connection::open(dir.path().join("directory.db"))?;
    let (rows, file): (i64, Option<Vec<u8>>) = (
        db.query_row(
            "SELECT COUNT(*) FROM users WHERE email_norm LIKE 'old%'",
            [],
            |r| r.get(0),
        )?,
        db.query_row(
            "SELECT users_file FROM import_jobs WHERE id = 'job_old'",
            [],
            |r| r.get(0),
        )?,
    );
    assert_eq!(rows, 2, "record 0 was the dead instance's");
    assert!(file.is_none(), "an ended job's file is dropped");
    Ok(())
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

/// A file sealed under a key the ring no longer holds (a key dropped from `[mfa]` too
/// early in a rotation) fails its job, saying which key, never anything of the file.
#[test]
fn a_file_sealed_with_a_key_the_ring_lacks_fails_its_job_saying_which() -> Result {
    let dir = tempfile::tempdir()?;
    let config = config_on(dir.path(), None)?;
    let state: &dyn StateStore =
        &portcullis::state::SqliteState::open(&dir.path().join("directory.db"))?;
    let mut job = stored_job("job_rotated", &users("rotated", 2)?);
    job.created_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    assert_eq!(state.insert_import_job(&job, 2)?, Admission::Stored);
    let serve = Serve::start(dir.path(), &config, "");
    let failed = wait_for(&serve, "job_rotated", "failed", finished);
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(
        failed["status_details"],
        "The users file was sealed with key \"t1\", which is not in the [mfa] key ring"
    );
    Ok(())
}

/// A refused record's secrets stay hidden however deep they sit: a pepper or a
/// plaintext password put in a property Auth0's schema does not know, inside
/// `custom_password_hash` or its `hash`, `hash.key`, `salt` or `password` (refused as
/// additional properties, like a top-level one), is shown as `*****` by the errors
/// endpoint, and is not kept in clear in the job's errors in SQLite or its WAL.
#[test]
fn a_refused_records_nested_secrets_are_hidden_in_its_errors_on_sqlite() -> Result {
    let dir = tempfile::tempdir()?;
    let config = config_on(dir.path(), None)?;
    let serve = Serve::start(dir.path(), &config, "");
    let mut record = user("not-an-address");
    let custom = record["custom_password_hash"]
        .as_object_mut()
        .ok_or("a custom hash")?;
    custom.insert("plaintext".into(), json!("Nested-Secret-0"));
    custom["hash"]["backup"] = json!("Nested-Secret-1");
    custom["hash"]["key"] = json!({"value": "k", "old_value": "Nested-Secret-2"});
    custom.insert(
        "salt".into(),
        json!({"value": "s", "pepper": "Nested-Secret-3"}),
    );
    custom.insert(
        "password".into(),
        json!({"encoding": "utf8", "value": "Nested-Secret-4"}),
    );
    let id = submitted(&serve, serde_json::to_vec(&json!([record]))?, "nested")?;
    let done = wait_for(&serve, &id, "finished", finished);
    assert_eq!(done["summary"]["failed"], 1, "{done}");
    let errors = serve.get(&format!("/api/v2/jobs/{id}/errors")).text()?;
    assert!(errors.contains("OBJECT_ADDITIONAL_PROPERTIES"), "{errors}");
    let shown: Vec<Value> = serde_json::from_str(&errors)?;
    // What is not secret is still shown, as Auth0 shows it.
    assert_eq!(
        shown[0]["user"]["custom_password_hash"]["algorithm"],
        "sha1"
    );
    assert_eq!(
        shown[0]["user"]["custom_password_hash"]["password"]["encoding"],
        "utf8"
    );
    let seen = Exposure::new()
        .text("the errors endpoint", &errors)
        .databases_under(dir.path());
    for n in 0..5 {
        seen.assert_absent(
            "secret in an unknown property",
            &format!("Nested-Secret-{n}"),
        );
    }
    Ok(())
}

/// The shared rate limit is the token holder's: requests without the import token (none,
/// a wrong one, or a gateway caller's) are refused before they are counted, so a
/// stranger cannot spend the minute's allowance and lock the importer out.
#[test]
fn requests_without_the_import_token_do_not_spend_its_rate_limit_on_sqlite() -> Result {
    let dir = tempfile::tempdir()?;
    let config = config_on(dir.path(), None)?;
    let serve = Serve::start(dir.path(), &config, "requests_per_minute = 5");
    fresh_minute();
    let client = reqwest::blocking::Client::new();
    let jobs = format!("{}/api/v2/jobs/job_nope", serve.url);
    let submit = format!("{}/api/v2/jobs/users-imports", serve.url);
    for bearer in [
        None,
        Some("test-import-api-token-0123456789abcdeX"),
        Some("test-gateway-token-0123456789abcdef"),
    ] {
        for _ in 0..4 {
            let mut get = client.get(&jobs);
            let form = reqwest::blocking::multipart::Form::new()
                .part(
                    "users",
                    reqwest::blocking::multipart::Part::bytes(users("x", 1)?),
                )
                .text("connection_id", "con_portcullis");
            let mut post = client.post(&submit).multipart(form);
            if let Some(bearer) = bearer {
                get = get.bearer_auth(bearer);
                post = post.bearer_auth(bearer);
            }
            for request in [get, post] {
                // Refused, or the connection closed on it: never answered as counted.
                if let Ok(response) = request.send() {
                    assert_eq!(response.status(), 401, "{bearer:?}");
                    assert!(response.headers().get("x-ratelimit-remaining").is_none());
                }
            }
        }
    }
    let counted = serve.get("/api/v2/jobs/job_nope");
    assert_eq!(counted.status(), 404);
    assert_eq!(counted.headers()["x-ratelimit-remaining"], "4");
    Ok(())
}
