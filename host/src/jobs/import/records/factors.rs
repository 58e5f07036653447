//! An import record's `mfa_factors`: validated as enrolment validates a number and
//! sealed as enrolment seals it, or that record's error.

use serde_json::Value;

use super::{RecordError, additional_properties, refuse};
use crate::mfa::phone::PhonePolicy;
use crate::mfa::sealed::KeyRing;
use crate::model::{FactorKind, FactorProvider, FactorStatus};
use crate::state::factors::Factor;

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
pub(super) fn mfa_factors(
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
