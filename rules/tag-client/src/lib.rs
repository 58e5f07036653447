//! `tag-client`: the example rule of docs/writing-rules.md. Every login gets a claim
//! naming the client (the application) it came through; a user the directory already
//! has also gets it in app metadata (`last_client`).
//!
//! Config: `claim` (the claim's name; default `client`).

use rule_model::{Claim, Decision, Effect, Host, LogLevel, LoginContext, Outcome, RuleError};
use serde_json::json;

pub fn on_login(ctx: &LoginContext, host: &mut impl Host) -> Result<Outcome, RuleError> {
    let name = host.config("claim").unwrap_or_else(|| "client".into());
    // A claim's value is JSON: serde_json quotes and escapes the client id, whatever
    // characters it holds.
    let value = json!(ctx.client_id).to_string();
    let mut effects = vec![Effect::AddClaim(Claim { name, value })];
    // A metadata patch needs a user to land on: the host refuses one for a login
    // that has no directory user.
    if ctx.user.is_some() {
        let patch = json!({ "last_client": ctx.client_id });
        effects.push(Effect::SetAppMetadata(patch.to_string()));
    }
    host.log(LogLevel::Info, "tagged the login with its client");
    Ok(Outcome {
        decision: Decision::Continue,
        effects,
    })
}

// The component wrapper: bindings, a Host over the component's imports, the export.
rule_model::export_rule!(on_login: crate::on_login);
