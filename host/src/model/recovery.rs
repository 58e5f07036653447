//! A recovery as rules see it, and as the host prepares it for them.

use serde::{Deserialize, Serialize};

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

/// How a stored recovery proceeds: a served waiting period, a recovery code, or
/// support's assisted recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecoveryPath {
    Wait,
    Code,
    Assisted,
}

/// Where a stored recovery stands. Open while `Waiting` or `Enrolling`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecoveryStage {
    Waiting,
    Enrolling,
    Cancelled,
    Completed,
    Expired,
}

super::names!(RecoveryPath { Wait = "wait", Code = "code", Assisted = "assisted" });
super::names!(RecoveryStage {
    Waiting = "waiting",
    Enrolling = "enrolling",
    Cancelled = "cancelled",
    Completed = "completed",
    Expired = "expired",
});
