//! Contract `portcullis:rule@0.2.0`: 0.1.0 plus second factors (a challenge that names
//! a factor and who sends its code, and the `mfa` capability). Rules built against it
//! use `rule_model::export_rule!(contract: "0.2.0", …)`.

wit_bindgen::generate!({ path: "../../wit/v0.2.0", world: "portcullis:rule/rule-types" });

pub use self::portcullis::rule::types::*;
pub use crate::{JsonText, LogLevel, json_flag, json_text};

/// The host capabilities a 0.2.0 rule may call (each only if its grants allow the
/// interface; an unused method costs the component nothing).
pub trait Host {
    fn log(&mut self, level: LogLevel, message: &str);
    fn config(&mut self, key: &str) -> Option<String>;
    fn verify_directory_password(&mut self, user_id: &str) -> Result<bool, CapabilityError>;
    fn find_legacy_accounts(&mut self, email: &str) -> Result<Vec<LegacyAccount>, CapabilityError>;
    fn verify_legacy_password(
        &mut self,
        product: &str,
        legacy_id: &str,
    ) -> Result<bool, CapabilityError>;
    /// The login's user's active second factors: summaries, never a phone number.
    fn list_factors(&mut self, user_id: &str) -> Result<Vec<FactorSummary>, CapabilityError>;
    /// What the host knows about a login asking to recover its account; `None` when
    /// the login does not ask to.
    fn recovery_facts(&mut self, user_id: &str) -> Result<Option<RecoveryFacts>, CapabilityError>;
}
