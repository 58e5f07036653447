//! Keeps personal data out of logs and traces: emails keep their first character and
//! domain, phone numbers (E.164, `+` and digits) their last two digits.

use std::borrow::Cow;

use serde_json::Value;

pub fn redact_text(text: &str) -> Cow<'_, str> {
    redact_with(text, false)
}

/// Like [`redact_text`], but each email keeps a short hash of itself, so distinct
/// addresses stay distinct (recordings must replay the same way).
pub fn pseudonymize_text(text: &str) -> Cow<'_, str> {
    redact_with(text, true)
}

fn redact_with(text: &str, keep_identity: bool) -> Cow<'_, str> {
    if !text.contains('@') && !text.contains('+') {
        return Cow::Borrowed(text);
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if let Some(end) = email_at(&chars, i) {
            let at = (i..end).find(|&k| chars[k] == '@').unwrap_or(i);
            let email: String = chars[i..end].iter().collect();
            if email[..at - i].contains("***") {
                // Already redacted: redacting is idempotent.
                out.push_str(&email);
            } else if keep_identity {
                use sha2::Digest;
                let email = email.to_lowercase();
                out.push(chars[i].to_ascii_lowercase());
                out.push_str("***");
                out.push_str(&hex::encode(sha2::Sha256::digest(email.as_bytes()))[..8]);
                out.push_str(&email[at - i..]);
            } else {
                out.push(chars[i]);
                out.push_str("***");
                out.extend(&chars[at..end]);
            }
            i = end;
        } else if let Some(end) = phone_at(&chars, i) {
            out.push('+');
            out.extend(std::iter::repeat_n('*', end - i - 3));
            out.extend(&chars[end - 2..end]);
            i = end;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    Cow::Owned(out)
}

fn is_local(c: char) -> bool {
    // '*' so that an already redacted address is seen whole.
    c.is_alphanumeric() || "._%+-*".contains(c)
}

fn is_domain(c: char) -> bool {
    c.is_alphanumeric() || ".-".contains(c)
}

/// If an email address starts at `start`, where it ends.
fn email_at(chars: &[char], start: usize) -> Option<usize> {
    if start > 0 && is_local(chars[start - 1]) {
        return None;
    }
    let mut k = start;
    while k < chars.len() && is_local(chars[k]) {
        k += 1;
    }
    if k == start || k >= chars.len() || chars[k] != '@' {
        return None;
    }
    let domain_start = k + 1;
    let mut end = domain_start;
    while end < chars.len() && is_domain(chars[end]) {
        end += 1;
    }
    while end > domain_start && chars[end - 1] == '.' {
        end -= 1;
    }
    let domain: String = chars[domain_start..end].iter().collect();
    domain.contains('.').then_some(end)
}

/// If an E.164 phone number (`+` then 7 to 15 digits) starts at `start`, where it ends.
fn phone_at(chars: &[char], start: usize) -> Option<usize> {
    if chars[start] != '+' || (start > 0 && chars[start - 1].is_ascii_alphanumeric()) {
        return None;
    }
    let mut end = start + 1;
    while end < chars.len() && chars[end].is_ascii_digit() {
        end += 1;
    }
    let digits = end - start - 1;
    (7..=15).contains(&digits).then_some(end)
}

/// Redacts every string in a JSON document (keys stay as they are).
pub fn redact_json(value: &mut Value) {
    walk_strings(value, &|text| redact_text(text));
}

/// Pseudonymizes every string in a JSON document (keys stay as they are).
pub fn pseudonymize_json(value: &mut Value) {
    walk_strings(value, &|text| pseudonymize_text(text));
}

fn walk_strings(value: &mut Value, redact: &dyn for<'a> Fn(&'a str) -> Cow<'a, str>) {
    match value {
        Value::String(text) => {
            if let Cow::Owned(redacted) = redact(text) {
                *text = redacted;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| walk_strings(v, redact)),
        Value::Object(map) => map.values_mut().for_each(|v| walk_strings(v, redact)),
        _ => {}
    }
}

/// A resume result as a recording keeps it: a challenge's `code` replaced by a marker
/// (replays are answered from the recorded provider calls, so its value never matters).
pub fn without_codes(mut result: serde_json::Value) -> serde_json::Value {
    if let Some(code) = result.get_mut("code") {
        *code = serde_json::Value::String("[redacted]".into());
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_keep_first_char_and_domain() {
        assert_eq!(
            redact_text("login alice.smith+x@example.co.uk."),
            "login a***@example.co.uk."
        );
        assert_eq!(redact_text("no at here"), "no at here");
        assert_eq!(redact_text("user@localhost"), "user@localhost");
    }

    #[test]
    fn phones_keep_last_two_digits() {
        assert_eq!(
            redact_text("sms to +447700900123 sent"),
            "sms to +**********23 sent"
        );
        assert_eq!(redact_text("a+1234 b"), "a+1234 b");
    }

    #[test]
    fn pseudonyms_keep_distinct_emails_distinct() {
        let a = pseudonymize_text("Ann@example.com");
        assert_eq!(
            a,
            pseudonymize_text("ann@example.com"),
            "case does not matter"
        );
        assert_ne!(a, pseudonymize_text("amy@example.com"));
        assert!(
            a.starts_with("a***") && a.ends_with("@example.com") && !a.contains("nn@"),
            "{a}"
        );
        assert_eq!(pseudonymize_text(&a), a, "idempotent");
        assert_eq!(
            redact_text(&redact_text("bob@example.com")),
            "b***@example.com"
        );
    }

    #[test]
    fn json_strings_are_redacted() {
        let mut doc = serde_json::json!({"email": "bob@example.com", "n": [ "+15551234567" ]});
        redact_json(&mut doc);
        assert_eq!(
            doc,
            serde_json::json!({"email": "b***@example.com", "n": ["+*********67"]})
        );
    }
}
