use crate::model::call;
use crate::runtime::bindings::v0_2::portcullis::rule::legacy::Host;
use crate::runtime::bindings::wit;
use crate::runtime::bindings::wit::LegacyAccount;
use crate::runtime::sandbox::RuleState;

impl Host for RuleState {
    fn find_accounts(
        &mut self,
        email: String,
    ) -> wasmtime::Result<Result<Vec<LegacyAccount>, wit::CapabilityError>> {
        self.check_deadline(call::FIND_ACCOUNTS)?;
        Ok(match self.services.legacy.find_accounts(&email) {
            Ok(accounts) => {
                // What the host found, under whose email: once the login's inbox is
                // proven, those under its email may be linked (see `invariants`).
                self.evidence.found.extend(accounts.iter().map(|a| {
                    (
                        (a.product.clone(), a.legacy_id.clone()),
                        crate::model::normalize_email(&a.email),
                    )
                }));
                Ok(accounts
                    .into_iter()
                    .map(|a| LegacyAccount {
                        product: a.product,
                        legacy_id: a.legacy_id,
                        email: a.email,
                        email_verified: a.email_verified,
                        created_at_ms: a.created_at_ms,
                        profile: a.profile.to_string(),
                    })
                    .collect())
            }
            Err(e) => Err(self.capability_error(call::FIND_ACCOUNTS, e)),
        })
    }

    fn verify_password(
        &mut self,
        product: String,
        legacy_id: String,
    ) -> wasmtime::Result<Result<bool, wit::CapabilityError>> {
        // The password of this login stays here; the guest names the account only.
        let result = self.check_password(call::LEGACY_VERIFY_PASSWORD, |state, password| {
            state
                .services
                .legacy
                .verify_password(&product, &legacy_id, password)
        })?;
        if matches!(result, Ok(true)) {
            self.evidence.password_verified.insert((product, legacy_id));
        }
        Ok(result)
    }
}
