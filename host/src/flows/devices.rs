//! Recognised devices (`state::devices`): after a full sign-in (password and a
//! passed second factor, allowed) the host hands the device a token; a later login
//! carrying it (`request.device_token`) spends that device's own allowance of codes
//! sent and recovery attempts instead of the user's shared one, so a stranger with
//! the password cannot spend the owner's. The token is a bearer secret: never
//! serialized back, logged or handed to a rule, and checked only by the host.

use secrecy::ExposeSecret;

use super::Gateway;
use crate::model::LoginAttempt;
use crate::state::devices;

impl Gateway {
    /// The device id of the token the login carries, if the host issued it to this
    /// user and it has not expired; anything else is no device at all.
    pub(super) fn recognise_device(&self, attempt: &LoginAttempt) -> Option<String> {
        let (Some(user), Some(token)) = (&attempt.user, &attempt.request.device_token) else {
            return None;
        };
        devices::recognise(self.state.sql(), &user.id, &token.0, self.clock.now_ms())
            .unwrap_or_else(|e| {
                // Unrecognised is the stranger's allowance: nothing is opened by it.
                tracing::warn!(transaction = %attempt.transaction_id, "reading device tokens failed: {e}");
                None
            })
    }

    /// A full sign-in completed: a token for the device, shown once in the verdict.
    /// Best effort: the sign-in stands without one.
    pub(super) fn issue_device_token(&self, user_id: &str) -> Option<String> {
        devices::issue(
            self.state.sql(),
            user_id,
            self.clock.now_ms(),
            self.device_ttl_ms,
        )
        .map(|token| token.expose_secret().to_owned())
        .map_err(|e| tracing::warn!(user = %user_id, "issuing a device token failed: {e}"))
        .ok()
    }
}
