//! Password hashes as legacy product databases hold them, verified host-side with
//! maintained crates; migrated passwords are re-hashed with argon2id.
//!
//! Formats: bcrypt (`$2a$`, `$2b$`, `$2y$`), argon2 PHC strings (`$argon2id$…`),
//! Django `pbkdf2_sha256$iterations$salt$base64`, and two weak legacy formats:
//! `sha1$salt$hex` (salted SHA-1, Django's old hasher) and `md5$salt$hex`.

use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::Digest as _;
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    #[error("unknown password hash format")]
    UnknownFormat,
    #[error("corrupt {0} hash")]
    Corrupt(&'static str),
}

/// Whether `password` matches `stored`. Comparisons are constant-time; a hash this
/// module cannot read is an error for that account, never a panic.
pub fn verify(stored: &str, password: &str) -> Result<bool, HashError> {
    if stored.starts_with("$2a$") || stored.starts_with("$2b$") || stored.starts_with("$2y$") {
        return bcrypt::verify(password, stored).map_err(|_| HashError::Corrupt("bcrypt"));
    }
    if stored.starts_with("$argon2") {
        let hash = PasswordHash::new(stored).map_err(|_| HashError::Corrupt("argon2"))?;
        return Ok(argon2::Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok());
    }
    if let Some(rest) = stored.strip_prefix("pbkdf2_sha256$") {
        return verify_django_pbkdf2(rest, password);
    }
    if let Some(rest) = stored.strip_prefix("sha1$") {
        let (salt, hex_digest) = rest.split_once('$').ok_or(HashError::Corrupt("sha1"))?;
        let expected = hex::decode(hex_digest).map_err(|_| HashError::Corrupt("sha1"))?;
        let actual = sha1::Sha1::digest(format!("{salt}{password}"));
        return Ok(actual.as_slice().ct_eq(&expected).into());
    }
    if let Some(rest) = stored.strip_prefix("md5$") {
        let (salt, hex_digest) = rest.split_once('$').ok_or(HashError::Corrupt("md5"))?;
        let expected = hex::decode(hex_digest).map_err(|_| HashError::Corrupt("md5"))?;
        let actual = md5::Md5::digest(format!("{salt}{password}"));
        return Ok(actual.as_slice().ct_eq(&expected).into());
    }
    Err(HashError::UnknownFormat)
}

fn verify_django_pbkdf2(rest: &str, password: &str) -> Result<bool, HashError> {
    let corrupt = || HashError::Corrupt("pbkdf2_sha256");
    let mut parts = rest.splitn(3, '$');
    let (Some(iterations), Some(salt), Some(encoded)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(corrupt());
    };
    let iterations: u32 = iterations.parse().map_err(|_| corrupt())?;
    if iterations == 0 || iterations > 10_000_000 {
        return Err(corrupt());
    }
    let expected = BASE64.decode(encoded).map_err(|_| corrupt())?;
    if expected.len() != 32 {
        return Err(corrupt());
    }
    let actual = pbkdf2_sha256(password, salt, iterations);
    Ok(actual.ct_eq(expected.as_slice()).into())
}

/// Django's `pbkdf2_sha256` derivation: 32 bytes of PBKDF2-HMAC-SHA256.
fn pbkdf2_sha256(password: &str, salt: &str, iterations: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password.as_bytes(), salt.as_bytes(), iterations, &mut out);
    out
}

/// The directory's own format: argon2id with the crate's default (OWASP) parameters.
pub fn hash_argon2id(password: &str) -> String {
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .expect("argon2id with default parameters and a fresh salt cannot fail")
}

/// Legacy formats, for seeding demo stores. Work factors are low on purpose: the
/// demo seeds a thousand accounts in seconds; verification reads the factors from
/// the hash, so real ones work the same way.
pub mod legacy_formats {
    use super::*;

    pub fn bcrypt(password: &str, variant: &str, salt: [u8; 16]) -> String {
        let version = match variant {
            "2a" => bcrypt::Version::TwoA,
            "2y" => bcrypt::Version::TwoY,
            _ => bcrypt::Version::TwoB,
        };
        bcrypt::hash_with_salt(password, 4, salt)
            .expect("cost 4 is valid")
            .format_for_version(version)
    }

    pub fn argon2id(password: &str, salt: &[u8]) -> String {
        let params = argon2::Params::new(1024, 1, 1, None).expect("valid argon2 parameters");
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        argon
            .hash_password_with_salt(password.as_bytes(), salt)
            .expect("valid argon2 input")
            .to_string()
    }

    pub fn django_pbkdf2(password: &str, salt: &str, iterations: u32) -> String {
        let out = pbkdf2_sha256(password, salt, iterations);
        format!("pbkdf2_sha256${iterations}${salt}${}", BASE64.encode(out))
    }

    pub fn salted_sha1(password: &str, salt: &str) -> String {
        format!(
            "sha1${salt}${}",
            hex::encode(sha1::Sha1::digest(format!("{salt}{password}")))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::legacy_formats::*;
    use super::*;

    #[test]
    fn every_legacy_format_verifies_and_rejects() {
        let hashes = [
            bcrypt("pw-right", "2a", [7; 16]),
            bcrypt("pw-right", "2b", [7; 16]),
            bcrypt("pw-right", "2y", [7; 16]),
            argon2id("pw-right", &[9; 16]),
            django_pbkdf2("pw-right", "saltsalt", 1000),
            salted_sha1("pw-right", "ab12"),
            format!("md5$xy${}", hex::encode(md5::Md5::digest("xypw-right"))),
            hash_argon2id("pw-right"),
        ];
        assert!(hashes[0].starts_with("$2a$") && hashes[2].starts_with("$2y$"));
        for hash in &hashes {
            assert_eq!(verify(hash, "pw-right"), Ok(true), "{hash}");
            assert_eq!(verify(hash, "pw-wrong"), Ok(false), "{hash}");
        }
    }

    #[test]
    fn unreadable_hashes_are_errors_not_panics() {
        assert_eq!(
            verify("plaintext-password", "x"),
            Err(HashError::UnknownFormat)
        );
        assert_eq!(verify("", "x"), Err(HashError::UnknownFormat));
        for corrupt in [
            "$2b$04$short",
            "$argon2id$v=19$garbage",
            "pbkdf2_sha256$abc$salt$AAAA",
            "pbkdf2_sha256$1000$salt$!!!",
            "sha1$nodollar",
            "sha1$s$zz",
        ] {
            assert!(
                matches!(verify(corrupt, "x"), Err(HashError::Corrupt(_))),
                "{corrupt}"
            );
        }
    }
}
