//! The support console's actions, with their guardrails. Every call names the agent
//! (authenticated by the admin API with the agent's own token) and is written to the
//! hash-chained audit log with its reason and outcome, refusals included.
//!
//! - Looking a user up shows masked data only.
//! - Undoable actions are one agent's: unlink a legacy account, force a password
//!   reset, put a user's SMS factor back on the old provider.
//! - Dangerous ones (remove a factor, complete an assisted recovery, change the
//!   email) are requests: one agent asks with evidence (an identity-verification
//!   reference), another approves with their own, the requester never; then the
//!   waiting period runs unless both recorded a reason to skip it. The user is told on
//!   every channel at each step.

use crate::model::{
    FactorStatus, RecoveryPath, RecoveryStage, SupportAction, SupportStatus, normalize_email,
};
use serde_json::{Value, json};

use super::Gateway;
use super::clock::Clock;
use super::recovery::RecoveryPolicy;
use crate::state::StateStore;
use crate::state::audit::{self, AuditEntry};

use crate::state::StoreError;
use crate::state::portable::{Val, transact};
use crate::state::recovery::{self as recovery_store, Notice, Recovery};
use crate::state::support::{self as requests, SupportRequest};

const HOUR_MS: u64 = 3_600_000;
/// Evidence, reasons: enough for a ticket reference and a sentence.
const MAX_TEXT: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum SupportError {
    #[error("not found: {0}")]
    NotFound(String),
    /// The guardrails said no (two-person rule, waiting period).
    #[error("refused: {0}")]
    Refused(String),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SupportError {
    pub fn status(&self) -> u16 {
        match self {
            Self::NotFound(_) => 404,
            Self::Refused(_) => 403,
            Self::Invalid(_) => 400,
            Self::Store(StoreError::Conflict(_)) => 409,
            Self::Store(_) => 503,
        }
    }
}

/// Why `remove-factor` never takes a user's last factor: the account would then open
/// to whoever has the password, who could sign in and enrol their own phone.
const ONLY_FACTOR: &str = "this is the user's only active factor: removing it would leave the \
    account to whoever has the password. Use complete-recovery instead: the person you \
    verified gets an enrolment link, and the old factor stops working once the new one is set up";

fn required(what: &str, text: &str) -> Result<String, SupportError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(SupportError::Invalid(format!("{what} is required")));
    }
    if text.len() > MAX_TEXT {
        return Err(SupportError::Invalid(format!(
            "{what} is at most {MAX_TEXT} bytes"
        )));
    }
    Ok(text.to_owned())
}

fn optional(what: &str, text: Option<&str>) -> Result<Option<String>, SupportError> {
    text.filter(|t| !t.trim().is_empty())
        .map(|t| required(what, t))
        .transpose()
}

/// A masked address: the first letter and the domain.
fn masked_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => format!("{}***@{domain}", local.chars().next().unwrap_or('*')),
        None => "***".into(),
    }
}

/// An assisted recovery's recovery, link proof and link notice, written together.
struct AssistedLink {
    recovery: Recovery,
    proof: super::proof::Issued,
    notices: Vec<Notice>,
}

/// What a new support request carries.
pub struct NewRequest<'a> {
    pub action: &'a str,
    pub user_id: &'a str,
    pub params: Value,
    pub evidence: &'a str,
    pub reason: &'a str,
    pub skip_wait_reason: Option<&'a str>,
}

/// The support console: its own service over the shared state, the host's clock
/// and the recovery policy, as each flow is. `Gateway::support` lends it what it needs.
pub struct SupportConsole<'g> {
    state: &'g dyn StateStore,
    clock: &'g dyn Clock,
    recovery: Option<&'g RecoveryPolicy>,
    /// The waiting period of an approved dangerous action.
    wait_hours: u64,
    /// Where the codes a provider holds open are cancelled (an assisted recovery
    /// abandons the enrolments of the one it replaces).
    codes: &'g Gateway,
}

impl Gateway {
    /// The support console over this gateway's state, clock and policy.
    pub fn support(&self) -> SupportConsole<'_> {
        SupportConsole {
            state: self.state.as_ref(),
            clock: self.clock.as_ref(),
            recovery: self.recovery.as_ref(),
            wait_hours: self.support_wait_hours,
            codes: self,
        }
    }
}

impl SupportConsole<'_> {
    fn agent_entry(&self, agent: &str, action: &str, subject: &str) -> AuditEntry {
        AuditEntry::new(
            self.clock.now_ms(),
            format!("agent:{agent}"),
            action,
            subject,
        )
    }

    /// Records a refusal too: who tried what is audit material.
    fn refuse(
        &self,
        agent: &str,
        action: &str,
        subject: &str,
        error: SupportError,
    ) -> SupportError {
        let entry = self
            .agent_entry(agent, action, subject)
            .outcome("refused")
            .reason(&error.to_string());
        if let Err(e) = audit::record(self.state.sql(), &entry) {
            tracing::error!("auditing a refused support action failed: {e}");
        }
        error
    }

    fn user_notices(
        &self,
        user_id: &str,
        key: &str,
        event: &str,
        message: &str,
    ) -> Result<Vec<Notice>, SupportError> {
        let user = self
            .state
            .get_user(user_id)
            .map_err(|e| StoreError::Backend(e.message))?
            .ok_or_else(|| SupportError::NotFound("no such user".into()))?;
        Ok(super::recovery::notices(
            &user,
            &self.state.factors_of(&user.id)?,
            key,
            event,
            message,
            None,
            "If you did not ask support for this, reply to this notice or call us at once.",
        ))
    }

    /// A user by email, masked: factors (never a phone), logins, recoveries, open
    /// requests and the audit trail.
    pub fn lookup(&self, agent: &str, email: &str) -> Result<Value, SupportError> {
        let users = self
            .state
            .find_by_email(email)
            .map_err(|e| StoreError::Backend(e.message))?;
        let Some(user) = users.into_iter().next() else {
            audit::record(
                self.state.sql(),
                &self
                    .agent_entry(agent, "support-lookup", "-")
                    .outcome("not-found"),
            )?;
            return Err(SupportError::NotFound("no user with that email".into()));
        };
        let sql = self.state.sql();
        audit::record(sql, &self.agent_entry(agent, "support-lookup", &user.id))?;
        let factors: Vec<Value> = self
            .state
            .factors_of(&user.id)?
            .iter()
            .map(|f| {
                json!({
                    "id": f.id, "provider": f.provider.name(), "status": f.status.name(),
                    "phone_on_file": f.phone.is_some(),
                    "legacy_id_on_file": f.legacy_provider_user_id.is_some(),
                    "cohort": f.cohort, "reverted": f.reverted,
                    "enrolled_at_ms": f.enrolled_at_ms, "last_used_ms": f.last_used_ms,
                })
            })
            .collect();
        let open_requests = transact(sql, |tx| requests::of_user(tx, &user.id))?;
        Ok(json!({
            "user_id": user.id,
            "email": user.email.as_deref().map(masked_email),
            "email_verified": user.email_verified,
            "created_at_ms": user.created_at_ms,
            "last_login_ms": user.last_login_ms,
            "logins_count": user.logins_count,
            "legacy_accounts": user.identities.iter().map(|i| json!({"product": i.provider, "legacy_id": i.user_id})).collect::<Vec<_>>(),
            "factors": factors,
            "sessions_revoked_at_ms": recovery_store::sessions_revoked_at(sql, &user.id)?,
            "recovery_codes_left": recovery_store::codes_left(sql, &user.id)?,
            "recoveries": recovery_store::recoveries_of(sql, &user.id)?,
            "requests": open_requests,
            "audit": audit::rows_about(sql, &user.id)?,
        }))
    }

    /// One agent asks for a dangerous action, with evidence.
    pub fn request(
        &self,
        agent: &str,
        new: NewRequest<'_>,
    ) -> Result<SupportRequest, SupportError> {
        let check = || -> Result<SupportRequest, SupportError> {
            let Some(action) = SupportAction::parse(new.action) else {
                let names: Vec<_> = SupportAction::ALL.iter().map(|a| a.name()).collect();
                return Err(SupportError::Invalid(format!(
                    "action must be one of {}",
                    names.join(", ")
                )));
            };
            let evidence = required(
                "evidence (e.g. an identity-verification reference)",
                new.evidence,
            )?;
            let reason = required("reason", new.reason)?;
            let skip = optional("skip_wait_reason", new.skip_wait_reason)?;
            if self
                .state
                .get_user(new.user_id)
                .map_err(|e| StoreError::Backend(e.message))?
                .is_none()
            {
                return Err(SupportError::NotFound("no such user".into()));
            }
            let params = match action {
                SupportAction::RemoveFactor => {
                    let id = new.params["factor_id"].as_str().unwrap_or_default();
                    let factors = self.state.factors_of(new.user_id)?;
                    if !factors
                        .iter()
                        .any(|f| f.id == id && f.status == FactorStatus::Active)
                    {
                        return Err(SupportError::Invalid(
                            "factor_id names no active factor of the user".into(),
                        ));
                    }
                    if !factors
                        .iter()
                        .any(|f| f.id != id && f.status == FactorStatus::Active)
                    {
                        return Err(SupportError::Invalid(ONLY_FACTOR.into()));
                    }
                    json!({"factor_id": id})
                }
                SupportAction::ChangeEmail => {
                    let email = new.params["email"].as_str().unwrap_or_default();
                    if email.len() > 254 || !email.contains('@') {
                        return Err(SupportError::Invalid("email is not an address".into()));
                    }
                    json!({"email": email})
                }
                SupportAction::CompleteRecovery => json!({}),
            };
            Ok(SupportRequest {
                id: format!("req_{}", crate::model::random_id()),
                action,
                user_id: new.user_id.into(),
                params,
                requested_by: agent.into(),
                evidence,
                reason,
                skip_wait_reason: skip,
                approved_by: None,
                approval_evidence: None,
                approval_skip_reason: None,
                status: SupportStatus::AwaitingApproval,
                created_at_ms: self.clock.now_ms(),
                ready_at_ms: None,
                finished_at_ms: None,
            })
        };
        let request = check().map_err(|e| self.refuse(agent, "support-request", new.user_id, e))?;
        let told = self.user_notices(
            &request.user_id,
            &request.id,
            "support-action-requested",
            &format!("Support was asked to {} on your account.", request.action),
        )?;
        let sql = self.state.sql();
        transact(sql, |tx| {
            requests::insert(tx, &request)?;
            recovery_store::enqueue(tx, &told, request.created_at_ms, &request.id)?;
            audit::append(
                sql,
                tx,
                &self
                    .agent_entry(agent, "support-request", &request.user_id)
                    .reason(&request.reason)
                    .details(json!({
                        "request": request.id, "action": request.action, "params": request.params,
                        "evidence": request.evidence, "skip_wait_reason": request.skip_wait_reason,
                    })),
            )?;
            Ok(())
        })?;
        Ok(request)
    }

    fn stored_request(&self, id: &str) -> Result<SupportRequest, SupportError> {
        transact(self.state.sql(), |tx| requests::get(tx, id))?
            .ok_or_else(|| SupportError::NotFound("no such request".into()))
    }

    /// A second agent approves, with evidence of their own. The waiting period starts
    /// now, unless both agents gave a reason to skip it.
    pub fn approve(
        &self,
        agent: &str,
        id: &str,
        evidence: &str,
        skip_wait_reason: Option<&str>,
    ) -> Result<SupportRequest, SupportError> {
        let request = self.stored_request(id)?;
        let refuse = |e| self.refuse(agent, "support-approve", &request.user_id, e);
        if request.requested_by == agent {
            return Err(refuse(SupportError::Refused(
                "the agent who asked cannot approve: a second agent must".into(),
            )));
        }
        if request.status != SupportStatus::AwaitingApproval {
            return Err(refuse(SupportError::Refused(format!(
                "the request is {}",
                request.status
            ))));
        }
        let evidence = required("evidence", evidence).map_err(refuse)?;
        let skip = optional("skip_wait_reason", skip_wait_reason).map_err(refuse)?;
        let now_ms = self.clock.now_ms();
        let skipped = skip.is_some() && request.skip_wait_reason.is_some();
        let ready_at_ms = if skipped {
            now_ms
        } else {
            now_ms.saturating_add(self.wait_hours * HOUR_MS)
        };
        let told = self.user_notices(
            &request.user_id,
            &request.id,
            "support-action-approved",
            &format!(
                "Support will {} on your account{}.",
                request.action,
                if skipped {
                    " now"
                } else {
                    " after the waiting period"
                }
            ),
        )?;
        let sql = self.state.sql();
        let approved = transact(sql, |tx| {
            if !requests::approve(tx, id, agent, &evidence, skip.as_deref(), ready_at_ms)? {
                return Ok(false);
            }
            recovery_store::enqueue(tx, &told, now_ms, &request.id)?;
            audit::append(
                sql,
                tx,
                &self
                    .agent_entry(agent, "support-approve", &request.user_id)
                    .reason(skip.as_deref().unwrap_or_default())
                    .details(json!({
                        "request": request.id, "evidence": evidence,
                        "ready_at_ms": ready_at_ms, "wait_skipped": skipped,
                    })),
            )?;
            Ok(true)
        })?;
        if !approved {
            return Err(refuse(SupportError::Refused(
                "the request changed meanwhile".into(),
            )));
        }
        self.stored_request(id)
    }

    /// Carries out an approved request once its waiting period is over.
    pub fn execute(&self, agent: &str, id: &str) -> Result<SupportRequest, SupportError> {
        let request = self.stored_request(id)?;
        let refuse = |e| self.refuse(agent, "support-execute", &request.user_id, e);
        if request.status != SupportStatus::Approved {
            return Err(refuse(SupportError::Refused(format!(
                "the request is {}: it needs a second agent's approval first",
                request.status
            ))));
        }
        let now_ms = self.clock.now_ms();
        let ready_at_ms = request.ready_at_ms.unwrap_or(u64::MAX);
        if now_ms < ready_at_ms {
            return Err(refuse(SupportError::Refused(format!(
                "the waiting period runs until {}",
                crate::error::utc_time(ready_at_ms)
            ))));
        }
        let told = self.user_notices(
            &request.user_id,
            &request.id,
            "support-action-done",
            &format!("Support did {} on your account.", request.action),
        )?;
        let window = self
            .recovery
            .as_ref()
            .map_or(72, |p| p.settings.enrol_window_hours);
        let assisted = match request.action {
            SupportAction::CompleteRecovery => Some(
                self.assisted_link(&request, now_ms, window)
                    .map_err(refuse)?,
            ),
            SupportAction::RemoveFactor | SupportAction::ChangeEmail => None,
        };
        let sql = self.state.sql();
        let dialect = sql.dialect();
        transact(sql, |tx| {
            if !requests::finish(tx, id, SupportStatus::Approved, SupportStatus::Done, now_ms)? {
                return Err(StoreError::Conflict("the request changed meanwhile".into()));
            }
            let user = Val::text(&request.user_id);
            let now = Val::int(crate::state::sql_time(now_ms));
            match request.action {
                SupportAction::RemoveFactor => {
                    let factor = Val::text(request.params["factor_id"].as_str().unwrap_or_default());
                    // Checked again here, under the user's factor lock: the other
                    // factor may have gone since the request was made, or be going in
                    // another execution right now.
                    crate::state::factors::rows::lock_factor_set(tx, dialect, &request.user_id)?;
                    let others = tx.query(
                        "SELECT COUNT(*) FROM factors WHERE user_id = $1 AND id <> $2 AND status = 'active'",
                        &[user.clone(), factor.clone()],
                    )?;
                    if others.first().and_then(|r| r[0].as_int()).unwrap_or(0) == 0 {
                        return Err(StoreError::Conflict(ONLY_FACTOR.into()));
                    }
                    tx.execute(
                        "UPDATE factors SET status = 'disabled', updated_at_ms = $3
                         WHERE user_id = $1 AND id = $2 AND status = 'active'",
                        &[user, factor, now],
                    )?;
                }
                SupportAction::ChangeEmail => {
                    let email = request.params["email"].as_str().unwrap_or_default();
                    tx.execute(
                        "UPDATE users SET email = $2, email_norm = $3, email_verified = FALSE WHERE id = $1",
                        &[user, Val::text(email), Val::text(normalize_email(email))],
                    )
                    .map_err(|e| StoreError::Conflict(format!("the email cannot be taken: {e}")))?;
                }
                SupportAction::CompleteRecovery => {
                    // The person the agents verified enrols a new factor through the
                    // link sent to the channel they verified; no login can reach it.
                    let Some(link) = &assisted else {
                        return Err(StoreError::Conflict("no enrolment link was made".into()));
                    };
                    if let Some(open) = recovery_store::open_in(tx, &request.user_id, now_ms)? {
                        recovery_store::set_status(tx, &open.id, open.status, RecoveryStage::Cancelled, "superseded by an assisted recovery", now_ms)?;
                        recovery_store::disable_enrolled_by(tx, &open.id, now_ms)?;
                    }
                    recovery_store::insert(tx, &link.recovery)?;
                    crate::state::proofs::insert_in(tx, &link.proof.digest, &link.proof.row)?;
                    recovery_store::enqueue(tx, &link.notices, now_ms, &request.id)?;
                }
            }
            recovery_store::enqueue(tx, &told, now_ms, &request.id)?;
            audit::append(
                sql,
                tx,
                &self
                    .agent_entry(agent, "support-execute", &request.user_id)
                    .details(json!({"request": request.id, "action": request.action})),
            )?;
            Ok(())
        })
        .map_err(|e| match e {
            StoreError::Conflict(m) => refuse(SupportError::Refused(m)),
            other => SupportError::Store(other),
        })?;
        if assisted.is_some() {
            // The assisted recovery replaced any under way: their enrolments' codes
            // stop working now.
            self.codes
                .cancel_open_codes(&request.user_id, crate::state::open_codes::ENROL);
        }
        self.stored_request(id)
    }

    /// What executing an assisted recovery writes: the recovery, waiting for a new
    /// factor at once; a single-use, expiring proof for it (its digest only is kept);
    /// and the notice carrying the link, to the email on file only: the channel the
    /// agents verified (a changed address goes through `change-email` first).
    fn assisted_link(
        &self,
        request: &SupportRequest,
        now_ms: u64,
        window_hours: u64,
    ) -> Result<AssistedLink, SupportError> {
        let enrol_url = self
            .recovery
            .as_ref()
            .map(|p| p.settings.enrol_url.clone())
            .ok_or_else(|| {
                SupportError::Refused("an assisted recovery needs [recovery] in the config".into())
            })?;
        let recovery = Recovery {
            id: format!("rcv_{}", crate::model::random_id()),
            user_id: request.user_id.clone(),
            path: RecoveryPath::Assisted,
            status: RecoveryStage::Enrolling,
            requested_at_ms: request.created_at_ms,
            ready_at_ms: now_ms,
            expires_at_ms: now_ms.saturating_add(window_hours * HOUR_MS),
            reasons: vec![format!("support request {}", request.id)],
            cancel_digest: String::new(),
            finished_at_ms: None,
            outcome: None,
        };
        let proof = super::proof::new_proof(
            &request.user_id,
            &[super::proof::Shown::SupportVerified],
            Some(&recovery.id),
            now_ms,
            window_hours * HOUR_MS,
            true,
        );
        let mut notices: Vec<Notice> = self
            .user_notices(
                &request.user_id,
                &recovery.id,
                "support-enrolment-link",
                "Support verified your identity: use this link, once, to set up a new second \
                 factor. It expires, and nobody else can use it.",
            )?
            .into_iter()
            .filter(|n| n.channel == "email")
            .collect();
        if notices.is_empty() {
            return Err(SupportError::Refused(
                "the user has no email on file to send the enrolment link to".into(),
            ));
        }
        for notice in &mut notices {
            notice.enrol_url = Some(format!("{enrol_url}?token={}", proof.token));
        }
        Ok(AssistedLink {
            recovery,
            proof,
            notices,
        })
    }

    /// Withdraws an open request (any agent; the user is told).
    pub fn cancel(
        &self,
        agent: &str,
        id: &str,
        reason: &str,
    ) -> Result<SupportRequest, SupportError> {
        let request = self.stored_request(id)?;
        let reason = required("reason", reason)
            .map_err(|e| self.refuse(agent, "support-cancel", &request.user_id, e))?;
        let now_ms = self.clock.now_ms();
        let sql = self.state.sql();
        transact(sql, |tx| {
            let cancelled = [SupportStatus::AwaitingApproval, SupportStatus::Approved]
                .into_iter()
                .try_fold(false, |done, from| {
                    Ok::<_, StoreError>(
                        done || requests::finish(tx, id, from, SupportStatus::Cancelled, now_ms)?,
                    )
                })?;
            if cancelled {
                audit::append(
                    sql,
                    tx,
                    &self
                        .agent_entry(agent, "support-cancel", &request.user_id)
                        .reason(&reason)
                        .details(json!({"request": request.id})),
                )?;
            }
            Ok(())
        })?;
        self.stored_request(id)
    }

    /// An undoable action of one agent: `unlink` (`product`, `legacy_id`),
    /// `password-reset` or `mfa-revert`.
    pub fn act(
        &self,
        agent: &str,
        user_id: &str,
        action: &str,
        params: &Value,
        reason: &str,
    ) -> Result<Value, SupportError> {
        let reason =
            required("reason", reason).map_err(|e| self.refuse(agent, action, user_id, e))?;
        let user = self
            .state
            .get_user(user_id)
            .map_err(|e| StoreError::Backend(e.message))?
            .ok_or_else(|| SupportError::NotFound("no such user".into()))?;
        let now_ms = self.clock.now_ms();
        let sql = self.state.sql();
        let entry = |outcome: &str, details: Value| {
            self.agent_entry(agent, &format!("support-{action}"), user_id)
                .reason(&reason)
                .outcome(outcome)
                .details(details)
        };
        let result = match action {
            "unlink" => self.act_unlink(user_id, params, &entry)?,
            "password-reset" => self.act_password_reset(&user, now_ms, &entry)?,
            "mfa-revert" => {
                let reverted = self.state.revert_factors(
                    Some(user_id),
                    None,
                    &format!("agent:{agent}"),
                    now_ms,
                )?;
                audit::record(sql, &entry("ok", json!({"factors": reverted})))?;
                json!({"reverted": reverted})
            }
            other => {
                return Err(self.refuse(
                    agent,
                    other,
                    user_id,
                    SupportError::Invalid(
                        "action must be unlink, password-reset or mfa-revert".into(),
                    ),
                ));
            }
        };
        let told = self.user_notices(
            user_id,
            &format!("act_{}", crate::model::random_id()),
            &format!("support-{action}"),
            &format!("Support did {action} on your account."),
        )?;
        transact(sql, |tx| {
            recovery_store::enqueue(tx, &told, now_ms, user_id)
        })?;
        Ok(result)
    }

    /// Removes one legacy link of the user's.
    fn act_unlink(
        &self,
        user_id: &str,
        params: &Value,
        entry: &dyn Fn(&str, Value) -> AuditEntry,
    ) -> Result<Value, SupportError> {
        let sql = self.state.sql();
        let product = params["product"].as_str().unwrap_or_default().to_owned();
        let legacy_id = params["legacy_id"].as_str().unwrap_or_default().to_owned();
        let removed = transact(sql, |tx| {
            let n = tx.execute(
                "DELETE FROM identities WHERE user_id = $1 AND provider = $2 AND provider_user_id = $3",
                &[Val::text(user_id), Val::text(&product), Val::text(&legacy_id)],
            )?;
            audit::append(
                sql,
                tx,
                &entry(
                    if n == 1 { "ok" } else { "not-linked" },
                    json!({"product": product, "legacy_id": legacy_id}),
                ),
            )?;
            Ok(n)
        })?;
        if removed == 0 {
            return Err(SupportError::NotFound(
                "the user has no such legacy link".into(),
            ));
        }
        Ok(json!({"unlinked": {"product": product, "legacy_id": legacy_id}}))
    }

    /// Forces a password reset at the user's next sign-in.
    fn act_password_reset(
        &self,
        user: &crate::model::DirectoryUser,
        now_ms: u64,
        entry: &dyn Fn(&str, Value) -> AuditEntry,
    ) -> Result<Value, SupportError> {
        let sql = self.state.sql();
        let mut metadata = user.app_metadata.clone();
        if !metadata.is_object() {
            metadata = json!({});
        }
        metadata["forcePasswordReset"] = json!(true);
        let lifted = transact(sql, |tx| {
            tx.execute(
                "UPDATE users SET app_metadata = $2 WHERE id = $1",
                &[Val::text(&user.id), Val::text(metadata.to_string())],
            )?;
            // The host's own mark, enforced when the next sign-in passes a
            // factor or completes a recovery (the metadata flag gates
            // bulk-imported users only); a factor stopped by guessed codes
            // takes codes again, and a right one now leads only to the reset.
            crate::state::factor_failures::require_reset(
                tx,
                &user.id,
                "support password-reset",
                now_ms,
            )?;
            let lifted = crate::state::factor_failures::clear_user(tx, &user.id)?;
            audit::append(
                sql,
                tx,
                &entry("ok", json!({"factor_counts_cleared": lifted})),
            )?;
            Ok(lifted)
        })?;
        Ok(json!({"force_password_reset": true, "factor_counts_cleared": lifted}))
    }
}
