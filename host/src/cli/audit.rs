//! `portcullis audit`: the audit log of support actions and recovery steps.

use anyhow::{Context, Result};
use portcullis::state::audit::{self, Anchor, Checkpoint};

use super::Exit;
use super::options::{ConfigArg, JsonArg};
use super::stores::keyed_directory_of;

/// The audit log of support actions and recovery steps.
#[derive(clap::Args)]
pub struct Audit {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(clap::Subcommand)]
enum AuditCommand {
    Verify(Verify),
}

impl Audit {
    pub fn execute(self) -> Result<Exit> {
        match self.command {
            AuditCommand::Verify(c) => c.execute(),
        }
    }
}

/// Walk the chain; exit 1 at the first edited, missing or inserted row, or when
/// it no longer passes through a checkpoint of `[audit] checkpoint_file` or
/// `--expect-head` (a `SEQ:HASH` head kept from an earlier run); exit 2 when an
/// anchor cannot be read. Prints a JSON report with `ok` either way.
#[derive(clap::Args)]
pub struct Verify {
    #[command(flatten)]
    config: ConfigArg,
    /// A head printed by an earlier run (`SEQ:HASH`): the chain must still pass
    /// through it.
    #[arg(long, value_name = "SEQ:HASH")]
    expect_head: Option<String>,
    /// Publish the verified head as a checkpoint (the file and the outbox).
    #[arg(long)]
    checkpoint: bool,
    #[command(flatten)]
    _json: JsonArg,
}

impl Verify {
    pub fn execute(self) -> Result<Exit> {
        let config = self.config.load()?;
        let anchors = match self.anchors(&config) {
            Ok(anchors) => anchors,
            Err(problem) => {
                // Nothing was verified: a script reading the JSON must not take it
                // for a chain that holds.
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "ok": false,
                        "problem": problem,
                    }))?
                );
                return Ok(Exit::Usage(problem));
            }
        };
        anyhow::ensure!(
            config.state.is_some(),
            "the config has no [state] section: there is no audit log"
        );
        let state = keyed_directory_of(&config)?;
        let report = audit::verify_anchored(state.sql(), &anchors)?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        if !report.ok {
            return Ok(Exit::Failures(format!(
                "the audit chain does not hold at row {}: {}",
                report.first_bad_seq.unwrap_or_default(),
                report.problem.as_deref().unwrap_or("see the report")
            )));
        }
        if self.checkpoint && report.rows > 0 {
            let head = report.head();
            if config.audit.checkpoint_file.is_none() && !config.audit.checkpoint_endpoint {
                anyhow::bail!(
                    "nowhere to publish a checkpoint: set [audit] checkpoint_file or an `audit` endpoint in [outbox.endpoints]"
                );
            }
            if let Some(path) = &config.audit.checkpoint_file {
                audit::write_checkpoint(path, &head)
                    .with_context(|| format!("writing a checkpoint to {}", path.display()))?;
            }
            if config.audit.checkpoint_endpoint {
                let at =
                    portcullis::flows::clock::Clock::now_ms(&portcullis::flows::clock::SystemClock);
                portcullis::state::portable::transact(state.sql(), |tx| {
                    audit::queue_checkpoint(tx, &head, at)
                })?;
            }
            eprintln!("checkpoint {head} published");
        }
        Ok(Exit::Done)
    }

    /// The points the chain must pass through: the checkpoints published to
    /// `[audit] checkpoint_file`, and `--expect-head`.
    fn anchors(&self, config: &portcullis::PipelineConfig) -> Result<Vec<Anchor>, String> {
        let mut anchors = Vec::new();
        if let Some(path) = &config.audit.checkpoint_file {
            let from = path.display().to_string();
            // Its errors name the file.
            let checkpoints = audit::read_checkpoints(path)?;
            anchors.extend(checkpoints.into_iter().map(|checkpoint| Anchor {
                checkpoint,
                from: from.clone(),
            }));
        }
        if let Some(head) = &self.expect_head {
            anchors.push(Anchor {
                checkpoint: Checkpoint::parse(head)
                    .map_err(|e| format!("--expect-head {head:?}: {e}"))?,
                from: "--expect-head".into(),
            });
        }
        Ok(anchors)
    }
}
