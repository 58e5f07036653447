//! What a rule may ask the host to change, and what applying it changed.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A declarative change a rule asks for. The host applies them after the pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Effect {
    SetAppMetadata {
        patch: Value,
    },
    SetUserMetadata {
        patch: Value,
    },
    AddClaim {
        name: String,
        value: Value,
    },
    CreateUser {
        email: String,
        email_verified: bool,
        app_metadata: Value,
        user_metadata: Value,
        password_from_login: bool,
    },
    LinkLegacyAccount {
        product: String,
        legacy_id: String,
    },
    EnqueueOutbox {
        topic: String,
        key: String,
        payload: String,
    },
    RequirePasswordReset,
}

/// What applying one login's effects changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApplyReport {
    /// False when this transaction id had been applied before (nothing changed).
    pub applied: bool,
    pub user_id: Option<String>,
    pub created_user: bool,
    pub outbox_messages: usize,
}
