//! `portcullis continue`: resume a redirected or challenged login.

use std::path::PathBuf;

use anyhow::{Context, Result};
use portcullis::replay::record::{
    Expectation, RecordedResume, Recorder, Recording, Step, TokenChoice,
};

use super::Exit;
use super::options::{ConfigArg, VerdictFormat};
use super::output::print_verdict;
use super::stores::open_gateway;

/// Resume a redirected login with its token and what the redirect target reported.
#[derive(clap::Args)]
pub struct Continue {
    #[command(flatten)]
    config: ConfigArg,
    /// The resume token from the redirect or challenge verdict.
    #[arg(long)]
    token: String,
    /// The transaction id of the login being resumed.
    #[arg(long)]
    transaction_id: String,
    /// JSON from the redirect target, e.g. '{"verified": true}' (or '{"code": "…"}'
    /// for a challenge).
    #[arg(long)]
    result: String,
    #[command(flatten)]
    format: VerdictFormat,
    /// Append this resume as a step to the recording of the login it resumes.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
}

impl Continue {
    pub fn execute(self) -> Result<Exit> {
        let result_json: serde_json::Value =
            serde_json::from_str(&self.result).context("--result is not JSON")?;
        let mut existing = match &self.record {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("cannot read recording {} to append to", path.display())
                })?;
                Some(
                    serde_json::from_str::<Recording>(&text)
                        .with_context(|| format!("{} is not a recording", path.display()))?,
                )
            }
            None => None,
        };
        let mut gateway = open_gateway(&self.config.config)?;
        let recorder = Recorder::new(gateway.services().clone());
        if existing.is_some() {
            gateway = gateway.with_services(recorder.services());
        }
        // The host's clock decides expiry; the recording keeps the time it read.
        let now_ms = gateway.clock().now_ms();
        let outcome = gateway.resume(&self.token, &self.transaction_id, &result_json.to_string());
        let mut enrolment = None;
        let expectation = match outcome {
            Ok(verdict) => {
                print_verdict(&verdict, &self.format)?;
                enrolment = verdict.enrolment.clone();
                Expectation::of(&verdict)
            }
            Err(portcullis::GatewayError::Refused(refusal)) if existing.is_some() => {
                eprintln!("portcullis: resume refused: {refusal}");
                Expectation::refused(refusal)
            }
            Err(other) => return Err(other.into()),
        };
        if let (Some(path), Some(recording)) = (&self.record, existing.as_mut()) {
            recording.steps.push(Step {
                login: None,
                resume: Some(RecordedResume {
                    token: TokenChoice::Issued,
                    // A challenge's code is the user's secret: a recording keeps its place.
                    result: portcullis::model::redact::without_codes(result_json),
                    time_ms: now_ms,
                    // What the host's own check of a recovery's enrolment resumed the
                    // rule with: the replay has no state to check it again.
                    enrolment,
                }),
                calls: recorder.take_calls(),
                expect: expectation,
            });
            std::fs::write(
                path,
                portcullis::replay::record::to_json(recording, self.format.reveal_pii),
            )
            .with_context(|| format!("cannot write recording {}", path.display()))?;
            eprintln!("appended to {}", path.display());
        }
        Ok(Exit::Done)
    }
}
