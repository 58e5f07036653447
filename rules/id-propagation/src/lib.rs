//! `id-propagation`: once a user is migrated, every product learns the unified user
//! id. One outbox message per linked product account (topic `id-propagation`, key
//! `product:legacy-id`, so a retried delivery is recognised); the host writes them in
//! the same transaction as the user and a dispatcher delivers them later. Nothing here
//! calls a product: login never waits on one.
//!
//! Config: `topic` (default `id-propagation`).

use rule_model::{
    Decision, Effect, Host, LoginContext, OutboxMessage, Outcome, RuleError, to_json,
};
use serde::Serialize;

/// The outbox message's payload. A struct of strings, not `json!`: a
/// `serde_json::Value` brings serde_json's number formatting and its tables into the
/// rule's memory image, which the host copies back into every instance of every login.
#[derive(Serialize)]
struct Payload<'a> {
    user_id: &'a str,
    product: &'a str,
    legacy_id: &'a str,
}

pub fn on_login(ctx: &LoginContext, host: &mut impl Host) -> Result<Outcome, RuleError> {
    let topic = host
        .config("topic")
        .unwrap_or_else(|| "id-propagation".into());
    let creates_user = ctx
        .pending
        .iter()
        .any(|e| matches!(e, Effect::CreateUser(_)));
    let user_id = match (&ctx.user, creates_user) {
        (_, true) => ctx.new_user_id.clone(),
        (Some(user), false) => user.id.clone(),
        (None, false) => {
            return Ok(Outcome {
                decision: Decision::Continue,
                effects: Vec::new(),
            });
        }
    };
    let mut keys: Vec<String> = Vec::new();
    let mut effects = Vec::new();
    for effect in &ctx.pending {
        let Effect::LinkLegacyAccount(link) = effect else {
            continue;
        };
        let key = format!("{}:{}", link.product, link.legacy_id);
        if keys.contains(&key) {
            continue;
        }
        let payload = Payload {
            user_id: &user_id,
            product: &link.product,
            legacy_id: &link.legacy_id,
        };
        effects.push(Effect::EnqueueOutbox(OutboxMessage {
            topic: topic.clone(),
            key: key.clone(),
            payload: to_json(&payload)?,
        }));
        keys.push(key);
    }
    Ok(Outcome {
        decision: Decision::Continue,
        effects,
    })
}

rule_model::export_rule!(on_login: crate::on_login);
