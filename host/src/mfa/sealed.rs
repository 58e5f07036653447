//! Phone numbers at rest: AES-256-GCM (RustCrypto `aes-gcm`), a random 96-bit nonce
//! per sealing, and the user id and factor id as associated data, so a ciphertext
//! copied into another user's or factor's row does not open. Each sealed value names
//! the key that sealed it; the ring's first key seals, every key in it opens, which is
//! what rotation needs (seal with the new key, re-seal old rows in the background).
//! Keys come from the environment or a file and never appear in a message.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use zeroize::Zeroizing;

/// A value as stored: which key, the nonce, and ciphertext with its tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("phone keys: {0}")]
    Keys(String),
    #[error("sealed with key {0:?}, which is not in the key ring")]
    UnknownKey(String),
    /// Tampered, truncated, or not this user's and factor's value.
    #[error("a sealed phone number does not open for this user and factor")]
    Open,
}

/// The keys that open sealed values; the first one seals.
pub struct KeyRing {
    current: String,
    keys: HashMap<String, Aes256Gcm>,
    /// Derived from the sealing key: keys the digests that stand for a phone where a
    /// phone must be recognised without being stored (the per-number send limits).
    blind_key: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<&String> = self.keys.keys().collect();
        ids.sort();
        write!(
            f,
            "KeyRing {{ current: {:?}, key_ids: {ids:?} }}",
            self.current
        )
    }
}

const MAX_KEY_ID_LEN: usize = 64;

impl KeyRing {
    /// `ID:BASE64,ID:BASE64,…`: key ids (letters, digits, `.`, `_`, `-`) and 32-byte
    /// keys in standard base64; the first seals.
    pub fn parse(spec: &str) -> Result<Self, SealError> {
        let spec = Zeroizing::new(spec.trim().to_owned());
        let mut current = None;
        let mut keys = HashMap::new();
        let mut blind_key = Zeroizing::new([0u8; 32]);
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (id, encoded) = entry
                .split_once(':')
                .ok_or_else(|| SealError::Keys("each key is ID:BASE64".into()))?;
            if id.is_empty()
                || id.len() > MAX_KEY_ID_LEN
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return Err(SealError::Keys(format!(
                    "a key id is 1 to {MAX_KEY_ID_LEN} letters, digits, '.', '_' or '-'"
                )));
            }
            let bytes = Zeroizing::new(
                B64.decode(encoded)
                    .map_err(|_| SealError::Keys(format!("key {id:?} is not base64")))?,
            );
            if bytes.len() != 32 {
                return Err(SealError::Keys(format!(
                    "key {id:?} is {} bytes; AES-256 needs 32",
                    bytes.len()
                )));
            }
            let cipher = Aes256Gcm::new_from_slice(&bytes)
                .map_err(|_| SealError::Keys(format!("key {id:?} is not usable")))?;
            if keys.insert(id.to_owned(), cipher).is_some() {
                return Err(SealError::Keys(format!("key id {id:?} appears twice")));
            }
            if current.is_none() {
                use sha2::Digest as _;
                let mut derive = sha2::Sha256::new();
                derive.update(b"portcullis-phone-blind-index\0");
                derive.update(&bytes[..]);
                blind_key.copy_from_slice(&derive.finalize());
                current = Some(id.to_owned());
            }
        }
        let current = current.ok_or_else(|| SealError::Keys("no key given".into()))?;
        Ok(Self {
            current,
            keys,
            blind_key,
        })
    }

    /// The ring in the environment variable `name`.
    pub fn from_env(name: &str) -> Result<Self, SealError> {
        let spec = Zeroizing::new(
            std::env::var(name)
                .map_err(|_| SealError::Keys(format!("environment variable {name} is not set")))?,
        );
        Self::parse(&spec)
    }

    /// The ring in a file (one line, or one key per line; `#` starts a comment line).
    pub fn from_file(path: &Path) -> Result<Self, SealError> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            SealError::Keys(format!("cannot read {}: {}", path.display(), e.kind()))
        })?);
        let keys: Zeroizing<String> = Zeroizing::new(
            text.lines()
                .filter(|line| !line.trim_start().starts_with('#'))
                .collect::<Vec<_>>()
                .join(","),
        );
        Self::parse(&keys)
    }

    pub fn current_key_id(&self) -> &str {
        &self.current
    }

    /// A keyed digest standing for `value` (a phone) under `purpose`: the same value
    /// gives the same digest while the sealing key stays, and a copy of the database
    /// cannot test a guess without the key.
    pub fn blind(&self, purpose: &str, value: &str) -> String {
        use hmac::{KeyInit, Mac};
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&self.blind_key[..])
            .expect("HMAC takes a key of any length");
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    pub fn seal(&self, plaintext: &str, user_id: &str, factor_id: &str) -> Sealed {
        self.seal_with(plaintext.as_bytes(), &associated_data(user_id, factor_id))
    }

    pub fn open(
        &self,
        sealed: &Sealed,
        user_id: &str,
        factor_id: &str,
    ) -> Result<Zeroizing<String>, SealError> {
        let plaintext = self.open_with(sealed, &associated_data(user_id, factor_id))?;
        String::from_utf8(plaintext.to_vec())
            .map(Zeroizing::new)
            .map_err(|_| SealError::Open)
    }

    /// Seals bytes that are not a phone (an import job's users file) under the current
    /// key, bound to `purpose` and `row_id`: a value sealed for one purpose or row
    /// does not open as another, nor as a phone.
    pub fn seal_bytes(&self, purpose: &str, plaintext: &[u8], row_id: &str) -> Sealed {
        self.seal_with(plaintext, &associated_data_for(purpose, row_id))
    }

    /// Seals under the current key with a fresh nonce, bound to `aad`.
    fn seal_with(&self, plaintext: &[u8], aad: &[u8]) -> Sealed {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext = self.keys[&self.current]
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("AES-GCM seals any input under 64 GiB");
        Sealed {
            key_id: self.current.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
        }
    }

    /// Opens what was sealed bound to `aad`, with the key it names.
    fn open_with(&self, sealed: &Sealed, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let cipher = self
            .keys
            .get(&sealed.key_id)
            .ok_or_else(|| SealError::UnknownKey(sealed.key_id.clone()))?;
        if sealed.nonce.len() != 12 {
            return Err(SealError::Open);
        }
        let msg = &sealed.ciphertext;
        cipher
            .decrypt(Nonce::from_slice(&sealed.nonce), Payload { msg, aad })
            .map(Zeroizing::new)
            .map_err(|_| SealError::Open)
    }

    /// Opens what [`KeyRing::seal_bytes`] sealed for `purpose` and `row_id`.
    pub fn open_bytes(
        &self,
        sealed: &Sealed,
        purpose: &str,
        row_id: &str,
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        self.open_with(sealed, &associated_data_for(purpose, row_id))
    }

    /// For rotation: the value sealed again with the current key, or `None` when it
    /// already is.
    pub fn reseal(
        &self,
        sealed: &Sealed,
        user_id: &str,
        factor_id: &str,
    ) -> Result<Option<Sealed>, SealError> {
        if sealed.key_id == self.current {
            return Ok(None);
        }
        let plaintext = self.open(sealed, user_id, factor_id)?;
        Ok(Some(self.seal(&plaintext, user_id, factor_id)))
    }
}

/// Length-prefixed, so no two (user, factor) pairs give the same bytes.
fn associated_data(user_id: &str, factor_id: &str) -> Vec<u8> {
    let mut aad = b"portcullis:phone:v1".to_vec();
    for part in [user_id, factor_id] {
        aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

/// For [`KeyRing::seal_bytes`]: its own prefix (never a phone's), the purpose and the
/// row, each length-prefixed.
fn associated_data_for(purpose: &str, row_id: &str) -> Vec<u8> {
    let mut aad = b"portcullis:sealed:v1".to_vec();
    for part in [purpose, row_id] {
        aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="; // bytes 0..32
    const K2: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="; // bytes 32..64

    #[test]
    fn sealed_phones_open_only_for_their_user_and_factor() {
        let ring = KeyRing::parse(&format!("2026-11:{K1}")).unwrap();
        let sealed = ring.seal("+14155552671", "usr_1", "fac_1");
        assert_eq!(sealed.key_id, "2026-11");
        assert!(!String::from_utf8_lossy(&sealed.ciphertext).contains("4155552671"));
        assert_eq!(
            &*ring.open(&sealed, "usr_1", "fac_1").unwrap(),
            "+14155552671"
        );
        // Copied to another user's or factor's row: does not open.
        assert_eq!(ring.open(&sealed, "usr_2", "fac_1"), Err(SealError::Open));
        assert_eq!(ring.open(&sealed, "usr_1", "fac_2"), Err(SealError::Open));
        // The boundary between the ids counts too.
        assert_eq!(ring.open(&sealed, "usr_1f", "ac_1"), Err(SealError::Open));
        // Tampered.
        let mut tampered = sealed.clone();
        tampered.ciphertext[0] ^= 1;
        assert_eq!(ring.open(&tampered, "usr_1", "fac_1"), Err(SealError::Open));
        // Each sealing has its own nonce.
        assert_ne!(
            ring.seal("+14155552671", "usr_1", "fac_1").nonce,
            sealed.nonce
        );
    }

    #[test]
    fn sealed_bytes_open_only_for_their_purpose_and_row() {
        let ring = KeyRing::parse(&format!("k:{K1}")).unwrap();
        let file = br#"[{"email":"a@example.org","password_hash":"$2b$10$x"}]"#;
        let sealed = ring.seal_bytes("import-users-file", file, "job_1");
        assert!(!sealed.ciphertext.windows(8).any(|w| w == b"$2b$10$x"));
        assert_eq!(
            &ring
                .open_bytes(&sealed, "import-users-file", "job_1")
                .unwrap()[..],
            &file[..]
        );
        assert_eq!(
            ring.open_bytes(&sealed, "import-users-file", "job_2"),
            Err(SealError::Open)
        );
        assert_eq!(
            ring.open_bytes(&sealed, "other", "job_1"),
            Err(SealError::Open)
        );
        // Not a phone either, even with the same ids.
        let phone = ring.seal("+14155552671", "import-users-file", "job_1");
        assert_eq!(
            ring.open_bytes(&phone, "import-users-file", "job_1"),
            Err(SealError::Open)
        );
    }

    #[test]
    fn rotation_seals_with_the_first_key_and_opens_with_any() {
        let old = KeyRing::parse(&format!("2026-06:{K1}")).unwrap();
        let sealed = old.seal("+16045550199", "usr_1", "fac_1");
        let rotated = KeyRing::parse(&format!("2026-11:{K2},2026-06:{K1}")).unwrap();
        assert_eq!(
            &*rotated.open(&sealed, "usr_1", "fac_1").unwrap(),
            "+16045550199"
        );
        let resealed = rotated.reseal(&sealed, "usr_1", "fac_1").unwrap().unwrap();
        assert_eq!(resealed.key_id, "2026-11");
        assert_eq!(rotated.reseal(&resealed, "usr_1", "fac_1").unwrap(), None);
        // Once the old key is gone, old values name it.
        let new_only = KeyRing::parse(&format!("2026-11:{K2}")).unwrap();
        assert_eq!(
            new_only.open(&sealed, "usr_1", "fac_1"),
            Err(SealError::UnknownKey("2026-06".into()))
        );
        assert_eq!(
            &*new_only.open(&resealed, "usr_1", "fac_1").unwrap(),
            "+16045550199"
        );
    }

    #[test]
    fn bad_key_specs_are_refused_without_showing_key_material() {
        for spec in [
            "",
            "nokey",
            &format!("bad id:{K1}"),
            "k:short",
            "k:!!!!",
            &format!("k:{K1},k:{K2}"),
        ] {
            let error = KeyRing::parse(spec).unwrap_err();
            assert!(matches!(error, SealError::Keys(_)), "{spec}: {error:?}");
            assert!(!error.to_string().contains(K1) && !error.to_string().contains(K2));
        }
        let ring = KeyRing::parse(&format!("a:{K1},b:{K2}")).unwrap();
        let shown = format!("{ring:?}");
        assert!(shown.contains("\"a\"") && !shown.contains(K1), "{shown}");
    }
}
