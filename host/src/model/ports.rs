//! What the host's capabilities (and the flows' challenges) call into: the
//! directory, the legacy stores and the SMS providers, behind traits the state and
//! the providers implement.

use crate::model::RecoveryStatus;
use secrecy::SecretString;

use super::{
    CodeCheck, DirectoryUser, FactorProvider, FactorSummary, LegacyAccount, RecoveryAsk,
    RecoveryFacts, SentCode, ServiceError,
};

/// The capability calls by the names traces, logs and recordings give them
/// (`interface.function`, as in `wit/rule.wit`).
pub mod call {
    pub const FIND_BY_EMAIL: &str = "directory.find-by-email";
    pub const GET_USER: &str = "directory.get-user";
    pub const DIRECTORY_VERIFY_PASSWORD: &str = "directory.verify-password";
    pub const FIND_ACCOUNTS: &str = "legacy.find-accounts";
    pub const LEGACY_VERIFY_PASSWORD: &str = "legacy.verify-password";
    pub const LIST_FACTORS: &str = "mfa.list-factors";
    pub const RECOVERY_FACTS: &str = "recovery.facts";
    /// The host's own calls to the SMS providers while it performs a challenge (the
    /// code is never an argument in a trace or a recording).
    pub const SEND_CODE: &str = "sms.send-code";
    pub const CHECK_CODE: &str = "sms.check-code";
}

/// Read-only directory lookups.
pub trait Directory: Send + Sync {
    fn find_by_email(&self, email: &str) -> Result<Vec<DirectoryUser>, ServiceError>;
    fn get_user(&self, id: &str) -> Result<Option<DirectoryUser>, ServiceError>;
    /// Checks `password` against the user's stored hash; Ok(false) on mismatch or
    /// when the user has no password.
    fn verify_password(&self, user_id: &str, password: &SecretString)
    -> Result<bool, ServiceError>;
    /// A user's active second factors.
    fn list_factors(&self, user_id: &str) -> Result<Vec<FactorSummary>, ServiceError>;
    /// The facts of a recovery asked for by this login (`ask`) for its user.
    fn recovery_facts(
        &self,
        user_id: &str,
        ask: &RecoveryAsk,
    ) -> Result<RecoveryFacts, ServiceError>;
}

/// The legacy product stores of a migration.
pub trait LegacyStores: Send + Sync {
    fn find_accounts(&self, email: &str) -> Result<Vec<LegacyAccount>, ServiceError>;
    /// Checks `password` against the stored hash of one account; Ok(false) on mismatch.
    fn verify_password(
        &self,
        product: &str,
        legacy_id: &str,
        password: &SecretString,
    ) -> Result<bool, ServiceError>;
}

/// The SMS providers, as the gateway performs a rule's `mfa` challenge through them.
/// Only sending and checking codes: there is no export here (see `providers`).
pub trait SecondFactors: Send + Sync {
    /// Sends a code for one of the user's active factors through `via`.
    fn send_code(
        &self,
        user_id: &str,
        factor_id: &str,
        via: FactorProvider,
    ) -> Result<SentCode, ServiceError>;
    /// Checks the code the user typed with the provider that sent it.
    fn check_code(
        &self,
        user_id: &str,
        factor_id: &str,
        via: FactorProvider,
        code: &SecretString,
    ) -> Result<CodeCheck, ServiceError>;
    /// Checks a code against what the provider opened when it was sent
    /// (`SentCode::reference`), so that a code sent for an abandoned challenge does
    /// not pass for the one open now. Without a reference, as [`Self::check_code`].
    fn check_sent_code(
        &self,
        user_id: &str,
        factor_id: &str,
        via: FactorProvider,
        reference: Option<&str>,
        code: &SecretString,
    ) -> Result<CodeCheck, ServiceError> {
        let _ = reference;
        self.check_code(user_id, factor_id, via, code)
    }
    /// Cancels what a provider holds open for a code sent (`SentCode::reference`), so
    /// the code stops working. Nothing to cancel by default (the old provider has no
    /// such call; a replay sent nothing).
    fn cancel_code(&self, via: FactorProvider, reference: &str) -> Result<(), ServiceError> {
        let _ = (via, reference);
        Ok(())
    }
    /// Sends the confirmation code of an enrolment (a `pending` factor) through the
    /// new provider, the only one that enrols.
    fn send_enrolment_code(
        &self,
        user_id: &str,
        factor_id: &str,
    ) -> Result<SentCode, ServiceError> {
        let _ = (user_id, factor_id);
        Err(ServiceError::unavailable(
            "enrolment needs the new SMS provider",
        ))
    }
    fn check_enrolment_code(
        &self,
        user_id: &str,
        factor_id: &str,
        code: &SecretString,
    ) -> Result<CodeCheck, ServiceError> {
        let _ = (user_id, factor_id, code);
        Err(ServiceError::unavailable(
            "enrolment needs the new SMS provider",
        ))
    }
}

/// What the host capabilities (and the gateway's challenges) call into.
#[derive(Clone)]
pub struct Services {
    pub directory: std::sync::Arc<dyn Directory>,
    pub legacy: std::sync::Arc<dyn LegacyStores>,
    pub sms: std::sync::Arc<dyn SecondFactors>,
}

impl Services {
    /// No stores: the directory is empty, legacy stores and SMS providers are
    /// unavailable.
    pub fn none() -> Self {
        Self {
            directory: std::sync::Arc::new(NoStores),
            legacy: std::sync::Arc::new(NoStores),
            sms: std::sync::Arc::new(NoStores),
        }
    }
}

struct NoStores;

impl Directory for NoStores {
    fn find_by_email(&self, _: &str) -> Result<Vec<DirectoryUser>, ServiceError> {
        Ok(Vec::new())
    }
    fn get_user(&self, _: &str) -> Result<Option<DirectoryUser>, ServiceError> {
        Ok(None)
    }
    fn verify_password(&self, _: &str, _: &SecretString) -> Result<bool, ServiceError> {
        Err(ServiceError::not_found("no directory is configured"))
    }
    fn list_factors(&self, _: &str) -> Result<Vec<FactorSummary>, ServiceError> {
        Ok(Vec::new())
    }
    fn recovery_facts(&self, _: &str, ask: &RecoveryAsk) -> Result<RecoveryFacts, ServiceError> {
        Ok(RecoveryFacts {
            has_code: ask.has_code,
            has_factors: false,
            status: RecoveryStatus::None,
            wait_ends_ms: None,
            new_device: true,
            new_network: true,
            new_country: true,
        })
    }
}

impl LegacyStores for NoStores {
    fn find_accounts(&self, _: &str) -> Result<Vec<LegacyAccount>, ServiceError> {
        Err(ServiceError::unavailable("no legacy stores are configured"))
    }
    fn verify_password(&self, _: &str, _: &str, _: &SecretString) -> Result<bool, ServiceError> {
        Err(ServiceError::unavailable("no legacy stores are configured"))
    }
}

impl SecondFactors for NoStores {
    fn send_code(&self, _: &str, _: &str, _: FactorProvider) -> Result<SentCode, ServiceError> {
        Err(ServiceError::unavailable("no SMS provider is configured"))
    }
    fn check_code(
        &self,
        _: &str,
        _: &str,
        _: FactorProvider,
        _: &SecretString,
    ) -> Result<CodeCheck, ServiceError> {
        Err(ServiceError::unavailable("no SMS provider is configured"))
    }
}
