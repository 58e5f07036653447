//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`; not part of the
//! API). Each takes the fuzzer's bytes, runs one boundary of the host on them and
//! asserts what must hold for every input, so a panic or a failed assertion is a
//! finding, not only a crash.

use std::path::Path;

use arbitrary::{Result as ArbitraryResult, Unstructured};

use crate::flows::resume::ResumeTokens;
use crate::model::{LoginAttempt, MAX_TIME_MS};
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
        let stored = crate::state::resume_tokens::StoredLogin::from_attempt(&login);
        let again = stored.to_attempt(login.time_ms);
        assert_eq!(again.transaction_id, login.transaction_id);
        let _ = login.new_user_id();
    }
}

/// A pipeline config: parsed and validated, or refused with an error; one that parses
/// loads (its rules compiled, their imports checked against their grants) or is
/// refused with a message that says something. Relative paths resolve under
/// `fixtures/`, so the seed configs load the real rules (`cargo xtask build-rules`).
pub fn pipeline_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let base = fixtures_dir();
    let Ok(config) = crate::config::PipelineConfig::parse(text, &base) else {
        return;
    };
    assert!(
        !config.rules.is_empty(),
        "a pipeline without rules is refused"
    );
    for rule in &config.rules {
        assert!(!rule.name.is_empty());
    }
    // Only files of the workspace (or none at all) are read as components: a path to
    // a device or another tree is the operator's own business, not the fuzzer's.
    let workspace = base.parent().unwrap_or(&base).to_owned();
    let readable = |path: &Path| match std::fs::canonicalize(path) {
        Ok(real) => real.starts_with(&workspace) && real.is_file(),
        Err(_) => !path.exists(),
    };
    if !config.rules.iter().all(|r| readable(&r.component)) {
        return;
    }
    match fuzz_runtime().load(&config) {
        Ok(pipeline) => assert_eq!(
            pipeline.rules().len(),
            config.rules.len(),
            "every rule of a loaded pipeline is loaded"
        ),
        Err(refused) => {
            let message = refused.to_string();
            assert!(
                message.trim().len() >= 10,
                "a refused config says why: {message:?}"
            );
        }
    }
}

fn fixtures_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .canonicalize()
        .expect("the workspace's fixtures/")
}

/// One engine for the whole run, as a process has: the fixtures' engine settings, its
/// compiled components cached under target/ so each is compiled once.
fn fuzz_runtime() -> &'static crate::runtime::engine::Runtime {
    static RUNTIME: std::sync::OnceLock<crate::runtime::engine::Runtime> =
        std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        let settings = crate::config::EngineSettings {
            cache_dir: Some(fixtures_dir().join("../target/fuzz-engine-cache")),
            max_instances: 16,
            ..crate::config::EngineSettings::default()
        };
        crate::runtime::engine::Runtime::new(&settings).expect("an engine")
    })
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
/// the validator: an outcome over the rule's byte bound (`max_output_bytes`) or its
/// effect count is a fault, one within both may be accepted; a rule's error over the
/// byte bound is a fault; every fault's message is cut to its bound.
pub fn outcome(data: &[u8]) {
    let mut input = Unstructured::new(data);
    let Ok(max_bytes) = input.int_in_range(0..=64 * 1024usize) else {
        return;
    };
    let Ok(outcome) = arbitrary_outcome(&mut input) else {
        return;
    };
    let effects = outcome.effects.len();
    // Counted here, apart from the validator's own count: the bound is what the
    // contract says (every string the host would hold), not whatever the host counts.
    let bytes = text_bytes(&outcome);
    match crate::runtime::outcome_checks::validate("fuzzed-rule", outcome, max_bytes) {
        Ok(valid) => {
            assert!(
                bytes <= max_bytes,
                "an outcome of {bytes} bytes passed a bound of {max_bytes}"
            );
            assert_eq!(valid.effects.len(), effects);
            assert!(valid.effects.len() <= 256);
            for effect in &valid.effects {
                let _ = crate::runtime::outcome_checks::effect_to_wit(effect);
            }
        }
        Err(message) => assert!(
            message.len() <= MAX_FAULT_MESSAGE,
            "a bad-output message of {} bytes",
            message.len()
        ),
    }
    if let Ok(error) = arbitrary_rule_error(&mut input) {
        let bytes = error.code.len() + error.message.len();
        match crate::runtime::outcome_checks::error_message(&error, max_bytes) {
            Ok(message) => {
                assert!(
                    bytes <= max_bytes,
                    "a rule error of {bytes} bytes passed a bound of {max_bytes}"
                );
                assert!(
                    message.len() <= MAX_FAULT_MESSAGE,
                    "a fault message is cut: {} bytes",
                    message.len()
                );
            }
            Err(message) => {
                assert!(
                    bytes > max_bytes,
                    "a rule error within the bound was refused"
                );
                assert!(message.len() <= MAX_FAULT_MESSAGE);
            }
        }
    }
}

/// What a fault's message may hold in a trace (the host's `MAX_FAULT_MESSAGE`).
const MAX_FAULT_MESSAGE: usize = 1024;

/// Bytes of text in an outcome: every string of its decision and its effects.
fn text_bytes(outcome: &wit::Outcome) -> usize {
    let decision = match &outcome.decision {
        wit::Decision::Continue => 0,
        wit::Decision::Deny(d) => d.code.len() + d.message.len(),
        wit::Decision::Redirect(r) => r.url.len() + r.reason.len() + r.state.len(),
        wit::Decision::Challenge(c) => c.factor_id.as_deref().map_or(0, str::len) + c.state.len(),
        wit::Decision::Recover(r) => {
            let reasons = match &r.step {
                wit::RecoveryStep::Wait(w) => w.reasons.iter().map(String::len).sum(),
                wit::RecoveryStep::UseCode | wit::RecoveryStep::Enrol => 0,
            };
            r.state.len() + reasons
        }
    };
    let effects: usize = outcome
        .effects
        .iter()
        .map(|effect| match effect {
            wit::Effect::SetAppMetadata(p) | wit::Effect::SetUserMetadata(p) => p.len(),
            wit::Effect::AddClaim(c) => c.name.len() + c.value.len(),
            wit::Effect::CreateUser(u) => {
                u.email.len() + u.app_metadata.len() + u.user_metadata.len()
            }
            wit::Effect::LinkLegacyAccount(l) => l.product.len() + l.legacy_id.len(),
            wit::Effect::EnqueueOutbox(m) => m.topic.len() + m.key.len() + m.payload.len(),
            wit::Effect::RequirePasswordReset => 0,
        })
        .sum();
    decision + effects
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

    /// Replays a fuzzed recording, then the same recording with each step's expected
    /// verdict replaced by the one just replayed: every step of that one must pass. So
    /// the comparison of a replayed verdict with a recorded one holds for any verdict
    /// the pipeline can give (it survives the recording's format, it is
    /// deterministic), and a failed step says how it differs.
    pub fn run(&mut self, data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        // A recording that names another pipeline would have the fuzzer load files.
        let mut recording = match serde_json::from_str::<Recording>(text) {
            Ok(recording) if recording.pipeline.is_none() => recording,
            _ => return,
        };
        let path = Path::new("fuzzed-recording.json");
        let result = self.replay.run_text(path, text);
        for step in &result.steps {
            assert_eq!(
                serde_json::to_value(&step.expected).ok(),
                serde_json::to_value(&recording.steps[step.step - 1].expect).ok(),
                "step {} is compared with what the recording holds",
                step.step
            );
            // A failed step prints its diff: it renders for any verdict and shows
            // a change.
            let diff = step.diff();
            assert_eq!(
                step.passed(),
                !diff.lines().any(|l| {
                    (l.starts_with('+') && !l.starts_with("+++"))
                        || (l.starts_with('-') && !l.starts_with("---"))
                }),
                "step {} passed = {} but its diff is:\n{diff}",
                step.step,
                step.passed()
            );
        }
        if result.error.is_some() || result.steps.is_empty() {
            return;
        }
        // A deadline depends on the machine's load, not on the recording.
        let timed = |e: &crate::replay::record::Expectation| {
            e.faults
                .iter()
                .any(|f| f.kind == crate::runtime::verdict::FaultKind::Deadline)
        };
        if result.steps.iter().any(|s| timed(&s.got)) {
            return;
        }
        for step in &result.steps {
            recording.steps[step.step - 1].expect = step.got.clone();
        }
        recording.steps.truncate(result.steps.len());
        let rerecorded = serde_json::to_string(&recording).expect("a recording serializes");
        let again = self.replay.run_text(path, &rerecorded);
        assert_eq!(again.error, None, "the re-recorded replay ran");
        assert_eq!(again.steps.len(), result.steps.len());
        for step in &again.steps {
            assert!(
                step.passed(),
                "step {} replayed differently from what it gave a moment ago:\n{}",
                step.step,
                step.diff()
            );
        }
    }
}
