//! The errors a store or provider answers a capability call with.

use serde::{Deserialize, Serialize};

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
