//! Built like the migration rules (`rule_model::export_rule!`, no WASI), so the host
//! may make its instances ahead of their logins: it reports how many logins the
//! instance it runs in has seen (a static counter) and which login this is, so a test
//! can tell that every login got an instance of its own, never called before.

use std::sync::atomic::{AtomicU32, Ordering};

use rule_model::{Claim, Decision, Effect, Host, LoginContext, Outcome, RuleError};

static CALLS: AtomicU32 = AtomicU32::new(0);

pub fn on_login(ctx: &LoginContext, host: &mut impl Host) -> Result<Outcome, RuleError> {
    let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
    let name = host.config("name").unwrap_or_else(|| "probe".into());
    Ok(Outcome {
        decision: Decision::Continue,
        effects: vec![Effect::AddClaim(Claim {
            name,
            value: format!(
                "{{\"calls\":{calls},\"transaction\":\"{}\",\"pending\":{}}}",
                ctx.transaction_id,
                ctx.pending.len()
            ),
        })],
    })
}

rule_model::export_rule!(wit: "../../../wit/v0.1.0", on_login: crate::on_login);
