//! `portcullis replay`: runs recordings against the current rules, serving capability
//! answers from each recording, and reports every step whose verdict changed.

pub mod record;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::PipelineConfig;
use crate::flows::resume::{ResumeTokens, forge};
use crate::flows::{Gateway, GatewayError};
use crate::model::Services;
use crate::replay::record::{Expectation, Recording, Replayer, TokenChoice};
use crate::runtime::engine::Runtime;
use crate::runtime::pipeline::Pipeline;
use crate::runtime::verdict::{Decision, EnrolmentCheck, RecoveryStep};
use crate::state::SqliteState;

/// The password a replayed login carries when the recorded one had one. Capability
/// answers come from the recording, so its value never matters.
const REPLAY_PASSWORD: &str = "replayed-login-password";
/// Replays sign their own tokens; no real key is needed or used.
const REPLAY_TOKEN_KEY: &[u8] = b"portcullis-replay-key-not-secret!";

#[derive(Debug)]
pub struct StepResult {
    pub step: usize,
    pub expected: Expectation,
    pub got: Expectation,
    /// Calls the rules made that the recording does not hold.
    pub unexpected_calls: Vec<String>,
}

impl StepResult {
    pub fn passed(&self) -> bool {
        serde_json::to_value(&self.expected).ok() == serde_json::to_value(&self.got).ok()
    }

    /// A unified diff of expected against got.
    pub fn diff(&self) -> String {
        let expected = serde_json::to_string_pretty(&self.expected).unwrap_or_default();
        let got = serde_json::to_string_pretty(&self.got).unwrap_or_default();
        similar::TextDiff::from_lines(&expected, &got)
            .unified_diff()
            .header("expected", "got")
            .to_string()
    }
}

#[derive(Debug)]
pub struct RecordingResult {
    pub path: PathBuf,
    pub steps: Vec<StepResult>,
    /// The recording could not be replayed at all (unreadable, bad pipeline).
    pub error: Option<String>,
}

impl RecordingResult {
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.steps.iter().all(StepResult::passed)
    }
}

/// Recording files under `paths` (files, or directories searched for `*.json`).
pub fn recording_files(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// A recorded resume result as the replay sends it. A challenge's code was recorded as
/// a marker; the provider's answer comes from the recording, so any well-formed code
/// stands in for it.
fn replayed_result(result: &serde_json::Value) -> String {
    let mut result = result.clone();
    if let Some(code) = result.get_mut("code")
        && code.as_str() == Some("[redacted]")
    {
        *code = serde_json::Value::String("000000".into());
    }
    result.to_string()
}

/// A login a rule asked to recover with a code or a served wait is parked live for
/// its new factor's enrolment when the host lets it through (which depends on its
/// state). The replay parks it at the recovering rule the same way, for the user the
/// recording's directory answered, so a recorded continue resumes that rule.
fn park_recovery(
    gateway: &Gateway,
    verdict: &crate::runtime::verdict::Verdict,
    step: &crate::replay::record::Step,
) -> Result<Option<String>, String> {
    let (
        Decision::Recover {
            step: RecoveryStep::UseCode | RecoveryStep::Enrol,
            rule,
            state,
        },
        Some(recorded),
    ) = (&verdict.decision, &step.login)
    else {
        return Ok(None);
    };
    // A replay issues no proofs, so nothing reads whether it carried a password.
    let mut login = crate::state::resume_tokens::StoredLogin::from_attempt(
        &recorded.login.to_attempt(recorded.login.time_ms),
    );
    login.user = record::recorded_user(&step.calls);
    gateway
        .park(verdict, &login, "", None, rule, state, None, None)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Replays recordings, loading each pipeline once.
pub struct Replay {
    runtime: Runtime,
    default_config: PathBuf,
    /// Each pipeline with its config's second-factor limits.
    pipelines: HashMap<PathBuf, (Arc<Pipeline>, crate::config::MfaSettings)>,
}

impl Replay {
    pub fn new(default_config: &Path) -> Result<Self, GatewayError> {
        let config = PipelineConfig::load(default_config).map_err(crate::error::LoadError::from)?;
        Ok(Self {
            runtime: Runtime::new(&config.engine)?,
            default_config: default_config.to_owned(),
            pipelines: HashMap::new(),
        })
    }

    fn pipeline(
        &mut self,
        path: &Path,
    ) -> Result<(Arc<Pipeline>, crate::config::MfaSettings), String> {
        if let Some(loaded) = self.pipelines.get(path) {
            return Ok(loaded.clone());
        }
        let config = PipelineConfig::load(path).map_err(|e| e.to_string())?;
        let pipeline = Arc::new(self.runtime.load(&config).map_err(|e| e.to_string())?);
        let loaded = (pipeline, config.mfa);
        self.pipelines.insert(path.to_owned(), loaded.clone());
        Ok(loaded)
    }

    pub fn run(&mut self, path: &Path) -> RecordingResult {
        let mut result = RecordingResult {
            path: path.to_owned(),
            steps: Vec::new(),
            error: None,
        };
        if let Err(e) = self.run_steps(path, &mut result.steps) {
            result.error = Some(e);
        }
        result
    }

    /// Replays a recording given as text; `path` names it, and a `pipeline` in it is
    /// taken relative to `path`'s directory.
    pub fn run_text(&mut self, path: &Path, text: &str) -> RecordingResult {
        let mut result = RecordingResult {
            path: path.to_owned(),
            steps: Vec::new(),
            error: None,
        };
        if let Err(e) = self.run_recording(path, text, &mut result.steps) {
            result.error = Some(e);
        }
        result
    }

    fn run_steps(&mut self, path: &Path, results: &mut Vec<StepResult>) -> Result<(), String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
        self.run_recording(path, &text, results)
    }

    fn run_recording(
        &mut self,
        path: &Path,
        text: &str,
        results: &mut Vec<StepResult>,
    ) -> Result<(), String> {
        let recording: Recording =
            serde_json::from_str(text).map_err(|e| format!("not a recording: {e}"))?;
        if recording.recording != crate::replay::record::FORMAT_VERSION {
            return Err(format!(
                "recording format {} is not supported",
                recording.recording
            ));
        }
        let config = match &recording.pipeline {
            Some(relative) => path.parent().unwrap_or(Path::new(".")).join(relative),
            None => self.default_config.clone(),
        };
        let (pipeline, mfa) = self.pipeline(&config)?;
        // Resume records live only as long as this recording's replay.
        let state = Arc::new(SqliteState::in_memory().map_err(|e| e.to_string())?);
        let tokens = || ResumeTokens::new(REPLAY_TOKEN_KEY, 900_000);
        let mut issued: Option<(String, String)> = None;

        for (index, step) in recording.steps.iter().enumerate() {
            let replayer = Replayer::new(&step.calls);
            let gateway = Gateway::new(
                pipeline.clone(),
                state.clone(),
                Services::none().legacy,
                tokens(),
            )
            .with_services(replayer.services())
            .with_mfa_limits(&mfa)
            .without_applying();
            // The host's clock reads the time each step was recorded at: expiry and
            // skew are decided as they were then.
            let at = match (&step.login, &step.resume) {
                (Some(recorded), _) => recorded.login.time_ms,
                (None, Some(resume)) => resume.time_ms,
                (None, None) => 0,
            };
            let gateway = gateway.with_clock(crate::flows::clock::ManualClock::at(at));
            let outcome = match (&step.login, &step.resume) {
                (Some(recorded), None) => {
                    let mut attempt = recorded.login.to_attempt(recorded.login.time_ms);
                    attempt.password = recorded.login.has_password.then(|| REPLAY_PASSWORD.into());
                    attempt.recovery = recorded.replayed_recovery();
                    gateway.login(&attempt)
                }
                (None, Some(resume)) => {
                    let Some(outcome) = resume_step(&gateway, resume, issued.as_ref(), index)?
                    else {
                        // The host answered alone: no rule ran.
                        results.push(StepResult {
                            step: index + 1,
                            expected: step.expect.clone(),
                            got: Expectation::host_only(),
                            unexpected_calls: replayer.unexpected(),
                        });
                        continue;
                    };
                    outcome
                }
                _ => {
                    return Err(format!(
                        "step {} needs exactly one of login and continue",
                        index + 1
                    ));
                }
            };
            let got = match outcome {
                Ok(verdict) => {
                    if let Some(token) = &verdict.resume_token {
                        issued = Some((token.clone(), verdict.transaction_id.clone()));
                    }
                    if let Some(token) = park_recovery(&gateway, &verdict, step)? {
                        issued = Some((token, verdict.transaction_id.clone()));
                    }
                    Expectation::of(&verdict)
                }
                Err(GatewayError::Refused(refusal)) => Expectation::refused(refusal),
                Err(other) => return Err(format!("step {}: {other}", index + 1)),
            };
            results.push(StepResult {
                step: index + 1,
                expected: step.expect.clone(),
                got,
                unexpected_calls: replayer.unexpected(),
            });
        }
        Ok(())
    }
}

/// A `continue` step with the token the earlier step was issued (or a forgery of
/// it); `None` when the host answers it alone, running no rule.
fn resume_step(
    gateway: &Gateway,
    resume: &crate::replay::record::RecordedResume,
    issued: Option<&(String, String)>,
    index: usize,
) -> Result<Option<Result<crate::runtime::verdict::Verdict, GatewayError>>, String> {
    let (token, transaction_id) = issued.cloned().ok_or_else(|| {
        format!(
            "step {} continues, but no earlier step redirected",
            index + 1
        )
    })?;
    let token = match resume.token {
        TokenChoice::Issued => token,
        TokenChoice::Forged => forge(&token),
    };
    // A recovery's enrolment is the host's to check, from its state: the rule
    // resumes with what the host resumed it with live, and a continue the host
    // answered alone runs no rule at all (the login stays parked, as the replay's
    // token does).
    let result = match (&resume.enrolment, resume.token) {
        (Some(EnrolmentCheck::Answered), TokenChoice::Issued) => return Ok(None),
        (Some(EnrolmentCheck::Completed { result }), _) => result.to_string(),
        _ => replayed_result(&resume.result),
    };
    Ok(Some(gateway.resume(&token, &transaction_id, &result)))
}
