//! The stores behind the `directory` and `legacy` capabilities. The host owns them;
//! rules only ever see answers.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::gateway::login::DirectoryUser;

/// The capability calls by the names traces, logs and recordings give them
/// (`interface.function`, as in `wit/rule.wit`).
pub mod call {
    pub const FIND_BY_EMAIL: &str = "directory.find-by-email";
    pub const GET_USER: &str = "directory.get-user";
    pub const DIRECTORY_VERIFY_PASSWORD: &str = "directory.verify-password";
    pub const FIND_ACCOUNTS: &str = "legacy.find-accounts";
    pub const LEGACY_VERIFY_PASSWORD: &str = "legacy.verify-password";
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

/// Read-only directory lookups.
pub trait Directory: Send + Sync {
    fn find_by_email(&self, email: &str) -> Result<Vec<DirectoryUser>, ServiceError>;
    fn get_user(&self, id: &str) -> Result<Option<DirectoryUser>, ServiceError>;
    /// Checks `password` against the user's stored hash; Ok(false) on mismatch or
    /// when the user has no password.
    fn verify_password(&self, user_id: &str, password: &SecretString)
    -> Result<bool, ServiceError>;
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

/// What the host capabilities call into for one evaluation.
#[derive(Clone)]
pub struct Services {
    pub directory: std::sync::Arc<dyn Directory>,
    pub legacy: std::sync::Arc<dyn LegacyStores>,
}

impl Services {
    /// No stores: the directory is empty and legacy stores are unavailable.
    pub fn none() -> Self {
        Self {
            directory: std::sync::Arc::new(NoStores),
            legacy: std::sync::Arc::new(NoStores),
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
}

impl LegacyStores for NoStores {
    fn find_accounts(&self, _: &str) -> Result<Vec<LegacyAccount>, ServiceError> {
        Err(ServiceError::unavailable("no legacy stores are configured"))
    }
    fn verify_password(&self, _: &str, _: &str, _: &SecretString) -> Result<bool, ServiceError> {
        Err(ServiceError::unavailable("no legacy stores are configured"))
    }
}
