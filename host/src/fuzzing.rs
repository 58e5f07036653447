//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`; not part of the
//! API). Each takes the fuzzer's bytes, runs one boundary of the host on them and
//! asserts what must hold for every input, so a panic or a failed assertion is a
//! finding, not only a crash.

use std::path::Path;

use arbitrary::{Result as ArbitraryResult, Unstructured};

use crate::gateway::login::{LoginAttempt, MAX_TIME_MS};
use crate::gateway::resume::ResumeTokens;
use crate::replay::Replay;
use crate::replay::record::Recording;
use crate::runtime::bindings::wit;

/// The key the resume-token target signs and verifies with; its seed tokens are
/// signed with it too, so the fuzzer starts from tokens that verify.
pub const RESUME_KEY: &[u8] = b"portcullis-fuzz-key-not-a-secret";
/// The transaction the resume-token target's tokens are bound to.
pub const RESUME_TRANSACTION: &str = "tx-0";

/// The login JSON a gateway sends: parsed and bounded, or refused with an error.
pub fn login_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(login) = LoginAttempt::from_json(text) {
        assert!(
            login.time_ms <= MAX_TIME_MS,
            "an accepted time fits the store"
        );
        assert!(login.email.contains('@'));
        // What every accepted login goes on to: the rules' context and the store's row.
        let context = login.to_context();
        assert_eq!(context.email, login.email);
        let stored = crate::state::StoredLogin::from_attempt(&login);
        let again = stored.to_attempt(login.time_ms);
        assert_eq!(again.transaction_id, login.transaction_id);
        let _ = login.new_user_id();
    }
}

/// A pipeline config: parsed and validated, or refused with an error. Relative paths
/// resolve under a directory that does not exist, so no input reads a file.
pub fn pipeline_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let base = Path::new("/nonexistent/portcullis-fuzz");
    if let Ok(config) = crate::PipelineConfig::parse(text, base) {
        assert!(
            !config.rules.is_empty(),
            "a pipeline without rules is refused"
        );
        for rule in &config.rules {
            assert!(!rule.name.is_empty());
        }
    }
}

/// A resume token as a client presents it: only tokens this key issued verify, and a
/// token that verifies is exactly the one issued for its claims.
pub fn resume_token(data: &[u8]) {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let tokens = ResumeTokens::new(RESUME_KEY, 900_000);
    if let Ok(jti) = tokens.verify(token, RESUME_TRANSACTION) {
        assert_eq!(
            tokens.issue(&jti, RESUME_TRANSACTION),
            token,
            "a token verified that this key did not issue in that form"
        );
    }
}

/// A rule's outcome, as the component model would lift it from a hostile guest, through
/// the validator: accepted outcomes are within the bounds, the rest are faults.
pub fn outcome(data: &[u8]) {
    let mut input = Unstructured::new(data);
    let Ok(max_bytes) = input.int_in_range(0..=64 * 1024usize) else {
        return;
    };
    let Ok(outcome) = arbitrary_outcome(&mut input) else {
        return;
    };
    let effects = outcome.effects.len();
    if let Ok(valid) = crate::runtime::outcome::validate("fuzzed-rule", outcome, max_bytes) {
        assert_eq!(valid.effects.len(), effects);
        assert!(valid.effects.len() <= 256);
        for effect in &valid.effects {
            let _ = crate::runtime::outcome::effect_to_wit(effect);
        }
    }
    if let Ok(error) = arbitrary_rule_error(&mut input)
        && let Ok(message) = crate::runtime::outcome::error_message(&error, max_bytes)
    {
        assert!(
            message.len() <= 1024,
            "a fault message is cut: {} bytes",
            message.len()
        );
    }
}

fn arbitrary_outcome(input: &mut Unstructured) -> ArbitraryResult<wit::Outcome> {
    let decision = match input.int_in_range(0..=4u8)? {
        0 => wit::Decision::Continue,
        1 => wit::Decision::Deny(wit::DenyInfo {
            code: input.arbitrary()?,
            message: input.arbitrary()?,
            retryable: input.arbitrary()?,
        }),
        2 => wit::Decision::Redirect(wit::RedirectInfo {
            url: input.arbitrary()?,
            reason: input.arbitrary()?,
            state: input.arbitrary()?,
        }),
        3 => wit::Decision::Recover(wit::RecoveryInfo {
            step: match input.int_in_range(0..=2u8)? {
                0 => wit::RecoveryStep::UseCode,
                1 => wit::RecoveryStep::Enrol,
                _ => wit::RecoveryStep::Wait(wit::WaitRequest {
                    wait_ms: input.arbitrary()?,
                    reasons: input.arbitrary()?,
                }),
            },
            state: input.arbitrary()?,
        }),
        _ => wit::Decision::Challenge(wit::ChallengeInfo {
            kind: match input.int_in_range(0..=3u8)? {
                0 => wit::ChallengeKind::Mfa,
                1 => wit::ChallengeKind::PasswordReset,
                2 => wit::ChallengeKind::EmailVerification,
                _ => wit::ChallengeKind::Captcha,
            },
            factor_id: input.arbitrary()?,
            via: match input.int_in_range(0..=2u8)? {
                0 => None,
                1 => Some(wit::FactorProvider::LegacySms),
                _ => Some(wit::FactorProvider::Verify),
            },
            state: input.arbitrary()?,
        }),
    };
    let mut effects = Vec::new();
    // Past the validator's limit of 256, so the count check is reached too.
    let count = input.int_in_range(0..=300usize)?;
    for _ in 0..count {
        if input.is_empty() {
            break;
        }
        effects.push(arbitrary_effect(input)?);
    }
    Ok(wit::Outcome { decision, effects })
}

fn arbitrary_effect(input: &mut Unstructured) -> ArbitraryResult<wit::Effect> {
    Ok(match input.int_in_range(0..=6u8)? {
        0 => wit::Effect::SetAppMetadata(input.arbitrary()?),
        1 => wit::Effect::SetUserMetadata(input.arbitrary()?),
        2 => wit::Effect::AddClaim(wit::Claim {
            name: input.arbitrary()?,
            value: input.arbitrary()?,
        }),
        3 => wit::Effect::CreateUser(wit::NewUser {
            email: input.arbitrary()?,
            email_verified: input.arbitrary()?,
            app_metadata: input.arbitrary()?,
            user_metadata: input.arbitrary()?,
            password_from_login: input.arbitrary()?,
        }),
        4 => wit::Effect::LinkLegacyAccount(wit::LegacyLink {
            product: input.arbitrary()?,
            legacy_id: input.arbitrary()?,
        }),
        5 => wit::Effect::EnqueueOutbox(wit::OutboxMessage {
            topic: input.arbitrary()?,
            key: input.arbitrary()?,
            payload: input.arbitrary()?,
        }),
        _ => wit::Effect::RequirePasswordReset,
    })
}

fn arbitrary_rule_error(input: &mut Unstructured) -> ArbitraryResult<wit::RuleError> {
    Ok(wit::RuleError {
        code: input.arbitrary()?,
        message: input.arbitrary()?,
    })
}

/// Replays fuzzed recordings through the real pipeline and its rule components.
pub struct RecordingTarget {
    replay: Replay,
}

impl RecordingTarget {
    /// `pipeline` is the default pipeline recordings run against (its rules must be
    /// built).
    pub fn new(pipeline: &Path) -> Self {
        Self {
            replay: Replay::new(pipeline).expect("the fuzz pipeline loads"),
        }
    }

    pub fn run(&mut self, data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        // A recording that names another pipeline would have the fuzzer load files.
        match serde_json::from_str::<Recording>(text) {
            Ok(recording) if recording.pipeline.is_none() => {}
            _ => return,
        }
        let result = self
            .replay
            .run_text(Path::new("fuzzed-recording.json"), text);
        for step in &result.steps {
            // A diff is what a failed step prints: it must render for any verdict.
            let _ = step.diff();
        }
    }
}
