//! Faulty on purpose, built like the migration rules (`rule_model::export_rule!`, no
//! WASI): a rule bug that panics. With no stderr, the panic's message reaches the host
//! through the `log` capability before the guest traps.

use rule_model::{Host, LoginContext, Outcome, RuleError};

pub fn on_login(ctx: &LoginContext, _host: &mut impl Host) -> Result<Outcome, RuleError> {
    let user = ctx
        .user
        .as_ref()
        .expect("rule bug: assumed every login has a directory user");
    Err(RuleError {
        code: "unreachable".into(),
        message: user.id.clone(),
    })
}

rule_model::export_rule!(wit: "../../../wit/v0.1.0", on_login: crate::on_login);
