//! What the host itself learnt about a login's accounts: the evidence the links a rule
//! asks for are checked against, and what a sign-in proof may record.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::model::normalize_email;

/// A legacy account: (product, legacy id).
pub type AccountRef = (String, String);

/// What the host itself learnt about legacy accounts during one login (and, across a
/// redirect, the evaluation before it): the evidence links are checked against.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountEvidence {
    /// Accounts whose stored hash matched this login's password.
    #[serde(default)]
    pub password_verified: BTreeSet<AccountRef>,
    /// Accounts the host returned from a lookup, with their own email (normalized):
    /// those under the login's email are the login's to claim once its inbox is proven.
    #[serde(default)]
    pub found: BTreeSet<(AccountRef, String)>,
    /// The login came back through a redirect's continue: its email was proven.
    #[serde(default)]
    pub inbox_proven: bool,
    /// The directory user's stored hash matched this login's password (the gateway
    /// then upgrades an imported legacy hash to argon2id).
    #[serde(default)]
    pub directory_password_verified: bool,
    /// Whose directory password matched: a sign-in proof records the password only
    /// for that user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory_password_user: Option<String>,
}

impl AccountEvidence {
    /// Whether the host itself checked this login's password for the user it signs
    /// in: the directory's hash of that existing user (`existing`: their id), or a
    /// legacy account's for a user this login creates. What the login carried is not proof.
    pub fn password_proven(&self, existing: Option<&str>) -> bool {
        match existing {
            Some(user_id) => self.directory_password_user.as_deref() == Some(user_id),
            None => !self.password_verified.is_empty(),
        }
    }

    pub(crate) fn may_link(&self, account: &AccountRef, login_email: &str) -> bool {
        self.password_verified.contains(account)
            || (self.inbox_proven
                && self
                    .found
                    .contains(&(account.clone(), normalize_email(login_email))))
    }
}
