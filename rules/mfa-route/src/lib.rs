//! `mfa-route`: which SMS provider challenges a user during the provider migration
//! (contract 0.2.0).
//!
//! A factor with only a phone on file goes through the new provider, one with only the
//! old provider's id through the old one. A factor with both (exported by the
//! backfill) goes through the new provider once its cohort is switched over
//! (`new_provider_cohorts`, a JSON list; `"*"` switches every cohort), unless an
//! operator reverted it. The rule only names the factor and the provider: the host
//! sends and checks the code, and nothing this rule can import reaches the old
//! provider's phone export.
//!
//! Config: `new_provider_cohorts` (default `[]`).

use rule_model::v0_2::{
    ChallengeInfo, ChallengeKind, Decision, DenyInfo, Effect, FactorProvider, FactorSummary, Host,
    JsonText, LogLevel, LoginContext, Outcome, Resume, RuleError, json_flag, json_text,
};

fn rule_error(code: &str, message: String) -> RuleError {
    RuleError {
        code: code.into(),
        message,
    }
}

fn outcome(decision: Decision) -> Result<Outcome, RuleError> {
    Ok(Outcome {
        decision,
        effects: Vec::new(),
    })
}

/// The cohorts switched to the new provider.
fn switched_cohorts(host: &mut impl Host) -> Result<Vec<String>, RuleError> {
    match host.config("new_provider_cohorts") {
        None => Ok(Vec::new()),
        // `json_text`, not `serde_json::from_str`: see `rule_model::JsonText`.
        Some(text) => json_text(&text)
            .as_ref()
            .and_then(JsonText::as_strings)
            .map(|names| names.into_iter().map(str::to_owned).collect())
            .ok_or_else(|| {
                rule_error(
                    "bad_config",
                    "new_provider_cohorts must be a JSON list of names".into(),
                )
            }),
    }
}

/// Who sends this factor's code, or `None` when no provider can.
pub fn route(factor: &FactorSummary, switched: &[String]) -> Option<FactorProvider> {
    let cohort_switched = switched
        .iter()
        .any(|c| c == "*" || factor.cohort.as_deref() == Some(c.as_str()));
    match (factor.phone_on_file, factor.legacy_id_on_file) {
        (false, false) => None,
        (true, false) => Some(FactorProvider::Verify),
        (false, true) => Some(FactorProvider::LegacySms),
        (true, true) if factor.reverted || !cohort_switched => Some(FactorProvider::LegacySms),
        (true, true) => Some(FactorProvider::Verify),
    }
}

pub fn on_login(ctx: &LoginContext, host: &mut impl Host) -> Result<Outcome, RuleError> {
    // No directory user yet (a first login creates one): nothing is enrolled.
    let Some(user) = &ctx.user else {
        return outcome(Decision::Continue);
    };
    // A login that recovered its account in this flow has just enrolled a new factor
    // and proven it with a code (`recovery-guard`'s claim, after the host checked it).
    if ctx
        .pending
        .iter()
        .any(|e| matches!(e, Effect::AddClaim(c) if c.name == "recovery"))
    {
        return outcome(Decision::Continue);
    }
    let switched = switched_cohorts(host)?;
    let factors = host.list_factors(&user.id).map_err(|e| {
        rule_error(
            "factors_unavailable",
            format!("cannot list the user's factors: {}", e.message),
        )
    })?;
    // The oldest enrolment first: the factor the user has had longest.
    let Some(factor) = factors.first() else {
        return outcome(Decision::Continue);
    };
    let Some(via) = route(factor, &switched) else {
        host.log(
            LogLevel::Warn,
            &format!("factor {} has neither a phone nor a provider id", factor.id),
        );
        return outcome(Decision::Deny(DenyInfo {
            code: "mfa_unavailable".into(),
            message: "Your second factor cannot be used; please contact support.".into(),
            retryable: false,
        }));
    };
    host.log(
        LogLevel::Info,
        &format!(
            "factor {} via {}",
            factor.id,
            match via {
                FactorProvider::Verify => "verify",
                FactorProvider::LegacySms => "legacy-sms",
            }
        ),
    );
    outcome(Decision::Challenge(ChallengeInfo {
        kind: ChallengeKind::Mfa,
        factor_id: Some(factor.id.clone()),
        via: Some(via),
        state: factor.id.clone(),
    }))
}

/// Called by the host once the user passed the challenge (the host checked the code).
pub fn on_continue(
    _ctx: &LoginContext,
    resume: &Resume,
    _host: &mut impl Host,
) -> Result<Outcome, RuleError> {
    if !json_flag(&resume.outcome_json, "verified") {
        return outcome(Decision::Deny(DenyInfo {
            code: "mfa_failed".into(),
            message: "The code could not be verified.".into(),
            retryable: true,
        }));
    }
    outcome(Decision::Continue)
}

rule_model::export_rule!(contract: "0.2.0", on_login: crate::on_login, on_continue: crate::on_continue);
