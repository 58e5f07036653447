//! Support agents' requests for dangerous actions (removing a factor, completing an
//! assisted recovery, changing an email): asked by one agent with evidence, approved
//! by another, then carried out once the waiting period has passed (or at once when
//! both agents recorded why it may be skipped).

use serde::Serialize;

use super::StoreError;
use super::portable::{SqlTx, Val};
use crate::model::{SupportAction, SupportStatus};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS support_requests (
    id TEXT PRIMARY KEY,
    action TEXT NOT NULL,
    user_id TEXT NOT NULL,
    params TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    evidence TEXT NOT NULL,
    reason TEXT NOT NULL,
    skip_wait_reason TEXT,
    approved_by TEXT,
    approval_evidence TEXT,
    approval_skip_reason TEXT,
    status TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    ready_at_ms BIGINT,
    finished_at_ms BIGINT
);
CREATE INDEX IF NOT EXISTS support_requests_user ON support_requests(user_id);
";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SupportRequest {
    pub id: String,
    pub action: SupportAction,
    pub user_id: String,
    /// JSON object: what the action needs (`factor_id`, `email`).
    pub params: serde_json::Value,
    pub requested_by: String,
    pub evidence: String,
    pub reason: String,
    pub skip_wait_reason: Option<String>,
    pub approved_by: Option<String>,
    pub approval_evidence: Option<String>,
    pub approval_skip_reason: Option<String>,
    pub status: SupportStatus,
    pub created_at_ms: u64,
    /// When an approved request may be carried out.
    pub ready_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
}

const COLUMNS: &str = "id, action, user_id, params, requested_by, evidence, reason, skip_wait_reason, \
    approved_by, approval_evidence, approval_skip_reason, status, created_at_ms, ready_at_ms, finished_at_ms";

/// Only this module writes a request: a name it does not know is a store edited by
/// hand, and must not read as an open (or a closed) request.
fn named<T>(
    id: &str,
    what: &str,
    parse: fn(&str) -> Option<T>,
    name: String,
) -> Result<T, StoreError> {
    parse(&name).ok_or_else(|| {
        StoreError::Backend(format!(
            "support request {id} has an unknown {what} {name:?}"
        ))
    })
}

fn request_row(row: Vec<Val>) -> Result<SupportRequest, StoreError> {
    let mut v = row.into_iter();
    let mut next = || v.next().unwrap_or(Val::Text(None));
    let id = next().into_text().unwrap_or_default();
    let action = named(
        &id,
        "action",
        SupportAction::parse,
        next().into_text().unwrap_or_default(),
    )?;
    let user_id = next().into_text().unwrap_or_default();
    let params = super::parse_json(next().into_text().unwrap_or_default());
    let requested_by = next().into_text().unwrap_or_default();
    let evidence = next().into_text().unwrap_or_default();
    let reason = next().into_text().unwrap_or_default();
    let skip_wait_reason = next().into_text();
    let approved_by = next().into_text();
    let approval_evidence = next().into_text();
    let approval_skip_reason = next().into_text();
    let status = named(
        &id,
        "status",
        SupportStatus::parse,
        next().into_text().unwrap_or_default(),
    )?;
    let created_at_ms = super::stored_time(next().as_int().unwrap_or(0));
    let ready_at_ms = next().as_int().map(super::stored_time);
    let finished_at_ms = next().as_int().map(super::stored_time);
    Ok(SupportRequest {
        id,
        action,
        user_id,
        params,
        requested_by,
        evidence,
        reason,
        skip_wait_reason,
        approved_by,
        approval_evidence,
        approval_skip_reason,
        status,
        created_at_ms,
        ready_at_ms,
        finished_at_ms,
    })
}

pub fn insert(tx: &mut dyn SqlTx, request: &SupportRequest) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO support_requests (id, action, user_id, params, requested_by, evidence, reason,
                                       skip_wait_reason, status, created_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            Val::text(&request.id),
            Val::text(request.action.name()),
            Val::text(&request.user_id),
            Val::text(request.params.to_string()),
            Val::text(&request.requested_by),
            Val::text(&request.evidence),
            Val::text(&request.reason),
            Val::Text(request.skip_wait_reason.clone()),
            Val::text(request.status.name()),
            Val::int(super::sql_time(request.created_at_ms)),
        ],
    )?;
    Ok(())
}

pub fn get(tx: &mut dyn SqlTx, id: &str) -> Result<Option<SupportRequest>, StoreError> {
    tx.query(
        &format!("SELECT {COLUMNS} FROM support_requests WHERE id = $1"),
        &[Val::text(id)],
    )?
    .into_iter()
    .next()
    .map(request_row)
    .transpose()
}

pub fn of_user(tx: &mut dyn SqlTx, user_id: &str) -> Result<Vec<SupportRequest>, StoreError> {
    tx.query(
        &format!(
            "SELECT {COLUMNS} FROM support_requests WHERE user_id = $1 ORDER BY created_at_ms, id"
        ),
        &[Val::text(user_id)],
    )?
    .into_iter()
    .map(request_row)
    .collect()
}

/// Records the second agent's approval; false when the request was not awaiting
/// one, or the approver is the requester (the database refuses it too).
pub fn approve(
    tx: &mut dyn SqlTx,
    id: &str,
    approver: &str,
    evidence: &str,
    skip_reason: Option<&str>,
    ready_at_ms: u64,
) -> Result<bool, StoreError> {
    Ok(tx.execute(
        "UPDATE support_requests SET approved_by = $2, approval_evidence = $3, approval_skip_reason = $4,
             status = 'approved', ready_at_ms = $5
         WHERE id = $1 AND status = 'awaiting-approval' AND requested_by <> $2",
        &[
            Val::text(id),
            Val::text(approver),
            Val::text(evidence),
            Val::Text(skip_reason.map(str::to_owned)),
            Val::int(super::sql_time(ready_at_ms)),
        ],
    )? == 1)
}

/// Moves a request on (`approved` → `done`, anything open → `cancelled`).
pub fn finish(
    tx: &mut dyn SqlTx,
    id: &str,
    from: SupportStatus,
    to: SupportStatus,
    now_ms: u64,
) -> Result<bool, StoreError> {
    Ok(tx.execute(
        "UPDATE support_requests SET status = $3, finished_at_ms = $4 WHERE id = $1 AND status = $2",
        &[
            Val::text(id),
            Val::text(from.name()),
            Val::text(to.name()),
            Val::int(super::sql_time(now_ms)),
        ],
    )? == 1)
}
