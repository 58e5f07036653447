//! What the host holds every rule to, whatever it returns: effect kinds it is
//! granted (deny by default, as imports are), and invariants tied to the login
//! itself. A violation is a `bad_output` fault.
//!
//! - `create-user` only for the login's own email, only when the directory has no user
//!   for it, and once per login;
//! - `link-legacy-account` only to an account the host verified for this login: its
//!   password matched this login's (checked host-side), or the host found it under the
//!   login's email and the login came back through a redirect (the inbox was proven);
//! - `enqueue-outbox` keys are `product:legacy-id` of this user's own accounts (linked
//!   before, or linked by this login);
//! - protected app-metadata keys only by rules granted them.

use crate::model::{AccountEvidence, AccountRef, Effect, LoginAttempt, normalize_email};
use std::collections::BTreeSet;

use crate::config::{EffectKind, RuleSettings};

pub fn kind_of(effect: &Effect) -> EffectKind {
    match effect {
        Effect::SetAppMetadata { .. } => EffectKind::SetAppMetadata,
        Effect::SetUserMetadata { .. } => EffectKind::SetUserMetadata,
        Effect::AddClaim { .. } => EffectKind::AddClaim,
        Effect::CreateUser { .. } => EffectKind::CreateUser,
        Effect::LinkLegacyAccount { .. } => EffectKind::LinkLegacyAccount,
        Effect::EnqueueOutbox { .. } => EffectKind::EnqueueOutbox,
        Effect::RequirePasswordReset => EffectKind::RequirePasswordReset,
    }
}

/// Checks one rule's effects, given the effects of the rules before it (`earlier`).
pub(crate) fn check(
    rule: &RuleSettings,
    protected: &[String],
    login: &LoginAttempt,
    evidence: &AccountEvidence,
    earlier: &[Effect],
    effects: &[Effect],
) -> Result<(), String> {
    // Most rules of most logins return nothing: nothing to check, nothing to build.
    if effects.is_empty() {
        return Ok(());
    }
    let mut creates_user = earlier
        .iter()
        .any(|e| matches!(e, Effect::CreateUser { .. }));
    // Links made by this login so far (earlier rules, then this one's).
    let mut linked: BTreeSet<AccountRef> = earlier.iter().filter_map(link_of).collect();
    for effect in effects {
        let kind = kind_of(effect);
        if !rule.effects.contains(&kind) {
            return Err(format!(
                "returned a {kind} effect, which it is not granted (add \"{kind}\" to its effects if it should be)"
            ));
        }
        match effect {
            Effect::CreateUser {
                email,
                app_metadata,
                ..
            } => {
                if normalize_email(email) != normalize_email(&login.email) {
                    return Err("create-user names another email than the login's".into());
                }
                if login.user.is_some() {
                    return Err("create-user for an email the directory already holds".into());
                }
                if creates_user {
                    return Err("create-user twice in one login".into());
                }
                creates_user = true;
                check_protected(rule, protected, app_metadata)?;
            }
            Effect::SetAppMetadata { patch } => check_protected(rule, protected, patch)?,
            Effect::LinkLegacyAccount { .. } => {
                let account = link_of(effect).expect("a link");
                if !evidence.may_link(&account, &login.email) {
                    return Err(format!(
                        "links {} account {}, which the host did not verify for this login",
                        account.0, account.1
                    ));
                }
                linked.insert(account);
            }
            Effect::EnqueueOutbox { key, .. } => {
                // This user's own accounts: linked before this login, or by it.
                let own = key.split_once(':').is_some_and(|(product, id)| {
                    linked.contains(&(product.to_owned(), id.to_owned()))
                        || login.user.as_ref().is_some_and(|u| {
                            u.identities
                                .iter()
                                .any(|i| i.provider == product && i.user_id == id)
                        })
                });
                if !own {
                    return Err(format!(
                        "outbox key {key:?} is not product:legacy-id of one of this user's accounts"
                    ));
                }
            }
            Effect::SetUserMetadata { .. }
            | Effect::AddClaim { .. }
            | Effect::RequirePasswordReset => {}
        }
    }
    Ok(())
}

fn link_of(effect: &Effect) -> Option<AccountRef> {
    match effect {
        Effect::LinkLegacyAccount { product, legacy_id } => {
            Some((product.clone(), legacy_id.clone()))
        }
        _ => None,
    }
}

fn check_protected(
    rule: &RuleSettings,
    protected: &[String],
    document: &serde_json::Value,
) -> Result<(), String> {
    let Some(object) = document.as_object() else {
        return Ok(());
    };
    match object
        .keys()
        .find(|k| protected.contains(k) && !rule.protected_keys.contains(k))
    {
        Some(key) => Err(format!(
            "writes the protected app-metadata key {key:?} (add it to the rule's protected_keys if it should)"
        )),
        None => Ok(()),
    }
}
