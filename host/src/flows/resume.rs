//! Resume tokens: opaque, signed (HMAC-SHA256), single use, bound to one
//! transaction. A token is a random id, a tag binding it to its transaction, and a
//! signature over both: it carries no user id, no transaction id and no state (all of
//! that, and the expiry, stays server-side in the record the id names), so a token
//! read off a page or a log says nothing about the account.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The version prefix of the token format.
const PREFIX: &str = "r1";
/// The longest token worth looking at: prefix, 32 hex digits, two base64 MACs.
const MAX_TOKEN_LEN: usize = 128;

/// Why a resume was refused. The names are what replays and clients compare.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "refused", content = "detail")]
pub enum ResumeRefusal {
    #[error("resume token is malformed")]
    Malformed,
    #[error("resume token signature does not match")]
    Forged,
    #[error("resume token has expired")]
    Expired,
    #[error("resume token was already used")]
    Replayed,
    #[error("resume token is not known here")]
    Unknown,
    #[error("resume token does not belong to this login: {0}")]
    Mismatch(String),
}

pub struct ResumeTokens {
    mac: HmacSha256,
    pub(crate) ttl_ms: u64,
}

impl ResumeTokens {
    pub fn new(key: &[u8], ttl_ms: u64) -> Self {
        Self {
            mac: HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length"),
            ttl_ms,
        }
    }

    /// A key for this process only: tokens do not survive a restart.
    pub fn ephemeral(ttl_ms: u64) -> Self {
        let mut key = [0u8; 32];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut key);
        Self::new(&key, ttl_ms)
    }

    fn sign(&self, parts: &[&str]) -> Vec<u8> {
        let mut mac = self.mac.clone();
        for part in parts {
            mac.update(part.as_bytes());
            mac.update(&[0]);
        }
        mac.finalize().into_bytes().to_vec()
    }

    /// Binds the id to its transaction without saying which it is.
    fn tag(&self, jti: &str, transaction_id: &str) -> String {
        B64.encode(&self.sign(&["resume-transaction", jti, transaction_id])[..16])
    }

    /// The token for the record `jti`, parked for `transaction_id`.
    pub fn issue(&self, jti: &str, transaction_id: &str) -> String {
        let tag = self.tag(jti, transaction_id);
        let signature = B64.encode(self.sign(&[PREFIX, jti, &tag]));
        format!("{PREFIX}.{jti}.{tag}.{signature}")
    }

    /// Checks the signature and the transaction (in constant time) and returns the
    /// record's id; the caller then takes the server-side record, which decides expiry
    /// and makes a token single use.
    pub fn verify(&self, token: &str, transaction_id: &str) -> Result<String, ResumeRefusal> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(ResumeRefusal::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(PREFIX), Some(jti), Some(tag), Some(signature), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(ResumeRefusal::Malformed);
        };
        let signature = B64
            .decode(signature)
            .map_err(|_| ResumeRefusal::Malformed)?;
        let expected = self.sign(&[PREFIX, jti, tag]);
        if !bool::from(expected.ct_eq(&signature)) {
            return Err(ResumeRefusal::Forged);
        }
        let bound = self.tag(jti, transaction_id);
        if !bool::from(bound.as_bytes().ct_eq(tag.as_bytes())) {
            return Err(ResumeRefusal::Mismatch("another transaction".into()));
        }
        Ok(jti.to_owned())
    }
}

/// For tests and replays: the same token naming another record, with the old
/// signature, as an attacker would try.
pub fn forge(token: &str) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    if let Some(jti) = parts.get_mut(1) {
        let flipped = if jti.starts_with('0') { "1" } else { "0" };
        jti.replace_range(..jti.len().min(1), flipped);
    }
    parts.join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_with_its_key_and_transaction_only() {
        let tokens = ResumeTokens::new(b"0123456789abcdef0123456789abcdef", 1000);
        let token = tokens.issue("0a1b", "tx1");
        assert_eq!(tokens.verify(&token, "tx1"), Ok("0a1b".to_owned()));
        assert!(!token.contains("tx1"), "the transaction stays server-side");
        let other = ResumeTokens::new(b"fedcba9876543210fedcba9876543210", 1000);
        assert_eq!(other.verify(&token, "tx1"), Err(ResumeRefusal::Forged));
        assert_eq!(
            tokens.verify(&forge(&token), "tx1"),
            Err(ResumeRefusal::Forged)
        );
        assert!(matches!(
            tokens.verify(&token, "tx2"),
            Err(ResumeRefusal::Mismatch(_))
        ));
        assert_eq!(
            tokens.verify("no-dot", "tx1"),
            Err(ResumeRefusal::Malformed)
        );
        assert_eq!(
            tokens.verify("r1.a.b.%%%", "tx1"),
            Err(ResumeRefusal::Malformed)
        );
    }
}
