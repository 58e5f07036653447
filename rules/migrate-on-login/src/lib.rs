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
    LoginContext, NewUser, Outcome, RuleError, json_flag, to_json,
};
use serde::Serialize;

/// The new user's app metadata. A struct, not `json!`: a `serde_json::Value` brings
/// serde_json's number formatting and its tables into the rule's memory image, which
/// the host copies back into the rule's memory at every login.
#[derive(Serialize)]
struct Migrated<'a> {
    migrated: bool,
    migrated_from: &'a [&'a str],
    migrated_at: u64,
}

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
        let settled = [bulk_flag.as_str(), "migrated"]
            .iter()
            .any(|flag| json_flag(&user.app_metadata, flag));
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
    let app_metadata = to_json(&Migrated {
        migrated: true,
        migrated_from: &products,
        migrated_at: ctx.time_ms,
    })?;
    let create = Effect::CreateUser(NewUser {
        email: ctx.email.clone(),
        email_verified: matched.iter().any(|a| a.email_verified),
        app_metadata,
        user_metadata: first.profile.clone(),
        password_from_login: true,
    });
    continue_with(std::iter::once(create).chain(links(&matched)).collect())
}

rule_model::export_rule!(on_login: crate::on_login);

#[cfg(test)]
mod tests {
    use rule_model::{CapabilityError, CapabilityErrorKind, Request, User};

    use super::*;

    /// Answers like a directory and two legacy products would.
    #[derive(Default)]
    struct FakeHost {
        directory_password_ok: bool,
        /// (product, legacy id, password matches; None = unreadable hash)
        accounts: Vec<(&'static str, &'static str, Option<bool>)>,
        legacy_down: bool,
        legacy_calls: usize,
    }

    impl Host for FakeHost {
        fn log(&mut self, _: LogLevel, _: &str) {}
        fn config(&mut self, _: &str) -> Option<String> {
            None
        }
        fn verify_directory_password(&mut self, _: &str) -> Result<bool, CapabilityError> {
            Ok(self.directory_password_ok)
        }
        fn find_legacy_accounts(
            &mut self,
            email: &str,
        ) -> Result<Vec<LegacyAccount>, CapabilityError> {
            self.legacy_calls += 1;
            if self.legacy_down {
                return Err(CapabilityError {
                    kind: CapabilityErrorKind::Unavailable,
                    message: "down".into(),
                });
            }
            Ok(self
                .accounts
                .iter()
                .map(|(product, id, _)| LegacyAccount {
                    product: product.to_string(),
                    legacy_id: id.to_string(),
                    email: email.into(),
                    email_verified: true,
                    created_at_ms: 0,
                    profile: "{\"name\":\"Ada\"}".into(),
                })
                .collect())
        }
        fn verify_legacy_password(
            &mut self,
            product: &str,
            id: &str,
        ) -> Result<bool, CapabilityError> {
            self.legacy_calls += 1;
            let (_, _, matches) = self
                .accounts
                .iter()
                .find(|(p, i, _)| *p == product && *i == id)
                .unwrap();
            matches.ok_or(CapabilityError {
                kind: CapabilityErrorKind::InvalidArgument,
                message: "corrupt hash".into(),
            })
        }
    }

    fn context(user: Option<&str>) -> LoginContext {
        LoginContext {
            transaction_id: "tx".into(),
            time_ms: 7,
            connection: "db".into(),
            client_id: "paste-web".into(),
            email: "ada@example.com".into(),
            has_password: true,
            request: Request {
                ip: String::new(),
                user_agent: String::new(),
            },
            user: user.map(|metadata| User {
                id: "usr_1".into(),
                email: Some("ada@example.com".into()),
                email_verified: true,
                identities: Vec::new(),
                app_metadata: metadata.into(),
                user_metadata: "{}".into(),
                created_at_ms: 0,
                last_login_ms: None,
                logins_count: 0,
            }),
            new_user_id: "usr_new".into(),
            pending: Vec::new(),
        }
    }

    fn denied(outcome: &Outcome) -> bool {
        matches!(&outcome.decision, Decision::Deny(d) if d.code == "invalid_credentials")
    }

    #[test]
    fn a_matching_legacy_password_creates_and_links_the_user() {
        let mut host = FakeHost {
            accounts: vec![("paste", "P1", Some(true)), ("collect", "C1", Some(false))],
            ..Default::default()
        };
        let outcome = on_login(&context(None), &mut host).unwrap();
        assert!(matches!(outcome.decision, Decision::Continue));
        assert!(
            matches!(&outcome.effects[0], Effect::CreateUser(u) if u.app_metadata.contains("\"migrated_from\":[\"paste\"]"))
        );
        assert!(
            matches!(&outcome.effects[1], Effect::LinkLegacyAccount(l) if l.product == "paste" && l.legacy_id == "P1")
        );
        assert_eq!(
            outcome.effects.len(),
            2,
            "no link to the account whose password did not match"
        );
    }

    #[test]
    fn wrong_password_and_unknown_email_get_the_same_denial() {
        let mut wrong = FakeHost {
            accounts: vec![("paste", "P1", Some(false))],
            ..Default::default()
        };
        let mut unknown = FakeHost::default();
        assert!(denied(&on_login(&context(None), &mut wrong).unwrap()));
        assert!(denied(&on_login(&context(None), &mut unknown).unwrap()));
    }

    #[test]
    fn an_unreadable_hash_skips_that_account_only() {
        let mut host = FakeHost {
            accounts: vec![("paste", "P1", None), ("transfer", "T1", Some(true))],
            ..Default::default()
        };
        let outcome = on_login(&context(None), &mut host).unwrap();
        assert!(
            matches!(&outcome.effects[1], Effect::LinkLegacyAccount(l) if l.product == "transfer")
        );
    }

    #[test]
    fn a_legacy_store_that_is_down_is_a_rule_error() {
        let mut host = FakeHost {
            legacy_down: true,
            ..Default::default()
        };
        assert_eq!(
            on_login(&context(None), &mut host).unwrap_err().code,
            "store_unavailable"
        );
    }

    #[test]
    fn bulk_imported_and_migrated_users_never_reach_the_legacy_stores() {
        for metadata in ["{\"bulkImported\":true}", "{\"migrated\":true}"] {
            let mut host = FakeHost {
                accounts: vec![("paste", "P1", Some(true))],
                ..Default::default()
            };
            let outcome = on_login(&context(Some(metadata)), &mut host).unwrap();
            assert!(denied(&outcome), "wrong directory password: {metadata}");
            assert_eq!(host.legacy_calls, 0, "{metadata}");
        }
        let mut host = FakeHost {
            directory_password_ok: true,
            ..Default::default()
        };
        assert!(matches!(
            on_login(&context(Some("{\"migrated\":true}")), &mut host)
                .unwrap()
                .decision,
            Decision::Continue
        ));
    }
}
