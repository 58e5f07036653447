//! Hostile on purpose: a rule that tries what an attacker who ships a rule would try.
//! `mode` in the rule's config picks the attempt:
//!
//! - effects the host must refuse: `create-other` (create-user for another email),
//!   `create-self` (create-user for the login's own email), `link-unverified` (link a
//!   product account nobody verified), `outbox-foreign` (an outbox key for another
//!   user's account), `protected` (clear the bulk-import flag);
//! - output the host must bound: `chatty` (100 KiB on stdout, then carry on),
//!   `huge-error` (a 10 MB rule-error), `huge-log` (one log line of `log_mb`
//!   megabytes, default 8), `huge-string` (the same line built and kept, not logged:
//!   what the guest's side of `huge-log` costs);
//! - `shadow-recursion`: recursion whose frames live in linear memory (Rust's shadow
//!   stack), which runs off the bottom of memory rather than the engine's stack;
//! - `lookup-loop`: capability calls without end (each refused once the deadline is
//!   past);
//! - what the host must check itself, whatever a rule says: `enrol-early` (answer a
//!   recovery with `enrol`, whether or not the wait is over), `link-found` (look up
//!   the legacy accounts of config `email`, the login's own by default, and link the
//!   first: after an inbox proof only those under the login's email may be linked),
//!   `create-twice` (create-user for the login's email, twice in one outcome).
//!
//! Contract 0.2.0 (for `recover`); the modes of 0.1.0 are unchanged by it.

wit_bindgen::generate!({ path: "../../../wit/v0.2.0", world: "portcullis:rule/rule" });

use portcullis::rule::types::{
    Decision, Effect, LegacyLink, NewUser, OutboxMessage, RecoveryInfo, RecoveryStep,
};
use portcullis::rule::{config, legacy, log};

struct Hostile;

fn effect(effect: Effect) -> Result<Outcome, RuleError> {
    Ok(Outcome {
        decision: Decision::Continue,
        effects: vec![effect],
    })
}

fn new_user(email: String) -> Effect {
    Effect::CreateUser(NewUser {
        email,
        email_verified: true,
        app_metadata: "{}".into(),
        user_metadata: "{}".into(),
        password_from_login: true,
    })
}

fn carry_on() -> Result<Outcome, RuleError> {
    Ok(Outcome {
        decision: Decision::Continue,
        effects: Vec::new(),
    })
}

#[inline(never)]
fn descend(depth: u64, buffer: &mut [u8; 512]) -> u64 {
    // A frame the optimiser must keep in linear memory: its address escapes.
    let mut frame = [depth as u8; 512];
    std::hint::black_box(&mut frame);
    buffer[depth as usize % 512] ^= frame[(depth as usize * 7) % 512];
    if depth == u64::MAX {
        return depth;
    }
    descend(depth + 1, &mut frame).wrapping_add(buffer[0] as u64)
}

impl Guest for Hostile {
    fn on_login(ctx: LoginContext) -> Result<Outcome, RuleError> {
        match config::get("mode").as_deref() {
            Some("create-other") | Some("create-self") => {
                let email = if config::get("mode").as_deref() == Some("create-self") {
                    ctx.email.clone()
                } else {
                    "victim@example.com".into()
                };
                effect(new_user(email))
            }
            Some("create-twice") => Ok(Outcome {
                decision: Decision::Continue,
                effects: vec![new_user(ctx.email.clone()), new_user(ctx.email.clone())],
            }),
            Some("enrol-early") => Ok(Outcome {
                decision: Decision::Recover(RecoveryInfo {
                    step: RecoveryStep::Enrol,
                    state: String::new(),
                }),
                effects: Vec::new(),
            }),
            Some("link-found") => {
                let email = config::get("email").unwrap_or_else(|| ctx.email.clone());
                let accounts = legacy::find_accounts(&email).map_err(|e| RuleError {
                    code: "lookup".into(),
                    message: e.message,
                })?;
                match accounts.first() {
                    Some(account) => effect(Effect::LinkLegacyAccount(LegacyLink {
                        product: account.product.clone(),
                        legacy_id: account.legacy_id.clone(),
                    })),
                    None => Err(RuleError {
                        code: "lookup".into(),
                        message: "no legacy account under that email".into(),
                    }),
                }
            }
            Some("link-unverified") => effect(Effect::LinkLegacyAccount(LegacyLink {
                product: "paste".into(),
                legacy_id: config::get("legacy_id").unwrap_or_else(|| "P100001".into()),
            })),
            Some("outbox-foreign") => effect(Effect::EnqueueOutbox(OutboxMessage {
                topic: "id-propagation".into(),
                key: "paste:P999999".into(),
                payload: "{\"user_id\":\"usr_attacker\"}".into(),
            })),
            Some("protected") => effect(Effect::SetAppMetadata("{\"bulkImported\": false}".into())),
            Some("chatty") => {
                let line = "x".repeat(1023);
                for _ in 0..100 {
                    println!("{line}");
                }
                carry_on()
            }
            Some("huge-error") => Err(RuleError {
                code: "huge".into(),
                message: "e".repeat(10 * 1000 * 1000),
            }),
            Some(mode @ ("huge-log" | "huge-string")) => {
                let megabytes = config::get("log_mb")
                    .and_then(|n| n.parse::<usize>().ok())
                    .unwrap_or(8);
                // Built in place: the guest's own copies would double its memory.
                let mut line = String::with_capacity(megabytes * 1000 * 1000 + ctx.email.len());
                line.extend(std::iter::repeat_n('a', megabytes * 1000 * 1000));
                line.push_str(&ctx.email);
                if mode == "huge-log" {
                    log::log(log::Level::Info, &line);
                }
                std::hint::black_box(&line);
                carry_on()
            }
            Some("shadow-recursion") => {
                let mut buffer = [0u8; 512];
                let depth = descend(ctx.time_ms & 1, &mut buffer);
                Err(RuleError {
                    code: "unreachable".into(),
                    message: depth.to_string(),
                })
            }
            Some("lookup-loop") => {
                let mut calls = 0u64;
                loop {
                    let _ = legacy::find_accounts(&ctx.email);
                    calls += 1;
                    if calls == u64::MAX {
                        return carry_on();
                    }
                }
            }
            other => Err(RuleError {
                code: "config".into(),
                message: format!("unknown mode {other:?}"),
            }),
        }
    }
}

export!(Hostile);
