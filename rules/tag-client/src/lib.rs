//! `tag-client`: the example rule of docs/writing-rules.md. Every login gets a claim
//! naming the client (the application) it came through; a user the directory already
//! has also gets it in app metadata (`last_client`).
//!
//! Config: `claim` (the claim's name; default `client`).

use rule_model::{
    Claim, Decision, Effect, Host, LogLevel, LoginContext, Outcome, RuleError, to_json,
};
use serde::Serialize;

/// The metadata patch. A struct, not `serde_json::json!`: a `json!` value brings
/// serde_json's number formatting (~20 KiB of tables) into the rule's memory image,
/// which the host copies back into the rule's memory at every login.
#[derive(Serialize)]
struct Patch<'a> {
    last_client: &'a str,
}

pub fn on_login(ctx: &LoginContext, host: &mut impl Host) -> Result<Outcome, RuleError> {
    let name = host.config("claim").unwrap_or_else(|| "client".into());
    // A claim's value is JSON: serde_json quotes and escapes the client id, whatever
    // characters it holds.
    let value = to_json(&ctx.client_id)?;
    let mut effects = vec![Effect::AddClaim(Claim { name, value })];
    // A metadata patch needs a user to land on: the host refuses one for a login
    // that has no directory user.
    if ctx.user.is_some() {
        let patch = Patch {
            last_client: &ctx.client_id,
        };
        effects.push(Effect::SetAppMetadata(to_json(&patch)?));
    }
    host.log(LogLevel::Info, "tagged the login with its client");
    Ok(Outcome {
        decision: Decision::Continue,
        effects,
    })
}

// The component wrapper: bindings, a Host over the component's imports, the export.
rule_model::export_rule!(on_login: crate::on_login);
