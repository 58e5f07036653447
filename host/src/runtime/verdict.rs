//! What an evaluation returns: one decision, the effects to apply, and a trace per rule.

use crate::model::{Effect, FactorProvider};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::OnError;

/// The pipeline's answer to a login attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Decision {
    Allow,
    Deny {
        code: String,
        message: String,
        retryable: bool,
    },
    Redirect {
        url: String,
        reason: String,
        /// The redirecting rule's state, kept server-side with the resume token.
        #[serde(skip)]
        state: String,
        rule: String,
    },
    Challenge {
        kind: ChallengeKind,
        /// For `mfa`: the factor challenged, and who sends its code.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        factor_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        via: Option<FactorProvider>,
        /// Where the code went, masked (`+1 ***-***-1234`), once the host sent it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        destination: Option<String>,
        /// After a wrong code: how many more the challenge takes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attempts_left: Option<u32>,
        /// The challenging rule and its state, kept server-side with the resume token.
        #[serde(skip)]
        state: String,
        #[serde(skip)]
        rule: String,
    },
    /// Account recovery, which the host performs (`flows::recovery`); a gateway
    /// never answers with it: it becomes a deny or an enrolment challenge.
    Recover {
        step: RecoveryStep,
        #[serde(skip)]
        state: String,
        #[serde(skip)]
        rule: String,
    },
}

/// What a rule asks the host to do for a login that asks to recover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum RecoveryStep {
    UseCode,
    Wait { wait_ms: u64, reasons: Vec<String> },
    Enrol,
}

/// How the host's own check of a recovery's enrolment went, when a login parked for
/// it continues (`flows::recovery`). It depends on the host's state (the factor, the
/// recovery), which a replay does not have: recordings keep it, and replays stand it
/// in for the check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "host", rename_all = "snake_case")]
pub enum EnrolmentCheck {
    /// The factor this login's proof enrolled completed the recovery: the recovering
    /// rule resumed with `result`.
    Completed { result: Value },
    /// No rule ran: the host answered alone (no such factor yet, or the recovery
    /// ended).
    Answered,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChallengeKind {
    Mfa,
    PasswordReset,
    EmailVerification,
    Captcha,
    /// Enrol a new second factor (after a recovery), then continue the login.
    MfaEnrollment,
}

crate::model::names!(ChallengeKind {
    Mfa = "mfa",
    PasswordReset = "password_reset",
    EmailVerification = "email_verification",
    Captcha = "captcha",
    MfaEnrollment = "mfa_enrollment",
});

/// Why a rule's run did not produce a usable outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Ran past its deadline (epoch interruption).
    Deadline,
    /// Asked for more memory than its cap.
    Memory,
    /// Exhausted the wasm stack.
    StackOverflow,
    /// Trapped: a panic, `unreachable`, an out-of-bounds access, ...
    Trap,
    /// A host capability it called failed (e.g. a legacy store was down) and the
    /// rule gave up.
    Capability,
    /// The rule reported an error of its own.
    RuleError,
    /// Returned an outcome that is too large or malformed.
    BadOutput,
    /// Could not be instantiated (e.g. the instance pool is exhausted).
    Instantiate,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fault {
    pub kind: FaultKind,
    pub message: String,
    /// The policy the pipeline applied.
    pub policy: OnError,
}

/// How one rule's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleResult {
    Continue,
    Deny,
    Redirect,
    Challenge,
    Recover,
    /// Not run: its `only_when` did not hold for this login.
    Skipped,
    Fault,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleTrace {
    pub rule: String,
    pub result: RuleResult,
    pub duration_us: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    /// Lines from the `log` capability (redacted, bounded).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<String>,
    /// What the guest wrote to stdout/stderr (redacted, bounded), e.g. a panic message.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub output: String,
    /// The largest linear memory the rule's sandbox had, in KiB.
    pub memory_kib: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub transaction_id: String,
    pub decision: Decision,
    /// Effects of the rules that ran, in order. Applied when the decision is allow;
    /// held until the login resumes on a redirect; empty on a deny.
    pub effects: Vec<Effect>,
    pub trace: Vec<RuleTrace>,
    /// What the host wrote for an allowed login.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied: Option<crate::model::ApplyReport>,
    /// For a redirect: the token `continue` takes. A bearer secret: never logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume_token: Option<String>,
    /// What this login proved, as a token the host issued (`flows::proof`): the
    /// enrolment of a recovery's new factor, or a full sign-in's enrolment and
    /// recovery codes take it. A bearer secret: never logged, never recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proof_token: Option<String>,
    /// After a full sign-in (password and second factor) that is allowed: the token
    /// that makes this device a recognised one (`request.device_token` in its later
    /// logins). A bearer secret, shown once: never logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_token: Option<String>,
    /// Why the host itself could not complete the login (state unavailable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the host verified about legacy accounts during the evaluation; kept
    /// server-side across a redirect, never sent.
    #[serde(skip)]
    pub evidence: crate::model::AccountEvidence,
    /// For a recovery the host performed: what the rule decided (the `recover`
    /// decision), which recordings keep and replays compare; the answer itself
    /// depends on the host's state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoveryStep>,
    /// For a continue after a recovery's enrolment: how the host's check of it went,
    /// which recordings keep and replays stand in. Not part of the answer.
    #[serde(skip)]
    pub enrolment: Option<EnrolmentCheck>,
}

impl Verdict {
    pub(crate) fn with_trace(mut self, trace: Vec<RuleTrace>) -> Self {
        self.trace = trace;
        self
    }

    pub fn faults(&self) -> impl Iterator<Item = (&str, &Fault)> {
        self.trace
            .iter()
            .filter_map(|t| t.fault.as_ref().map(|f| (t.rule.as_str(), f)))
    }
}
