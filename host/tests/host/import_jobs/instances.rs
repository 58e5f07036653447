//! Import jobs shared by instances: answered by any, finished by another after a kill,
//! their limits and rate limit shared.

use serde_json::Value;

use crate::common::Result;
use crate::import::{Serve, fresh_minute, user};

use super::{
    SLOW, config_on, finished, not_run_without_postgres, percentage, postgres_users,
    processing_past, submitted, too_many, users, wait_for,
};

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
