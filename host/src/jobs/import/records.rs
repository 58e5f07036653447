//! One user of an Auth0 users-import file, checked as Auth0's import checks it and
//! turned into what the directory stores. A record that fails is that record's error
//! (with Auth0's codes), never the file's.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::model::{LegacyStores, ServiceError};
use crate::state::ImportRecord;

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

/// The record's `legacy_accounts` that nothing proves are this person's, each as a
/// `CONFLICT`: a link is taken only to an account the legacy stores hold under the
/// record's own email (normalized as the directory does). A link names someone else's
/// account otherwise, which would lock its owner out of lazy migration and give the
/// product the importer's id. (That the account is linked to nobody else is checked in
/// the directory's transaction.) A legacy store that does not answer is the error.
pub fn unproven_links(
    record: &ImportRecord,
    legacy: &dyn LegacyStores,
) -> Result<Vec<RecordError>, ServiceError> {
    if record.legacy_accounts.is_empty() {
        return Ok(Vec::new());
    }
    let held = legacy.find_accounts(&record.email)?;
    let email = crate::model::normalize_email(&record.email);
    Ok(record
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
        .collect())
}

/// The id an imported user gets: from the email, so importing the same person twice
/// names the same user.
pub fn user_id_for(email_norm: &str) -> String {
    let digest = Sha256::digest(format!("portcullis-import:{email_norm}"));
    format!("usr_{}", &hex::encode(digest)[..24])
}

/// The record as it may be shown in a job's errors: hashes redacted.
pub fn redacted(user: &Value) -> Value {
    let mut user = user.clone();
    if let Some(map) = user.as_object_mut() {
        for secret in ["password_hash", "custom_password_hash"] {
            if map.contains_key(secret) {
                map.insert(secret.into(), json!("[redacted]"));
            }
        }
    }
    user
}

/// The hash the directory verifies for an Auth0 `custom_password_hash`, or `None` for
/// one it cannot (a hash nobody's password matches, `sha256` of random bytes, is such
/// a user: no password sign-in until a reset).
fn stored_hash(custom: &Value) -> Result<Option<String>, RecordError> {
    let path = "custom_password_hash";
    let object = custom
        .as_object()
        .ok_or_else(|| refuse("INVALID_TYPE", path, "Expected type object"))?;
    let algorithm = object
        .get("algorithm")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            refuse(
                "OBJECT_REQUIRED",
                path,
                "Missing required property: algorithm",
            )
        })?;
    let hash = object
        .get("hash")
        .and_then(Value::as_object)
        .ok_or_else(|| refuse("OBJECT_REQUIRED", path, "Missing required property: hash"))?;
    let value = hash.get("value").and_then(Value::as_str).ok_or_else(|| {
        refuse(
            "OBJECT_REQUIRED",
            path,
            "Missing required property: hash.value",
        )
    })?;
    let encoding = hash
        .get("encoding")
        .and_then(Value::as_str)
        .unwrap_or("utf8");
    let format = |what: &str| refuse("FORMAT", path, format!("Invalid {algorithm} hash: {what}"));
    match algorithm {
        "bcrypt" => {
            if !(value.starts_with("$2a$")
                || value.starts_with("$2b$")
                || value.starts_with("$2y$"))
                || value.len() != 60
            {
                return Err(format("not a bcrypt string"));
            }
            Ok(Some(value.to_owned()))
        }
        "argon2" => {
            argon2::password_hash::phc::PasswordHash::new(value)
                .map_err(|_| format("not a PHC string"))?;
            Ok(Some(value.to_owned()))
        }
        "pbkdf2" => {
            // $pbkdf2-sha256$i=N,l=L$salt$hash (unpadded base64), stored the way Django
            // writes it: pbkdf2_sha256$N$salt$base64.
            let parts: Vec<&str> = value.split('$').collect();
            let [_, "pbkdf2-sha256", params, salt, digest] = parts.as_slice() else {
                return Err(format("only $pbkdf2-sha256$ PHC strings are verified here"));
            };
            let mut iterations = None;
            for param in params.split(',') {
                if let Some(i) = param.strip_prefix("i=") {
                    iterations = i.parse::<u32>().ok();
                }
            }
            let iterations = iterations.ok_or_else(|| format("no iteration count"))?;
            let salt = STANDARD_NO_PAD
                .decode(salt)
                .ok()
                .and_then(|s| String::from_utf8(s).ok())
                .filter(|s| !s.contains('$') && !s.is_empty())
                .ok_or_else(|| format("the salt is not text"))?;
            let digest = STANDARD_NO_PAD
                .decode(digest)
                .map_err(|_| format("the hash is not base64"))?;
            Ok(Some(format!(
                "pbkdf2_sha256${iterations}${salt}${}",
                STANDARD.encode(digest)
            )))
        }
        "sha1" | "md5" => {
            let len = if algorithm == "sha1" { 20 } else { 16 };
            let digest = match encoding {
                "hex" => hex::decode(value).ok(),
                "base64" => STANDARD.decode(value).ok(),
                _ => None,
            }
            .filter(|d| d.len() == len)
            .ok_or_else(|| format("the digest does not decode"))?;
            let salt = object.get("salt").and_then(Value::as_object);
            let salt_value = salt.and_then(|s| s.get("value")).and_then(Value::as_str);
            let position = salt
                .and_then(|s| s.get("position"))
                .and_then(Value::as_str)
                .unwrap_or("prefix");
            match (salt_value, position) {
                (Some(salt), "prefix") if !salt.contains('$') => {
                    Ok(Some(format!("{algorithm}${salt}${}", hex::encode(digest))))
                }
                _ => Err(format("only a text salt as prefix is verified here")),
            }
        }
        // The hash no password matches: nothing to store.
        "sha256" => Ok(None),
        "hmac" | "ldap" | "md4" | "sha512" | "scrypt" => Err(refuse(
            "ENUM_MISMATCH",
            "custom_password_hash.algorithm",
            format!("{algorithm} hashes are not verified by this directory"),
        )),
        other => Err(refuse(
            "ENUM_MISMATCH",
            "custom_password_hash.algorithm",
            format!("No enum match for: {other}"),
        )),
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

/// Checks one record; every problem found, or what to store. `protected`: see
/// [`protected_keys`].
pub fn check(
    user: &Value,
    upsert: bool,
    protected: &[String],
    time_ms: u64,
) -> Result<ImportRecord, Vec<RecordError>> {
    let Some(object) = user.as_object() else {
        return Err(vec![refuse("INVALID_TYPE", "", "Expected type object")]);
    };
    // Properties this directory does not keep (names, picture, MFA enrolments) are
    // not refused; only what it stores is checked.
    let mut errors = Vec::new();
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
    let password_hash = match (
        object.get("password_hash"),
        object.get("custom_password_hash"),
    ) {
        (Some(_), Some(_)) => {
            errors.push(refuse(
                "CONFLICT",
                "custom_password_hash",
                "password_hash and custom_password_hash are mutually exclusive",
            ));
            None
        }
        (Some(Value::String(bcrypt)), None) => {
            match stored_hash(&json!({"algorithm": "bcrypt", "hash": {"value": bcrypt}})) {
                Ok(hash) => hash,
                Err(mut e) => {
                    e.path = "password_hash".into();
                    errors.push(e);
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
            Ok(hash) => hash,
            Err(e) => {
                errors.push(e);
                None
            }
        },
        (None, None) => None,
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(ImportRecord {
        id: user_id_for(&crate::model::normalize_email(&email)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::import::export::custom_password_hash;

    #[test]
    fn every_exported_hash_comes_back_as_the_format_it_was() {
        let stored = [
            format!("$2b$10${}", "a".repeat(53)),
            format!("pbkdf2_sha256$1000$salty${}", STANDARD.encode([3u8; 32])),
            format!("sha1$ab${}", "0a".repeat(20)),
            format!("md5$xy${}", "f0".repeat(16)),
        ];
        for hash in stored {
            let custom = custom_password_hash(&hash).unwrap();
            assert_eq!(
                stored_hash(&custom).unwrap().as_deref(),
                Some(hash.as_str())
            );
        }
    }

    #[test]
    fn the_protected_keys_follow_the_flags_the_rules_name() {
        let config = crate::config::PipelineConfig::parse(
            "[effects]\nprotected_app_metadata = [\"tier\"]\n\
             [[rule]]\nname = \"skip\"\ncomponent = \"skip.wasm\"\ngrants = [\"config\"]\n\
             [rule.config]\nbulk_flag = \"importedInBulk\"\nreset_flag = \"mustReset\"\n",
            std::path::Path::new("."),
        )
        .unwrap();
        let keys = protected_keys(&config);
        for key in [
            "importedInBulk",
            "mustReset",
            "tier",
            "migrated",
            "bulkImported",
            "forcePasswordReset",
        ] {
            assert!(keys.iter().any(|k| k == key), "{key} not in {keys:?}");
        }
    }

    #[test]
    fn a_bad_record_lists_each_problem_with_auth0_codes() {
        let errors = check(
            &json!({"email": "nope", "email_verified": "yes", "app_metadata": {"email": 1},
                    "custom_password_hash": {"algorithm": "scrypt", "hash": {"value": "x"}}}),
            false,
            &[],
            0,
        )
        .unwrap_err();
        let codes: Vec<&str> = errors.iter().map(|e| e.code).collect();
        for code in ["FORMAT", "INVALID_TYPE", "NOT_PASSED", "ENUM_MISMATCH"] {
            assert!(codes.contains(&code), "{codes:?}");
        }
        assert_eq!(
            check(&json!([1]), false, &[], 0).unwrap_err()[0].code,
            "INVALID_TYPE"
        );
    }
}
