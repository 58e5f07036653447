use crate::model::{RecoveryStatus, ServiceError, call};
use crate::runtime::bindings::v0_2::portcullis::rule::recovery::Host;
use crate::runtime::bindings::wit;
use crate::runtime::sandbox::RuleState;

impl Host for RuleState {
    fn facts(
        &mut self,
        user_id: String,
    ) -> wasmtime::Result<Result<Option<wit::RecoveryFacts>, wit::CapabilityError>> {
        self.check_deadline(call::RECOVERY_FACTS)?;
        // A login that does not ask to recover has nothing to show, whoever asks.
        let Some(ask) = self.recovery.clone() else {
            return Ok(Ok(None));
        };
        if self.login_user.as_deref() != Some(user_id.as_str()) {
            return Ok(Err(self.capability_error(
                call::RECOVERY_FACTS,
                ServiceError::not_found("no such user in this login"),
            )));
        }
        Ok(
            match self.services.directory.recovery_facts(&user_id, &ask) {
                Ok(facts) => Ok(Some(wit::RecoveryFacts {
                    has_code: facts.has_code,
                    has_factors: facts.has_factors,
                    status: match facts.status {
                        RecoveryStatus::None => wit::RecoveryStatus::None,
                        RecoveryStatus::Waiting => wit::RecoveryStatus::Waiting,
                        RecoveryStatus::Ready => wit::RecoveryStatus::Ready,
                    },
                    wait_ends_ms: facts.wait_ends_ms,
                    new_device: facts.new_device,
                    new_network: facts.new_network,
                    new_country: facts.new_country,
                })),
                Err(e) => Err(self.capability_error(call::RECOVERY_FACTS, e)),
            },
        )
    }
}
