//! A job as Auth0's API answers it (and its SDKs parse it).

use serde_json::{Value, json};

use crate::state::import_jobs::{ImportJob, JobStatus};

/// `GET /api/v2/jobs/{id}`'s body; `now_ms` (the host's clock) for the time left.
pub(super) fn job_json(job: &ImportJob, now_ms: u64) -> Value {
    let created = std::time::UNIX_EPOCH + std::time::Duration::from_millis(job.created_at_ms);
    let mut body = json!({
        "type": "users_import",
        "status": job.status.name(),
        "id": job.id,
        "connection_id": job.connection_id,
        "created_at": humantime::format_rfc3339_millis(created).to_string(),
        "upsert": job.upsert,
        "send_completion_email": job.send_completion_email,
    });
    if let Some(external) = &job.external_id {
        body["external_id"] = json!(external);
    }
    match job.status {
        JobStatus::Processing => {
            let (done, total) = (job.done, job.summary.total);
            body["percentage_done"] = json!((done * 100).checked_div(total).unwrap_or(0));
            if let Some(started) = job.started_at_ms
                && done > 0
            {
                // From the first start: time a taker-over lost is in the rate too.
                let per_user = now_ms.saturating_sub(started) as f64 / 1000.0 / done as f64;
                body["time_left_seconds"] =
                    json!((per_user * total.saturating_sub(done) as f64).ceil() as u64);
            }
        }
        JobStatus::Completed | JobStatus::Expired | JobStatus::Failed => {
            body["summary"] = json!({
                "failed": job.summary.failed,
                "updated": job.summary.updated,
                "inserted": job.summary.inserted,
                "total": job.summary.total,
            });
            // Why it failed or expired, where Auth0 and its SDKs read it.
            if let Some(details) = &job.status_details {
                body["status_details"] = json!(details);
            }
        }
        JobStatus::Pending => {}
    }
    body
}
