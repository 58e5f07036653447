//! A login attempt as a gateway hands it over (JSON), and the directory user it names.

use secrecy::ExposeSecret;
use secrecy::SecretString;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RequestInfo {
    #[serde(default)]
    pub ip: String,
    #[serde(default)]
    pub user_agent: String,
    /// The country the gateway placed the request in (ISO 3166 alpha-2), if it
    /// knows: a recovery from a new country waits longer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// The token the host gave this device after a full sign-in, if it has one (see
    /// `flows::devices`). A bearer secret: never serialized (so never stored with a
    /// parked login, recorded or logged).
    #[serde(default, skip_serializing)]
    pub device_token: Option<DeviceToken>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    pub provider: String,
    pub user_id: String,
    pub connection: String,
}

/// A directory user, as the directory holds it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DirectoryUser {
    pub id: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub email_verified: bool,
    #[serde(default)]
    pub identities: Vec<Identity>,
    #[serde(default = "empty_object")]
    pub app_metadata: Value,
    #[serde(default = "empty_object")]
    pub user_metadata: Value,
    #[serde(default)]
    pub created_at_ms: u64,
    #[serde(default)]
    pub last_login_ms: Option<u64>,
    #[serde(default)]
    pub logins_count: u32,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// One login attempt. The password stays on the host: it is never serialized, never
/// printed, and never handed to a rule. `Debug` shows no personal data either.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginAttempt {
    pub transaction_id: String,
    pub time_ms: u64,
    pub connection: String,
    pub client_id: String,
    pub email: String,
    #[serde(default)]
    pub password: Option<SecretString>,
    #[serde(default)]
    pub request: RequestInfo,
    /// The user asks to recover an account whose second factor is lost:
    /// `"recovery": true`, or `{"code": "XXXXX-XXXXX-XXXXX"}` with a recovery code
    /// (a secret, like the password: never serialized, never handed to a rule).
    #[serde(default)]
    pub recovery: Option<RecoveryRequest>,
    /// What the host prepared for the `recovery` capability when the login asks to
    /// recover (never taken from the caller).
    #[serde(skip)]
    pub recovery_ask: Option<super::recovery::RecoveryAsk>,
    /// The recognised device the login's token names (its id), as the host found
    /// it (never taken from the caller).
    #[serde(skip)]
    pub device: Option<String>,
    /// The directory user the host found for the email. Never taken from the caller
    /// (a `user` in the JSON is refused as an unknown field): the host looks the user
    /// up itself.
    #[serde(skip_deserializing)]
    pub user: Option<DirectoryUser>,
}

/// What a login carries when it asks to recover.
#[derive(Clone, Deserialize)]
#[serde(untagged)]
pub enum RecoveryRequest {
    Flag(bool),
    Code { code: SecretString },
}

impl RecoveryRequest {
    /// Whether the login asks to recover at all (`"recovery": false` does not).
    pub fn asked(request: &Option<Self>) -> bool {
        !matches!(request, None | Some(Self::Flag(false)))
    }

    pub fn code(request: &Option<Self>) -> Option<&SecretString> {
        match request {
            Some(Self::Code { code }) => Some(code),
            _ => None,
        }
    }
}

impl std::fmt::Debug for LoginAttempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginAttempt")
            .field("transaction_id", &self.transaction_id)
            .field("time_ms", &self.time_ms)
            .field("connection", &self.connection)
            .field("client_id", &self.client_id)
            .field("email", &super::redact::redact_text(&self.email))
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("recovery", &RecoveryRequest::asked(&self.recovery))
            .field("user", &self.user.as_ref().map(|u| &u.id))
            .finish_non_exhaustive()
    }
}

const MAX_ID_LEN: usize = 256;
const MAX_EMAIL_LEN: usize = 320;
const MAX_IP_LEN: usize = 64;
const MAX_USER_AGENT_LEN: usize = 1024;
/// Longer than any password a person types; bounds the host-side hashing work.
const MAX_PASSWORD_LEN: usize = 1024;
/// 9999-12-31T23:59:59.999Z. Every time the host stores is a signed 64-bit integer
/// (SQLite, PostgreSQL); bounding times here keeps any sum of a time and a duration
/// far from overflowing.
pub const MAX_TIME_MS: u64 = 253_402_300_799_999;

impl LoginAttempt {
    pub fn from_json(text: &str) -> Result<Self, LoginError> {
        let login: LoginAttempt = serde_json::from_str(text)?;
        login.validate()?;
        Ok(login)
    }

    fn validate(&self) -> Result<(), LoginError> {
        let invalid = |m: String| Err(LoginError::Invalid(m));
        if self.transaction_id.is_empty() || self.transaction_id.len() > MAX_ID_LEN {
            return invalid(format!(
                "transaction_id must be 1 to {MAX_ID_LEN} characters"
            ));
        }
        if self.time_ms > MAX_TIME_MS {
            return invalid(format!(
                "time_ms must be milliseconds since the Unix epoch, at most {MAX_TIME_MS}"
            ));
        }
        if self.email.len() > MAX_EMAIL_LEN || !self.email.contains('@') {
            return invalid(format!(
                "email must be an address (with '@', at most {MAX_EMAIL_LEN} characters)"
            ));
        }
        for (field, value) in [
            ("connection", &self.connection),
            ("client_id", &self.client_id),
        ] {
            if value.len() > MAX_ID_LEN {
                return invalid(format!("{field} must be at most {MAX_ID_LEN} characters"));
            }
        }
        if self.request.ip.len() > MAX_IP_LEN {
            return invalid(format!(
                "request.ip must be at most {MAX_IP_LEN} characters"
            ));
        }
        if self.request.user_agent.len() > MAX_USER_AGENT_LEN {
            return invalid(format!(
                "request.user_agent must be at most {MAX_USER_AGENT_LEN} characters"
            ));
        }
        if self
            .password
            .as_ref()
            .is_some_and(|p| secrecy::ExposeSecret::expose_secret(p).len() > MAX_PASSWORD_LEN)
        {
            return invalid(format!("password must be at most {MAX_PASSWORD_LEN} bytes"));
        }
        if RecoveryRequest::code(&self.recovery)
            .is_some_and(|c| secrecy::ExposeSecret::expose_secret(c).len() > MAX_RECOVERY_CODE_LEN)
        {
            return invalid(format!(
                "recovery.code must be at most {} characters",
                MAX_RECOVERY_CODE_LEN
            ));
        }
        if self
            .request
            .device_token
            .as_ref()
            .is_some_and(DeviceToken::too_long)
        {
            return invalid(format!(
                "request.device_token must be at most {} characters",
                MAX_DEVICE_TOKEN_LEN
            ));
        }
        if self.request.country.as_ref().is_some_and(|c| c.len() > 8) {
            return invalid("request.country must be at most 8 characters".into());
        }
        Ok(())
    }

    /// The id a user created by this login gets: derived from the transaction id, so a
    /// retried transaction creates the same user and a replay sees the same id.
    pub fn new_user_id(&self) -> String {
        let digest = Sha256::digest(format!("portcullis-user:{}", self.transaction_id));
        format!("usr_{}", &hex::encode(digest)[..24])
    }
}

/// A login attempt that cannot be evaluated as given.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("invalid login JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid login: {0}")]
    Invalid(String),
}

/// The token a login presents (`request.device_token`).
#[derive(Clone)]
pub struct DeviceToken(pub SecretString);

impl DeviceToken {
    pub fn too_long(&self) -> bool {
        self.0.expose_secret().len() > MAX_DEVICE_TOKEN_LEN
    }
}

impl std::fmt::Debug for DeviceToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl PartialEq for DeviceToken {
    fn eq(&self, other: &Self) -> bool {
        subtle::ConstantTimeEq::ct_eq(
            self.0.expose_secret().as_bytes(),
            other.0.expose_secret().as_bytes(),
        )
        .into()
    }
}

impl<'de> Deserialize<'de> for DeviceToken {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        SecretString::deserialize(deserializer).map(Self)
    }
}

/// The longest recovery code a login may carry (codes are 17 characters; the rest is
/// room for spaces and dashes people type).
pub const MAX_RECOVERY_CODE_LEN: usize = 64;
/// The longest device token a login may carry.
pub const MAX_DEVICE_TOKEN_LEN: usize = 128;

/// Lower-cased, trimmed: how emails are compared everywhere.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}
