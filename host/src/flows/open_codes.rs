//! Codes a provider still holds open when what they were sent for is abandoned: a
//! login challenge past its token's expiry or out of attempts (never one another
//! login replaces: that login may be whoever has the password),
//! an enrolment replaced by another of the same proof, or whose recovery another
//! recovery replaced. The host cancels them at the provider (Verify's
//! `update(status="canceled")`) so a code in someone's inbox stops working at once.
//! Never in the way of a login: a cancel that fails is logged (the provider, the
//! error's kind; never a phone) and the code runs out at the provider on its own.

use super::Gateway;
use crate::model::FactorProvider;
use crate::state::open_codes::{self, OpenCode};

/// Expired codes cancelled per sweep: every challenge carries one sweep, so it stays
/// a few calls.
const SWEEP: usize = 5;

impl Gateway {
    /// Cancels the user's open codes sent for `purpose`, and a few of anyone's whose
    /// login or enrolment has expired.
    pub(super) fn cancel_open_codes(&self, user_id: &str, purpose: &str) {
        let sql = self.state.sql();
        let mut codes = open_codes::take(sql, user_id, purpose).unwrap_or_else(|e| {
            tracing::warn!("reading open codes failed: {e}");
            Vec::new()
        });
        match open_codes::take_expired(sql, self.clock.now_ms(), SWEEP) {
            Ok(expired) => codes.extend(expired),
            Err(e) => tracing::warn!("reading expired open codes failed: {e}"),
        }
        self.cancel_codes(&codes);
    }

    /// Cancels a few of anyone's open codes whose login or enrolment has expired.
    pub(super) fn sweep_expired_codes(&self) {
        match open_codes::take_expired(self.state.sql(), self.clock.now_ms(), SWEEP) {
            Ok(expired) => self.cancel_codes(&expired),
            Err(e) => tracing::warn!("reading expired open codes failed: {e}"),
        }
    }

    /// Cancels the open codes of one of the user's factors (an enrolment replaced).
    pub(super) fn cancel_factor_codes(&self, user_id: &str, factor_id: &str) {
        match open_codes::take_factor(self.state.sql(), user_id, factor_id) {
            Ok(codes) => self.cancel_codes(&codes),
            Err(e) => tracing::warn!("reading open codes failed: {e}"),
        }
    }

    /// Forgets the open codes of one of the user's factors that the provider closed
    /// itself (approved, expired, out of attempts): nothing left to cancel.
    pub(super) fn forget_factor_codes(&self, user_id: &str, factor_id: &str) {
        if let Err(e) = open_codes::take_factor(self.state.sql(), user_id, factor_id) {
            tracing::warn!("forgetting open codes failed: {e}");
        }
    }

    /// Forgets one open code, and cancels it at the provider if `cancel` (the login
    /// it was sent for has ended, and the provider may still hold it open).
    pub(super) fn close_code(
        &self,
        user_id: &str,
        via: FactorProvider,
        reference: &str,
        cancel: bool,
    ) {
        if let Err(e) = open_codes::forget(self.state.sql(), user_id, reference) {
            tracing::warn!("forgetting an open code failed: {e}");
        }
        if cancel {
            self.cancel_codes(&[OpenCode {
                reference: reference.to_owned(),
                user_id: user_id.to_owned(),
                factor_id: String::new(),
                purpose: open_codes::LOGIN.to_owned(),
                via,
                expires_at_ms: 0,
            }]);
        }
    }

    fn cancel_codes(&self, codes: &[OpenCode]) {
        for code in codes {
            if let Err(e) = self.services.sms.cancel_code(code.via, &code.reference) {
                tracing::warn!(
                    via = ?code.via,
                    purpose = %code.purpose,
                    kind = ?e.kind,
                    "cancelling an abandoned code failed; it runs out at the provider"
                );
            }
        }
    }

    /// Notes a code sent, until `expires_at_ms` (when what it was sent for is
    /// abandoned if it is still open then). Best effort, as the cancel is.
    pub(super) fn note_open_code(
        &self,
        user_id: &str,
        factor_id: &str,
        purpose: &str,
        via: FactorProvider,
        reference: Option<&str>,
        expires_at_ms: u64,
    ) {
        let Some(reference) = reference else { return };
        let code = OpenCode {
            reference: reference.to_owned(),
            user_id: user_id.to_owned(),
            factor_id: factor_id.to_owned(),
            purpose: purpose.to_owned(),
            via,
            expires_at_ms,
        };
        if let Err(e) = open_codes::open(self.state.sql(), &code) {
            tracing::warn!("noting an open code failed: {e}");
        }
    }

    /// When a parked login parked now expires.
    pub(super) fn parked_until(&self) -> u64 {
        self.clock.now_ms().saturating_add(self.tokens.ttl_ms)
    }
}
