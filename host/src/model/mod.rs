//! The domain types every layer shares: a login attempt and the directory user it
//! names, legacy accounts, second factors, effects, the host's evidence, recoveries as
//! rules see them, and the ports (traits) the stores and providers implement. This
//! module depends on nothing else of the host: everything else may depend on it.

mod effect;
mod error;
mod evidence;
mod factor;
mod id;
mod legacy;
mod login;
mod names;
mod ports;
mod recovery;
pub mod redact;
mod support;

pub(crate) use names::names;

pub use effect::{ApplyReport, Effect};
pub use error::{ServiceError, ServiceErrorKind};
pub use evidence::{AccountEvidence, AccountRef};
pub use factor::{CodeCheck, FactorKind, FactorProvider, FactorStatus, FactorSummary, SentCode};
pub use id::random_id;
pub use legacy::LegacyAccount;
pub use login::{
    DeviceToken, DirectoryUser, Identity, LoginAttempt, LoginError, MAX_DEVICE_TOKEN_LEN,
    MAX_RECOVERY_CODE_LEN, MAX_TIME_MS, RecoveryRequest, RequestInfo, normalize_email,
};
pub use ports::{Directory, LegacyStores, SecondFactors, Services, call};
pub use recovery::{RecoveryAsk, RecoveryFacts, RecoveryPath, RecoveryStage, RecoveryStatus};
pub use support::{SupportAction, SupportStatus};
