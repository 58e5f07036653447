//! Support agents' requests for dangerous actions, as every layer names them.

use serde::{Deserialize, Serialize};

/// The dangerous actions: one agent asks, another approves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SupportAction {
    RemoveFactor,
    CompleteRecovery,
    ChangeEmail,
}

super::names!(SupportAction {
    RemoveFactor = "remove-factor",
    CompleteRecovery = "complete-recovery",
    ChangeEmail = "change-email",
});

/// Where a request stands: open while awaiting approval or approved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SupportStatus {
    AwaitingApproval,
    Approved,
    Done,
    Cancelled,
}

super::names!(SupportStatus {
    AwaitingApproval = "awaiting-approval",
    Approved = "approved",
    Done = "done",
    Cancelled = "cancelled",
});

impl SupportStatus {
    pub fn is_open(self) -> bool {
        matches!(self, Self::AwaitingApproval | Self::Approved)
    }
}
