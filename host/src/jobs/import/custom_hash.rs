//! An Auth0 `custom_password_hash` read into the hash the directory stores, or that
//! record's errors. Every input Auth0 documents is honoured (`hash.encoding`,
//! `salt.value`/`encoding`/`position`, `password.encoding`, HMAC's `digest` and `key`,
//! PBKDF2's digest and parameters); what the directory cannot verify the way the
//! legacy system computed it is refused, never stored differently. The stored formats
//! are `state::passwords::imported`'s; each is read back by the login's verifier
//! ([`passwords::admit`]) before it is accepted.

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use serde_json::{Map, Value};

use super::records::RecordError;
use crate::state::passwords::{
    self, HashError,
    imported::{
        Digest, MAX_PARAMETER_BYTES, MIN_PBKDF2_LEN, PasswordEncoding, Pbkdf2, SaltPosition, Salted,
    },
};

/// The properties Auth0's schema allows in `custom_password_hash`
/// (`additionalProperties: false`).
pub const PROPERTIES: &[&str] = &[
    "algorithm",
    "hash",
    "salt",
    "password",
    "keylen",
    "cost",
    "blockSize",
    "parallelization",
];

const PATH: &str = "custom_password_hash";

fn error(code: &'static str, path: &str, message: impl Into<String>) -> RecordError {
    RecordError {
        code,
        message: message.into(),
        path: if path.is_empty() {
            PATH.into()
        } else {
            format!("{PATH}.{path}")
        },
    }
}

/// Base64 as Auth0 takes it: the standard or the URL-safe alphabet, padded or not.
fn base64(text: &str) -> Option<Vec<u8>> {
    let lenient =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    [
        GeneralPurpose::new(&base64::alphabet::STANDARD, lenient),
        GeneralPurpose::new(&base64::alphabet::URL_SAFE, lenient),
    ]
    .iter()
    .find_map(|engine| engine.decode(text).ok())
}

/// A value in one of Auth0's encodings (`hex` in either case, `base64`, `utf8`).
fn decode(value: &str, encoding: &str, path: &str) -> Result<Vec<u8>, RecordError> {
    let bytes = match encoding {
        "hex" => hex::decode(value).ok(),
        "base64" => base64(value),
        _ => Some(value.as_bytes().to_vec()),
    };
    bytes.ok_or_else(|| {
        error(
            "FORMAT",
            path,
            format!("Object didn't pass validation for format {encoding}"),
        )
    })
}

/// One object's string property: `None` when absent, an error when not a string.
fn string<'a>(
    object: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a str>, RecordError> {
    match object.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(error("INVALID_TYPE", path, "Expected type string")),
    }
}

fn object<'a>(
    parent: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a Map<String, Value>>, RecordError> {
    match parent.get(key) {
        None => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(error("INVALID_TYPE", path, "Expected type object")),
    }
}

fn required<T>(value: Option<T>, path: &str, name: &str) -> Result<T, RecordError> {
    value.ok_or_else(|| {
        error(
            "OBJECT_REQUIRED",
            path,
            format!("Missing required property: {name}"),
        )
    })
}

fn one_of<'a>(
    value: Option<&'a str>,
    allowed: &[&str],
    path: &str,
) -> Result<Option<&'a str>, RecordError> {
    match value {
        Some(v) if !allowed.contains(&v) => Err(error(
            "ENUM_MISMATCH",
            path,
            format!("No enum match for: {v}"),
        )),
        other => Ok(other),
    }
}

const ENCODINGS: &[&str] = &["base64", "hex", "utf8"];

/// What a record's `custom_password_hash` says, checked against the schema's types and
/// enums; what each algorithm makes of it is [`stored`]'s.
struct Described<'a> {
    algorithm: &'a str,
    value: &'a str,
    encoding: Option<&'a str>,
    digest: Option<&'a str>,
    key: Option<Vec<u8>>,
    salt: Option<(Vec<u8>, SaltPosition)>,
    password: Option<&'a str>,
    /// Properties only scrypt reads.
    scrypt: Vec<&'static str>,
}

fn describe(custom: &Map<String, Value>) -> Result<Described<'_>, RecordError> {
    let algorithm = required(string(custom, "algorithm", "algorithm")?, "", "algorithm")?;
    let hash = required(object(custom, "hash", "hash")?, "", "hash")?;
    let value = required(string(hash, "value", "hash.value")?, "hash", "value")?;
    let encoding = one_of(
        string(hash, "encoding", "hash.encoding")?,
        ENCODINGS,
        "hash.encoding",
    )?;
    let digest = string(hash, "digest", "hash.digest")?;
    let key = match object(hash, "key", "hash.key")? {
        None => None,
        Some(key) => {
            let text = required(string(key, "value", "hash.key.value")?, "hash.key", "value")?;
            let encoding = one_of(
                string(key, "encoding", "hash.key.encoding")?,
                ENCODINGS,
                "hash.key.encoding",
            )?;
            Some(decode(text, encoding.unwrap_or("utf8"), "hash.key.value")?)
        }
    };
    let salt = match object(custom, "salt", "salt")? {
        None => None,
        Some(salt) => {
            let text = required(string(salt, "value", "salt.value")?, "salt", "value")?;
            let encoding = one_of(
                string(salt, "encoding", "salt.encoding")?,
                ENCODINGS,
                "salt.encoding",
            )?;
            let position = one_of(
                string(salt, "position", "salt.position")?,
                &["prefix", "suffix"],
                "salt.position",
            )?
            .and_then(SaltPosition::from_auth0)
            .unwrap_or(SaltPosition::Prefix);
            Some((
                decode(text, encoding.unwrap_or("utf8"), "salt.value")?,
                position,
            ))
        }
    };
    let password = match object(custom, "password", "password")? {
        None => None,
        Some(password) => one_of(
            string(password, "encoding", "password.encoding")?,
            &["ascii", "utf8", "utf16le", "ucs2", "latin1", "binary"],
            "password.encoding",
        )?,
    };
    for (name, limit) in [
        ("hash.key.value", &key),
        ("salt.value", &salt.as_ref().map(|s| s.0.clone())),
    ] {
        if limit
            .as_ref()
            .is_some_and(|b| b.len() > MAX_PARAMETER_BYTES)
        {
            return Err(error(
                "MAX_LENGTH",
                name,
                format!("At most {MAX_PARAMETER_BYTES} bytes"),
            ));
        }
    }
    let scrypt = ["keylen", "cost", "blockSize", "parallelization"]
        .into_iter()
        .filter(|k| custom.contains_key(*k))
        .collect();
    Ok(Described {
        algorithm,
        value,
        encoding,
        digest,
        key,
        salt,
        password,
        scrypt,
    })
}

/// The hash the directory stores for this `custom_password_hash` (an object, checked
/// for properties outside the schema by the caller), or why it cannot be stored.
pub fn stored(custom: &Map<String, Value>) -> Result<String, RecordError> {
    let d = describe(custom)?;
    refuse_unread(&d)?;
    let password_encoding = d
        .password
        .and_then(PasswordEncoding::from_auth0)
        .unwrap_or(PasswordEncoding::Utf8);
    let stored = match d.algorithm {
        "bcrypt" | "argon2" | "pbkdf2" => phc_stored(&d, password_encoding)?,
        "md4" | "md5" | "sha1" | "sha256" | "sha512" => {
            let digest = Digest::from_name(d.algorithm).expect("a digest's name");
            salted_stored(&d, digest, None, password_encoding)?
        }
        "hmac" => {
            let digest = hmac_digest(required(d.digest, "hash", "digest")?)?;
            let key = required(d.key.clone(), "hash", "key")?;
            salted_stored(&d, digest, Some(key), password_encoding)?
        }
        "ldap" => {
            if !matches!(d.encoding, None | Some("utf8")) {
                return Err(error(
                    "ENUM_MISMATCH",
                    "hash.encoding",
                    "hash.encoding must be utf8 with algorithm ldap",
                ));
            }
            let (digest, salt, hash) = ldap(d.value).map_err(|what| format_error(&d, &what))?;
            Salted {
                digest,
                hmac_key: None,
                password_encoding,
                salt,
                // RFC 2307's salted schemes hash the password, then the salt.
                position: SaltPosition::Suffix,
                hash,
            }
            .stored()
        }
        "scrypt" => {
            return Err(error(
                "ENUM_MISMATCH",
                "algorithm",
                "scrypt hashes are not verified by this directory",
            ));
        }
        other => {
            return Err(error(
                "ENUM_MISMATCH",
                "algorithm",
                format!("No enum match for: {other}"),
            ));
        }
    };
    // The login's own reader, with the limits in force: a hash it cannot read, or that
    // asks for more work than a login may spend, is refused here rather than stored.
    match passwords::admit(&stored) {
        Ok(()) => Ok(stored),
        Err(e @ HashError::TooCostly(..)) => Err(error("MAXIMUM", "hash.value", e.to_string())),
        Err(e) => Err(format_error(&d, &e.to_string())),
    }
}

/// A property the algorithm does not read would be stored as if it were not there:
/// the submitter believes it matters, so it is refused.
fn refuse_unread(d: &Described<'_>) -> Result<(), RecordError> {
    let algorithm = d.algorithm;
    let keyed = algorithm == "hmac";
    let salted = matches!(
        algorithm,
        "hmac" | "md4" | "md5" | "sha1" | "sha256" | "sha512"
    );
    let unread = [
        ("salt", d.salt.is_some() && !salted),
        ("hash.digest", d.digest.is_some() && !keyed),
        ("hash.key", d.key.is_some() && !keyed),
    ]
    .into_iter()
    .chain(d.scrypt.iter().map(|name| (*name, true)))
    .find(|(_, present)| *present);
    let known = matches!(
        algorithm,
        "argon2"
            | "bcrypt"
            | "hmac"
            | "ldap"
            | "md4"
            | "md5"
            | "sha1"
            | "sha256"
            | "sha512"
            | "pbkdf2"
    );
    match (known, unread) {
        (true, Some((name, _))) => Err(error(
            "NOT_PASSED",
            name,
            format!("{name} is not allowed with algorithm {algorithm}"),
        )),
        _ => Ok(()),
    }
}

fn format_error(d: &Described<'_>, what: &str) -> RecordError {
    error(
        "FORMAT",
        "hash.value",
        format!("Invalid {} hash: {what}", d.algorithm),
    )
}

/// bcrypt, argon2 and PBKDF2 strings, stored as given once they read as such.
fn phc_stored(
    d: &Described<'_>,
    password_encoding: PasswordEncoding,
) -> Result<String, RecordError> {
    let algorithm = d.algorithm;
    if !matches!(d.encoding, None | Some("utf8")) {
        return Err(error(
            "ENUM_MISMATCH",
            "hash.encoding",
            format!("hash.encoding must be utf8 with algorithm {algorithm}"),
        ));
    }
    // They are checked over the password's UTF-8.
    if password_encoding != PasswordEncoding::Utf8 {
        return Err(error(
            "ENUM_MISMATCH",
            "password.encoding",
            format!(
                "{algorithm} hashes of a password other than utf8 are not verified by this directory"
            ),
        ));
    }
    match algorithm {
        "bcrypt" => {
            if !["$2a$", "$2b$", "$2y$"]
                .iter()
                .any(|p| d.value.starts_with(p))
                || d.value.len() != 60
                || !d.value.is_ascii()
            {
                return Err(format_error(d, "not a $2a$, $2b$ or $2y$ bcrypt string"));
            }
            Ok(d.value.to_owned())
        }
        "argon2" => {
            let hash = argon2::password_hash::phc::PasswordHash::new(d.value)
                .map_err(|_| format_error(d, "not a PHC string"))?;
            if !hash.algorithm.as_str().starts_with("argon2") || hash.hash.is_none() {
                return Err(format_error(d, "not an argon2 PHC string"));
            }
            Ok(d.value.to_owned())
        }
        _ => Ok(pbkdf2(d.value)
            .map_err(|what| format_error(d, &what))?
            .stored()),
    }
}

/// The digest an `hmac` record names, among those this directory verifies.
fn hmac_digest(name: &str) -> Result<Digest, RecordError> {
    match name {
        "whirlpool" => Err(error(
            "ENUM_MISMATCH",
            "hash.digest",
            "whirlpool HMACs are not verified by this directory",
        )),
        "sha224" | "sha384" | "md4" | "md5" | "ripemd160" | "sha1" | "sha256" | "sha512" => {
            Ok(Digest::from_name(name).expect("a digest's name"))
        }
        other => Err(error(
            "ENUM_MISMATCH",
            "hash.digest",
            format!("No enum match for: {other}"),
        )),
    }
}

/// A plain or keyed digest over the password and its salt, given hex or base64.
fn salted_stored(
    d: &Described<'_>,
    digest: Digest,
    hmac_key: Option<Vec<u8>>,
    password_encoding: PasswordEncoding,
) -> Result<String, RecordError> {
    let encoding = match d.encoding {
        Some(e @ ("hex" | "base64")) => e,
        _ => {
            return Err(error(
                "ENUM_MISMATCH",
                "hash.encoding",
                format!(
                    "hash.encoding must be hex or base64 with algorithm {}",
                    d.algorithm
                ),
            ));
        }
    };
    let hash = decode(d.value, encoding, "hash.value")?;
    if hash.len() != digest.output_len() {
        return Err(format_error(
            d,
            &format!("{} bytes, not {}", hash.len(), digest.output_len()),
        ));
    }
    let (salt, position) = d.salt.clone().unwrap_or((Vec::new(), SaltPosition::Prefix));
    Ok(Salted {
        digest,
        hmac_key,
        password_encoding,
        salt,
        position,
        hash,
    }
    .stored())
}

/// An RFC 2307 `userPassword`: `{SCHEME}base64(digest[ + salt])`.
fn ldap(value: &str) -> Result<(Digest, Vec<u8>, Vec<u8>), String> {
    let (scheme, encoded) = value
        .strip_prefix('{')
        .and_then(|rest| rest.split_once('}'))
        .ok_or("not {SCHEME}value")?;
    let scheme = scheme.to_ascii_uppercase();
    let (digest, salted) = match scheme.as_str() {
        "MD5" => (Digest::Md5, false),
        "SMD5" => (Digest::Md5, true),
        "SHA" => (Digest::Sha1, false),
        "SSHA" => (Digest::Sha1, true),
        "SHA224" => (Digest::Sha224, false),
        "SSHA224" => (Digest::Sha224, true),
        "SHA256" => (Digest::Sha256, false),
        "SSHA256" => (Digest::Sha256, true),
        "SHA384" => (Digest::Sha384, false),
        "SSHA384" => (Digest::Sha384, true),
        "SHA512" => (Digest::Sha512, false),
        "SSHA512" => (Digest::Sha512, true),
        _ => return Err(format!("the {{{scheme}}} scheme is not supported")),
    };
    let bytes = base64(encoded).ok_or("not base64")?;
    let len = digest.output_len();
    if bytes.len() < len || (!salted && bytes.len() != len) {
        return Err(format!("{{{scheme}}} holds {} bytes", bytes.len()));
    }
    let (hash, salt) = bytes.split_at(len);
    if salt.len() > MAX_PARAMETER_BYTES {
        return Err("the salt is too long".into());
    }
    Ok((digest, salt.to_vec(), hash.to_vec()))
}

/// Auth0's PBKDF2 PHC string: `$pbkdf2-<digest>[$i=…,l=…]$<salt>$<hash>`, B64 without
/// padding, `i=100000` and `l=64` when left out; digests by any of the names Node's
/// crypto knows for the ones verified here.
fn pbkdf2(value: &str) -> Result<Pbkdf2, String> {
    let parts: Vec<&str> = value.split('$').collect();
    let (id, params, salt, hash) = match parts.as_slice() {
        ["", id, params, salt, hash] => (*id, *params, *salt, *hash),
        ["", id, salt, hash] => (*id, "", *salt, *hash),
        _ => return Err("not a PHC string".into()),
    };
    let name = id
        .strip_prefix("pbkdf2-")
        .ok_or("the id is not pbkdf2-<digest>")?;
    let digest = match name.to_ascii_lowercase().as_str() {
        "md4" | "rsa-md4" | "md4withrsaencryption" => Digest::Md4,
        "md5" | "rsa-md5" | "md5withrsaencryption" | "ssl3-md5" => Digest::Md5,
        "ripemd160" | "ripemd" | "rmd160" | "rsa-ripemd160" | "ripemd160withrsa" => {
            Digest::Ripemd160
        }
        "sha1" | "rsa-sha1" | "rsa-sha1-2" | "sha1withrsaencryption" | "ssl3-sha1" => Digest::Sha1,
        "sha224" | "rsa-sha224" | "sha224withrsaencryption" => Digest::Sha224,
        "sha256" | "rsa-sha256" | "sha256withrsaencryption" => Digest::Sha256,
        "sha384" | "rsa-sha384" | "sha384withrsaencryption" => Digest::Sha384,
        "sha512" | "rsa-sha512" | "sha512withrsaencryption" => Digest::Sha512,
        _ => {
            return Err(format!(
                "the {name} digest is not verified by this directory"
            ));
        }
    };
    let (mut iterations, mut length) = (100_000u32, 64usize);
    for param in params.split(',').filter(|p| !p.is_empty()) {
        match param.split_once('=') {
            Some(("i", i)) => {
                iterations = i
                    .parse()
                    .ok()
                    .filter(|i| *i > 0)
                    .ok_or("i is not a positive count")?
            }
            Some(("l", l)) => {
                length = l.parse().ok().filter(|l| *l >= MIN_PBKDF2_LEN).ok_or(
                    "l is below 16 bytes (a shorter hash is a few guesses from any password)",
                )?
            }
            _ => return Err(format!("unknown parameter {param}")),
        }
    }
    let salt = base64(salt).ok_or("the salt is not B64")?;
    let hash = base64(hash).ok_or("the hash is not B64")?;
    if hash.len() < MIN_PBKDF2_LEN {
        return Err("the hash is shorter than 16 bytes".into());
    }
    if hash.len() != length {
        return Err(format!("the hash holds {} bytes, l={length}", hash.len()));
    }
    if salt.len() > MAX_PARAMETER_BYTES || length > MAX_PARAMETER_BYTES {
        return Err("the salt or the key is too long".into());
    }
    Ok(Pbkdf2 {
        digest,
        iterations,
        salt,
        hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored_or_code(custom: Value) -> Result<String, (&'static str, String)> {
        stored(custom.as_object().unwrap()).map_err(|e| (e.code, e.path))
    }

    #[test]
    fn every_example_in_auth0s_schema_page_is_taken_but_scrypt() {
        // The "Custom password hash examples" of Auth0's bulk-import schema page.
        for custom in [
            json!({"algorithm": "md4", "hash": {"value": "AbuUujgF0pPPkJPSFRTpmA==", "encoding": "base64"}}),
            json!({"algorithm": "sha256",
                   "hash": {"value": "d24e794fce503c3ddb1cd1ba1dd5d9b250cf9917336a0316fefd87fecf79200f", "encoding": "hex"},
                   "salt": {"value": "abc123", "position": "prefix"}}),
            json!({"algorithm": "bcrypt", "hash": {"value": "$2b$10$C9hB01.YxRSTcn/ZOOo4j.TW7xCKKFKBSF.C7E0xiUwumqIDqWUXG"}}),
            json!({"algorithm": "argon2", "hash": {"value": "$argon2id$v=19$m=65536,t=2,p=1$J6Q/82PCyaNpYKRELJyTZg$m04qUAB8rexWDR4+/0f+SFB+4XMFxt7YAvAq2UycYos"}}),
            json!({"algorithm": "pbkdf2", "hash": {"encoding": "utf8",
                   "value": "$pbkdf2-md4$i=100000,l=64$+N375B8q0Fw$fp2R9KAM4hK/votGHC5Fu+jhqbxUD8+Nic/EMSGvNC3UP/k7wSHI0uXluHRSkZfl/BOheYqNOemayG90ZaSSQw"}}),
            json!({"algorithm": "pbkdf2", "hash": {
                   "value": "$pbkdf2-sha512$i=100000,l=64$KNyFsA2rWoE$I2CQGI9H0JxdDf3kERRI97kPCGxh0KWBIV3MxyaS191gDGfzVBGyS4BibhgqWQ0/ails8mHuU9ckASxHOOq58w"}}),
            json!({"algorithm": "ldap", "hash": {"encoding": "utf8",
                   "value": "{SSHA384}/cgEjdoZh85DhurDeOQEMO1rMlAur93SVPbYe5XSD4lF7nNuvrBju5hUeg9A6agRemgSXGl5YuE="}}),
            json!({"algorithm": "hmac", "hash": {"value": "cg7f42jH39/2EaAU4wNd4s2lKIk=", "encoding": "base64",
                   "digest": "sha1", "key": {"value": "736868", "encoding": "hex"}}}),
        ] {
            let stored = stored_or_code(custom.clone());
            assert!(stored.is_ok(), "{custom}: {stored:?}");
        }
        assert_eq!(
            stored_or_code(json!({"algorithm": "scrypt",
                "hash": {"value": "097f6197e1b41538f723e32aa7a68e8d76227d8e432ce5faa4882a913032db29", "encoding": "hex"},
                "salt": {"value": "abc123", "encoding": "utf8"}, "keylen": 32, "cost": 4096})),
            Err(("ENUM_MISMATCH", "custom_password_hash.algorithm".into()))
        );
    }

    #[test]
    fn a_pbkdf2_hash_shorter_than_16_bytes_is_refused() {
        // 8 bytes of output: l=8, and the same hash without parameters.
        for value in [
            "$pbkdf2-sha256$i=1000,l=8$AAcOFRwjKjE$AAECAwQFBgc",
            "$pbkdf2-sha256$i=1000$AAcOFRwjKjE$AAECAwQFBgc",
        ] {
            let refused = stored_or_code(json!({"algorithm": "pbkdf2", "hash": {"value": value}}));
            assert!(refused.is_err(), "{value}: {refused:?}");
        }
    }

    #[test]
    fn what_cannot_be_verified_as_it_was_computed_is_refused_at_its_path() {
        let md5 = json!({"value": "00".repeat(16), "encoding": "hex"});
        for (custom, code, path) in [
            // The digest needs the bytes: text is not an encoding of one.
            (
                json!({"algorithm": "md5", "hash": {"value": "x", "encoding": "utf8"}}),
                "ENUM_MISMATCH",
                "hash.encoding",
            ),
            (
                json!({"algorithm": "md5", "hash": md5.clone(), "salt": {"value": "s", "position": "middle"}}),
                "ENUM_MISMATCH",
                "salt.position",
            ),
            (
                json!({"algorithm": "md5", "hash": md5.clone(), "password": {"encoding": "utf32"}}),
                "ENUM_MISMATCH",
                "password.encoding",
            ),
            (
                json!({"algorithm": "md5", "hash": {"value": "00".repeat(20), "encoding": "hex"}}),
                "FORMAT",
                "hash.value",
            ),
            (
                json!({"algorithm": "md5", "hash": {"value": md5["value"], "encoding": "hex", "key": {"value": "k"}}}),
                "NOT_PASSED",
                "hash.key",
            ),
            (
                json!({"algorithm": "md5", "hash": md5.clone(), "keylen": 32}),
                "NOT_PASSED",
                "keylen",
            ),
            (
                json!({"algorithm": "hmac", "hash": {"value": "00".repeat(20), "encoding": "hex", "digest": "sha1"}}),
                "OBJECT_REQUIRED",
                "hash",
            ),
            (
                json!({"algorithm": "hmac", "hash": {"value": "00".repeat(64), "encoding": "hex", "digest": "whirlpool", "key": {"value": "k"}}}),
                "ENUM_MISMATCH",
                "hash.digest",
            ),
            (
                json!({"algorithm": "bcrypt", "hash": {"value": "$2b$10$C9hB01.YxRSTcn/ZOOo4j.TW7xCKKFKBSF.C7E0xiUwumqIDqWUXG"}, "password": {"encoding": "utf16le"}}),
                "ENUM_MISMATCH",
                "password.encoding",
            ),
            (
                json!({"algorithm": "ldap", "hash": {"value": "{CRYPT}abcdefgh"}}),
                "FORMAT",
                "hash.value",
            ),
            (
                json!({"algorithm": "ldap", "hash": {"value": "{SHA}AAAA"}, "salt": {"value": "s"}}),
                "NOT_PASSED",
                "salt",
            ),
            (
                json!({"algorithm": "pbkdf2", "hash": {"value": "$pbkdf2-mdc2$i=1,l=16$AAAA$AAAAAAAAAAAAAAAAAAAAAA"}}),
                "FORMAT",
                "hash.value",
            ),
            (
                json!({"algorithm": "pbkdf2", "hash": {"value": "$pbkdf2-sha256$i=1,l=20$AAAA$AAAAAAAAAAAAAAAAAAAAAA"}}),
                "FORMAT",
                "hash.value",
            ),
            // Over the host's work limit (1,200,000 by default): never stored.
            (
                json!({"algorithm": "pbkdf2", "hash": {"value": "$pbkdf2-sha256$i=1000000,l=64$AAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}),
                "MAXIMUM",
                "hash.value",
            ),
            (
                json!({"algorithm": "argon2", "hash": {"value": "$argon2id$v=19$m=1048576,t=1,p=1$c2FsdHNhbHQ$MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI"}}),
                "MAXIMUM",
                "hash.value",
            ),
            (json!({"algorithm": "md5"}), "OBJECT_REQUIRED", ""),
        ] {
            let path = if path.is_empty() {
                PATH.to_owned()
            } else {
                format!("{PATH}.{path}")
            };
            assert_eq!(
                stored_or_code(custom.clone()),
                Err((code, path)),
                "{custom}"
            );
        }
    }
}
