//! `portcullis outbox`: deliver pending messages to the products, and put dead letters
//! back.

use anyhow::Result;
use portcullis::state::outbox::RequeueFilter;

use super::Exit;
use super::options::{ConfigArg, JsonArg, ReportArg};
use super::stores::{directory_of, phone_keys, tokio_runtime};

/// The outbox: deliver pending messages to the products; put dead letters back.
#[derive(clap::Args)]
pub struct Outbox {
    #[command(subcommand)]
    command: OutboxCommand,
}

#[derive(clap::Subcommand)]
enum OutboxCommand {
    Run(Run),
    Requeue(Requeue),
}

impl Outbox {
    pub fn execute(self) -> Result<Exit> {
        match self.command {
            OutboxCommand::Run(c) => c.execute(),
            OutboxCommand::Requeue(c) => c.execute(),
        }
    }
}

/// Deliver messages until stopped (SIGTERM or Ctrl-C).
#[derive(clap::Args)]
pub struct Run {
    #[command(flatten)]
    config: ConfigArg,
    /// Stop once nothing is pending or being delivered.
    #[arg(long)]
    until_empty: bool,
    #[command(flatten)]
    json: JsonArg,
}

impl Run {
    pub fn execute(self) -> Result<Exit> {
        let (config, state) = outbox_of(&self.config)?;
        let dispatcher = portcullis::jobs::outbox::Dispatcher::new(state, config.outbox.clone())
            .with_phone_keys(phone_keys(&config)?)
            .with_audit_checkpoints(config.audit.checkpoint_file.clone());
        let report = tokio_runtime()?
            .block_on(dispatcher.run(self.until_empty, portcullis::server::shutdown_signal()))?;
        if self.json.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            println!(
                "outbox: {} claimed, {} delivered, {} to retry, {} dead-lettered",
                report.claimed, report.delivered, report.retried, report.dead
            );
        }
        Ok(Exit::failures_if(report.dead > 0, || {
            format!(
                "{} message(s) dead-lettered: given up after their last attempt (`portcullis outbox requeue` puts them back)",
                report.dead
            )
        }))
    }
}

/// Put dead-lettered messages back to pending, their attempts starting over: all of
/// them, or those `--id` or `--topic` names (both: those with both). Run it once the
/// endpoint works again; `serve` or `outbox run` then delivers them. Prints a JSON
/// report of what was put back. A message that died lost its secret links (a
/// notice's cancel link): it goes out without them.
#[derive(clap::Args)]
pub struct Requeue {
    #[command(flatten)]
    config: ConfigArg,
    /// Only the message with this id (repeatable).
    #[arg(long = "id", value_name = "ID")]
    ids: Vec<i64>,
    /// Only messages of this topic, e.g. `id-propagation` or `notify`.
    #[arg(long)]
    topic: Option<String>,
    #[command(flatten)]
    report: ReportArg,
}

impl Requeue {
    pub fn execute(self) -> Result<Exit> {
        let (_, state) = outbox_of(&self.config)?;
        let filter = RequeueFilter {
            ids: self.ids,
            topic: self.topic,
        };
        let now = portcullis::flows::clock::Clock::now_ms(&portcullis::flows::clock::SystemClock);
        let report = state.outbox_requeue(&filter, now)?;
        // Asking for what is not there is bad input, not "nothing to do".
        if !report.unknown_ids.is_empty() {
            let ids: Vec<String> = report.unknown_ids.iter().map(i64::to_string).collect();
            anyhow::bail!("no outbox message with id {}", ids.join(", "));
        }
        if let (false, Some(topic)) = (report.topic_known, &filter.topic) {
            anyhow::bail!("no outbox message has the topic {topic:?}");
        }
        for message in report
            .requeued
            .iter()
            .filter(|m| !m.links_removed.is_empty())
        {
            eprintln!(
                "warning: message {} goes again without its {}: secret links are removed \
                 when a message dies and only their digests are kept. If its recovery is \
                 still open, the user can still cancel through support (`portcullis support`).",
                message.id,
                message.links_removed.join(" and ")
            );
        }
        self.report.print(&serde_json::json!({
            "requeued": report.requeued.len(),
            "messages": report.requeued,
            "not_dead": report.not_dead,
            "still_dead": report.still_dead,
        }))?;
        Ok(Exit::failures_if(report.requeued.is_empty(), || {
            let not_dead: Vec<String> = report
                .not_dead
                .iter()
                .map(|(id, status)| format!("{id} is {status}"))
                .collect();
            if not_dead.is_empty() {
                "nothing requeued: no dead-lettered message matched".into()
            } else {
                format!("nothing requeued: {}", not_dead.join(", "))
            }
        }))
    }
}

/// The config and the directory whose outbox a command works on.
fn outbox_of(
    config: &ConfigArg,
) -> Result<(
    portcullis::PipelineConfig,
    std::sync::Arc<dyn portcullis::state::StateStore>,
)> {
    let config = config.load()?;
    anyhow::ensure!(
        config.state.is_some(),
        "the config has no [state] section: there is no outbox"
    );
    let state = directory_of(&config)?;
    Ok((config, state))
}
