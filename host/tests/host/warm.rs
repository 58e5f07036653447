//! Instances made ahead of their logins (`Pipeline::prepare`, `engine.warm_instances`):
//! still one fresh instance per rule per login, nothing in it before its login, its
//! deadline counted from its login.

use std::time::Duration;

use portcullis::model::Services;
use portcullis::{EngineSettings, PipelineConfig, RuleResult, Runtime};
use serde_json::Value;

use crate::common::{Result, core_rule_component, load, login, rule, workspace_root};

fn probe(name: &str, extra: &str) -> String {
    format!(
        "[[rule]]\nname = \"{name}\"\ncomponent = \"{}\"\ngrants = [\"log\", \"config\"]\neffects = [\"add_claim\"]\n{extra}\n[rule.config]\nname = \"{name}\"\n",
        core_rule_component("guest-warm-probe").display()
    )
}

/// Each probe's claim of a verdict: (calls its instance had seen, its transaction).
fn claims(verdict: &portcullis::Verdict) -> Vec<(u64, String)> {
    verdict
        .effects
        .iter()
        .filter_map(|e| match e {
            portcullis::Effect::AddClaim { value, .. } => Some(value),
            _ => None,
        })
        .map(|v: &Value| {
            (
                v["calls"].as_u64().unwrap(),
                v["transaction"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn instances_made_ahead_serve_one_login_each_and_hold_nothing_before_it() -> Result {
    let pipeline = load(&[probe("first", ""), probe("second", "")])?;
    assert_eq!(pipeline.warm_instances(), 0, "nothing is made before asked");
    pipeline.prepare();
    assert_eq!(pipeline.warm_instances(), 2, "one per rule (the default)");
    for n in 0..5 {
        let tx = format!("tx-warm-{n}");
        let verdict = pipeline.evaluate(&login(&tx), &Services::none());
        assert_eq!(pipeline.warm_instances(), 0, "the login took both");
        assert_eq!(claims(&verdict), vec![(1, tx.clone()), (1, tx.clone())]);
        pipeline.prepare();
    }
    // Two threads evaluating and preparing at once: an instance is never shared.
    std::thread::scope(|scope| {
        for t in 0..2 {
            let pipeline = &pipeline;
            scope.spawn(move || {
                for n in 0..100 {
                    let tx = format!("tx-warm-{t}-{n}");
                    let verdict = pipeline.evaluate(&login(&tx), &Services::none());
                    assert_eq!(claims(&verdict), vec![(1, tx.clone()), (1, tx)]);
                    pipeline.prepare();
                }
            });
        }
    });
    Ok(())
}

#[test]
fn an_instance_made_ahead_counts_its_deadline_from_its_login() -> Result {
    let pipeline = load(&[probe("quick", "deadline_ms = 20")])?;
    pipeline.prepare();
    assert_eq!(pipeline.warm_instances(), 1);
    // Made long before its login: a deadline counted from then would have passed.
    std::thread::sleep(Duration::from_millis(150));
    let verdict = pipeline.evaluate(&login("tx-late"), &Services::none());
    assert_eq!(
        verdict.trace[0].result,
        RuleResult::Continue,
        "{:?}",
        verdict.trace
    );
    assert_eq!(claims(&verdict), vec![(1, "tx-late".to_owned())]);
    Ok(())
}

#[test]
fn rules_that_import_wasi_are_made_in_their_login() -> Result {
    // A WASI context is made from its login (clock, seed): it cannot exist before.
    let pipeline = load(&[
        rule("wasi", "scripted", "grants = [\"log\", \"config\"]"),
        probe("core", ""),
    ])?;
    pipeline.prepare();
    assert_eq!(pipeline.warm_instances(), 1, "only the rule without WASI");
    let verdict = pipeline.evaluate(&login("tx-mixed"), &Services::none());
    assert!(
        verdict
            .trace
            .iter()
            .all(|t| t.result == RuleResult::Continue)
    );
    Ok(())
}

#[test]
fn instances_made_ahead_may_hold_at_most_half_the_pool() {
    let settings = EngineSettings {
        max_instances: 4,
        warm_instances: 1,
        ..EngineSettings::default()
    };
    let runtime = Runtime::new(&settings).unwrap();
    let rules = [probe("a", ""), probe("b", ""), probe("c", "")].concat();
    let config = PipelineConfig::parse(&rules, &workspace_root()).unwrap();
    let error = runtime
        .load(&config)
        .err()
        .expect("3 made ahead of a pool of 4");
    assert!(
        error.to_string().contains("engine.warm_instances"),
        "{error}"
    );
    let settings = EngineSettings {
        warm_instances: 0,
        ..settings
    };
    let pipeline = Runtime::new(&settings).unwrap().load(&config).unwrap();
    pipeline.prepare();
    assert_eq!(pipeline.warm_instances(), 0, "0 turns it off");
}
