//! One user of an Auth0 users-import file, checked as Auth0's import checks it and
//! turned into what the directory stores. A record that fails is that record's error
//! (with Auth0's codes), never the file's. Its second factors are `factors`'; how a
//! refused record is shown, `redact`'s.

mod factors;
mod redact;
#[cfg(test)]
mod tests;

use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::custom_hash;
use crate::model::{LegacyStores, ServiceError};
use crate::state::ImportRecord;

pub use factors::FactorImport;
use factors::mfa_factors;
pub use redact::redacted;

/// One reason a record was refused, as Auth0 reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordError {
    pub code: &'static str,
    pub message: String,
    pub path: String,
}

fn refuse(code: &'static str, path: &str, message: impl Into<String>) -> RecordError {
    RecordError {
        code,
        message: message.into(),
        path: path.into(),
    }
}

/// `app_metadata` keys Auth0 reserves.
const RESERVED_APP_METADATA: &[&str] = &[
    "__tenant",
    "_id",
    "blocked",
    "clientID",
    "created_at",
    "email_verified",
    "email",
    "globalClientID",
    "global_client_id",
    "identities",
    "lastIP",
    "lastLogin",
    "loginsCount",
    "metadata",
    "multifactor_last_modified",
    "multifactor",
    "updated_at",
    "user_id",
];

/// The `app_metadata` keys an upsert leaves as they are on a user who has signed in:
/// the flags the pipeline's rules decide on (`bulk_flag` and `reset_flag` as its rules
/// name them, `migrated`) and every key `[effects] protected_app_metadata` protects.
/// Without this an import token could force anyone into a reset, or make a migrated
/// user look bulk-imported.
pub fn protected_keys(config: &crate::config::PipelineConfig) -> Vec<String> {
    let mut keys: Vec<String> = ["bulkImported", "forcePasswordReset", "migrated"]
        .map(String::from)
        .into();
    for rule in &config.rules {
        for flag in ["bulk_flag", "reset_flag"] {
            keys.extend(rule.config.get(flag).cloned());
        }
    }
    keys.extend(config.effects.protected_app_metadata.iter().cloned());
    keys.sort();
    keys.dedup();
    keys
}

/// What the record claims that nothing proves is this person's, each as a `CONFLICT`:
///
/// - a link in `legacy_accounts` is taken only to an account the legacy stores hold
///   under the record's own email (normalized as the directory does). A link names
///   someone else's account otherwise, which would lock its owner out of lazy
///   migration and give the product the importer's id. (That the account is linked to
///   nobody else is checked in the directory's transaction.)
/// - `mfa_factors` for an email a legacy product holds an account under. The importer
///   may create that email's directory user (and set its password): its owner, signing
///   in with the legacy password, then meets the ownership check, proves the inbox and
///   resets the password, which undoes the importer's password but not a phone: that
///   factor would keep answering for the account after the reset. So the owner enrols
///   their own phone after proving themselves; an import does not bring one. (A user
///   the directory already has is never given factors by an import: see
///   `state::apply`.)
///
/// A legacy store that does not answer is the error.
pub fn unproven_claims(
    record: &ImportRecord,
    legacy: &dyn LegacyStores,
) -> Result<Vec<RecordError>, ServiceError> {
    if record.legacy_accounts.is_empty() && record.factors.is_empty() {
        return Ok(Vec::new());
    }
    let held = legacy.find_accounts(&record.email)?;
    let email = crate::model::normalize_email(&record.email);
    let mut refused: Vec<RecordError> = record
        .legacy_accounts
        .iter()
        .filter(|(product, legacy_id)| {
            !held.iter().any(|a| {
                &a.product == product
                    && &a.legacy_id == legacy_id
                    && crate::model::normalize_email(&a.email) == email
            })
        })
        .map(|(product, legacy_id)| {
            refuse(
                "CONFLICT",
                "app_metadata.legacy_accounts",
                format!("{product} account {legacy_id} is not held under this user's email"),
            )
        })
        .collect();
    if !record.factors.is_empty()
        && held
            .iter()
            .any(|a| crate::model::normalize_email(&a.email) == email)
    {
        refused.push(refuse(
            "CONFLICT",
            "mfa_factors",
            "A legacy product holds an account under this email: its owner enrols a second \
             factor after signing in and proving the address, an import does not bring one",
        ));
    }
    Ok(refused)
}

/// The id an imported user gets: from the email, so importing the same person twice
/// names the same user.
pub fn user_id_for(email_norm: &str) -> String {
    let digest = Sha256::digest(format!("portcullis-import:{email_norm}"));
    format!("usr_{}", &hex::encode(digest)[..24])
}

/// The properties Auth0's user schema allows (`additionalProperties: false`). Those the
/// directory does not keep (names, picture, blocked) are taken and not stored;
/// `mfa_factors` are kept or refused (see [`FactorImport`]), never dropped.
const USER_PROPERTIES: &[&str] = &[
    "app_metadata",
    "blocked",
    "custom_password_hash",
    "email",
    "email_verified",
    "family_name",
    "given_name",
    "mfa_factors",
    "name",
    "nickname",
    "password_hash",
    "phone_number",
    "phone_verified",
    "picture",
    "user_id",
    "user_metadata",
    "username",
];

fn additional_properties(
    object: &serde_json::Map<String, Value>,
    allowed: &[&str],
    path: &str,
) -> Vec<RecordError> {
    object
        .keys()
        .filter(|key| !allowed.contains(&key.as_str()))
        .map(|key| {
            refuse(
                "OBJECT_ADDITIONAL_PROPERTIES",
                &if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                },
                format!("Additional properties not allowed: {key}"),
            )
        })
        .collect()
}

/// The hash the directory stores for a `custom_password_hash`, or its errors.
fn stored_hash(custom: &Value) -> Result<String, Vec<RecordError>> {
    let Some(object) = custom.as_object() else {
        return Err(vec![refuse(
            "INVALID_TYPE",
            "custom_password_hash",
            "Expected type object",
        )]);
    };
    let mut errors = additional_properties(object, custom_hash::PROPERTIES, "custom_password_hash");
    match custom_hash::stored(object) {
        Ok(stored) if errors.is_empty() => Ok(stored),
        Ok(_) => Err(errors),
        Err(e) => {
            errors.push(e);
            Err(errors)
        }
    }
}

fn legacy_accounts(app_metadata: &serde_json::Map<String, Value>) -> Vec<(String, String)> {
    app_metadata
        .get("legacy_accounts")
        .and_then(Value::as_array)
        .map(|accounts| {
            accounts
                .iter()
                .filter_map(|a| {
                    Some((
                        a.get("product")?.as_str()?.to_owned(),
                        a.get("legacy_id")?.as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The hash the directory stores for `password_hash` or `custom_password_hash` (the
/// two are mutually exclusive); none when neither is given or either is refused.
fn password_of(
    object: &serde_json::Map<String, Value>,
    errors: &mut Vec<RecordError>,
) -> Option<String> {
    match (
        object.get("password_hash"),
        object.get("custom_password_hash"),
    ) {
        (Some(_), Some(_)) => {
            // Auth0's schema forbids the pair with `not`: NOT_PASSED.
            errors.push(refuse(
                "NOT_PASSED",
                "custom_password_hash",
                "password_hash and custom_password_hash are mutually exclusive",
            ));
            None
        }
        (Some(Value::String(bcrypt)), None) => {
            match stored_hash(&json!({"algorithm": "bcrypt", "hash": {"value": bcrypt}})) {
                Ok(hash) => Some(hash),
                Err(found) => {
                    errors.extend(found.into_iter().map(|mut e| {
                        e.path = "password_hash".into();
                        e
                    }));
                    None
                }
            }
        }
        (Some(_), None) => {
            errors.push(refuse(
                "INVALID_TYPE",
                "password_hash",
                "Expected type string",
            ));
            None
        }
        (None, Some(custom)) => match stored_hash(custom) {
            Ok(hash) => Some(hash),
            Err(found) => {
                errors.extend(found);
                None
            }
        },
        (None, None) => None,
    }
}

/// Checks one record; every problem found, or what to store. `protected`: see
/// [`protected_keys`]; `factors`: how `mfa_factors` are kept.
pub fn check(
    user: &Value,
    upsert: bool,
    protected: &[String],
    factors: &FactorImport,
    time_ms: u64,
) -> Result<ImportRecord, Vec<RecordError>> {
    let Some(object) = user.as_object() else {
        return Err(vec![refuse("INVALID_TYPE", "", "Expected type object")]);
    };
    // Properties outside Auth0's schema are refused as Auth0 refuses them; those in it
    // that the directory does not keep (names, picture) are taken.
    let mut errors = additional_properties(object, USER_PROPERTIES, "");
    let email = match object.get("email") {
        Some(Value::String(email)) => {
            let email = email.trim();
            let (local, domain) = email.split_once('@').unwrap_or(("", ""));
            if local.is_empty() || !domain.contains('.') || email.len() > 320 || email.contains(' ')
            {
                errors.push(refuse(
                    "FORMAT",
                    "email",
                    "Object didn't pass validation for format email",
                ));
            }
            email.to_owned()
        }
        Some(_) => {
            errors.push(refuse("INVALID_TYPE", "email", "Expected type string"));
            String::new()
        }
        None => {
            errors.push(refuse(
                "OBJECT_REQUIRED",
                "email",
                "Missing required property: email",
            ));
            String::new()
        }
    };
    let email_verified = match object.get("email_verified") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            errors.push(refuse(
                "INVALID_TYPE",
                "email_verified",
                "Expected type boolean",
            ));
            false
        }
    };
    let mut metadata = |key: &str| match object.get(key) {
        None => serde_json::Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(_) => {
            errors.push(refuse("INVALID_TYPE", key, "Expected type object"));
            serde_json::Map::new()
        }
    };
    let app_metadata = metadata("app_metadata");
    let user_metadata = metadata("user_metadata");
    for key in app_metadata.keys() {
        if RESERVED_APP_METADATA.contains(&key.as_str()) {
            // Auth0's schema forbids them with `not`: its code is NOT_PASSED.
            errors.push(refuse(
                "NOT_PASSED",
                &format!("app_metadata.{key}"),
                format!("app_metadata may not hold {key}"),
            ));
        }
    }
    let password_hash = password_of(object, &mut errors);
    let id = user_id_for(&crate::model::normalize_email(&email));
    let factors = match object.get("mfa_factors") {
        Some(value) => mfa_factors(value, &id, factors, time_ms, &mut errors),
        None => Vec::new(),
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(ImportRecord {
        id,
        factors,
        email,
        email_verified,
        legacy_accounts: legacy_accounts(&app_metadata),
        app_metadata: Value::Object(app_metadata),
        user_metadata: Value::Object(user_metadata),
        password_hash,
        upsert,
        protected_app_metadata: protected.to_vec(),
        time_ms,
    })
}
