//! Recognised devices: the long-lived token the host hands a device after a full
//! sign-in (password and second factor), so that the owner's own device keeps an
//! allowance of its own when someone else, knowing only the password, spends the
//! user's shared one (codes sent, recovery attempts).
//!
//! The token is 32 random bytes, shown once; the store keeps its SHA-256 digest
//! (a database copy cannot present a token), with the user it belongs to, an opaque
//! device id (what rate limits are keyed by: never the token nor its digest) and its
//! issue and expiry times on the host's clock. A token proves nothing but "this
//! device once completed a sign-in of this user": it skips no check.

use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use super::StoreError;
use super::portable::{SqlStore, Val, transact};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS device_tokens (
    digest TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    issued_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS device_tokens_user ON device_tokens(user_id);
";

/// The longest device token a login may carry (ours are 68 characters).
pub const MAX_TOKEN_LEN: usize = 128;

/// Devices one user keeps recognised; issuing one more forgets the oldest.
const MAX_PER_USER: i64 = 20;

const PREFIX: &str = "dvc_";

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut bytes);
    hex::encode(bytes)
}

/// Issues a token for a device that just completed a sign-in of `user_id`, valid
/// `ttl_ms`; forgets the user's expired devices and any beyond the newest
/// [`MAX_PER_USER`].
pub fn issue(
    store: &dyn SqlStore,
    user_id: &str,
    now_ms: u64,
    ttl_ms: u64,
) -> Result<SecretString, StoreError> {
    let token = format!("{PREFIX}{}", random_hex());
    let device_id = format!("dev_{}", &random_hex()[..24]);
    let now = super::sql_time(now_ms);
    let expires = super::sql_time(now_ms.saturating_add(ttl_ms));
    transact(store, |tx| {
        tx.execute(
            "DELETE FROM device_tokens WHERE user_id = $1 AND expires_at_ms <= $2",
            &[Val::text(user_id), Val::int(now)],
        )?;
        tx.execute(
            "INSERT INTO device_tokens (digest, device_id, user_id, issued_at_ms, expires_at_ms)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                Val::text(super::token_digest(&token)),
                Val::text(&device_id),
                Val::text(user_id),
                Val::int(now),
                Val::int(expires),
            ],
        )?;
        tx.execute(
            "DELETE FROM device_tokens WHERE user_id = $1 AND digest NOT IN (
                 SELECT digest FROM device_tokens WHERE user_id = $1
                 ORDER BY issued_at_ms DESC, digest LIMIT $2)",
            &[Val::text(user_id), Val::int(MAX_PER_USER)],
        )?;
        Ok(())
    })?;
    Ok(SecretString::from(token))
}

/// The device id of `token` if it was issued to `user_id` and has not expired by
/// the host's clock; `None` for anything else (another user's, expired, made up,
/// malformed), all alike.
pub fn recognise(
    store: &dyn SqlStore,
    user_id: &str,
    token: &SecretString,
    now_ms: u64,
) -> Result<Option<String>, StoreError> {
    let token = token.expose_secret();
    if token.len() > MAX_TOKEN_LEN || !token.starts_with(PREFIX) {
        return Ok(None);
    }
    let presented = super::token_digest(token);
    let now = super::sql_time(now_ms);
    transact(store, |tx| {
        // Looked up by the digest of a 256-bit random value: an index lookup on it
        // tells a guesser nothing about any other token.
        let row = tx
            .query(
                "SELECT user_id, device_id, expires_at_ms FROM device_tokens WHERE digest = $1",
                &[Val::text(&presented)],
            )?
            .into_iter()
            .next();
        let Some(row) = row else { return Ok(None) };
        let owner = row[0].as_text().unwrap_or_default();
        let same_user: bool = owner.as_bytes().ct_eq(user_id.as_bytes()).into();
        let live = row[2].as_int().is_some_and(|expires| now < expires);
        Ok((same_user && live).then(|| row[1].as_text().unwrap_or_default().to_owned()))
    })
}
