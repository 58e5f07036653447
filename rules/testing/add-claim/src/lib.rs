//! A well-behaved rule: tags the login with a claim and records the client in app
//! metadata. The host tests use it as the healthy neighbour of the faulty rules.

wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "portcullis:rule/rule" });

use portcullis::rule::types::{Claim, Decision, Effect};
use portcullis::rule::{config, log};

struct AddClaim;

impl Guest for AddClaim {
    fn on_login(ctx: LoginContext) -> Result<Outcome, RuleError> {
        let claim = config::get("claim").unwrap_or_else(|| "https://portcullis.dev/checked".into());
        log::log(
            log::Level::Info,
            &format!("tagging login {}", ctx.transaction_id),
        );
        Ok(Outcome {
            decision: Decision::Continue,
            effects: vec![
                Effect::AddClaim(Claim {
                    name: claim,
                    value: "true".into(),
                }),
                Effect::SetAppMetadata(format!(
                    "{{\"last_client\":\"{}\"}}",
                    ctx.client_id.replace(['"', '\\'], "")
                )),
            ],
        })
    }
}

export!(AddClaim);
