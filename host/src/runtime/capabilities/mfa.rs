use crate::model::{FactorKind, FactorProvider, FactorSummary, ServiceError, call};
use crate::runtime::bindings::v0_2::portcullis::rule::mfa::Host;
use crate::runtime::bindings::wit;
use crate::runtime::sandbox::RuleState;

impl Host for RuleState {
    fn list_factors(
        &mut self,
        user_id: String,
    ) -> wasmtime::Result<Result<Vec<wit::FactorSummary>, wit::CapabilityError>> {
        self.check_deadline(call::LIST_FACTORS)?;
        // Only the login's own user: a rule has no business with anyone else's
        // second factors, and the answer is the same as for a user without any.
        if self.login_user.as_deref() != Some(user_id.as_str()) {
            return Ok(Err(self.capability_error(
                call::LIST_FACTORS,
                ServiceError::not_found("no such user in this login"),
            )));
        }
        Ok(match self.services.directory.list_factors(&user_id) {
            Ok(factors) => Ok(factors.into_iter().map(to_wit).collect()),
            Err(e) => Err(self.capability_error(call::LIST_FACTORS, e)),
        })
    }
}

pub(crate) fn provider_to_wit(provider: FactorProvider) -> wit::FactorProvider {
    match provider {
        FactorProvider::LegacySms => wit::FactorProvider::LegacySms,
        FactorProvider::Verify => wit::FactorProvider::Verify,
    }
}

fn to_wit(factor: FactorSummary) -> wit::FactorSummary {
    wit::FactorSummary {
        id: factor.id,
        kind: match factor.kind {
            FactorKind::Sms => wit::FactorKind::Sms,
        },
        provider: provider_to_wit(factor.provider),
        enrolled_at_ms: factor.enrolled_at_ms,
        last_used_ms: factor.last_used_ms,
        phone_on_file: factor.phone_on_file,
        legacy_id_on_file: factor.legacy_id_on_file,
        cohort: factor.cohort,
        reverted: factor.reverted,
    }
}
