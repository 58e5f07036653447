//! The products' own (legacy) user databases, as the host reads them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

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
