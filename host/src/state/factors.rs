//! Second factors in the directory: one row per enrolled factor. An SMS factor is
//! either the old provider's (which keeps the phone; we hold its user id) or the new
//! provider's (which needs the phone on every request; we hold it sealed, see
//! `mfa::sealed`). Never a plaintext phone, never a code.

use serde::{Deserialize, Serialize};

use crate::mfa::sealed::Sealed;

use super::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FactorKind {
    Sms,
}

/// Who delivers the factor's codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FactorProvider {
    /// The old SMS provider: it keeps the phone number.
    LegacySms,
    /// The new provider: the phone number goes with every request.
    Verify,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FactorStatus {
    Active,
    Disabled,
    /// Enrolment started: the code was sent, not yet confirmed. Never listed to rules
    /// nor challenged.
    Pending,
    /// Its code confirmed under a recovery (a code's or a served wait's) whose login
    /// has not finished it yet: it becomes active only together with that recovery's
    /// completion, so a recovery that expires or is cancelled leaves no factor behind.
    /// Never listed to rules nor challenged.
    Confirmed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Factor {
    pub id: String,
    pub user_id: String,
    pub kind: FactorKind,
    pub provider: FactorProvider,
    /// The old provider's id for this user (legacy-sms factors).
    pub legacy_provider_user_id: Option<String>,
    /// The phone number, sealed with this user's and factor's ids.
    pub phone: Option<Sealed>,
    pub status: FactorStatus,
    pub enrolled_at_ms: u64,
    pub updated_at_ms: u64,
    pub last_used_ms: Option<u64>,
    /// The rollout cohort (e.g. `internal`), for routing and the backfill.
    pub cohort: Option<String>,
    /// Put back on the old provider by an operator; routing honours it.
    pub reverted: bool,
}

macro_rules! names {
    ($type:ty { $($variant:ident = $name:literal),* $(,)? }) => {
        impl $type {
            pub fn name(self) -> &'static str {
                match self { $(Self::$variant => $name),* }
            }

            pub fn from_name(name: &str) -> Result<Self, StoreError> {
                match name {
                    $($name => Ok(Self::$variant),)*
                    other => Err(StoreError::Backend(format!(
                        "unknown {} {other:?} in the factors table", stringify!($type)
                    ))),
                }
            }
        }
    };
}

names!(FactorKind { Sms = "sms" });
names!(FactorProvider { LegacySms = "legacy-sms", Verify = "verify" });
names!(FactorStatus {
    Active = "active",
    Disabled = "disabled",
    Pending = "pending",
    Confirmed = "confirmed",
});

/// Inserts a factor or replaces the one with its id, never moving it to another user.
/// PostgreSQL placeholders; SQLite takes the same text with `?` for `$`.
pub(super) const UPSERT: &str =
    "INSERT INTO factors (id, user_id, kind, provider, legacy_provider_user_id, phone_ciphertext,
                          phone_nonce, phone_key_id, status, enrolled_at_ms, updated_at_ms, last_used_ms,
                          cohort, reverted)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
     ON CONFLICT (id) DO UPDATE SET
         provider = excluded.provider, legacy_provider_user_id = excluded.legacy_provider_user_id,
         phone_ciphertext = excluded.phone_ciphertext, phone_nonce = excluded.phone_nonce,
         phone_key_id = excluded.phone_key_id, status = excluded.status,
         updated_at_ms = excluded.updated_at_ms, last_used_ms = excluded.last_used_ms,
         cohort = excluded.cohort, reverted = excluded.reverted
     WHERE factors.user_id = excluded.user_id";

/// Replaces a sealed phone only if it is still the one read.
pub(super) const RESEAL: &str =
    "UPDATE factors SET phone_ciphertext = $2, phone_nonce = $3, phone_key_id = $4
     WHERE id = $1 AND phone_key_id = $5 AND phone_nonce = $6 AND phone_ciphertext = $7";

/// The columns a factor is read from, in `Factor`'s order.
pub(super) const COLUMNS: &str = "id, user_id, kind, provider, legacy_provider_user_id, phone_ciphertext, \
     phone_nonce, phone_key_id, status, enrolled_at_ms, updated_at_ms, last_used_ms, cohort, reverted";
