//! Imports the `legacy` capability. A pipeline that does not grant `legacy` to this rule
//! must refuse to load it.

wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "portcullis:rule/rule" });

use portcullis::rule::legacy;
use portcullis::rule::types::Decision;

struct UngrantedImport;

impl Guest for UngrantedImport {
    fn on_login(ctx: LoginContext) -> Result<Outcome, RuleError> {
        let accounts = legacy::find_accounts(&ctx.email).map_err(|e| RuleError {
            code: "legacy".into(),
            message: e.message,
        })?;
        Ok(Outcome {
            decision: if accounts.is_empty() {
                Decision::Continue
            } else {
                Decision::Challenge(portcullis::rule::types::ChallengeKind::PasswordReset)
            },
            effects: vec![],
        })
    }
}

export!(UngrantedImport);
