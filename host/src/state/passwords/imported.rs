//! The password formats an Auth0 users-import file describes in `custom_password_hash`
//! beyond bcrypt and argon2, as the directory stores them. Every input the legacy
//! system hashed is in the stored string, so a login computes exactly what it did:
//!
//! - `$a0-<digest>$pe=<encoding>,sp=<position>$<salt>$<hash>`:
//!   `digest(salted(password))`. Auth0's `md4`, `md5`, `sha1`, `sha256`, `sha512`, and
//!   `ldap`'s RFC 2307 schemes (`{SSHA}` is `sha1` with the salt as suffix).
//! - `$a0-hmac-<digest>$pe=<encoding>,sp=<position>,k=<key>$<salt>$<hash>`:
//!   `HMAC-digest(key, salted(password))`, Auth0's `hmac`.
//! - `$pbkdf2-<digest>$i=<iterations>,l=<bytes>$<salt>$<hash>`: PBKDF2-HMAC-digest, the
//!   PHC string Auth0 takes, with the digest's canonical name and both parameters
//!   written out (Auth0 defaults them to `i=100000`, `l=64`).
//!
//! `<digest>` is one of md4, md5, ripemd160, sha1, sha224, sha256, sha384, sha512.
//! `<salt>`, `<hash>` and `<key>` are the raw bytes in standard base64 without padding
//! (a salt may be empty). `pe` is how the typed password became bytes: `utf8`,
//! `utf16le` (Auth0's `utf16le` and `ucs2`) or `latin1` (Auth0's `latin1`, `binary` and
//! `ascii`, which Node encodes alike: one byte per character). A password holding a
//! character its encoding cannot write matches nothing (Node would keep the low byte of
//! it, so two passwords would share one hash). `sp` puts the salt's bytes before
//! (`prefix`) or after (`suffix`) the password's.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use hmac::{KeyInit as _, Mac as _};
use subtle::ConstantTimeEq;

/// The shortest PBKDF2 output a stored hash may have.
pub const MIN_PBKDF2_LEN: usize = 16;

use super::HashError;
use super::PasswordLimits;

/// The longest salt, HMAC key or PBKDF2 output the directory keeps: far past what any
/// real system uses, short enough that no stored string makes a login slow.
pub const MAX_PARAMETER_BYTES: usize = 1024;

/// A digest function the imported formats name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digest {
    Md4,
    Md5,
    Ripemd160,
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl Digest {
    pub const ALL: [Digest; 8] = [
        Digest::Md4,
        Digest::Md5,
        Digest::Ripemd160,
        Digest::Sha1,
        Digest::Sha224,
        Digest::Sha256,
        Digest::Sha384,
        Digest::Sha512,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Digest::Md4 => "md4",
            Digest::Md5 => "md5",
            Digest::Ripemd160 => "ripemd160",
            Digest::Sha1 => "sha1",
            Digest::Sha224 => "sha224",
            Digest::Sha256 => "sha256",
            Digest::Sha384 => "sha384",
            Digest::Sha512 => "sha512",
        }
    }

    /// By canonical name only (the stored formats); aliases are the importer's business.
    pub fn from_name(name: &str) -> Option<Digest> {
        Digest::ALL.into_iter().find(|d| d.name() == name)
    }

    pub fn output_len(self) -> usize {
        match self {
            Digest::Md4 | Digest::Md5 => 16,
            Digest::Ripemd160 | Digest::Sha1 => 20,
            Digest::Sha224 => 28,
            Digest::Sha256 => 32,
            Digest::Sha384 => 48,
            Digest::Sha512 => 64,
        }
    }

    fn hash(self, parts: [&[u8]; 2]) -> Vec<u8> {
        fn run<D: sha2::Digest>(parts: [&[u8]; 2]) -> Vec<u8> {
            let mut hasher = D::new();
            for part in parts {
                hasher.update(part);
            }
            hasher.finalize().to_vec()
        }
        match self {
            Digest::Md4 => run::<md4::Md4>(parts),
            Digest::Md5 => run::<md5::Md5>(parts),
            Digest::Ripemd160 => run::<ripemd::Ripemd160>(parts),
            Digest::Sha1 => run::<sha1::Sha1>(parts),
            Digest::Sha224 => run::<sha2::Sha224>(parts),
            Digest::Sha256 => run::<sha2::Sha256>(parts),
            Digest::Sha384 => run::<sha2::Sha384>(parts),
            Digest::Sha512 => run::<sha2::Sha512>(parts),
        }
    }

    fn hmac(self, key: &[u8], parts: [&[u8]; 2]) -> Vec<u8> {
        fn run<D: hmac::EagerHash>(key: &[u8], parts: [&[u8]; 2]) -> Vec<u8> {
            let mut mac =
                hmac::Hmac::<D>::new_from_slice(key).expect("HMAC takes a key of any length");
            for part in parts {
                mac.update(part);
            }
            mac.finalize().into_bytes().to_vec()
        }
        match self {
            Digest::Md4 => run::<md4::Md4>(key, parts),
            Digest::Md5 => run::<md5::Md5>(key, parts),
            Digest::Ripemd160 => run::<ripemd::Ripemd160>(key, parts),
            Digest::Sha1 => run::<sha1::Sha1>(key, parts),
            Digest::Sha224 => run::<sha2::Sha224>(key, parts),
            Digest::Sha256 => run::<sha2::Sha256>(key, parts),
            Digest::Sha384 => run::<sha2::Sha384>(key, parts),
            Digest::Sha512 => run::<sha2::Sha512>(key, parts),
        }
    }

    fn pbkdf2(self, password: &[u8], salt: &[u8], rounds: u32, out: &mut [u8]) {
        use pbkdf2::pbkdf2_hmac;
        match self {
            Digest::Md4 => pbkdf2_hmac::<md4::Md4>(password, salt, rounds, out),
            Digest::Md5 => pbkdf2_hmac::<md5::Md5>(password, salt, rounds, out),
            Digest::Ripemd160 => pbkdf2_hmac::<ripemd::Ripemd160>(password, salt, rounds, out),
            Digest::Sha1 => pbkdf2_hmac::<sha1::Sha1>(password, salt, rounds, out),
            Digest::Sha224 => pbkdf2_hmac::<sha2::Sha224>(password, salt, rounds, out),
            Digest::Sha256 => pbkdf2_hmac::<sha2::Sha256>(password, salt, rounds, out),
            Digest::Sha384 => pbkdf2_hmac::<sha2::Sha384>(password, salt, rounds, out),
            Digest::Sha512 => pbkdf2_hmac::<sha2::Sha512>(password, salt, rounds, out),
        }
    }
}

/// How the typed password became the bytes that were hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordEncoding {
    Utf8,
    Utf16Le,
    Latin1,
}

impl PasswordEncoding {
    /// Auth0's `password.encoding` names (Node's buffer encodings).
    pub fn from_auth0(name: &str) -> Option<PasswordEncoding> {
        match name {
            "utf8" => Some(PasswordEncoding::Utf8),
            "utf16le" | "ucs2" => Some(PasswordEncoding::Utf16Le),
            "latin1" | "binary" | "ascii" => Some(PasswordEncoding::Latin1),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            PasswordEncoding::Utf8 => "utf8",
            PasswordEncoding::Utf16Le => "utf16le",
            PasswordEncoding::Latin1 => "latin1",
        }
    }

    fn from_name(name: &str) -> Option<PasswordEncoding> {
        [
            PasswordEncoding::Utf8,
            PasswordEncoding::Utf16Le,
            PasswordEncoding::Latin1,
        ]
        .into_iter()
        .find(|e| e.name() == name)
    }

    /// The password's bytes, or `None` when this encoding cannot write it.
    fn encode(self, password: &str) -> Option<Vec<u8>> {
        match self {
            PasswordEncoding::Utf8 => Some(password.as_bytes().to_vec()),
            PasswordEncoding::Utf16Le => Some(
                password
                    .encode_utf16()
                    .flat_map(|unit| unit.to_le_bytes())
                    .collect(),
            ),
            PasswordEncoding::Latin1 => password.chars().map(|c| u8::try_from(c).ok()).collect(),
        }
    }
}

/// Where the salt went when the hash was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaltPosition {
    Prefix,
    Suffix,
}

impl SaltPosition {
    pub fn from_auth0(name: &str) -> Option<SaltPosition> {
        match name {
            "prefix" => Some(SaltPosition::Prefix),
            "suffix" => Some(SaltPosition::Suffix),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            SaltPosition::Prefix => "prefix",
            SaltPosition::Suffix => "suffix",
        }
    }
}

/// `digest(salted(password))`, or with a key `HMAC-digest(key, salted(password))`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Salted {
    pub digest: Digest,
    pub hmac_key: Option<Vec<u8>>,
    pub password_encoding: PasswordEncoding,
    pub salt: Vec<u8>,
    pub position: SaltPosition,
    pub hash: Vec<u8>,
}

fn params(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.split(',').filter_map(|p| p.split_once('='))
}

fn bytes(text: &str, what: &'static str) -> Result<Vec<u8>, HashError> {
    let bytes = STANDARD_NO_PAD
        .decode(text)
        .map_err(|_| HashError::Corrupt(what))?;
    if bytes.len() > MAX_PARAMETER_BYTES {
        return Err(HashError::Corrupt(what));
    }
    Ok(bytes)
}

impl Salted {
    pub fn stored(&self) -> String {
        let mut params = format!(
            "pe={},sp={}",
            self.password_encoding.name(),
            self.position.name()
        );
        let id = match &self.hmac_key {
            Some(key) => {
                params.push_str(&format!(",k={}", STANDARD_NO_PAD.encode(key)));
                format!("hmac-{}", self.digest.name())
            }
            None => self.digest.name().to_owned(),
        };
        format!(
            "$a0-{id}${params}${}${}",
            STANDARD_NO_PAD.encode(&self.salt),
            STANDARD_NO_PAD.encode(&self.hash)
        )
    }

    pub fn parse(stored: &str) -> Result<Salted, HashError> {
        let what = if stored.starts_with("$a0-hmac-") {
            "hmac"
        } else {
            "salted digest"
        };
        let corrupt = || HashError::Corrupt(what);
        let rest = stored.strip_prefix("$a0-").ok_or_else(corrupt)?;
        let [id, param_text, salt, hash] = rest
            .splitn(4, '$')
            .collect::<Vec<_>>()
            .try_into()
            .map_err(|_| corrupt())?;
        let (digest, keyed) = match id.strip_prefix("hmac-") {
            Some(name) => (name, true),
            None => (id, false),
        };
        let digest = Digest::from_name(digest).ok_or_else(corrupt)?;
        let (mut encoding, mut position, mut key) = (None, None, None);
        for (name, value) in params(param_text) {
            match name {
                "pe" => encoding = PasswordEncoding::from_name(value),
                "sp" => position = SaltPosition::from_auth0(value),
                "k" if keyed => key = Some(bytes(value, what)?),
                _ => return Err(corrupt()),
            }
        }
        let hash = bytes(hash, what)?;
        if hash.len() != digest.output_len() || keyed != key.is_some() {
            return Err(corrupt());
        }
        Ok(Salted {
            digest,
            hmac_key: key,
            password_encoding: encoding.ok_or_else(corrupt)?,
            salt: bytes(salt, what)?,
            position: position.ok_or_else(corrupt)?,
            hash,
        })
    }

    /// Constant-time in the comparison; the digest's work does not depend on the hash.
    pub fn verify(&self, password: &str) -> bool {
        let Some(password) = self.password_encoding.encode(password) else {
            return false;
        };
        let parts: [&[u8]; 2] = match self.position {
            SaltPosition::Prefix => [&self.salt, &password],
            SaltPosition::Suffix => [&password, &self.salt],
        };
        let actual = match &self.hmac_key {
            Some(key) => self.digest.hmac(key, parts),
            None => self.digest.hash(parts),
        };
        actual.ct_eq(&self.hash).into()
    }
}

/// PBKDF2-HMAC with any of the digests; the output length is the hash's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pbkdf2 {
    pub digest: Digest,
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub hash: Vec<u8>,
}

impl Pbkdf2 {
    pub fn stored(&self) -> String {
        format!(
            "$pbkdf2-{}$i={},l={}${}${}",
            self.digest.name(),
            self.iterations,
            self.hash.len(),
            STANDARD_NO_PAD.encode(&self.salt),
            STANDARD_NO_PAD.encode(&self.hash)
        )
    }

    pub fn parse(stored: &str) -> Result<Pbkdf2, HashError> {
        let corrupt = || HashError::Corrupt("pbkdf2");
        let rest = stored.strip_prefix("$pbkdf2-").ok_or_else(corrupt)?;
        let [digest, param_text, salt, hash] = rest
            .split('$')
            .collect::<Vec<_>>()
            .try_into()
            .map_err(|_| corrupt())?;
        let digest = Digest::from_name(digest).ok_or_else(corrupt)?;
        let (mut iterations, mut length) = (None, None);
        for (name, value) in params(param_text) {
            match name {
                "i" => iterations = value.parse::<u32>().ok().filter(|i| *i > 0),
                "l" => length = value.parse::<usize>().ok(),
                _ => return Err(corrupt()),
            }
        }
        let hash = bytes(hash, "pbkdf2")?;
        // A short output is a few guesses from any password (1 byte: 1 in 256).
        if hash.len() < MIN_PBKDF2_LEN || Some(hash.len()) != length {
            return Err(corrupt());
        }
        Ok(Pbkdf2 {
            digest,
            iterations: iterations.ok_or_else(corrupt)?,
            salt: bytes(salt, "pbkdf2")?,
            hash,
        })
    }

    /// The work of one check in iterations of the PRF: PBKDF2 runs all of them once
    /// for each block of output, so `l=64` over SHA-256 costs twice `i`.
    pub fn work(&self) -> u64 {
        u64::from(self.iterations) * self.hash.len().div_ceil(self.digest.output_len()) as u64
    }

    pub fn within(&self, limits: &PasswordLimits) -> Result<(), HashError> {
        if self.work() > u64::from(limits.max_pbkdf2_iterations) {
            return Err(HashError::TooCostly(
                "pbkdf2 iterations (times output blocks)",
                format!("{} > {}", self.work(), limits.max_pbkdf2_iterations),
            ));
        }
        Ok(())
    }

    pub fn verify(&self, password: &str) -> bool {
        let mut actual = vec![0u8; self.hash.len()];
        self.digest.pbkdf2(
            password.as_bytes(),
            &self.salt,
            self.iterations,
            &mut actual,
        );
        actual.ct_eq(&self.hash).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_strings_read_back_as_they_were_written() {
        for digest in Digest::ALL {
            for key in [None, Some(b"pepper".to_vec())] {
                let salted = Salted {
                    digest,
                    hmac_key: key,
                    password_encoding: PasswordEncoding::Utf16Le,
                    salt: vec![0, 255, b'$', b','],
                    position: SaltPosition::Suffix,
                    hash: vec![7; digest.output_len()],
                };
                assert_eq!(Salted::parse(&salted.stored()), Ok(salted));
            }
            let pbkdf2 = Pbkdf2 {
                digest,
                iterations: 3,
                salt: Vec::new(),
                hash: vec![1; 40],
            };
            assert_eq!(Pbkdf2::parse(&pbkdf2.stored()), Ok(pbkdf2));
        }
    }

    #[test]
    fn the_encodings_write_the_bytes_node_writes() {
        assert_eq!(
            PasswordEncoding::Utf16Le.encode("é€"),
            Some(vec![0xe9, 0, 0xac, 0x20])
        );
        assert_eq!(PasswordEncoding::Latin1.encode("é"), Some(vec![0xe9]));
        // Past U+00FF: nothing to compare, rather than Node's low byte.
        assert_eq!(PasswordEncoding::Latin1.encode("€"), None);
    }

    #[test]
    fn a_wrong_length_or_unknown_parameter_is_corrupt() {
        for stored in [
            "$a0-md5$pe=utf8,sp=prefix$$AAAA",
            "$a0-md5$pe=utf8,sp=prefix,k=AA$$AAAAAAAAAAAAAAAAAAAAAA",
            "$a0-hmac-md5$pe=utf8,sp=prefix$$AAAAAAAAAAAAAAAAAAAAAA",
            "$a0-whirlpool$pe=utf8,sp=prefix$$AAAAAAAAAAAAAAAAAAAAAA",
            "$a0-md5$pe=utf32,sp=prefix$$AAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert!(Salted::parse(stored).is_err(), "{stored}");
        }
        for stored in [
            "$pbkdf2-sha256$i=0,l=16$AAAA$AAAAAAAAAAAAAAAAAAAAAA",
            "$pbkdf2-sha256$i=1,l=17$AAAA$AAAAAAAAAAAAAAAAAAAAAA",
            "$pbkdf2-mdc2$i=1,l=16$AAAA$AAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert!(Pbkdf2::parse(stored).is_err(), "{stored}");
        }
    }
}
