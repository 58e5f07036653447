use crate::bindings::portcullis::rule::legacy::Host;
use crate::bindings::wit;
use crate::bindings::wit::LegacyAccount;
use crate::sandbox::RuleState;
use crate::services::{ServiceError, call};

impl Host for RuleState {
    fn find_accounts(
        &mut self,
        email: String,
    ) -> wasmtime::Result<Result<Vec<LegacyAccount>, wit::CapabilityError>> {
        Ok(match self.services.legacy.find_accounts(&email) {
            Ok(accounts) => Ok(accounts
                .into_iter()
                .map(|a| LegacyAccount {
                    product: a.product,
                    legacy_id: a.legacy_id,
                    email: a.email,
                    email_verified: a.email_verified,
                    created_at_ms: a.created_at_ms,
                    profile: a.profile.to_string(),
                })
                .collect()),
            Err(e) => Err(self.capability_error(call::FIND_ACCOUNTS, e)),
        })
    }

    fn verify_password(
        &mut self,
        product: String,
        legacy_id: String,
    ) -> wasmtime::Result<Result<bool, wit::CapabilityError>> {
        // The password of this login stays here; the guest names the account only.
        let result = match &self.password {
            Some(password) => self
                .services
                .legacy
                .verify_password(&product, &legacy_id, password),
            None => Err(ServiceError::invalid_argument(
                "this login carries no password",
            )),
        };
        Ok(result.map_err(|e| self.capability_error(call::LEGACY_VERIFY_PASSWORD, e)))
    }
}
