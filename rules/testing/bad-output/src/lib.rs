//! Faulty on purpose: returns garbage. `mode` in the rule's config picks which:
//! `huge` (a 10 MB claim), `invalid-json` (metadata that is not JSON), or
//! `not-an-object` (a metadata patch that is JSON but not an object).

wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "portcullis:rule/rule" });

use portcullis::rule::config;
use portcullis::rule::types::{Claim, Decision, Effect};

struct BadOutput;

impl Guest for BadOutput {
    fn on_login(_ctx: LoginContext) -> Result<Outcome, RuleError> {
        let effect = match config::get("mode").as_deref() {
            Some("huge") => Effect::AddClaim(Claim {
                name: "blob".into(),
                value: format!("\"{}\"", "x".repeat(10 * 1000 * 1000)),
            }),
            Some("invalid-json") => Effect::SetAppMetadata("{not json".into()),
            Some("not-an-object") => Effect::SetUserMetadata("[1, 2, 3]".into()),
            other => {
                return Err(RuleError {
                    code: "config".into(),
                    message: format!("unknown mode {other:?}"),
                });
            }
        };
        Ok(Outcome {
            decision: Decision::Continue,
            effects: vec![effect],
        })
    }
}

export!(BadOutput);
