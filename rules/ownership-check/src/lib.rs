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
    Resume, RuleError, json_flag, json_text,
};
use serde::Serialize;

// The redirect's state and the metadata patch are written from structs and the state
// read back with `json_text`, not through `serde_json::Value`: a `Value` brings
// serde_json's number formatting and parsing and their tables into the rule's memory
// image, which the host copies back into the rule's memory at every login
// (BENCHMARKS.md, "Issue 25, third pass").

/// The redirect's state, as `on_login` writes it (`accounts`: product, legacy id).
#[derive(Serialize)]
struct State<'a> {
    reason: &'a str,
    accounts: Vec<[&'a str; 2]>,
}

/// The metadata patch of a proven login.
#[derive(Serialize)]
struct Verified {
    migrated: bool,
    ownership_verified_at: u64,
}

fn to_json(value: &impl Serialize) -> Result<String, RuleError> {
    serde_json::to_string(value).map_err(|e| rule_error("json", e.to_string()))
}

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
    let state = to_json(&State {
        reason,
        accounts: accounts
            .iter()
            .map(|a| [a.product.as_str(), a.legacy_id.as_str()])
            .collect(),
    })?;
    Ok(Outcome {
        decision: Decision::Redirect(RedirectInfo {
            url,
            reason: reason.into(),
            state,
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
    let state = json_text(&resume.state)
        .ok_or_else(|| rule_error("bad_state", "resume state is not JSON".into()))?;
    let already_linked: Vec<(String, String)> = ctx
        .pending
        .iter()
        .filter_map(|e| match e {
            Effect::LinkLegacyAccount(l) => Some((l.product.clone(), l.legacy_id.clone())),
            _ => None,
        })
        .collect();
    let mut effects = vec![Effect::SetAppMetadata(to_json(&Verified {
        migrated: true,
        ownership_verified_at: ctx.time_ms,
    })?)];
    let accounts = state.get("accounts").and_then(|a| a.as_list());
    for account in accounts.into_iter().flatten() {
        let Some(&[product, legacy_id, ..]) = account.as_strings().as_deref() else {
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
    if state.get("reason").and_then(|r| r.as_str()) == Some("unverified_directory_account") {
        // The directory password may be someone else's: the owner sets a new one.
        effects.push(Effect::RequirePasswordReset);
    }
    Ok(Outcome {
        decision: Decision::Continue,
        effects,
    })
}

rule_model::export_rule!(on_login: crate::on_login, on_continue: crate::on_continue);
