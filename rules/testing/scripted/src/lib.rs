//! A rule whose decision comes from its config, and which reports what it saw: the
//! host tests use it to check ordering, pending effects, stop semantics and replay
//! determinism. Config: `decision` = continue | deny | redirect | challenge.

wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "portcullis:rule/rule" });

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use portcullis::rule::types::{ChallengeKind, Claim, Decision, DenyInfo, Effect, RedirectInfo};
use portcullis::rule::{config, log};

struct Scripted;

impl Guest for Scripted {
    fn on_login(ctx: LoginContext) -> Result<Outcome, RuleError> {
        let name = config::get("name").unwrap_or_else(|| "scripted".into());
        log::log(
            log::Level::Info,
            &format!("login for {} ({})", ctx.email, ctx.transaction_id),
        );
        // HashMap's random seed and the clock come from WASI, which the host derives
        // from the login: the same login must give the same numbers.
        let mut seen: HashMap<&str, u64> = HashMap::new();
        seen.insert("pending", ctx.pending.len() as u64);
        let hash_probe = RandomState::new().hash_one("probe");
        let wall_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let report = format!(
            "{{\"pending\":{},\"user\":{},\"time_ms\":{},\"wall_ms\":{},\"new_user_id\":\"{}\",\"hash_probe\":\"{:016x}\"}}",
            seen["pending"],
            ctx.user
                .as_ref()
                .map(|u| format!("\"{}\"", u.id))
                .unwrap_or_else(|| "null".into()),
            ctx.time_ms,
            wall_ms,
            ctx.new_user_id,
            hash_probe,
        );
        let decision = match config::get("decision").as_deref() {
            None | Some("continue") => Decision::Continue,
            Some("deny") => Decision::Deny(DenyInfo {
                code: "scripted_deny".into(),
                message: "denied by script".into(),
                retryable: false,
            }),
            Some("redirect") => Decision::Redirect(RedirectInfo {
                url: "https://verify.example/reset".into(),
                reason: "prove inbox".into(),
                state: "s1".into(),
            }),
            Some("challenge") => Decision::Challenge(ChallengeKind::Mfa),
            Some(other) => {
                return Err(RuleError {
                    code: "config".into(),
                    message: format!("unknown decision {other}"),
                });
            }
        };
        Ok(Outcome {
            decision,
            effects: vec![Effect::AddClaim(Claim {
                name,
                value: report,
            })],
        })
    }
}

export!(Scripted);
