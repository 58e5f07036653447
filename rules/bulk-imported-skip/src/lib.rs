//! `bulk-imported-skip`: users imported into the directory in bulk never go through
//! lazy migration, and one whose import left the forced-reset marker must reset the
//! password before anything else.
//!
//! How it cooperates with `migrate-on-login`: this rule runs first and is the reset
//! gate (a challenge stops the pipeline). Both rules read the same flag (`bulk_flag`,
//! default `bulkImported`); `migrate-on-login` authenticates a flagged user against
//! the directory only and never calls the legacy stores for it.
//!
//! Config: `bulk_flag` (default `bulkImported`), `reset_flag` (default
//! `forcePasswordReset`).

use rule_model::{ChallengeKind, Decision, Host, LoginContext, Outcome, RuleError, json_flag};

pub fn on_login(ctx: &LoginContext, host: &mut impl Host) -> Result<Outcome, RuleError> {
    let bulk_flag = host
        .config("bulk_flag")
        .unwrap_or_else(|| "bulkImported".into());
    let reset_flag = host
        .config("reset_flag")
        .unwrap_or_else(|| "forcePasswordReset".into());
    let decision = match &ctx.user {
        Some(user) => {
            if json_flag(&user.app_metadata, &bulk_flag)
                && json_flag(&user.app_metadata, &reset_flag)
            {
                Decision::Challenge(ChallengeKind::PasswordReset)
            } else {
                Decision::Continue
            }
        }
        None => Decision::Continue,
    };
    Ok(Outcome {
        decision,
        effects: Vec::new(),
    })
}

rule_model::export_rule!(on_login: crate::on_login);
