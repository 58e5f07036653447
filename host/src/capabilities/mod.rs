//! Host capabilities as trait impls on the one per-store state (`RuleState`). The outer
//! `wasmtime::Result` traps the guest; the inner `Result` is an error the guest sees.
//! Which rule may import which interface is decided at load (see `grants`).

mod config;
mod directory;
mod legacy;
mod log;

use crate::bindings::wit;
use crate::sandbox::RuleState;
use crate::services::{ServiceError, ServiceErrorKind};

impl wit::Host for RuleState {}

impl RuleState {
    /// Turns a store failure into the error the guest sees, and remembers it so a
    /// rule that then gives up is traced as a capability fault.
    fn capability_error(&mut self, call: &str, error: ServiceError) -> wit::CapabilityError {
        self.capability_failures += 1;
        self.push_log(format!("host: {call} failed: {}", error.message));
        wit::CapabilityError {
            kind: match error.kind {
                ServiceErrorKind::Unavailable => wit::CapabilityErrorKind::Unavailable,
                ServiceErrorKind::InvalidArgument => wit::CapabilityErrorKind::InvalidArgument,
                ServiceErrorKind::NotFound => wit::CapabilityErrorKind::NotFound,
            },
            message: error.message,
        }
    }
}
