//! `migrate-on-login`: lazy migration. A login whose email has no directory user is
//! checked against the legacy product stores (by the host: the password never enters
//! this sandbox); on a match the rule asks for the user to be created from the legacy
//! account(s) and linked to them.
//!
//! - directory user: authenticated against the directory. If that fails and the user is
//!   neither migrated nor bulk-imported (a directory account someone else may have made
//!   first), the legacy stores are tried and matching accounts are linked; the
//!   `ownership-check` rule then demands proof of the inbox before anything is merged.
//! - bulk-imported user (`bulk_flag`): directory only, never the legacy stores.
//! - a login without a password (the gateway authenticated it: a session, SSO) for a
//!   directory user: nothing to check or migrate. Without a directory user it is
//!   denied: there is no password to migrate with.
//! - wrong password or unknown email: `deny invalid_credentials` (the same answer for
//!   both, so a login cannot probe which emails exist).
//! - a legacy store that does not answer: a rule error, so the rule's `on_error`
//!   decides (fail closed, retryable, by default).
//!
//! Config: `bulk_flag` (default `bulkImported`).

use rule_model::{
    CapabilityErrorKind, Decision, DenyInfo, Effect, Host, LegacyAccount, LegacyLink, LogLevel,
    LoginContext, NewUser, Outcome, RuleError,
};
use serde_json::{Value, json};

fn deny_invalid_credentials() -> Outcome {
    Outcome {
        decision: Decision::Deny(DenyInfo {
            code: "invalid_credentials".into(),
            message: "Wrong email or password.".into(),
            retryable: false,
        }),
        effects: Vec::new(),
    }
}

fn unavailable(what: &str, message: String) -> RuleError {
    RuleError {
        code: "store_unavailable".into(),
        message: format!("{what}: {message}"),
    }
}

/// The legacy accounts holding `email` whose password matches this login's.
fn matching_legacy_accounts(
    email: &str,
    host: &mut impl Host,
) -> Result<Vec<LegacyAccount>, RuleError> {
    let accounts = host
        .find_legacy_accounts(email)
        .map_err(|e| unavailable("legacy.find-accounts", e.message))?;
    let mut matched = Vec::new();
    for account in accounts {
        match host.verify_legacy_password(&account.product, &account.legacy_id) {
            Ok(true) => matched.push(account),
            Ok(false) => {}
            // One corrupt or unknown hash is that account's problem, not the login's.
            Err(e) if e.kind == CapabilityErrorKind::InvalidArgument => host.log(
                LogLevel::Warn,
                &format!(
                    "{} account {} skipped: {}",
                    account.product, account.legacy_id, e.message
                ),
            ),
            Err(e) => return Err(unavailable("legacy.verify-password", e.message)),
        }
    }
    Ok(matched)
}

fn links(accounts: &[LegacyAccount]) -> impl Iterator<Item = Effect> + '_ {
    accounts.iter().map(|a| {
        Effect::LinkLegacyAccount(LegacyLink {
            product: a.product.clone(),
            legacy_id: a.legacy_id.clone(),
        })
    })
}

/// The rule: see the crate documentation.
pub fn on_login(ctx: &LoginContext, host: &mut impl Host) -> Result<Outcome, RuleError> {
    let bulk_flag = host
        .config("bulk_flag")
        .unwrap_or_else(|| "bulkImported".into());
    let continue_with = |effects: Vec<Effect>| {
        Ok(Outcome {
            decision: Decision::Continue,
            effects,
        })
    };

    if let Some(user) = &ctx.user {
        if !ctx.has_password {
            // The gateway authenticated this user already; nothing to migrate.
            return continue_with(Vec::new());
        }
        let verified = host
            .verify_directory_password(&user.id)
            .map_err(|e| unavailable("directory.verify-password", e.message))?;
        if verified {
            return continue_with(Vec::new());
        }
        let metadata: Value = serde_json::from_str(&user.app_metadata).unwrap_or(Value::Null);
        let settled = [bulk_flag.as_str(), "migrated"]
            .iter()
            .any(|flag| metadata.get(flag).and_then(Value::as_bool) == Some(true));
        if settled {
            return Ok(deny_invalid_credentials());
        }
        let matched = matching_legacy_accounts(&ctx.email, host)?;
        if matched.is_empty() {
            return Ok(deny_invalid_credentials());
        }
        host.log(
            LogLevel::Info,
            &format!(
                "directory user {} matched {} legacy account(s)",
                user.id,
                matched.len()
            ),
        );
        return continue_with(links(&matched).collect());
    }

    if !ctx.has_password {
        return Ok(deny_invalid_credentials());
    }
    let matched = matching_legacy_accounts(&ctx.email, host)?;
    let Some(first) = matched.first() else {
        return Ok(deny_invalid_credentials());
    };
    let products: Vec<&str> = matched.iter().map(|a| a.product.as_str()).collect();
    host.log(
        LogLevel::Info,
        &format!("migrating {} from {}", ctx.new_user_id, products.join(", ")),
    );
    let app_metadata = json!({
        "migrated": true,
        "migrated_from": products,
        "migrated_at": ctx.time_ms,
    });
    let create = Effect::CreateUser(NewUser {
        email: ctx.email.clone(),
        email_verified: matched.iter().any(|a| a.email_verified),
        app_metadata: app_metadata.to_string(),
        user_metadata: first.profile.clone(),
        password_from_login: true,
    });
    continue_with(std::iter::once(create).chain(links(&matched)).collect())
}

#[cfg(target_arch = "wasm32")]
mod guest {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "portcullis:rule/rule",
        with: { "portcullis:rule/types@0.1.0": rule_model::portcullis::rule::types },
    });
    rule_model::guest_host!();

    struct Rule;

    impl Guest for Rule {
        fn on_login(ctx: LoginContext) -> Result<Outcome, RuleError> {
            super::on_login(&ctx, &mut GuestHost)
        }
    }

    export!(Rule);
}
