//! Host capabilities as trait impls on the one per-store state (`RuleState`). The outer
//! `wasmtime::Result` traps the guest; the inner `Result` is an error the guest sees.
//! Which rule may import which interface is decided at load (see `grants`).

mod config;
mod directory;
mod legacy;
pub(crate) mod log;
pub(crate) mod mfa;
mod recovery;
mod since_v0_1;

use secrecy::SecretString;

use crate::model::{ServiceError, ServiceErrorKind};
use crate::runtime::bindings::wit;
use crate::runtime::sandbox::RuleState;
use crate::runtime::verdict::FaultKind;

impl wit::Host for RuleState {}

impl RuleState {
    /// Runs a password check for this login: refused once the rule's deadline has
    /// passed, queued for one of the host's hashing slots (until the deadline at
    /// most), and a hash over the host's work limits stops the rule (a `capability`
    /// fault). The outer error traps the guest; the inner one is the guest's to see.
    fn check_password(
        &mut self,
        call: &str,
        check: impl FnOnce(&Self, &SecretString) -> Result<bool, ServiceError>,
    ) -> wasmtime::Result<Result<bool, wit::CapabilityError>> {
        self.check_deadline(call)?;
        let Some(password) = self.password.clone() else {
            return Ok(Err(self.capability_error(
                call,
                ServiceError::invalid_argument("this login carries no password"),
            )));
        };
        let Some(_slot) = crate::state::passwords::hash_slot(self.deadline) else {
            return Err(self.refuse(
                FaultKind::Deadline,
                format!("{call}: no hashing slot before the rule's deadline"),
            ));
        };
        match check(self, &password) {
            Ok(matched) => Ok(Ok(matched)),
            Err(e) if e.kind == ServiceErrorKind::Refused => Err(self.refuse(
                FaultKind::Capability,
                format!("{call} refused: {}", e.message),
            )),
            Err(e) => Ok(Err(self.capability_error(call, e))),
        }
    }

    /// Turns a store failure into the error the guest sees, and remembers it so a
    /// rule that then gives up is traced as a capability fault.
    fn capability_error(&mut self, call: &str, error: ServiceError) -> wit::CapabilityError {
        self.capability_failures += 1;
        self.push_log(format!("host: {call} failed: {}", error.message));
        wit::CapabilityError {
            kind: match error.kind {
                ServiceErrorKind::Unavailable => wit::CapabilityErrorKind::Unavailable,
                ServiceErrorKind::InvalidArgument | ServiceErrorKind::Refused => {
                    wit::CapabilityErrorKind::InvalidArgument
                }
                ServiceErrorKind::NotFound => wit::CapabilityErrorKind::NotFound,
            },
            message: error.message,
        }
    }
}
