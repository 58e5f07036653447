//! Prometheus metrics of the sidecar.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::runtime::verdict::{Decision, Verdict};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabel {
    decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabel {
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FaultLabel {
    rule: String,
    kind: String,
}

/// Where the SMS factors of one cohort are in the provider migration.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct MfaLabel {
    pub(crate) cohort: String,
    /// `new_provider`, `exported`, `pending`, `failing`, `reverted`.
    pub(crate) state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

pub struct Metrics {
    registry: Registry,
    evaluations: Counter,
    verdicts: Family<DecisionLabel, Counter>,
    rule_duration: Family<RuleLabel, Histogram>,
    faults: Family<FaultLabel, Counter>,
    reloads: Family<ResultLabel, Counter>,
    pub(crate) outbox_backlog: Gauge,
    pub(crate) mfa_factors: Family<MfaLabel, Gauge>,
    enrolment_sends: Family<ResultLabel, Counter>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("portcullis");
        let evaluations = Counter::default();
        let verdicts = Family::<DecisionLabel, Counter>::default();
        // 10 µs .. ~2.6 s
        let rule_duration = Family::<RuleLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(1e-5, 4.0, 10))
        });
        let faults = Family::<FaultLabel, Counter>::default();
        let reloads = Family::<ResultLabel, Counter>::default();
        let outbox_backlog = Gauge::default();
        let mfa_factors = Family::<MfaLabel, Gauge>::default();
        let enrolment_sends = Family::<ResultLabel, Counter>::default();
        registry.register(
            "enrolment_sends",
            "Enrolment codes by result: sent, rate_limited (a limit refused the send), \
             refused_number (a premium-rate, toll-free or other non-mobile number, or one \
             outside the enrolment regions); alert \
             on a rise of either refusal, which is what SMS pumping looks like",
            enrolment_sends.clone(),
        );
        registry.register(
            "mfa_factors",
            "Active SMS factors by cohort and migration state (`portcullis mfa status`)",
            mfa_factors.clone(),
        );
        registry.register(
            "evaluations",
            "Login evaluations (logins and resumes)",
            evaluations.clone(),
        );
        registry.register("verdicts", "Verdicts by decision", verdicts.clone());
        registry.register(
            "rule_duration_seconds",
            "Time per rule run, sandbox included",
            rule_duration.clone(),
        );
        registry.register(
            "rule_faults",
            "Rule faults by rule and kind",
            faults.clone(),
        );
        registry.register(
            "reloads",
            "Pipeline reloads and rollbacks by result",
            reloads.clone(),
        );
        registry.register(
            "outbox_backlog",
            "Outbox messages not yet delivered or dead-lettered",
            outbox_backlog.clone(),
        );
        Self {
            registry,
            evaluations,
            verdicts,
            rule_duration,
            faults,
            reloads,
            outbox_backlog,
            mfa_factors,
            enrolment_sends,
        }
    }

    /// One enrolment send attempt, by result.
    pub(crate) fn enrolment_send(&self, result: &str) {
        self.enrolment_sends
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    /// The MFA migration's gauges from `portcullis mfa status`'s numbers.
    pub(crate) fn set_mfa(&self, cohorts: &[crate::state::backfill::CohortStatus]) {
        for c in cohorts {
            for (state, n) in [
                ("new_provider", c.new_provider),
                ("exported", c.exported),
                ("pending", c.pending),
                ("failing", c.failing),
                ("reverted", c.reverted),
            ] {
                self.mfa_factors
                    .get_or_create(&MfaLabel {
                        cohort: c.cohort.clone(),
                        state: state.into(),
                    })
                    .set(n as i64);
            }
        }
    }

    pub fn observe(&self, verdict: &Verdict) {
        self.evaluations.inc();
        let decision = match verdict.decision {
            Decision::Allow => "allow",
            Decision::Deny { .. } => "deny",
            Decision::Redirect { .. } => "redirect",
            Decision::Challenge { .. } => "challenge",
            Decision::Recover { .. } => "recover",
        };
        self.verdicts
            .get_or_create(&DecisionLabel {
                decision: decision.into(),
            })
            .inc();
        for trace in &verdict.trace {
            self.rule_duration
                .get_or_create(&RuleLabel {
                    rule: trace.rule.clone(),
                })
                .observe(trace.duration_us as f64 / 1e6);
            if let Some(fault) = &trace.fault {
                let kind = serde_json::to_value(fault.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                self.faults
                    .get_or_create(&FaultLabel {
                        rule: trace.rule.clone(),
                        kind,
                    })
                    .inc();
            }
        }
    }

    pub fn reload(&self, result: &str) {
        self.reloads
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    pub fn encode(&self) -> String {
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
