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
    Resume, RuleError, json_flag, json_text, to_json,
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

#[cfg(test)]
mod tests {
    //! The redirect's state is written from a struct and read back with `json_text`:
    //! what an account holder controls (their product ids) must come back as written,
    //! and the state must be the JSON `json!` wrote before (recordings and resume
    //! records in flight hold it).
    use super::{on_continue, on_login};
    use rule_model::{
        CapabilityError, Decision, Effect, Host, LegacyAccount, LegacyLink, LogLevel, LoginContext,
        Request, Resume, User,
    };

    struct Accounts(Vec<(String, String)>);

    impl Host for Accounts {
        fn log(&mut self, _: LogLevel, _: &str) {}
        fn config(&mut self, key: &str) -> Option<String> {
            (key == "verify_url").then(|| "https://verify.example/".into())
        }
        fn verify_directory_password(&mut self, _: &str) -> Result<bool, CapabilityError> {
            Ok(false)
        }
        fn find_legacy_accounts(
            &mut self,
            email: &str,
        ) -> Result<Vec<LegacyAccount>, CapabilityError> {
            Ok(self
                .0
                .iter()
                .map(|(product, legacy_id)| LegacyAccount {
                    product: product.clone(),
                    legacy_id: legacy_id.clone(),
                    email: email.into(),
                    email_verified: true,
                    created_at_ms: 0,
                    profile: "{}".into(),
                })
                .collect())
        }
        fn verify_legacy_password(&mut self, _: &str, _: &str) -> Result<bool, CapabilityError> {
            Ok(true)
        }
    }

    /// A login of a directory user whose email is not verified yet.
    fn unverified_user() -> LoginContext {
        LoginContext {
            transaction_id: "tx".into(),
            time_ms: 7,
            connection: "db".into(),
            client_id: "c".into(),
            email: "a@example.com".into(),
            has_password: true,
            request: Request {
                ip: String::new(),
                user_agent: String::new(),
            },
            user: Some(User {
                id: "usr_1".into(),
                email: Some("a@example.com".into()),
                email_verified: false,
                identities: Vec::new(),
                app_metadata: "{}".into(),
                user_metadata: "{}".into(),
                created_at_ms: 0,
                last_login_ms: None,
                logins_count: 0,
            }),
            new_user_id: "usr_new".into(),
            pending: Vec::new(),
        }
    }

    #[test]
    fn hostile_ids_come_back_as_written_and_the_state_is_what_json_wrote() {
        let hostile = [
            "\"],[\"evil\",\"1",
            "\"]],\"reason\":\"x\",\"accounts\":[[\"",
            "\\\"",
            "\u{0}\u{1f}\u{7f}\u{2028}",
            "😀\u{10ffff}",
        ];
        let accounts: Vec<(String, String)> = hostile
            .iter()
            .flat_map(|p| hostile.iter().map(|id| (p.to_string(), id.to_string())))
            .collect();
        let ctx = unverified_user();
        let outcome = on_login(&ctx, &mut Accounts(accounts.clone())).unwrap();
        let Decision::Redirect(redirect) = outcome.decision else {
            panic!("no redirect: {:?}", outcome.decision)
        };
        let expected = serde_json::json!({
            "reason": redirect.reason,
            "accounts": accounts.iter().map(|(p, id)| [p, id]).collect::<Vec<_>>(),
        });
        assert_eq!(redirect.state, expected.to_string());
        let resume = Resume {
            state: redirect.state,
            outcome_json: r#"{"verified":true}"#.into(),
        };
        let done = on_continue(&ctx, &resume).unwrap();
        let linked: Vec<(String, String)> = done
            .effects
            .iter()
            .filter_map(|e| match e {
                Effect::LinkLegacyAccount(LegacyLink { product, legacy_id }) => {
                    Some((product.clone(), legacy_id.clone()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(linked, accounts);
        assert!(
            done.effects
                .iter()
                .any(|e| matches!(e, Effect::RequirePasswordReset))
        );
        let Effect::SetAppMetadata(patch) = &done.effects[0] else {
            panic!("no metadata patch first")
        };
        assert_eq!(patch, r#"{"migrated":true,"ownership_verified_at":7}"#);
    }

    #[test]
    fn a_state_this_rule_never_writes_is_its_error_not_a_link() {
        let ctx = unverified_user();
        for state in [
            "not json",
            r#"{"accounts":[["a",1]]}"#,
            r#"{"accounts":[["a"]]}"#,
            r#"{"accounts":[{"0":"a","1":"b"}]}"#,
        ] {
            let resume = Resume {
                state: state.into(),
                outcome_json: r#"{"verified":true}"#.into(),
            };
            let error = on_continue(&ctx, &resume).unwrap_err();
            assert_eq!(error.code, "bad_state", "{state}");
        }
    }
}
