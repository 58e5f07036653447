//! The users-imports API's jobs in the shared state (`state::import_jobs`), with real
//! `portcullis serve` processes: two over one PostgreSQL directory answer for each
//! other's jobs, keep Auth0's limit of 2 active jobs between them, and one takes up a
//! job whose instance was killed (`kill -9`) once its lease ran out, without importing
//! anyone twice, and share one rate limit; on SQLite a job survives its instance's
//! restart. The PostgreSQL
//! tests run when PORTCULLIS_TEST_POSTGRES is set (and say so when they do not).
//!
//! Jobs are made slow with `users_per_second` (the API's own pacing knob), never by
//! sleeping in the test: the test waits for what it needs to see (a job processing,
//! then finished), each wait bounded.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use portcullis::state::import_jobs::{Admission, JobStatus, JobStep, NewImportJob, StepOutcome};
use portcullis::state::{ImportRecord, StateStore};
use serde_json::Value;

use crate::common::{Result, migration_config};
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
fn leases_fence_writers(state: &dyn StateStore) -> Result {
    let job = |id: &str| NewImportJob {
        id: id.into(),
        connection_id: "con_portcullis".into(),
        external_id: Some("fence".into()),
        upsert: false,
        send_completion_email: false,
        users_file: b"[{}]".to_vec(),
        created_at_ms: 1_000,
    };
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
    assert_eq!(claimed.users_file, b"[{}]");
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
