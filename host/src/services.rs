//! The stores behind the `directory` and `legacy` capabilities. The host owns them;
//! rules only ever see answers.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::gateway::login::DirectoryUser;
use crate::providers::CodeCheck;
use crate::state::factors::{Factor, FactorKind, FactorProvider};

/// The capability calls by the names traces, logs and recordings give them
/// (`interface.function`, as in `wit/rule.wit`).
pub mod call {
    pub const FIND_BY_EMAIL: &str = "directory.find-by-email";
    pub const GET_USER: &str = "directory.get-user";
    pub const DIRECTORY_VERIFY_PASSWORD: &str = "directory.verify-password";
    pub const FIND_ACCOUNTS: &str = "legacy.find-accounts";
    pub const LEGACY_VERIFY_PASSWORD: &str = "legacy.verify-password";
    pub const LIST_FACTORS: &str = "mfa.list-factors";
    pub const RECOVERY_FACTS: &str = "recovery.facts";
    /// The host's own calls to the SMS providers while it performs a challenge (the
    /// code is never an argument in a trace or a recording).
    pub const SEND_CODE: &str = "sms.send-code";
    pub const CHECK_CODE: &str = "sms.check-code";
}

/// An expected failure of a store, passed to the rule as a `capability-error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct ServiceError {
    pub kind: ServiceErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceErrorKind {
    Unavailable,
    InvalidArgument,
    NotFound,
    /// The host will not do this work (a hash over the configured limits): the rule
    /// is stopped with a `capability` fault rather than told.
    Refused,
}

impl ServiceError {
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            kind: ServiceErrorKind::Unavailable,
            message: message.into(),
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            kind: ServiceErrorKind::NotFound,
            message: message.into(),
        }
    }
    pub fn refused(message: impl Into<String>) -> Self {
        Self {
            kind: ServiceErrorKind::Refused,
            message: message.into(),
        }
    }
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self {
            kind: ServiceErrorKind::InvalidArgument,
            message: message.into(),
        }
    }
}

/// An account in one product's own (legacy) user database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LegacyAccount {
    pub product: String,
    pub legacy_id: String,
    pub email: String,
    pub email_verified: bool,
    pub created_at_ms: u64,
    pub profile: Value,
}

/// A second factor as rules and recordings see it: never the phone, never a code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactorSummary {
    pub id: String,
    pub kind: FactorKind,
    pub provider: FactorProvider,
    pub enrolled_at_ms: u64,
    pub last_used_ms: Option<u64>,
    pub phone_on_file: bool,
    pub legacy_id_on_file: bool,
    pub cohort: Option<String>,
    pub reverted: bool,
}

impl FactorSummary {
    pub fn of(factor: &Factor) -> Self {
        Self {
            id: factor.id.clone(),
            kind: factor.kind,
            provider: factor.provider,
            enrolled_at_ms: factor.enrolled_at_ms,
            last_used_ms: factor.last_used_ms,
            phone_on_file: factor.phone.is_some(),
            legacy_id_on_file: factor.legacy_provider_user_id.is_some(),
            cohort: factor.cohort.clone(),
            reverted: factor.reverted,
        }
    }
}

/// Read-only directory lookups.
/// Where a user's recovery stands, as rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryStatus {
    None,
    Waiting,
    Ready,
}

/// What the host knows about a login asking to recover (see the `recovery` capability).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryFacts {
    pub has_code: bool,
    pub has_factors: bool,
    pub status: RecoveryStatus,
    pub wait_ends_ms: Option<u64>,
    pub new_device: bool,
    pub new_network: bool,
    pub new_country: bool,
}

/// A login's request to recover, as the host prepared it before the pipeline: keyed
/// digests of where it comes from, never the code or the raw addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryAsk {
    pub has_code: bool,
    /// (`device` | `network` | `country`, keyed digest)
    pub sightings: Vec<(&'static str, String)>,
    /// Sightings since then count as known.
    pub known_since_ms: u64,
    /// The host's clock when the login arrived.
    pub now_ms: u64,
}

pub trait Directory: Send + Sync {
    fn find_by_email(&self, email: &str) -> Result<Vec<DirectoryUser>, ServiceError>;
    fn get_user(&self, id: &str) -> Result<Option<DirectoryUser>, ServiceError>;
    /// Checks `password` against the user's stored hash; Ok(false) on mismatch or
    /// when the user has no password.
    fn verify_password(&self, user_id: &str, password: &SecretString)
    -> Result<bool, ServiceError>;
    /// A user's active second factors.
    fn list_factors(&self, user_id: &str) -> Result<Vec<FactorSummary>, ServiceError>;
    /// The facts of a recovery asked for by this login (`ask`) for its user.
    fn recovery_facts(
        &self,
        user_id: &str,
        ask: &RecoveryAsk,
    ) -> Result<RecoveryFacts, ServiceError>;
}

/// The legacy product stores of a migration.
pub trait LegacyStores: Send + Sync {
    fn find_accounts(&self, email: &str) -> Result<Vec<LegacyAccount>, ServiceError>;
    /// Checks `password` against the stored hash of one account; Ok(false) on mismatch.
    fn verify_password(
        &self,
        product: &str,
        legacy_id: &str,
        password: &SecretString,
    ) -> Result<bool, ServiceError>;
}

/// Where a challenge's code went, masked (`+1 ***-***-1234`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentCode {
    pub destination: String,
}

/// The SMS providers, as the gateway performs a rule's `mfa` challenge through them.
/// Only sending and checking codes: there is no export here (see `providers`).
pub trait SecondFactors: Send + Sync {
    /// Sends a code for one of the user's active factors through `via`.
    fn send_code(
        &self,
        user_id: &str,
        factor_id: &str,
        via: FactorProvider,
    ) -> Result<SentCode, ServiceError>;
    /// Checks the code the user typed with the provider that sent it.
    fn check_code(
        &self,
        user_id: &str,
        factor_id: &str,
        via: FactorProvider,
        code: &SecretString,
    ) -> Result<CodeCheck, ServiceError>;
    /// Sends the confirmation code of an enrolment (a `pending` factor) through the
    /// new provider, the only one that enrols.
    fn send_enrolment_code(
        &self,
        user_id: &str,
        factor_id: &str,
    ) -> Result<SentCode, ServiceError> {
        let _ = (user_id, factor_id);
        Err(ServiceError::unavailable(
            "enrolment needs the new SMS provider",
        ))
    }
    fn check_enrolment_code(
        &self,
        user_id: &str,
        factor_id: &str,
        code: &SecretString,
    ) -> Result<CodeCheck, ServiceError> {
        let _ = (user_id, factor_id, code);
        Err(ServiceError::unavailable(
            "enrolment needs the new SMS provider",
        ))
    }
}

/// What the host capabilities (and the gateway's challenges) call into.
#[derive(Clone)]
pub struct Services {
    pub directory: std::sync::Arc<dyn Directory>,
    pub legacy: std::sync::Arc<dyn LegacyStores>,
    pub sms: std::sync::Arc<dyn SecondFactors>,
}

impl Services {
    /// No stores: the directory is empty, legacy stores and SMS providers are
    /// unavailable.
    pub fn none() -> Self {
        Self {
            directory: std::sync::Arc::new(NoStores),
            legacy: std::sync::Arc::new(NoStores),
            sms: std::sync::Arc::new(NoStores),
        }
    }
}

struct NoStores;

impl Directory for NoStores {
    fn find_by_email(&self, _: &str) -> Result<Vec<DirectoryUser>, ServiceError> {
        Ok(Vec::new())
    }
    fn get_user(&self, _: &str) -> Result<Option<DirectoryUser>, ServiceError> {
        Ok(None)
    }
    fn verify_password(&self, _: &str, _: &SecretString) -> Result<bool, ServiceError> {
        Err(ServiceError::not_found("no directory is configured"))
    }
    fn list_factors(&self, _: &str) -> Result<Vec<FactorSummary>, ServiceError> {
        Ok(Vec::new())
    }
    fn recovery_facts(&self, _: &str, ask: &RecoveryAsk) -> Result<RecoveryFacts, ServiceError> {
        Ok(RecoveryFacts {
            has_code: ask.has_code,
            has_factors: false,
            status: RecoveryStatus::None,
            wait_ends_ms: None,
            new_device: true,
            new_network: true,
            new_country: true,
        })
    }
}

impl LegacyStores for NoStores {
    fn find_accounts(&self, _: &str) -> Result<Vec<LegacyAccount>, ServiceError> {
        Err(ServiceError::unavailable("no legacy stores are configured"))
    }
    fn verify_password(&self, _: &str, _: &str, _: &SecretString) -> Result<bool, ServiceError> {
        Err(ServiceError::unavailable("no legacy stores are configured"))
    }
}

impl SecondFactors for NoStores {
    fn send_code(&self, _: &str, _: &str, _: FactorProvider) -> Result<SentCode, ServiceError> {
        Err(ServiceError::unavailable("no SMS provider is configured"))
    }
    fn check_code(
        &self,
        _: &str,
        _: &str,
        _: FactorProvider,
        _: &SecretString,
    ) -> Result<CodeCheck, ServiceError> {
        Err(ServiceError::unavailable("no SMS provider is configured"))
    }
}
