//! Second factors as every layer names them: their kind, who delivers their codes,
//! where they stand, and what rules may see of them (never the phone, never a code).

use serde::{Deserialize, Serialize};

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

super::names!(FactorKind { Sms = "sms" });
super::names!(FactorProvider { LegacySms = "legacy-sms", Verify = "verify" });
super::names!(FactorStatus {
    Active = "active",
    Disabled = "disabled",
    Pending = "pending",
    Confirmed = "confirmed",
});

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

/// Where a challenge's code went, masked (`+1 ***-***-1234`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentCode {
    pub destination: String,
    /// The provider's name for what it holds open (a Verify SID), to cancel it with.
    /// Not recorded: a replay sends nothing and has nothing to cancel.
    #[serde(skip)]
    pub reference: Option<String>,
}

/// A code check's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodeCheck {
    Approved,
    /// Wrong code; the challenge stands.
    Wrong,
    /// No pending code (expired, or already used).
    Expired,
    /// The provider's own limit on wrong codes was reached.
    TooManyAttempts,
}
