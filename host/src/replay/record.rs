//! Recordings: a login (and its resumes), every capability call with its answer, and
//! the verdict. `portcullis run --record` writes them from live evaluations;
//! `portcullis replay` runs them against the current rules with the answers served
//! from the file, so no database is needed and a rule change shows as a verdict diff.

use crate::model::{
    CodeCheck, Directory, DirectoryUser, Effect, FactorProvider, FactorSummary, LegacyAccount,
    LegacyStores, SecondFactors, SentCode, ServiceError, Services, call,
};
use std::sync::{Arc, Mutex};

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::flows::resume::ResumeRefusal;
use crate::runtime::verdict::{Decision, EnrolmentCheck, FaultKind, Verdict};
use crate::state::resume_tokens::StoredLogin;

pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recording {
    pub recording: u32,
    #[serde(default)]
    pub description: String,
    /// Another pipeline config for this recording, relative to the recording file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<RecordedLogin>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "continue")]
    pub resume: Option<RecordedResume>,
    #[serde(default)]
    pub calls: Vec<Call>,
    pub expect: Expectation,
}

/// A login as recorded: never the password, only whether there was one (the stored
/// login's `has_password`, written once).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordedLogin {
    #[serde(flatten)]
    pub login: StoredLogin,
    /// Whether the login asked to recover: `"asked"`, or `"code"` when it carried a
    /// recovery code (never the code itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<String>,
}

impl RecordedLogin {
    pub fn of(attempt: &crate::model::LoginAttempt) -> Self {
        use crate::model::RecoveryRequest;
        Self {
            login: StoredLogin::from_attempt(attempt),
            recovery: match RecoveryRequest::code(&attempt.recovery) {
                Some(_) => Some("code".into()),
                None => RecoveryRequest::asked(&attempt.recovery).then(|| "asked".into()),
            },
        }
    }

    /// What a replay sends for the recovery the login asked for: the code's check
    /// is the host's, so any stand-in serves.
    pub fn replayed_recovery(&self) -> Option<crate::model::RecoveryRequest> {
        use crate::model::RecoveryRequest;
        match self.recovery.as_deref() {
            Some("code") => Some(RecoveryRequest::Code {
                code: "REPLAYED-RECOVERY-CODE".into(),
            }),
            Some(_) => Some(RecoveryRequest::Flag(true)),
            None => None,
        }
    }
}

/// The directory user a step's recorded lookup by email answered, if any.
pub fn recorded_user(calls: &[Call]) -> Option<DirectoryUser> {
    calls
        .iter()
        .find(|c| c.call == call::FIND_BY_EMAIL)
        .and_then(|c| c.answer.decode::<Vec<DirectoryUser>>(&c.call).ok())
        .and_then(|users| users.into_iter().next())
}

/// Which token a resume step presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenChoice {
    /// The token the last redirect issued.
    Issued,
    /// That token with a changed payload and the old signature.
    Forged,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedResume {
    pub token: TokenChoice,
    pub result: Value,
    pub time_ms: u64,
    /// After a recovery's enrolment: how the host's check of it went live, which the
    /// replay stands in for the check (it has none of the host's state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrolment: Option<EnrolmentCheck>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Call {
    pub call: String,
    pub args: Vec<String>,
    pub answer: Answer,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Ok(Value),
    Err(ServiceError),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSeen {
    pub rule: String,
    pub kind: FaultKind,
}

/// What a step must produce: a verdict, or a refused resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Expectation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    #[serde(default)]
    pub effects: Vec<Effect>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<FaultSeen>,
    #[serde(default, skip_serializing_if = "Option::is_none", flatten)]
    pub refused: Option<ResumeRefusal>,
}

impl Expectation {
    pub fn of(verdict: &Verdict) -> Self {
        // A continue the host answered alone, from its state (a recovery's enrolment
        // not done, or the recovery ended): no rule ran, so there is nothing to compare.
        if verdict.enrolment == Some(EnrolmentCheck::Answered) {
            return Self::host_only();
        }
        // A recovery the host performed is compared by the rule's decision: what the
        // host answered depends on its state, which a replay does not have.
        let decision = match &verdict.recovery {
            Some(step) => Decision::Recover {
                step: step.clone(),
                state: String::new(),
                rule: String::new(),
            },
            None => verdict.decision.clone(),
        };
        // Nothing of a login asking to recover is applied with it.
        let effects = match decision {
            Decision::Recover { .. } => Vec::new(),
            _ => verdict.effects.clone(),
        };
        Self {
            decision: Some(decision),
            effects,
            faults: verdict
                .faults()
                .map(|(rule, fault)| FaultSeen {
                    rule: rule.to_owned(),
                    kind: fault.kind,
                })
                .collect(),
            refused: None,
        }
    }

    /// A step no rule ran for: the host answered alone, from its state.
    pub fn host_only() -> Self {
        Self {
            decision: None,
            effects: Vec::new(),
            faults: Vec::new(),
            refused: None,
        }
    }

    pub fn refused(refusal: ResumeRefusal) -> Self {
        Self {
            decision: None,
            effects: Vec::new(),
            faults: Vec::new(),
            refused: Some(refusal),
        }
    }

    /// One word for the table.
    pub fn summary(&self) -> String {
        match (&self.refused, &self.decision) {
            (Some(r), _) => format!(
                "refused:{}",
                serde_json::to_value(r)
                    .ok()
                    .and_then(|v| v["refused"].as_str().map(str::to_owned))
                    .unwrap_or_default()
            ),
            (None, Some(Decision::Deny { code, .. })) => format!("deny:{code}"),
            (None, Some(Decision::Recover { step, .. })) => format!(
                "recover:{}",
                serde_json::to_value(step)
                    .ok()
                    .and_then(|v| v["step"].as_str().map(str::to_owned))
                    .unwrap_or_default()
            ),
            (None, Some(Decision::Challenge { kind, .. })) => format!(
                "challenge:{}",
                serde_json::to_value(kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            ),
            (None, Some(d)) => serde_json::to_value(d)
                .ok()
                .and_then(|v| v["type"].as_str().map(str::to_owned))
                .unwrap_or_default(),
            // Only a continue the host answered alone has neither.
            (None, None) => "host-only".into(),
        }
    }
}

impl Answer {
    fn of<T: Serialize>(result: &Result<T, ServiceError>) -> Self {
        match result {
            Ok(value) => Answer::Ok(serde_json::to_value(value).unwrap_or(Value::Null)),
            Err(e) => Answer::Err(e.clone()),
        }
    }

    /// The answer as the call returned it; one that no longer reads as the call's
    /// type (an edited recording) is the store being unavailable.
    fn decode<T: for<'de> Deserialize<'de>>(&self, call: &str) -> Result<T, ServiceError> {
        match self {
            Answer::Ok(value) => serde_json::from_value(value.clone()).map_err(|e| {
                ServiceError::unavailable(format!("recorded answer to {call} is unreadable: {e}"))
            }),
            Answer::Err(e) => Err(e.clone()),
        }
    }
}

/// Wraps live services and writes down every call and its answer.
#[derive(Clone)]
pub struct Recorder {
    inner: Services,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Recorder {
    pub fn new(inner: Services) -> Self {
        Self {
            inner,
            calls: Arc::default(),
        }
    }

    pub fn services(&self) -> Services {
        Services {
            directory: Arc::new(self.clone()),
            legacy: Arc::new(self.clone()),
            sms: Arc::new(self.clone()),
        }
    }

    /// The calls so far, leaving the list empty for the next step.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn note<T: Serialize>(
        &self,
        call: &str,
        args: &[&str],
        result: Result<T, ServiceError>,
    ) -> Result<T, ServiceError> {
        let entry = Call {
            call: call.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            answer: Answer::of(&result),
        };
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(entry);
        result
    }
}

impl Directory for Recorder {
    fn find_by_email(&self, email: &str) -> Result<Vec<DirectoryUser>, ServiceError> {
        self.note(
            call::FIND_BY_EMAIL,
            &[email],
            self.inner.directory.find_by_email(email),
        )
    }
    fn get_user(&self, id: &str) -> Result<Option<DirectoryUser>, ServiceError> {
        self.note(call::GET_USER, &[id], self.inner.directory.get_user(id))
    }
    fn verify_password(
        &self,
        user_id: &str,
        password: &SecretString,
    ) -> Result<bool, ServiceError> {
        self.note(
            call::DIRECTORY_VERIFY_PASSWORD,
            &[user_id],
            self.inner.directory.verify_password(user_id, password),
        )
    }
    fn list_factors(&self, user_id: &str) -> Result<Vec<FactorSummary>, ServiceError> {
        self.note(
            call::LIST_FACTORS,
            &[user_id],
            self.inner.directory.list_factors(user_id),
        )
    }
    fn recovery_facts(
        &self,
        user_id: &str,
        ask: &crate::model::RecoveryAsk,
    ) -> Result<crate::model::RecoveryFacts, ServiceError> {
        self.note(
            call::RECOVERY_FACTS,
            &[user_id],
            self.inner.directory.recovery_facts(user_id, ask),
        )
    }
}

impl LegacyStores for Recorder {
    fn find_accounts(&self, email: &str) -> Result<Vec<LegacyAccount>, ServiceError> {
        self.note(
            call::FIND_ACCOUNTS,
            &[email],
            self.inner.legacy.find_accounts(email),
        )
    }
    fn verify_password(
        &self,
        product: &str,
        legacy_id: &str,
        password: &SecretString,
    ) -> Result<bool, ServiceError> {
        self.note(
            call::LEGACY_VERIFY_PASSWORD,
            &[product, legacy_id],
            self.inner
                .legacy
                .verify_password(product, legacy_id, password),
        )
    }
}

impl SecondFactors for Recorder {
    fn send_code(
        &self,
        user_id: &str,
        factor_id: &str,
        via: FactorProvider,
    ) -> Result<SentCode, ServiceError> {
        self.note(
            call::SEND_CODE,
            &[factor_id, via.name()],
            self.inner.sms.send_code(user_id, factor_id, via),
        )
    }
    fn check_code(
        &self,
        user_id: &str,
        factor_id: &str,
        via: FactorProvider,
        code: &SecretString,
    ) -> Result<CodeCheck, ServiceError> {
        // The code the user typed is not an argument: it never reaches a recording.
        self.note(
            call::CHECK_CODE,
            &[factor_id, via.name()],
            self.inner.sms.check_code(user_id, factor_id, via, code),
        )
    }
    fn check_sent_code(
        &self,
        user_id: &str,
        factor_id: &str,
        via: FactorProvider,
        reference: Option<&str>,
        code: &SecretString,
    ) -> Result<CodeCheck, ServiceError> {
        // Recorded as the check it is: the reference is the provider's, not the rule's.
        self.note(
            call::CHECK_CODE,
            &[factor_id, via.name()],
            self.inner
                .sms
                .check_sent_code(user_id, factor_id, via, reference, code),
        )
    }
    // Not a capability answer (a rule never sees it): passed on, not recorded.
    fn cancel_code(&self, via: FactorProvider, reference: &str) -> Result<(), ServiceError> {
        self.inner.sms.cancel_code(via, reference)
    }
}

/// Answers capability calls from a recording. A call the recording does not hold is
/// answered `unavailable` and remembered, so the replay can say what changed.
#[derive(Clone, Default)]
pub struct Replayer {
    calls: Arc<Mutex<Vec<(Call, bool)>>>,
    unexpected: Arc<Mutex<Vec<String>>>,
}

impl Replayer {
    pub fn new(calls: &[Call]) -> Self {
        Self {
            calls: Arc::new(Mutex::new(
                calls.iter().cloned().map(|c| (c, false)).collect(),
            )),
            unexpected: Arc::default(),
        }
    }

    pub fn services(&self) -> Services {
        Services {
            directory: Arc::new(self.clone()),
            legacy: Arc::new(self.clone()),
            sms: Arc::new(self.clone()),
        }
    }

    pub fn unexpected(&self) -> Vec<String> {
        self.unexpected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn serve<T: for<'de> Deserialize<'de>>(
        &self,
        call: &str,
        args: &[&str],
    ) -> Result<T, ServiceError> {
        let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        let found = calls.iter_mut().find(|(c, used)| {
            !used && c.call == call && c.args.iter().map(String::as_str).eq(args.iter().copied())
        });
        let Some((recorded, used)) = found else {
            drop(calls);
            let what = format!("{call}({})", args.join(", "));
            self.unexpected
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(what.clone());
            return Err(ServiceError::unavailable(format!(
                "{what} is not in the recording"
            )));
        };
        *used = true;
        recorded.answer.decode(call)
    }
}

impl Directory for Replayer {
    fn find_by_email(&self, email: &str) -> Result<Vec<DirectoryUser>, ServiceError> {
        self.serve(call::FIND_BY_EMAIL, &[email])
    }
    fn get_user(&self, id: &str) -> Result<Option<DirectoryUser>, ServiceError> {
        self.serve(call::GET_USER, &[id])
    }
    fn verify_password(&self, user_id: &str, _: &SecretString) -> Result<bool, ServiceError> {
        self.serve(call::DIRECTORY_VERIFY_PASSWORD, &[user_id])
    }
    fn list_factors(&self, user_id: &str) -> Result<Vec<FactorSummary>, ServiceError> {
        self.serve(call::LIST_FACTORS, &[user_id])
    }
    fn recovery_facts(
        &self,
        user_id: &str,
        _: &crate::model::RecoveryAsk,
    ) -> Result<crate::model::RecoveryFacts, ServiceError> {
        self.serve(call::RECOVERY_FACTS, &[user_id])
    }
}

impl LegacyStores for Replayer {
    fn find_accounts(&self, email: &str) -> Result<Vec<LegacyAccount>, ServiceError> {
        self.serve(call::FIND_ACCOUNTS, &[email])
    }
    fn verify_password(
        &self,
        product: &str,
        legacy_id: &str,
        _: &SecretString,
    ) -> Result<bool, ServiceError> {
        self.serve(call::LEGACY_VERIFY_PASSWORD, &[product, legacy_id])
    }
}

impl SecondFactors for Replayer {
    fn send_code(
        &self,
        _: &str,
        factor_id: &str,
        via: FactorProvider,
    ) -> Result<SentCode, ServiceError> {
        self.serve(call::SEND_CODE, &[factor_id, via.name()])
    }
    fn check_code(
        &self,
        _: &str,
        factor_id: &str,
        via: FactorProvider,
        _: &SecretString,
    ) -> Result<CodeCheck, ServiceError> {
        self.serve(call::CHECK_CODE, &[factor_id, via.name()])
    }
}

/// A recording as written to disk: personal data pseudonymized (the same email always
/// becomes the same stand-in, so replays still match) unless `reveal_pii`.
pub fn to_json(recording: &Recording, reveal_pii: bool) -> String {
    let mut value = serde_json::to_value(recording).unwrap_or(Value::Null);
    if !reveal_pii {
        crate::model::redact::pseudonymize_json(&mut value);
    }
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

type Answered<T> = Result<T, ServiceError>;

/// A recording's capability answers held in memory and served any number of times:
/// what a benchmark needs (no disk, no password hashing in the timed loop).
#[derive(Default)]
pub struct MemoryAnswers {
    find_by_email: std::collections::HashMap<String, Answered<Vec<DirectoryUser>>>,
    get_user: std::collections::HashMap<String, Answered<Option<DirectoryUser>>>,
    directory_verify: std::collections::HashMap<String, Answered<bool>>,
    find_accounts: std::collections::HashMap<String, Answered<Vec<LegacyAccount>>>,
    legacy_verify: std::collections::HashMap<(String, String), Answered<bool>>,
    list_factors: std::collections::HashMap<String, Answered<Vec<FactorSummary>>>,
    recovery_facts: std::collections::HashMap<String, Answered<crate::model::RecoveryFacts>>,
}

impl MemoryAnswers {
    pub fn new(calls: &[Call]) -> Self {
        let mut answers = Self::default();
        for recorded in calls {
            let arg = |i: usize| recorded.args.get(i).cloned().unwrap_or_default();
            match recorded.call.as_str() {
                call::FIND_BY_EMAIL => {
                    answers
                        .find_by_email
                        .insert(arg(0), recorded.answer.decode(&recorded.call));
                }
                call::GET_USER => {
                    answers
                        .get_user
                        .insert(arg(0), recorded.answer.decode(&recorded.call));
                }
                call::DIRECTORY_VERIFY_PASSWORD => {
                    answers
                        .directory_verify
                        .insert(arg(0), recorded.answer.decode(&recorded.call));
                }
                call::FIND_ACCOUNTS => {
                    answers
                        .find_accounts
                        .insert(arg(0), recorded.answer.decode(&recorded.call));
                }
                call::LEGACY_VERIFY_PASSWORD => {
                    answers
                        .legacy_verify
                        .insert((arg(0), arg(1)), recorded.answer.decode(&recorded.call));
                }
                call::LIST_FACTORS => {
                    answers
                        .list_factors
                        .insert(arg(0), recorded.answer.decode(&recorded.call));
                }
                call::RECOVERY_FACTS => {
                    answers
                        .recovery_facts
                        .insert(arg(0), recorded.answer.decode(&recorded.call));
                }
                _ => {}
            }
        }
        answers
    }

    pub fn services(self) -> Services {
        let shared = Arc::new(self);
        Services {
            directory: shared.clone(),
            legacy: shared,
            // A benchmark evaluates the pipeline; it sends and checks no codes.
            sms: Services::none().sms,
        }
    }
}

fn served<T: Clone>(answer: Option<&Answered<T>>, call: &str) -> Answered<T> {
    answer.cloned().unwrap_or_else(|| {
        Err(ServiceError::unavailable(format!(
            "{call} has no answer in memory"
        )))
    })
}

impl Directory for MemoryAnswers {
    fn find_by_email(&self, email: &str) -> Result<Vec<DirectoryUser>, ServiceError> {
        served(self.find_by_email.get(email), call::FIND_BY_EMAIL)
    }
    fn get_user(&self, id: &str) -> Result<Option<DirectoryUser>, ServiceError> {
        served(self.get_user.get(id), call::GET_USER)
    }
    fn verify_password(&self, user_id: &str, _: &SecretString) -> Result<bool, ServiceError> {
        served(
            self.directory_verify.get(user_id),
            call::DIRECTORY_VERIFY_PASSWORD,
        )
    }
    fn list_factors(&self, user_id: &str) -> Result<Vec<FactorSummary>, ServiceError> {
        served(self.list_factors.get(user_id), call::LIST_FACTORS)
    }
    fn recovery_facts(
        &self,
        user_id: &str,
        _: &crate::model::RecoveryAsk,
    ) -> Result<crate::model::RecoveryFacts, ServiceError> {
        served(self.recovery_facts.get(user_id), call::RECOVERY_FACTS)
    }
}

impl LegacyStores for MemoryAnswers {
    fn find_accounts(&self, email: &str) -> Result<Vec<LegacyAccount>, ServiceError> {
        served(self.find_accounts.get(email), call::FIND_ACCOUNTS)
    }
    fn verify_password(
        &self,
        product: &str,
        legacy_id: &str,
        _: &SecretString,
    ) -> Result<bool, ServiceError> {
        served(
            self.legacy_verify
                .get(&(product.to_owned(), legacy_id.to_owned())),
            call::LEGACY_VERIFY_PASSWORD,
        )
    }
}
