//! Password hashes as legacy product databases hold them, verified host-side with
//! maintained crates; migrated passwords are re-hashed with argon2id.
//!
//! Formats: bcrypt (`$2a$`, `$2b$`, `$2y$`), argon2 PHC strings (`$argon2id$…`),
//! Django `pbkdf2_sha256$iterations$salt$base64`, and two weak legacy formats:
//! `sha1$salt$hex` (salted SHA-1, Django's old hasher) and `md5$salt$hex`. Hashes that
//! came in through an Auth0 users-import file may also be PBKDF2 PHC strings over any
//! digest (`$pbkdf2-sha512$i=…,l=…$…`) and salted digests or HMACs with their inputs'
//! encodings spelled out (`$a0-…`): [`imported`] defines those.
//!
//! Every check is bounded before any work ([`PasswordLimits`]): a hash asking for more
//! is [`HashError::TooCostly`], and [`admit`] asks the same of a hash about to be stored.

use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use sha1::Digest as _;
use subtle::ConstantTimeEq;

use std::sync::{Condvar, Mutex, RwLock};
use std::time::Instant;

/// The most work the host spends checking one stored password hash. Legacy stores
/// are data, not code we wrote: a hash with a bigger work factor than these is a
/// capability fault, never seconds of CPU or a gigabyte of memory per login.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordLimits {
    pub max_bcrypt_cost: u32,
    pub max_pbkdf2_iterations: u32,
    pub max_argon2_memory_kib: u32,
    pub max_argon2_iterations: u32,
    pub max_argon2_parallelism: u32,
    /// Hashes checked at once across the process (default: one per core); a rule
    /// whose deadline passes while it waits is a deadline fault.
    pub max_concurrent: Option<usize>,
}

impl Default for PasswordLimits {
    fn default() -> Self {
        Self {
            // bcrypt 12 is ~250 ms here; Django's 2025 default is 1,000,000
            // iterations; argon2id at OWASP's strongest profile is 46 MiB, t=1.
            max_bcrypt_cost: 12,
            max_pbkdf2_iterations: 1_200_000,
            max_argon2_memory_kib: 64 * 1024,
            max_argon2_iterations: 10,
            max_argon2_parallelism: 4,
            max_concurrent: None,
        }
    }
}

pub mod imported;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    #[error("unknown password hash format")]
    UnknownFormat,
    #[error("corrupt {0} hash")]
    Corrupt(&'static str),
    /// The hash asks for more work than the host's limits allow (`[passwords]`).
    #[error("{0} is over the host's limit ({1})")]
    TooCostly(&'static str, String),
}

/// The limits in force, process-wide like the engine: set from the pipeline config
/// when a gateway opens.
static LIMITS: RwLock<Option<PasswordLimits>> = RwLock::new(None);

pub fn configure(limits: PasswordLimits) {
    *LIMITS.write().unwrap_or_else(|p| p.into_inner()) = Some(limits);
    SLOTS.resize(limits.max_concurrent.unwrap_or_else(default_slots));
}

fn limits() -> PasswordLimits {
    LIMITS
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .unwrap_or_default()
}

fn default_slots() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// A counting semaphore for hash work: a burst of logins queues for the CPU instead of
/// every one of them hashing at once (and holding argon2's memory at once).
struct Slots {
    state: Mutex<(usize, usize)>, // (in use, capacity)
    freed: Condvar,
}

static SLOTS: Slots = Slots {
    state: Mutex::new((0, 0)),
    freed: Condvar::new(),
};

/// One slot of hash work, given back on drop.
pub struct HashSlot(());

impl Drop for HashSlot {
    fn drop(&mut self) {
        let mut state = SLOTS.state.lock().unwrap_or_else(|p| p.into_inner());
        state.0 -= 1;
        SLOTS.freed.notify_one();
    }
}

impl Slots {
    fn resize(&self, capacity: usize) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1 = capacity.max(1);
        self.freed.notify_all();
    }
}

/// Waits for a slot until `deadline`; `None` when the deadline passes first.
pub fn hash_slot(deadline: Instant) -> Option<HashSlot> {
    let mut state = SLOTS.state.lock().unwrap_or_else(|p| p.into_inner());
    if state.1 == 0 {
        state.1 = default_slots();
    }
    while state.0 >= state.1 {
        let left = deadline.checked_duration_since(Instant::now())?;
        state = SLOTS
            .freed
            .wait_timeout(state, left)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
    state.0 += 1;
    Some(HashSlot(()))
}

/// Whether `password` matches `stored`, within the configured work limits.
/// Comparisons are constant-time; a hash this module cannot read is an error for that
/// account, never a panic.
pub fn verify(stored: &str, password: &str) -> Result<bool, HashError> {
    verify_within(stored, password, &limits())
}

pub fn verify_within(
    stored: &str,
    password: &str,
    limits: &PasswordLimits,
) -> Result<bool, HashError> {
    prepare(stored, limits)?.verify(password)
}

/// Whether a login could check `stored` under the configured limits, without doing
/// the work: what an import asks before it stores a hash, so a user is never stored
/// with a hash no login can read.
pub fn admit(stored: &str) -> Result<(), HashError> {
    prepare(stored, &limits()).map(|_| ())
}

/// A stored hash read and found within the limits, ready to be checked.
enum Prepared<'a> {
    Bcrypt(&'a str),
    // Boxed: a parsed PHC string is several times the size of the other variants.
    Argon2(Box<PasswordHash>),
    DjangoPbkdf2 {
        iterations: u32,
        salt: &'a str,
        expected: Vec<u8>,
    },
    Pbkdf2(imported::Pbkdf2),
    Salted(imported::Salted),
    /// The products' `sha1$salt$hex` and `md5$salt$hex`: `digest(salt + password)`.
    LegacySalted {
        sha1: bool,
        salt: &'a str,
        expected: Vec<u8>,
    },
}

fn prepare<'a>(stored: &'a str, limits: &PasswordLimits) -> Result<Prepared<'a>, HashError> {
    if stored.starts_with("$2a$") || stored.starts_with("$2b$") || stored.starts_with("$2y$") {
        // `$2b$12$…`: the cost is the two digits after the second `$`.
        let cost: u32 = stored
            .get(4..6)
            .and_then(|c| c.parse().ok())
            .ok_or(HashError::Corrupt("bcrypt"))?;
        if cost > limits.max_bcrypt_cost {
            return Err(HashError::TooCostly(
                "bcrypt cost",
                format!("{cost} > {}", limits.max_bcrypt_cost),
            ));
        }
        return Ok(Prepared::Bcrypt(stored));
    }
    if stored.starts_with("$argon2") {
        let hash = PasswordHash::new(stored).map_err(|_| HashError::Corrupt("argon2"))?;
        let params = argon2::Params::try_from(&hash).map_err(|_| HashError::Corrupt("argon2"))?;
        for (what, value, max) in [
            (
                "argon2 memory (KiB)",
                params.m_cost(),
                limits.max_argon2_memory_kib,
            ),
            (
                "argon2 iterations",
                params.t_cost(),
                limits.max_argon2_iterations,
            ),
            (
                "argon2 parallelism",
                params.p_cost(),
                limits.max_argon2_parallelism,
            ),
        ] {
            if value > max {
                return Err(HashError::TooCostly(what, format!("{value} > {max}")));
            }
        }
        return Ok(Prepared::Argon2(Box::new(hash)));
    }
    if let Some(rest) = stored.strip_prefix("pbkdf2_sha256$") {
        return prepare_django_pbkdf2(rest, limits);
    }
    if stored.starts_with("$pbkdf2-") {
        let pbkdf2 = imported::Pbkdf2::parse(stored)?;
        pbkdf2.within(limits)?;
        return Ok(Prepared::Pbkdf2(pbkdf2));
    }
    if stored.starts_with("$a0-") {
        return Ok(Prepared::Salted(imported::Salted::parse(stored)?));
    }
    for (prefix, sha1, what, len) in [("sha1$", true, "sha1", 20), ("md5$", false, "md5", 16)] {
        if let Some(rest) = stored.strip_prefix(prefix) {
            let (salt, hex_digest) = rest.split_once('$').ok_or(HashError::Corrupt(what))?;
            let expected = hex::decode(hex_digest).map_err(|_| HashError::Corrupt(what))?;
            if expected.len() != len {
                return Err(HashError::Corrupt(what));
            }
            return Ok(Prepared::LegacySalted {
                sha1,
                salt,
                expected,
            });
        }
    }
    Err(HashError::UnknownFormat)
}

impl Prepared<'_> {
    fn verify(&self, password: &str) -> Result<bool, HashError> {
        Ok(match self {
            Prepared::Bcrypt(stored) => {
                bcrypt::verify(password, stored).map_err(|_| HashError::Corrupt("bcrypt"))?
            }
            Prepared::Argon2(hash) => argon2::Argon2::default()
                .verify_password(password.as_bytes(), hash.as_ref())
                .is_ok(),
            Prepared::DjangoPbkdf2 {
                iterations,
                salt,
                expected,
            } => pbkdf2_sha256(password, salt, *iterations)
                .ct_eq(expected.as_slice())
                .into(),
            Prepared::Pbkdf2(pbkdf2) => pbkdf2.verify(password),
            Prepared::Salted(salted) => salted.verify(password),
            Prepared::LegacySalted {
                sha1,
                salt,
                expected,
            } => {
                let salted = format!("{salt}{password}");
                let actual = if *sha1 {
                    sha1::Sha1::digest(salted).to_vec()
                } else {
                    md5::Md5::digest(salted).to_vec()
                };
                actual.ct_eq(expected).into()
            }
        })
    }
}

fn prepare_django_pbkdf2<'a>(
    rest: &'a str,
    limits: &PasswordLimits,
) -> Result<Prepared<'a>, HashError> {
    let corrupt = || HashError::Corrupt("pbkdf2_sha256");
    let mut parts = rest.splitn(3, '$');
    let (Some(iterations), Some(salt), Some(encoded)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(corrupt());
    };
    let iterations: u32 = iterations.parse().map_err(|_| corrupt())?;
    if iterations == 0 {
        return Err(corrupt());
    }
    if iterations > limits.max_pbkdf2_iterations {
        return Err(HashError::TooCostly(
            "pbkdf2 iterations",
            format!("{iterations} > {}", limits.max_pbkdf2_iterations),
        ));
    }
    let expected = BASE64.decode(encoded).map_err(|_| corrupt())?;
    if expected.len() != 32 {
        return Err(corrupt());
    }
    Ok(Prepared::DjangoPbkdf2 {
        iterations,
        salt,
        expected,
    })
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
    fn hashes_over_the_limits_are_refused_before_any_work() {
        let limits = PasswordLimits::default();
        let costly = [
            // Real hashes with huge work factors: verifying any of them would take
            // seconds (bcrypt 15: 1.9 s, pbkdf2 10M: 1.1 s, argon2 1 GiB: 2.7 s).
            "$2b$15$7777777777777777777777uVYfu6iQsGFV1gN6zaqk7TKhRZBEVzC".to_owned(),
            django_pbkdf2("x", "salt", 1).replace("$1$", "$10000000$"),
            "$argon2id$v=19$m=1048576,t=1,p=1$c2FsdHNhbHQ$MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI"
                .to_owned(),
        ];
        for hash in &costly {
            assert!(
                matches!(
                    verify_within(hash, "x", &limits),
                    Err(HashError::TooCostly(..))
                ),
                "{hash}"
            );
        }
        // At the limit, still verified.
        let at_limit = PasswordLimits {
            max_bcrypt_cost: 4,
            ..limits
        };
        assert_eq!(
            verify_within(&bcrypt("pw", "2b", [1; 16]), "pw", &at_limit),
            Ok(true)
        );
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
