//! Support agents: one alone cannot remove a factor or approve their own request.

use portcullis::model::FactorStatus;

use portcullis::flows::clock::Clock;

use crate::common::{Exposure, Result};

use super::{ALICE, BOB, Console, Env, HOUR_MS};

#[test]
fn one_agent_alone_cannot_remove_a_factor_nor_approve_their_own_request() -> Result {
    let env = Env::new(|t| t);
    let console = Console::start(&env);
    let (login, factor) = env.owner(0);
    let user = env.user_id(&login);
    let factor_status = || {
        env.gateway
            .state()
            .factors_of(&user)
            .unwrap()
            .into_iter()
            .find(|f| f.id == factor.id)
            .unwrap()
            .status
    };

    // A lookup shows masked data only, and is itself audited.
    let (code, found) = console.support(ALICE, &["lookup", &login.email]);
    assert_eq!(code, 0, "{found}");
    assert_eq!(found["user_id"], user.as_str());
    assert_ne!(found["email"], login.email.as_str());
    assert!(found["email"].as_str().unwrap().contains("***@"));
    assert_eq!(found["factors"][0]["id"], factor.id.as_str());
    Exposure::new()
        .text("the support lookup", found.to_string())
        .assert_no_phone(&env.phone_of(&factor));
    let (code, _) = console.support(
        "not-an-agent-token-0123456789abcdef",
        &["lookup", &login.email],
    );
    assert_eq!(code, 1);

    let request = |token: &str, evidence: &str, skip: Option<&str>| {
        let mut args = vec![
            "request",
            "remove-factor",
            "--user",
            &user,
            "--factor",
            &factor.id,
            "--evidence",
            evidence,
            "--reason",
            "lost phone, verified by video call",
        ];
        if let Some(skip) = skip {
            args.extend(["--skip-wait-reason", skip]);
        }
        console.support(token, &args)
    };
    // Evidence is required.
    let (code, refused) = request(ALICE, " ", None);
    assert_eq!(code, 1, "{refused}");
    assert!(refused.to_string().contains("evidence"));

    // The user's only factor never goes: the account would open to whoever has the
    // password. The answer points to complete-recovery.
    let (code, refused) = request(ALICE, "IDV-2026-1130-76", None);
    assert_eq!(code, 1, "{refused}");
    assert!(
        refused.to_string().contains("only active factor")
            && refused.to_string().contains("complete-recovery"),
        "{refused}"
    );
    assert_eq!(factor_status(), FactorStatus::Active);
    // With a second factor on file (the old provider's), the lost one may go.
    let mut spare = factor.clone();
    spare.id = format!("{}_spare", factor.id);
    spare.phone = None;
    spare.provider = portcullis::model::FactorProvider::LegacySms;
    spare.legacy_provider_user_id = Some("spare-legacy-id".into());
    env.gateway.state().put_factor(&spare)?;

    let (code, asked) = request(
        ALICE,
        "IDV-2026-1130-77",
        Some("identity verified in person"),
    );
    assert_eq!(code, 0, "{asked}");
    assert_eq!(asked["status"], "awaiting-approval");
    let id = asked["id"].as_str().unwrap().to_owned();
    // Alone, alice can neither carry it out nor approve it.
    let (code, refused) = console.support(ALICE, &["execute", &id]);
    assert_eq!(code, 1, "{refused}");
    assert!(refused.to_string().contains("second agent"), "{refused}");
    let (code, refused) =
        console.support(ALICE, &["approve", &id, "--evidence", "IDV-2026-1130-77"]);
    assert_eq!(code, 1, "{refused}");
    assert!(refused.to_string().contains("cannot approve"), "{refused}");
    assert_eq!(factor_status(), FactorStatus::Active);

    // Bob approves without a reason to skip: the waiting period runs.
    let (code, approved) = console.support(
        BOB,
        &["approve", &id, "--evidence", "IDV-2026-1130-77 checked"],
    );
    assert_eq!(code, 0, "{approved}");
    assert!(
        approved["ready_at_ms"].as_u64().unwrap()
            > portcullis::flows::clock::SystemClock.now_ms() + 71 * HOUR_MS
    );
    let (code, refused) = console.support(BOB, &["execute", &id]);
    assert_eq!(code, 1, "{refused}");
    // When it ends, as a person reads a time (RFC 3339, UTC).
    let ready = portcullis::error::utc_time(approved["ready_at_ms"].as_u64().unwrap());
    assert!(ready.ends_with('Z') && ready.contains('T'), "{ready}");
    assert!(
        refused
            .to_string()
            .contains(&format!("the waiting period runs until {ready}")),
        "{refused}"
    );
    assert_eq!(factor_status(), FactorStatus::Active);
    let (code, _) = console.support(
        ALICE,
        &["cancel", &id, "--reason", "redo with both skip reasons"],
    );
    assert_eq!(code, 0);

    // Both agents give a reason to skip the wait: carried out at once.
    let (_, asked) = request(
        ALICE,
        "IDV-2026-1130-78",
        Some("identity verified in person"),
    );
    let id = asked["id"].as_str().unwrap().to_owned();
    let (code, _) = console.support(
        BOB,
        &[
            "approve",
            &id,
            "--evidence",
            "IDV-2026-1130-78 checked",
            "--skip-wait-reason",
            "user on site with ID",
        ],
    );
    assert_eq!(code, 0);
    // The spare went meanwhile: carrying it out now would leave no factor, so the
    // execution checks again and refuses.
    spare.status = FactorStatus::Disabled;
    env.gateway.state().put_factor(&spare)?;
    let (code, refused) = console.support(BOB, &["execute", &id]);
    assert_eq!(code, 1, "{refused}");
    assert!(
        refused.to_string().contains("only active factor"),
        "{refused}"
    );
    assert_eq!(factor_status(), FactorStatus::Active);
    spare.status = FactorStatus::Active;
    env.gateway.state().put_factor(&spare)?;
    let (code, done) = console.support(BOB, &["execute", &id]);
    assert_eq!(code, 0, "{done}");
    assert_eq!(done["status"], "done");
    assert_eq!(factor_status(), FactorStatus::Disabled);

    // The user was told at each step; every action, refusals included, is audited
    // with its agent, and the chain holds.
    let events: Vec<String> = env
        .notices()
        .iter()
        .map(|n| n["event"].as_str().unwrap().to_owned())
        .collect();
    for event in [
        "support-action-requested",
        "support-action-approved",
        "support-action-done",
    ] {
        assert!(events.iter().any(|e| e == event), "{event}: {events:?}");
    }
    let trail = portcullis::state::audit::rows_about(env.gateway.state().sql(), &user)?;
    let seen = |actor: &str, action: &str, outcome: &str| {
        trail.iter().any(|r| {
            r.entry.actor == actor && r.entry.action == action && r.entry.outcome == outcome
        })
    };
    assert!(seen("agent:alice", "support-lookup", "ok"));
    assert!(seen("agent:alice", "support-approve", "refused"));
    assert!(seen("agent:alice", "support-execute", "refused"));
    assert!(seen("agent:bob", "support-approve", "ok"));
    assert!(seen("agent:bob", "support-execute", "ok"));
    assert!(portcullis::state::audit::verify(env.gateway.state().sql())?.ok);
    Ok(())
}
