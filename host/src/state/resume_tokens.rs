//! Resume tokens' records: a parked login kept server-side behind its token's id,
//! taken once, before it expires by the host's clock. Once for both backends.

use super::portable::{SqlStore, Val, transact};
use serde::{Deserialize, Serialize};

use super::{StoreError, sql_time};
use crate::model::{DirectoryUser, Effect, FactorProvider, LoginAttempt};

pub fn save(store: &dyn SqlStore, record: &ResumeRecord) -> Result<(), StoreError> {
    let text = serde_json::to_string(record).map_err(|e| StoreError::Backend(e.to_string()))?;
    transact(store, |tx| {
        tx.execute(
            "INSERT INTO resume_tokens (jti, transaction_id, record, expires_at_ms) VALUES ($1, $2, $3, $4)",
            &[
                Val::text(&record.jti),
                Val::text(&record.transaction_id),
                Val::text(text.clone()),
                Val::int(sql_time(record.expires_at_ms)),
            ],
        )
    })?;
    Ok(())
}

/// Marks the record used and returns it, atomically: a token works once. An expired
/// token is not spent (the host's clock decides, not the order of requests).
pub fn take(store: &dyn SqlStore, jti: &str, now_ms: u64) -> Result<TakenResume, StoreError> {
    let now = sql_time(now_ms);
    let (taken, used) = transact(store, |tx| {
        let taken = tx.query(
            "UPDATE resume_tokens SET used_at_ms = $2
             WHERE jti = $1 AND used_at_ms IS NULL AND expires_at_ms > $2 RETURNING record",
            &[Val::text(jti), Val::int(now)],
        )?;
        if let Some(text) = taken.into_iter().next().and_then(|r| r.into_iter().next()) {
            return Ok((text.into_text(), None));
        }
        // Not taken: say why.
        let row = tx.query(
            "SELECT used_at_ms FROM resume_tokens WHERE jti = $1",
            &[Val::text(jti)],
        )?;
        Ok((
            None,
            Some(
                row.first()
                    .map(|r| r.first().and_then(Val::as_int).is_some()),
            ),
        ))
    })?;
    Ok(match (taken, used) {
        (Some(text), _) => TakenResume::Taken(Box::new(
            serde_json::from_str(&text).map_err(|e| StoreError::Backend(e.to_string()))?,
        )),
        (None, Some(Some(true))) => TakenResume::AlreadyUsed,
        (None, Some(Some(false))) => TakenResume::Expired,
        (None, _) => TakenResume::Unknown,
    })
}

/// A redirected login waiting for its resume token. Never holds the password.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResumeRecord {
    pub jti: String,
    pub transaction_id: String,
    /// The user the token is bound to (the directory user, or the one to be created).
    pub subject: String,
    pub rule: String,
    pub rule_index: usize,
    pub state: String,
    pub login: StoredLogin,
    pub pending: Vec<Effect>,
    pub password_hash: Option<String>,
    pub expires_at_ms: u64,
    /// What the host verified before the redirect (links are checked against it).
    #[serde(default)]
    pub evidence: crate::model::AccountEvidence,
    /// A second-factor challenge the host performs: the code was sent, the token
    /// resumes once the code checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<PendingChallenge>,
    /// A recovery waiting for the user to enrol a new factor: the token resumes once
    /// a factor enrolled since then is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrolment: Option<PendingEnrolment>,
}

/// The host's side of an enrolment after a recovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingEnrolment {
    pub recovery_id: String,
    /// Only a factor enrolled at or after this time counts.
    pub since_ms: u64,
    /// The proof issued to this login for the enrolment: only a factor it started
    /// completes the recovery. (Records parked before proofs have none, and complete
    /// nothing: their login starts again.)
    #[serde(default)]
    pub proof_id: Option<String>,
}

/// The host's side of an `mfa` challenge in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingChallenge {
    pub factor_id: String,
    pub via: FactorProvider,
    /// Masked.
    pub destination: String,
    /// Wrong codes so far (the limit is `[mfa] max_attempts_per_challenge`).
    pub wrong_codes: u32,
    /// What the provider holds open for the code (a Verify SID), to cancel or forget
    /// when the challenge ends (see `open_codes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// A login as kept for a resume: everything but the password.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredLogin {
    pub transaction_id: String,
    pub time_ms: u64,
    pub connection: String,
    pub client_id: String,
    pub email: String,
    pub request: crate::model::RequestInfo,
    pub user: Option<DirectoryUser>,
    /// Whether the login carried a password: what a replay sends again. (A sign-in
    /// proof records the password only from the host's own check of it, the
    /// evidence, never from this.)
    #[serde(default)]
    pub has_password: bool,
    /// The recognised device the login came from (its id, not its token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

impl StoredLogin {
    pub fn from_attempt(attempt: &LoginAttempt) -> Self {
        Self {
            transaction_id: attempt.transaction_id.clone(),
            time_ms: attempt.time_ms,
            connection: attempt.connection.clone(),
            client_id: attempt.client_id.clone(),
            email: attempt.email.clone(),
            request: attempt.request.clone(),
            user: attempt.user.clone(),
            has_password: attempt.password.is_some(),
            device: attempt.device.clone(),
        }
    }

    pub fn to_attempt(&self, time_ms: u64) -> LoginAttempt {
        LoginAttempt {
            transaction_id: self.transaction_id.clone(),
            time_ms,
            connection: self.connection.clone(),
            client_id: self.client_id.clone(),
            email: self.email.clone(),
            password: None,
            recovery: None,
            recovery_ask: None,
            device: self.device.clone(),
            request: self.request.clone(),
            user: self.user.clone(),
        }
    }
}

/// What taking a resume record found.
#[derive(Debug)]
pub enum TakenResume {
    Taken(Box<ResumeRecord>),
    Unknown,
    AlreadyUsed,
    /// Past its expiry by the host's clock; left unspent.
    Expired,
}
