//! Who may call the login endpoints: each gateway has its own bearer token (from an
//! environment variable or a file, never the config), compared in constant time, and
//! only gateways configured to vouch for an authentication may send logins without a
//! password.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::CallerSettings;

/// Long enough that guessing is hopeless.
const MIN_TOKEN_LEN: usize = 32;

pub struct Caller {
    pub name: String,
    pub vouches: bool,
    /// SHA-256 of the token: compared digest to digest, so the comparison takes the
    /// same time whatever the presented token's length.
    digest: [u8; 32],
}

#[derive(Default)]
pub struct Callers(Vec<Caller>);

impl Callers {
    pub fn load(settings: &[CallerSettings]) -> Result<Self, String> {
        let mut callers = Vec::with_capacity(settings.len());
        // Every caller whose token is missing is named at once, not one per attempt.
        let missing: Vec<String> = settings
            .iter()
            .filter_map(|caller| read_token(caller).err())
            .collect();
        if !missing.is_empty() {
            return Err(missing.join("; "));
        }
        for caller in settings {
            let token = read_token(caller)?;
            if token.expose_secret().len() < MIN_TOKEN_LEN {
                return Err(format!(
                    "server.caller {:?}: its token must hold at least {MIN_TOKEN_LEN} characters",
                    caller.name
                ));
            }
            callers.push(Caller {
                name: caller.name.clone(),
                vouches: caller.vouches,
                digest: Sha256::digest(token.expose_secret().as_bytes()).into(),
            });
        }
        Ok(Self(callers))
    }

    /// The caller whose token the request carries, or why it is refused.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<&Caller, Unauthenticated> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let Some(presented) = presented else {
            return Err(Unauthenticated("a caller bearer token is required"));
        };
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Every caller is compared, so the time taken does not say which one matched.
        let mut found = None;
        for caller in &self.0 {
            if bool::from(caller.digest.ct_eq(&digest)) {
                found = Some(caller);
            }
        }
        found.ok_or(Unauthenticated("the caller bearer token is not valid"))
    }
}

/// A request without a valid caller token: 401.
#[derive(Debug)]
pub struct Unauthenticated(&'static str);

impl IntoResponse for Unauthenticated {
    fn into_response(self) -> Response {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(serde_json::json!({"error": self.0})),
        )
            .into_response()
    }
}

fn read_token(caller: &CallerSettings) -> Result<SecretString, String> {
    crate::config::secret_from(
        &format!("server.caller {:?}", caller.name),
        caller.token_env.as_deref(),
        caller.token_file.as_deref(),
    )
}
