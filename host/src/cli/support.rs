//! `portcullis support`: the support console, as one agent, a client of `serve`'s
//! admin API.

use anyhow::Result;
use portcullis::server::support_client::{ConsoleCall, send};
use secrecy::ExposeSecret;
use serde_json::json;

use super::Exit;
use super::options::{JsonArg, TokenArgs};

/// The support console, as one agent: a client of `serve`'s admin API. The
/// agent's own token comes from the environment (`--token-env`, by default
/// PORTCULLIS_AGENT_TOKEN) or a file (`--token-file`). Prints the server's JSON answer.
#[derive(clap::Args)]
#[command(mut_arg("token_env", |a| a.default_value("PORTCULLIS_AGENT_TOKEN")))]
pub struct Support {
    /// Where `portcullis serve` listens, e.g. http://127.0.0.1:8080.
    #[arg(long, value_name = "URL")]
    server: String,
    #[command(flatten)]
    token: TokenArgs,
    #[command(flatten)]
    _json: JsonArg,
    #[command(subcommand)]
    command: SupportCommand,
}

#[derive(clap::Subcommand)]
enum SupportCommand {
    /// A user by email: masked data, factors, logins, recoveries, requests, audit.
    Lookup {
        /// The user's email address.
        email: String,
    },
    /// Ask for a dangerous action; a second agent must approve it.
    Request {
        /// remove-factor, complete-recovery or change-email
        action: String,
        /// The directory user it is for.
        #[arg(long)]
        user: String,
        /// For remove-factor: the factor's id.
        #[arg(long)]
        factor: Option<String>,
        /// For change-email: the new address.
        #[arg(long)]
        email: Option<String>,
        /// An identity-verification reference, a ticket.
        #[arg(long)]
        evidence: String,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: String,
        /// Why the waiting period may be skipped (both agents must give one).
        #[arg(long)]
        skip_wait_reason: Option<String>,
    },
    /// Approve another agent's request.
    Approve {
        /// The request's id.
        id: String,
        /// The approving agent's own identity-verification reference.
        #[arg(long)]
        evidence: String,
        /// Why the waiting period may be skipped (the requester gave one too).
        #[arg(long)]
        skip_wait_reason: Option<String>,
    },
    /// Carry out an approved request once its waiting period is over.
    Execute {
        /// The request's id.
        id: String,
    },
    /// Withdraw a request.
    Cancel {
        /// The request's id.
        id: String,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Unlink a legacy account from a user.
    Unlink {
        /// The directory user.
        #[arg(long)]
        user: String,
        /// The product the legacy account is in.
        #[arg(long)]
        product: String,
        /// The legacy account's id in that product.
        #[arg(long)]
        legacy_id: String,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Make the user reset their password at the next sign-in.
    ResetPassword {
        /// The directory user.
        #[arg(long)]
        user: String,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Put the user's SMS factor back on the old provider.
    RevertMfa {
        /// The directory user.
        #[arg(long)]
        user: String,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: String,
    },
}

impl Support {
    /// One call to the admin API; exit 1 when it refused.
    pub fn execute(self) -> Result<Exit> {
        let token = self.token.read("the agent's token")?;
        let (status, answer) = send(&self.server, token.expose_secret(), self.command.call())
            .map_err(anyhow::Error::msg)?;
        println!("{}", serde_json::to_string_pretty(&answer)?);
        Ok(Exit::failures_if(!(200..300).contains(&status), || {
            format!("refused ({status})")
        }))
    }
}

impl SupportCommand {
    fn call(self) -> ConsoleCall {
        match self {
            SupportCommand::Lookup { email } => ConsoleCall::Lookup { email },
            SupportCommand::Request {
                action,
                user,
                factor,
                email,
                evidence,
                reason,
                skip_wait_reason,
            } => ConsoleCall::Request {
                body: json!({
                    "action": action, "user_id": user,
                    "params": {"factor_id": factor, "email": email},
                    "evidence": evidence, "reason": reason, "skip_wait_reason": skip_wait_reason,
                }),
            },
            SupportCommand::Approve {
                id,
                evidence,
                skip_wait_reason,
            } => ConsoleCall::Step {
                id,
                step: "approve",
                body: json!({"evidence": evidence, "skip_wait_reason": skip_wait_reason}),
            },
            SupportCommand::Execute { id } => ConsoleCall::Step {
                id,
                step: "execute",
                body: json!({}),
            },
            SupportCommand::Cancel { id, reason } => ConsoleCall::Step {
                id,
                step: "cancel",
                body: json!({"reason": reason}),
            },
            SupportCommand::Unlink {
                user,
                product,
                legacy_id,
                reason,
            } => ConsoleCall::Act {
                user,
                action: "unlink",
                body: json!({"product": product, "legacy_id": legacy_id, "reason": reason}),
            },
            SupportCommand::ResetPassword { user, reason } => ConsoleCall::Act {
                user,
                action: "password-reset",
                body: json!({"reason": reason}),
            },
            SupportCommand::RevertMfa { user, reason } => ConsoleCall::Act {
                user,
                action: "mfa-revert",
                body: json!({"reason": reason}),
            },
        }
    }
}
