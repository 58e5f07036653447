//! Saved recovery codes (NIST SP 800-63B-4): ten single-use codes of 75 bits each
//! from the operating system's generator, shown once, stored only as keyed digests.
//!
//! Why HMAC-SHA256 and not a password hash: a password hash is slow to make a
//! low-entropy secret expensive to guess offline. These codes are uniformly random
//! with 75 bits, so a digest table cannot be searched whatever the hash's speed, and
//! the key lives outside the database: a stolen copy of the directory cannot even test
//! a guess. A fast keyed hash also lets every unused code be compared on each attempt
//! (in constant time) without making an attempt expensive for the host.

use hmac::{Hmac, KeyInit, Mac};
use rand::TryRng;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// Codes issued at a time.
pub const CODES: usize = 10;
/// No 0/O or 1/I: a code read aloud or copied by hand is not misread. 32 symbols,
/// 5 bits each.
const ALPHABET: &[u8; 32] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ";
/// 15 symbols: 75 bits.
const SYMBOLS: usize = 15;
/// Anything longer typed into a login is not a code (bounded before it is copied).
pub const MAX_INPUT_LEN: usize = 64;

/// Ten new codes, formatted `XXXXX-XXXXX-XXXXX`.
pub fn generate() -> Result<Vec<SecretString>, String> {
    let mut codes = Vec::with_capacity(CODES);
    for _ in 0..CODES {
        let mut bytes = [0u8; SYMBOLS];
        rand::rngs::SysRng
            .try_fill_bytes(&mut bytes)
            .map_err(|e| format!("the operating system's random generator failed: {e}"))?;
        let mut code = String::with_capacity(SYMBOLS + 2);
        for (i, byte) in bytes.iter().enumerate() {
            if i > 0 && i % 5 == 0 {
                code.push('-');
            }
            // 256 is a multiple of 32: the low five bits are uniform.
            code.push(ALPHABET[usize::from(byte & 31)] as char);
        }
        bytes.fill(0);
        codes.push(code.into());
    }
    Ok(codes)
}

/// A typed code as it is hashed: capitals, without spaces or dashes; `None` when it
/// cannot be a code (the attempt still counts as a failure).
pub fn normalize(input: &str) -> Option<String> {
    if input.len() > MAX_INPUT_LEN {
        return None;
    }
    let code: String = input
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (code.len() == SYMBOLS && code.bytes().all(|b| ALPHABET.contains(&b))).then_some(code)
}

/// The stored form of a code: bound to its user, so a digest copied to another row
/// is no code there.
pub fn digest(key: &SecretString, user_id: &str, normalized: &str) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.expose_secret().as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(&(user_id.len() as u64).to_be_bytes());
    mac.update(user_id.as_bytes());
    mac.update(normalized.as_bytes());
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_well_formed_and_normalize_back() {
        let codes = generate().unwrap();
        assert_eq!(codes.len(), CODES);
        let mut seen = std::collections::HashSet::new();
        for code in &codes {
            let text = code.expose_secret();
            assert_eq!(text.len(), 17, "{text}");
            assert!(!text.contains(['0', '1', 'O', 'I']));
            let normalized = normalize(&text.to_lowercase().replace('-', " ")).unwrap();
            assert_eq!(normalized, text.replace('-', ""));
            assert!(seen.insert(normalized));
        }
        assert_eq!(normalize("ABCDE-FGHJK-MNPQ0"), None);
        assert_eq!(normalize(&"A".repeat(100)), None);
    }

    #[test]
    fn digests_are_keyed_and_bound_to_the_user() {
        let key: SecretString = "k".repeat(32).into();
        let other: SecretString = "j".repeat(32).into();
        let d = digest(&key, "u1", "ABCDEFGHJKMNPQR");
        assert_ne!(d, digest(&key, "u2", "ABCDEFGHJKMNPQR"));
        assert_ne!(d, digest(&other, "u1", "ABCDEFGHJKMNPQR"));
        assert_eq!(d, digest(&key, "u1", "ABCDEFGHJKMNPQR"));
    }
}
