//! Resume tokens: signed (HMAC-SHA256), expiring, single use, bound to one transaction
//! and one user. The token carries only ids; what waits for the resume (the pending
//! effects, the rule's state) stays server-side.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    /// Token id: the key of the server-side record, used once.
    pub jti: String,
    pub tx: String,
    pub sub: String,
    /// Expiry, ms since the Unix epoch.
    pub exp: u64,
}

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

    pub fn issue(&self, claims: &TokenClaims) -> String {
        let payload = B64.encode(serde_json::to_vec(claims).expect("claims serialize"));
        let mut mac = self.mac.clone();
        mac.update(payload.as_bytes());
        format!("{payload}.{}", B64.encode(mac.finalize().into_bytes()))
    }

    /// Checks the signature (in constant time) and expiry; the caller then takes the
    /// server-side record, which is what makes a token single use.
    pub fn verify(&self, token: &str, now_ms: u64) -> Result<TokenClaims, ResumeRefusal> {
        let (payload, signature) = token.split_once('.').ok_or(ResumeRefusal::Malformed)?;
        let signature = B64
            .decode(signature)
            .map_err(|_| ResumeRefusal::Malformed)?;
        let mut mac = self.mac.clone();
        mac.update(payload.as_bytes());
        mac.verify_slice(&signature)
            .map_err(|_| ResumeRefusal::Forged)?;
        let claims: TokenClaims = B64
            .decode(payload)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(ResumeRefusal::Malformed)?;
        if claims.exp <= now_ms {
            return Err(ResumeRefusal::Expired);
        }
        Ok(claims)
    }

    /// A new random token id.
    pub fn new_jti() -> String {
        let mut id = [0u8; 16];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut id);
        hex::encode(id)
    }
}

/// For tests and replays: the same token with a changed payload and the old
/// signature, as an attacker would try.
pub fn forge(token: &str) -> String {
    let (payload, signature) = token.split_once('.').unwrap_or((token, ""));
    let mut claims: serde_json::Value = B64
        .decode(payload)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    claims["sub"] = serde_json::Value::String("usr_attacker".into());
    format!("{}.{signature}", B64.encode(claims.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> TokenClaims {
        TokenClaims {
            jti: "j1".into(),
            tx: "tx1".into(),
            sub: "usr_1".into(),
            exp: 2_000,
        }
    }

    #[test]
    fn a_token_verifies_with_its_key_only() {
        let tokens = ResumeTokens::new(b"0123456789abcdef0123456789abcdef", 1000);
        let token = tokens.issue(&claims());
        assert_eq!(tokens.verify(&token, 1_000), Ok(claims()));
        let other = ResumeTokens::new(b"fedcba9876543210fedcba9876543210", 1000);
        assert_eq!(other.verify(&token, 1_000), Err(ResumeRefusal::Forged));
        assert_eq!(
            tokens.verify(&forge(&token), 1_000),
            Err(ResumeRefusal::Forged)
        );
        assert_eq!(tokens.verify(&token, 2_000), Err(ResumeRefusal::Expired));
        assert_eq!(
            tokens.verify("no-dot", 1_000),
            Err(ResumeRefusal::Malformed)
        );
        assert_eq!(tokens.verify("a.%%%", 1_000), Err(ResumeRefusal::Malformed));
    }
}
