//! Applying a finished pipeline's effects: one algorithm for every backend. A backend
//! supplies the individual writes ([`EffectWriter`]) inside its own transaction.

use crate::model::{ApplyReport, Effect};
use serde_json::Value;

use super::{EffectBatch, StoreError};

/// Which metadata document a patch applies to.
#[derive(Debug, Clone, Copy)]
pub(super) enum Metadata {
    App,
    User,
}

impl Metadata {
    pub(super) fn column(self) -> &'static str {
        match self {
            Metadata::App => "app_metadata",
            Metadata::User => "user_metadata",
        }
    }
}

/// A new directory user, as `create-user` asks for it.
pub(super) struct NewUser<'a> {
    pub id: &'a str,
    pub email: &'a str,
    pub email_norm: String,
    pub email_verified: bool,
    pub app_metadata: String,
    pub user_metadata: String,
    pub password_hash: Option<&'a str>,
    pub created_at_ms: i64,
}

/// The writes of one `apply`, all inside one backend transaction.
pub(super) trait EffectWriter {
    /// Claims the transaction id. `Some(user)` when it was applied before: then nothing
    /// else is written. (A backend may record the id here or in `finish`.)
    fn claim_transaction(
        &mut self,
        batch: &EffectBatch,
    ) -> Result<Option<Option<String>>, StoreError>;
    /// Inserts the user unless one already holds the email (another login created it
    /// first); returns the id that holds the email, and whether it is this one.
    fn create_user(&mut self, user: &NewUser<'_>) -> Result<(String, bool), StoreError>;
    fn patch_metadata(
        &mut self,
        user_id: &str,
        which: Metadata,
        patch: &Value,
    ) -> Result<(), StoreError>;
    /// A user's app_metadata, and whether the directory recorded a login of theirs
    /// (a login count or a last login); the row stays locked until the transaction
    /// ends, so a login racing an import is seen or waits.
    fn login_record(&mut self, user_id: &str) -> Result<(String, bool), StoreError>;
    /// The user a legacy account is linked to, if any.
    fn link_owner(&mut self, product: &str, legacy_id: &str) -> Result<Option<String>, StoreError>;
    /// Links the account to the user unless it is linked already.
    fn insert_link(
        &mut self,
        product: &str,
        legacy_id: &str,
        user_id: &str,
    ) -> Result<(), StoreError>;
    /// Adds an outbox message unless its (topic, key) exists; returns rows added.
    fn enqueue(
        &mut self,
        batch: &EffectBatch,
        topic: &str,
        key: &str,
        payload: &str,
    ) -> Result<usize, StoreError>;
    /// Adds a second factor (an imported user's, sealed for them).
    fn insert_factor(&mut self, factor: &super::factors::Factor) -> Result<(), StoreError>;
    /// Counts the login on the user and records the transaction as applied, for whom.
    fn finish(&mut self, batch: &EffectBatch, user_id: Option<&str>) -> Result<(), StoreError>;
}

pub(super) fn apply_effects(
    writer: &mut impl EffectWriter,
    batch: &EffectBatch,
) -> Result<ApplyReport, StoreError> {
    if let Some(user_id) = writer.claim_transaction(batch)? {
        return Ok(ApplyReport {
            applied: false,
            user_id,
            created_user: false,
            outbox_messages: 0,
        });
    }
    let mut user_id = batch.user_id.clone();
    let mut created_user = false;
    let mut outbox_messages = 0;
    let need_user = |user_id: &Option<String>, what: &str| {
        user_id.clone().ok_or_else(|| {
            StoreError::Conflict(format!("{what} needs a user, and the login has none"))
        })
    };
    for effect in &batch.effects {
        match effect {
            Effect::CreateUser {
                email,
                email_verified,
                app_metadata,
                user_metadata,
                password_from_login,
            } => {
                let (id, created) = writer.create_user(&NewUser {
                    id: &batch.new_user_id,
                    email,
                    email_norm: crate::model::normalize_email(email),
                    email_verified: *email_verified,
                    app_metadata: app_metadata.to_string(),
                    user_metadata: user_metadata.to_string(),
                    password_hash: if *password_from_login {
                        batch.password_hash.as_deref()
                    } else {
                        None
                    },
                    created_at_ms: super::sql_time(batch.time_ms),
                })?;
                // Another login created a user for this email since the evaluation.
                // The effects land on it only when it is the same migration (two
                // logins of one person racing): it already holds one of the legacy
                // accounts this login verified. Anything else (an account someone
                // signed up with meanwhile) is a conflict: retried, the login then
                // meets that account like any other.
                if !created && !shares_an_account(writer, batch, &id)? {
                    return Err(StoreError::Conflict(
                        "a directory user for this email appeared during the login".into(),
                    ));
                }
                user_id = Some(id);
                created_user |= created;
            }
            Effect::SetAppMetadata { patch } => writer.patch_metadata(
                &need_user(&user_id, "set-app-metadata")?,
                Metadata::App,
                patch,
            )?,
            Effect::SetUserMetadata { patch } => writer.patch_metadata(
                &need_user(&user_id, "set-user-metadata")?,
                Metadata::User,
                patch,
            )?,
            Effect::RequirePasswordReset => writer.patch_metadata(
                &need_user(&user_id, "require-password-reset")?,
                Metadata::App,
                &serde_json::json!({"forcePasswordReset": true}),
            )?,
            Effect::LinkLegacyAccount { product, legacy_id } => {
                let target = need_user(&user_id, "link-legacy-account")?;
                writer.insert_link(product, legacy_id, &target)?;
                if writer.link_owner(product, legacy_id)?.as_deref() != Some(target.as_str()) {
                    return Err(StoreError::Conflict(format!(
                        "{product} account {legacy_id} is already linked to another user"
                    )));
                }
            }
            Effect::EnqueueOutbox {
                topic,
                key,
                payload,
            } => {
                outbox_messages += writer.enqueue(batch, topic, key, payload)?;
            }
            // Claims go into the token the gateway issues; nothing to store.
            Effect::AddClaim { .. } => {}
        }
    }
    writer.finish(batch, user_id.as_deref())?;
    Ok(ApplyReport {
        applied: true,
        user_id,
        created_user,
        outbox_messages,
    })
}

fn shares_an_account(
    writer: &mut impl EffectWriter,
    batch: &EffectBatch,
    user_id: &str,
) -> Result<bool, StoreError> {
    for effect in &batch.effects {
        if let Effect::LinkLegacyAccount { product, legacy_id } = effect
            && writer.link_owner(product, legacy_id)?.as_deref() == Some(user_id)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A metadata document after an RFC 7386 merge patch.
pub(super) fn merged(current: &str, patch: &Value) -> String {
    let mut document = super::parse_json(current.to_owned());
    json_patch::merge(&mut document, patch);
    document.to_string()
}

/// One user of a bulk import, as the import API validated it.
#[derive(Debug, Clone)]
pub struct ImportRecord {
    /// The id the user gets if inserted.
    pub id: String,
    pub email: String,
    pub email_verified: bool,
    pub app_metadata: Value,
    pub user_metadata: Value,
    /// A hash the directory verifies (a legacy format or argon2id); `None`: no
    /// password sign-in until a reset.
    pub password_hash: Option<String>,
    /// (product, legacy id) of the accounts the user had.
    pub legacy_accounts: Vec<(String, String)>,
    /// Merge into a user that holds the email instead of failing.
    pub upsert: bool,
    /// `app_metadata` keys an upsert leaves as they are on a user who has signed in
    /// (see `jobs::import::records::protected_keys`).
    pub protected_app_metadata: Vec<String>,
    pub time_ms: u64,
    /// Second factors for the user if inserted, sealed for `id` as enrolment seals
    /// them (see `jobs::import::records::FactorImport`).
    pub factors: Vec<super::factors::Factor>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportOutcome {
    Inserted(String),
    /// Merged into the existing user (`upsert`).
    Updated(String),
    /// A user holds the email already (lazy migration got there first), and the job
    /// does not upsert: nothing written.
    Duplicate(String),
    /// A user holds the email already and the record carries second factors: an
    /// import never replaces an existing user's factors (whoever holds the import
    /// token would otherwise pick where a signed-in user's codes go). Nothing written.
    FactorsRefused(String),
}

/// What an upsert merges into an existing user's app_metadata. A user who has signed
/// in (a login recorded, or `migrated`: lazy migration or the inbox proof got them
/// there) keeps every protected key as it is: a file cannot force them into a reset,
/// mark them bulk-imported or un-migrate them. A user nobody has seen sign in (one an
/// earlier import created) takes the file's flags, but `migrated` is never removed.
fn upsert_patch(record: &ImportRecord, current: &Value, logged_in: bool) -> Value {
    let signed_in = logged_in || current.get("migrated") == Some(&Value::Bool(true));
    let mut patch = record.app_metadata.clone();
    if let Some(keys) = patch.as_object_mut() {
        keys.retain(|key, value| {
            if signed_in {
                !record.protected_app_metadata.contains(key) && key != "migrated"
            } else {
                !(key == "migrated" && value.is_null())
            }
        });
    }
    patch
}

/// Imports one user inside the backend's transaction: inserted, merged, or refused as
/// a duplicate. A legacy account linked to another user fails the whole record (the
/// backend rolls it back).
pub(super) fn import_user(
    writer: &mut impl EffectWriter,
    record: &ImportRecord,
) -> Result<ImportOutcome, StoreError> {
    let (id, created) = writer.create_user(&NewUser {
        id: &record.id,
        email: &record.email,
        email_norm: crate::model::normalize_email(&record.email),
        email_verified: record.email_verified,
        app_metadata: record.app_metadata.to_string(),
        user_metadata: record.user_metadata.to_string(),
        password_hash: record.password_hash.as_deref(),
        created_at_ms: super::sql_time(record.time_ms),
    })?;
    if !created {
        if !record.upsert {
            return Ok(ImportOutcome::Duplicate(id));
        }
        if !record.factors.is_empty() {
            return Ok(ImportOutcome::FactorsRefused(id));
        }
        // Auth0's upsert: metadata merged; the password and the email stay.
        let (current, logged_in) = writer.login_record(&id)?;
        let patch = upsert_patch(record, &super::parse_json(current), logged_in);
        writer.patch_metadata(&id, Metadata::App, &patch)?;
        writer.patch_metadata(&id, Metadata::User, &record.user_metadata)?;
    }
    for (product, legacy_id) in &record.legacy_accounts {
        writer.insert_link(product, legacy_id, &id)?;
        if writer.link_owner(product, legacy_id)?.as_deref() != Some(id.as_str()) {
            return Err(StoreError::Conflict(format!(
                "{product} account {legacy_id} is already linked to another user"
            )));
        }
    }
    if created {
        for factor in &record.factors {
            writer.insert_factor(factor)?;
        }
    }
    Ok(if created {
        ImportOutcome::Inserted(id)
    } else {
        ImportOutcome::Updated(id)
    })
}
