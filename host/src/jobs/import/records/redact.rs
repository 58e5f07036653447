//! A refused record as a job's errors show it: its shape, never its secrets.

use serde_json::{Value, json};

use super::USER_PROPERTIES;

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
            // Whatever else it holds is shown only where Auth0's schema names a
            // setting: a property it does not know (`hash.pepper`, `password.value`)
            // is refused, and may be anything, as at the top level.
            show_only_settings(custom, &mut Vec::new());
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

/// The `custom_password_hash` paths that hold settings, not secrets, when their value
/// is a plain string or number.
const HASH_SETTINGS: &[&[&str]] = &[
    &["algorithm"],
    &["keylen"],
    &["cost"],
    &["blockSize"],
    &["parallelization"],
    &["hash", "encoding"],
    &["hash", "digest"],
    &["hash", "key", "encoding"],
    &["salt", "encoding"],
    &["salt", "position"],
    &["password", "encoding"],
];

/// Hides every leaf of `value` (at `path` in `custom_password_hash`) that is not one
/// of [`HASH_SETTINGS`].
fn show_only_settings(value: &mut Value, path: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                path.push(key.clone());
                show_only_settings(inner, path);
                path.pop();
            }
        }
        Value::String(_) | Value::Number(_)
            if HASH_SETTINGS
                .iter()
                .any(|setting| setting.iter().eq(path.iter())) => {}
        other => *other = json!("*****"),
    }
}
