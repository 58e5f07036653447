//! A contract 0.2.0 rule that changes nothing: it logs what it saw and continues.
//! The host tests put it in a pipeline beside the 0.1.0 migration rules, whose
//! recordings must replay unchanged.

wit_bindgen::generate!({ path: "../../../wit/v0.2.0", world: "portcullis:rule/rule" });

use portcullis::rule::log;
use portcullis::rule::types::Decision;

struct Observer;

impl Guest for Observer {
    fn on_login(ctx: LoginContext) -> Result<Outcome, RuleError> {
        log::log(
            log::Level::Debug,
            &format!(
                "0.2.0 rule saw {} with {} pending effects",
                ctx.transaction_id,
                ctx.pending.len()
            ),
        );
        Ok(Outcome {
            decision: Decision::Continue,
            effects: Vec::new(),
        })
    }
}

export!(Observer);
