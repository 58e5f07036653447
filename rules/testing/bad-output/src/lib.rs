//! Faulty on purpose: returns garbage. `mode` in the rule's config picks which:
//! `huge` (a 10 MB claim), `invalid-json` (metadata that is not JSON),
//! `not-an-object` (a metadata patch that is JSON but not an object), `claim-mb` (one
//! claim of `mb` megabytes) or `many-effects` (`count` small claims).

wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "portcullis:rule/rule" });

use portcullis::rule::config;
use portcullis::rule::types::{Claim, Decision, Effect};

struct BadOutput;

impl Guest for BadOutput {
    fn on_login(_ctx: LoginContext) -> Result<Outcome, RuleError> {
        let number = |key: &str| config::get(key).and_then(|n| n.parse::<usize>().ok());
        let effect = match config::get("mode").as_deref() {
            Some("claim-mb") => {
                // Built in place: the guest's own copies would double its memory.
                let bytes = number("mb").unwrap_or(200) * 1000 * 1000;
                let mut value = String::with_capacity(bytes + 2);
                value.push('"');
                value.extend(std::iter::repeat_n('x', bytes));
                value.push('"');
                Effect::AddClaim(Claim {
                    name: "blob".into(),
                    value,
                })
            }
            Some("many-effects") => {
                let count = number("count").unwrap_or(2_500_000);
                let effects = (0..count)
                    .map(|_| {
                        Effect::AddClaim(Claim {
                            name: String::new(),
                            value: String::new(),
                        })
                    })
                    .collect();
                return Ok(Outcome {
                    decision: Decision::Continue,
                    effects,
                });
            }
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
