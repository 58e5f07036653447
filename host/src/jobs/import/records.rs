//! One user of an Auth0 users-import file, checked as Auth0's import checks it and
//! turned into what the directory stores. A record that fails is that record's error
//! (with Auth0's codes), never the file's.

use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::custom_hash;
use crate::mfa::phone::PhonePolicy;
use crate::mfa::sealed::KeyRing;
use crate::model::{FactorKind, FactorProvider, FactorStatus, LegacyStores, ServiceError};
use crate::state::ImportRecord;
use crate::state::factors::Factor;

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

/// What an imported second factor needs: the rules a number must pass to be enrolled
/// (`[mfa] allowed_calling_codes`, `enrolment_regions`) and the keys enrolment seals
/// phones with. Without keys (no `[mfa.verify]`), no phone factor can be kept.
#[derive(Debug, Clone, Default)]
pub struct FactorImport {
    pub policy: PhonePolicy,
    pub regions: Vec<String>,
    pub keys: Option<std::sync::Arc<KeyRing>>,
}

impl FactorImport {
    /// As the gateway enrols: phones sealed only when the new provider is configured.
    pub fn from_config(config: &crate::config::PipelineConfig) -> Result<Self, String> {
        let keys = match &config.mfa.verify {
            Some(_) => Some(std::sync::Arc::new(
                config
                    .mfa
                    .key_ring()
                    .map_err(|e| format!("[mfa] keys: {e}"))?,
            )),
            None => None,
        };
        Ok(Self {
            policy: PhonePolicy {
                allowed_calling_codes: config.mfa.allowed_calling_codes.clone(),
            },
            regions: config.mfa.enrolment_regions.clone(),
            keys,
        })
    }
}

/// Auth0's limits on `mfa_factors` (`minItems`, `maxItems`).
const MAX_FACTORS: usize = 10;

/// The `mfa_factors` of a record as the directory keeps them: each `phone` validated
/// as enrolment validates a number and sealed as enrolment seals it, under the new
/// provider (the one that takes the phone with each request), active. A factor the
/// directory cannot honour (`totp`, `email`: it has no such second factor) or a number
/// it would not enrol is that record's error: the user is not created without it.
/// Messages never quote a number or a secret.
fn mfa_factors(
    value: &Value,
    user_id: &str,
    import: &FactorImport,
    time_ms: u64,
    errors: &mut Vec<RecordError>,
) -> Vec<Factor> {
    let Some(list) = value.as_array() else {
        errors.push(refuse("INVALID_TYPE", "mfa_factors", "Expected type array"));
        return Vec::new();
    };
    if list.is_empty() {
        errors.push(refuse(
            "ARRAY_LENGTH_SHORT",
            "mfa_factors",
            "Array is too short (0), minimum 1",
        ));
    }
    if list.len() > MAX_FACTORS {
        errors.push(refuse(
            "ARRAY_LENGTH_LONG",
            "mfa_factors",
            format!("Array is too long ({}), maximum {MAX_FACTORS}", list.len()),
        ));
    }
    let mut factors = Vec::new();
    for (n, item) in list.iter().enumerate() {
        let path = format!("mfa_factors.{n}");
        let Some(object) = item.as_object() else {
            errors.push(refuse("INVALID_TYPE", &path, "Expected type object"));
            continue;
        };
        if object.len() > 1 {
            errors.push(refuse(
                "OBJECT_PROPERTIES_MAXIMUM",
                &path,
                format!("Too many properties defined ({}), maximum 1", object.len()),
            ));
            continue;
        }
        errors.extend(additional_properties(
            object,
            &["phone", "totp", "email"],
            &path,
        ));
        for (kind, fields) in object {
            let path = format!("{path}.{kind}");
            let field = match kind.as_str() {
                "phone" | "email" => "value",
                "totp" => "secret",
                _ => continue,
            };
            let Some(text) = factor_field(fields, field, &path, errors) else {
                continue;
            };
            match kind.as_str() {
                "phone" if !factors.is_empty() => errors.push(refuse(
                    "CONFLICT",
                    &path,
                    "The directory keeps one SMS factor per user",
                )),
                "phone" => {
                    if let Some(factor) = phone_factor(text, user_id, import, time_ms, &path, errors)
                    {
                        factors.push(factor);
                    }
                }
                other => errors.push(refuse(
                    "ENUM_MISMATCH",
                    &path,
                    format!(
                        "No enum match for: {other}. This directory has no {other} second \
                         factor: the user would be imported without it (the directory keeps phone factors)"
                    ),
                )),
            }
        }
    }
    factors
}

/// A factor's one string field (`additionalProperties: false`, `required`).
fn factor_field<'a>(
    fields: &'a Value,
    field: &str,
    path: &str,
    errors: &mut Vec<RecordError>,
) -> Option<&'a str> {
    let Some(object) = fields.as_object() else {
        errors.push(refuse("INVALID_TYPE", path, "Expected type object"));
        return None;
    };
    let extra = additional_properties(object, &[field], path);
    let found = !extra.is_empty();
    errors.extend(extra);
    match object.get(field) {
        Some(Value::String(text)) if !found => Some(text.as_str()),
        Some(Value::String(_)) => None,
        Some(_) => {
            errors.push(refuse(
                "INVALID_TYPE",
                &format!("{path}.{field}"),
                "Expected type string",
            ));
            None
        }
        None => {
            errors.push(refuse(
                "OBJECT_REQUIRED",
                &format!("{path}.{field}"),
                format!("Missing required property: {field}"),
            ));
            None
        }
    }
}

/// An imported phone as enrolment would take it, or the record's error. Auth0's
/// pattern first (`^\+[0-9]{1,15}$`); then the number must be valid, allowed, able to
/// receive codes, and already in the E.164 form it normalizes to: it is sealed as
/// given or not at all, never stored as something else.
fn phone_factor(
    text: &str,
    user_id: &str,
    import: &FactorImport,
    time_ms: u64,
    path: &str,
    errors: &mut Vec<RecordError>,
) -> Option<Factor> {
    let path = format!("{path}.value");
    let digits = text.strip_prefix('+').unwrap_or("");
    if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        errors.push(refuse(
            "PATTERN",
            &path,
            "String does not match pattern ^\\+[0-9]{1,15}$",
        ));
        return None;
    }
    let refused = |why: String| refuse("FORMAT", &path, why);
    let phone = match import.policy.normalize(text) {
        Ok(phone) => phone,
        Err(e) => {
            errors.push(refused(format!(
                "Object didn't pass validation for format phone: {e}"
            )));
            return None;
        }
    };
    if let Err(e) = crate::mfa::phone::check_can_receive_codes(&phone, &import.regions) {
        errors.push(refused(format!(
            "Object didn't pass validation for format phone: {e}"
        )));
        return None;
    }
    if phone.e164() != text {
        errors.push(refused(
            "Object didn't pass validation for format phone: the number is not in its E.164 form"
                .into(),
        ));
        return None;
    }
    let Some(keys) = &import.keys else {
        errors.push(refuse(
            "ENUM_MISMATCH",
            &path,
            "No new SMS provider is configured ([mfa.verify] and its keys): a phone factor cannot be kept",
        ));
        return None;
    };
    let id = format!("fac_{}", crate::model::random_id());
    Some(Factor {
        phone: Some(keys.seal(phone.e164(), user_id, &id)),
        id,
        user_id: user_id.to_owned(),
        kind: FactorKind::Sms,
        provider: FactorProvider::Verify,
        legacy_provider_user_id: None,
        status: FactorStatus::Active,
        enrolled_at_ms: time_ms,
        updated_at_ms: time_ms,
        last_used_ms: None,
        cohort: None,
        reverted: false,
    })
}

/// The record as it may be shown in a job's errors, redacted as Auth0 redacts it: the
/// hash, salt and key values become `*****`; so do the MFA factors' and the phone
/// number (no secrets or phones in an answer). A record that is not an object shows as
/// `{}` (the SDKs read `user` as an object; its value is not echoed, it may be a hash).
pub fn redacted(user: &Value) -> Value {
    const HIDDEN: &str = "*****";
    let Some(map) = user.as_object() else {
        return json!({});
    };
    let mut map = map.clone();
    // A step that is not an object is hidden whole: `"hash": "$2b$…"` or
    // `"key": "pepper"` is refused as the wrong type, and must not be echoed either.
    let hide = |value: &mut Value, path: &[&str]| {
        let mut at = value;
        for key in path {
            if !at.is_object() {
                *at = json!(HIDDEN);
                return;
            }
            match at.get_mut(*key) {
                Some(next) => at = next,
                None => return,
            }
        }
        *at = json!(HIDDEN);
    };
    // A property outside Auth0's schema is refused, and may be anything (a plaintext
    // `password`): its value is not shown.
    for (name, value) in map.iter_mut() {
        if !USER_PROPERTIES.contains(&name.as_str()) {
            *value = json!(HIDDEN);
        }
    }
    for field in ["password_hash", "phone_number"] {
        if let Some(value) = map.get_mut(field) {
            *value = json!(HIDDEN);
        }
    }
    if let Some(custom) = map.get_mut("custom_password_hash") {
        if custom.is_object() {
            for path in [
                &["hash", "value"][..],
                &["hash", "key", "value"],
                &["salt", "value"],
            ] {
                hide(custom, path);
            }
        } else {
            *custom = json!(HIDDEN);
        }
    }
    if let Some(factors) = map.get_mut("mfa_factors") {
        match factors.as_array_mut() {
            Some(list) => {
                // An item that is not an object (`"+1415…"`, `["+1415…"]`) is
                // refused as the wrong type, and is hidden whole.
                for item in list.iter_mut() {
                    let Some(factor) = item.as_object_mut() else {
                        *item = json!(HIDDEN);
                        continue;
                    };
                    for kind in factor.values_mut() {
                        match kind.as_object_mut() {
                            Some(fields) => fields.values_mut().for_each(|v| *v = json!(HIDDEN)),
                            None => *kind = json!(HIDDEN),
                        }
                    }
                }
            }
            None => *factors = json!(HIDDEN),
        }
    }
    Value::Object(map)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::import::export::custom_password_hash;

    #[test]
    fn every_exported_hash_is_imported_as_one_the_same_passwords_match() {
        use crate::state::passwords::{legacy_formats::*, verify};
        use sha2::Digest as _;
        let stored = [
            bcrypt("pw-right", "2y", [5; 16]),
            argon2id("pw-right", &[6; 16]),
            django_pbkdf2("pw-right", "salty", 1000),
            salted_sha1("pw-right", "ab"),
            format!("md5$xy${}", hex::encode(md5::Md5::digest("xypw-right"))),
        ];
        for hash in stored {
            let custom = custom_password_hash(&hash).unwrap();
            let imported = stored_hash(&custom).unwrap();
            assert_eq!(verify(&imported, "pw-right"), Ok(true), "{imported}");
            assert_eq!(verify(&imported, "pw-wrong"), Ok(false), "{imported}");
        }
    }

    #[test]
    fn what_the_schema_does_not_allow_is_refused_with_auth0s_codes() {
        let refused = |user: Value| -> Vec<(&'static str, String)> {
            check(&user, false, &[], &FactorImport::default(), 0)
                .unwrap_err()
                .into_iter()
                .map(|e| (e.code, e.path))
                .collect()
        };
        let hash = json!({"value": "$2b$10$C9hB01.YxRSTcn/ZOOo4j.TW7xCKKFKBSF.C7E0xiUwumqIDqWUXG"});
        assert_eq!(
            refused(json!({"email": "a@example.org", "nickname_typo": "x"})),
            [("OBJECT_ADDITIONAL_PROPERTIES", "nickname_typo".to_owned())]
        );
        assert_eq!(
            refused(json!({"email": "a@example.org",
                "custom_password_hash": {"algorithm": "bcrypt", "hash": hash, "rounds": 10}})),
            [(
                "OBJECT_ADDITIONAL_PROPERTIES",
                "custom_password_hash.rounds".to_owned()
            )]
        );
        assert_eq!(
            refused(json!({"email": "a@example.org",
                "custom_password_hash": {"algorithm": "bcrypt", "hash": hash,
                                         "salt": {"value": "pepper"}}})),
            [("NOT_PASSED", "custom_password_hash.salt".to_owned())]
        );
        // A salt in an encoding the value is not in: that record's error, not a user
        // stored with the wrong salt.
        assert_eq!(
            refused(json!({"email": "a@example.org",
                "custom_password_hash": {"algorithm": "md5",
                    "hash": {"value": "00".repeat(16), "encoding": "hex"},
                    "salt": {"value": "not-hex", "encoding": "hex"}}})),
            [("FORMAT", "custom_password_hash.salt.value".to_owned())]
        );
        assert_eq!(
            refused(
                json!({"email": "a@example.org", "password_hash": hash["value"],
                "custom_password_hash": {"algorithm": "bcrypt", "hash": hash}})
            ),
            [("NOT_PASSED", "custom_password_hash".to_owned())]
        );
        // Names, picture and blocked are in the schema: taken.
        assert!(
            check(
                &json!({"email": "a@example.org", "given_name": "A", "blocked": false}),
                false,
                &[],
                &FactorImport::default(),
                0
            )
            .is_ok()
        );
        // A TOTP enrolment is in the schema, and this directory has no such factor:
        // the record fails rather than the user arriving without it.
        assert_eq!(
            refused(json!({"email": "a@example.org",
                "mfa_factors": [{"totp": {"secret": "JBTWY3DPEHPK3PNP"}}]})),
            [("ENUM_MISMATCH", "mfa_factors.0.totp".to_owned())]
        );
    }

    fn phone_import() -> FactorImport {
        FactorImport {
            keys: Some(std::sync::Arc::new(
                KeyRing::parse(&format!(
                    "k1:{}",
                    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 32],)
                ))
                .unwrap(),
            )),
            regions: vec!["US".into(), "CA".into()],
            ..FactorImport::default()
        }
    }

    fn with_factors(
        factors: Value,
        import: &FactorImport,
    ) -> Result<ImportRecord, Vec<RecordError>> {
        check(
            &json!({"email": "p@example.org", "mfa_factors": factors}),
            false,
            &[],
            import,
            5,
        )
    }

    #[test]
    fn an_imported_phone_is_sealed_as_enrolment_seals_it() {
        let import = phone_import();
        let with = |factors: Value| with_factors(factors, &import);
        let record = with(json!([{"phone": {"value": "+14155552671"}}])).unwrap();
        let [factor] = &record.factors[..] else {
            panic!("{:?}", record.factors)
        };
        assert_eq!(
            (
                factor.provider,
                factor.status,
                factor.kind,
                factor.user_id.as_str()
            ),
            (
                FactorProvider::Verify,
                FactorStatus::Active,
                FactorKind::Sms,
                record.id.as_str()
            )
        );
        let keys = import.keys.as_ref().unwrap();
        let sealed = factor.phone.as_ref().unwrap();
        assert_eq!(
            keys.open(sealed, &record.id, &factor.id)
                .unwrap()
                .to_string(),
            "+14155552671"
        );
        assert!(factor.legacy_provider_user_id.is_none());
    }

    #[test]
    fn an_imported_factor_the_directory_cannot_honour_fails_its_record() {
        let import = phone_import();
        let with = |factors: Value| with_factors(factors, &import);
        // Refused, each as the record's error, and never echoing the number.
        for (factors, code, path) in [
            (
                json!([{"phone": {"value": "+1 303 555 0142"}}]),
                "PATTERN",
                "mfa_factors.0.phone.value",
            ),
            (
                json!([{"phone": {"value": "3035550142"}}]),
                "PATTERN",
                "mfa_factors.0.phone.value",
            ),
            // Valid digits but no such number: not stored as something else.
            (
                json!([{"phone": {"value": "+11115552671"}}]),
                "FORMAT",
                "mfa_factors.0.phone.value",
            ),
            // A number enrolment would not text (toll free), or outside the regions.
            (
                json!([{"phone": {"value": "+18005552671"}}]),
                "FORMAT",
                "mfa_factors.0.phone.value",
            ),
            (
                json!([{"phone": {"value": "+442079462671"}}]),
                "FORMAT",
                "mfa_factors.0.phone.value",
            ),
            (
                json!([{"phone": {"value": 14155552671u64}}]),
                "INVALID_TYPE",
                "mfa_factors.0.phone.value",
            ),
            (
                json!([{"phone": {}}]),
                "OBJECT_REQUIRED",
                "mfa_factors.0.phone.value",
            ),
            (
                json!([{"phone": {"value": "+14155552671", "label": "x"}}]),
                "OBJECT_ADDITIONAL_PROPERTIES",
                "mfa_factors.0.phone.label",
            ),
            (
                json!([{"email": {"value": "p@example.org"}}]),
                "ENUM_MISMATCH",
                "mfa_factors.0.email",
            ),
            (
                json!([{"phone": {"value": "+14155552671"}, "email": {"value": "p@example.org"}}]),
                "OBJECT_PROPERTIES_MAXIMUM",
                "mfa_factors.0",
            ),
            (
                json!([{"phone": {"value": "+14155552671"}}, {"phone": {"value": "+14155552672"}}]),
                "CONFLICT",
                "mfa_factors.1.phone",
            ),
            (
                json!([{"sms": {"value": "+14155552671"}}]),
                "OBJECT_ADDITIONAL_PROPERTIES",
                "mfa_factors.0.sms",
            ),
            (json!([]), "ARRAY_LENGTH_SHORT", "mfa_factors"),
            (
                json!({"phone": {"value": "+14155552671"}}),
                "INVALID_TYPE",
                "mfa_factors",
            ),
        ] {
            let errors = with(factors.clone()).unwrap_err();
            assert!(
                errors.iter().any(|e| e.code == code && e.path == path),
                "{factors}: {errors:?}"
            );
            for e in &errors {
                assert!(!e.message.contains("5552671"), "{e:?}");
            }
        }
        // Without the new provider's keys a phone cannot be kept: refused, not dropped.
        let errors = check(
            &json!({"email": "p@example.org", "mfa_factors": [{"phone": {"value": "+14155552671"}}]}),
            false,
            &[],
            &FactorImport { keys: None, ..import.clone() },
            5,
        )
        .unwrap_err();
        assert_eq!(errors[0].code, "ENUM_MISMATCH", "{errors:?}");
    }

    #[test]
    fn a_shown_record_keeps_its_shape_without_its_secrets() {
        let shown = redacted(&json!({
            "email": "a@example.org",
            "phone_number": "+15551234567",
            "custom_password_hash": {"algorithm": "hmac",
                "hash": {"value": "abc", "digest": "sha1", "key": {"value": "k"}},
                "salt": {"value": "s", "position": "suffix"}},
            "mfa_factors": [{"totp": {"secret": "JBTWY3DPEHPK3PNP"}}],
        }));
        assert_eq!(shown["custom_password_hash"]["algorithm"], "hmac");
        assert_eq!(shown["custom_password_hash"]["salt"]["position"], "suffix");
        for secret in ["abc", "\"k\"", "\"s\"", "JBTWY", "5551234567"] {
            assert!(!shown.to_string().contains(secret), "{secret} in {shown}");
        }
        assert_eq!(redacted(&json!(42)), json!({}));
        assert_eq!(redacted(&json!("$2b$10$...")), json!({}));
        // Secrets given where an object belongs (refused as the wrong type), and a
        // property outside the schema, are hidden whole.
        let shown = redacted(&json!({
            "email": "a@example.org",
            "password": "hunter2-plain",
            "custom_password_hash": {"algorithm": "hmac",
                "hash": {"value": "abc", "digest": "sha1", "key": "pepper-secret"},
                "salt": "salt-secret"},
        }));
        for secret in ["hunter2-plain", "pepper-secret", "salt-secret"] {
            assert!(!shown.to_string().contains(secret), "{secret} in {shown}");
        }
        let shown = redacted(
            &json!({"custom_password_hash": {"algorithm": "bcrypt", "hash": "$2b$10$abc"}}),
        );
        assert!(!shown.to_string().contains("$2b$"), "{shown}");
        assert_eq!(shown["email"], json!(null));
        // A factor given as a bare value (refused as the wrong type) is hidden whole.
        let shown = redacted(&json!({
            "mfa_factors": ["+14155552676", ["+14155552677"], 14155552678_u64],
        }));
        assert_eq!(shown["mfa_factors"], json!(["*****", "*****", "*****"]));
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
            &FactorImport::default(),
            0,
        )
        .unwrap_err();
        let codes: Vec<&str> = errors.iter().map(|e| e.code).collect();
        for code in ["FORMAT", "INVALID_TYPE", "NOT_PASSED", "ENUM_MISMATCH"] {
            assert!(codes.contains(&code), "{codes:?}");
        }
        assert_eq!(
            check(&json!([1]), false, &[], &FactorImport::default(), 0).unwrap_err()[0].code,
            "INVALID_TYPE"
        );
    }
}
