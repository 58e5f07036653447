//! `ownership-check`: no merge until the inbox is proven. When the login's email has
//! accounts in more than one product, or a directory user with an unverified email
//! exists while a legacy account holds that email (a squatter, or its victim), the
//! user is redirected to a forced password reset that proves the inbox. The host
//! holds every pending effect until `on-continue` says the proof succeeded.
//!
//! On proof: `app_metadata.migrated = true`, every product account linked, and for a
//! directory account someone else may have created, a password reset.
//!
//! Config: `verify_url` (required), `bulk_flag` (default `bulkImported`).

use rule_model::{
    Decision, DenyInfo, Effect, Host, LegacyLink, LogLevel, LoginContext, Outcome, RedirectInfo,
    Resume, RuleError, json_flag,
};
use serde_json::{Value, json};

fn rule_error(code: &str, message: String) -> RuleError {
    RuleError {
        code: code.into(),
        message,
    }
}

pub fn on_login(ctx: &LoginContext, host: &mut impl Host) -> Result<Outcome, RuleError> {
    let bulk_flag = host
        .config("bulk_flag")
        .unwrap_or_else(|| "bulkImported".into());
    let proceed = Ok(Outcome {
        decision: Decision::Continue,
        effects: Vec::new(),
    });
    // Settled accounts need no legacy lookups at all.
    if let Some(user) = &ctx.user
        && (json_flag(&user.app_metadata, "migrated") || json_flag(&user.app_metadata, &bulk_flag))
    {
        return proceed;
    }
    let accounts = host.find_legacy_accounts(&ctx.email).map_err(|e| {
        rule_error(
            "store_unavailable",
            format!("legacy.find-accounts: {}", e.message),
        )
    })?;
    let mut products: Vec<&str> = accounts.iter().map(|a| a.product.as_str()).collect();
    products.sort_unstable();
    products.dedup();
    let squatter = !accounts.is_empty() && ctx.user.as_ref().is_some_and(|u| !u.email_verified);
    let reason = if squatter {
        "unverified_directory_account"
    } else if products.len() > 1 {
        "several_products"
    } else {
        return proceed;
    };
    let url = host
        .config("verify_url")
        .ok_or_else(|| rule_error("config", "verify_url is not configured".into()))?;
    host.log(
        LogLevel::Info,
        &format!("inbox proof required: {reason} ({})", products.join(", ")),
    );
    let state = json!({
        "reason": reason,
        "accounts": accounts.iter().map(|a| [&a.product, &a.legacy_id]).collect::<Vec<_>>(),
    });
    Ok(Outcome {
        decision: Decision::Redirect(RedirectInfo {
            url,
            reason: reason.into(),
            state: state.to_string(),
        }),
        effects: Vec::new(),
    })
}

pub fn on_continue(ctx: &LoginContext, resume: &Resume) -> Result<Outcome, RuleError> {
    // The redirect target's report: only a top-level `"verified": true` proves the inbox.
    if !json_flag(&resume.outcome_json, "verified") {
        return Ok(Outcome {
            decision: Decision::Deny(DenyInfo {
                code: "ownership_not_proven".into(),
                message: "The email address could not be verified.".into(),
                retryable: false,
            }),
            effects: Vec::new(),
        });
    }
    let state: Value = serde_json::from_str(&resume.state)
        .map_err(|e| rule_error("bad_state", format!("resume state is not JSON: {e}")))?;
    let already_linked: Vec<(String, String)> = ctx
        .pending
        .iter()
        .filter_map(|e| match e {
            Effect::LinkLegacyAccount(l) => Some((l.product.clone(), l.legacy_id.clone())),
            _ => None,
        })
        .collect();
    let mut effects = vec![Effect::SetAppMetadata(
        json!({"migrated": true, "ownership_verified_at": ctx.time_ms}).to_string(),
    )];
    for account in state["accounts"].as_array().into_iter().flatten() {
        let (Some(product), Some(legacy_id)) = (account[0].as_str(), account[1].as_str()) else {
            return Err(rule_error(
                "bad_state",
                "resume state accounts are malformed".into(),
            ));
        };
        if !already_linked
            .iter()
            .any(|(p, id)| p == product && id == legacy_id)
        {
            effects.push(Effect::LinkLegacyAccount(LegacyLink {
                product: product.into(),
                legacy_id: legacy_id.into(),
            }));
        }
    }
    if state["reason"] == "unverified_directory_account" {
        // The directory password may be someone else's: the owner sets a new one.
        effects.push(Effect::RequirePasswordReset);
    }
    Ok(Outcome {
        decision: Decision::Continue,
        effects,
    })
}

rule_model::export_rule!(on_login: crate::on_login, on_continue: crate::on_continue);
