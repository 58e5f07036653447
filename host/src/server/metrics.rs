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
    pub(crate) fn set_mfa(&self, cohorts: &[crate::state::phone_export::CohortStatus]) {
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

    /// The OpenMetrics 1.0 text: counters declared by family name, their samples
    /// `_total`, ending with `# EOF`.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// The body and content type for a scraper's `Accept` header: OpenMetrics when it
    /// asks for it, the Prometheus 0.0.4 text format otherwise (what a scraper that
    /// sends no `Accept`, or `text/plain`, parses).
    pub fn negotiate(&self, accept: Option<&str>) -> (&'static str, String) {
        let text = self.encode();
        if accept.is_some_and(wants_openmetrics) {
            return (OPENMETRICS, text);
        }
        (PROMETHEUS_TEXT, to_prometheus_text(&text))
    }
}

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header prefers OpenMetrics: it names
/// `application/openmetrics-text` with a quality above 0, and no higher quality for
/// `text/plain` (Prometheus sends both, OpenMetrics first and preferred).
fn wants_openmetrics(accept: &str) -> bool {
    let quality = |wanted: &str| -> f32 {
        accept
            .split(',')
            .filter_map(|range| {
                let mut parts = range.split(';').map(str::trim);
                let media = parts.next()?;
                if !media.eq_ignore_ascii_case(wanted) {
                    return None;
                }
                let q = parts
                    .filter_map(|p| p.strip_prefix("q="))
                    .find_map(|q| q.parse::<f32>().ok())
                    .unwrap_or(1.0);
                Some(q)
            })
            .fold(0.0, f32::max)
    };
    let openmetrics = quality("application/openmetrics-text");
    openmetrics > 0.0 && openmetrics >= quality("text/plain")
}

/// OpenMetrics text to the Prometheus 0.0.4 text format: a counter is declared by its
/// sample name (`…_total`), and there is no `# UNIT` and no `# EOF`. Types 0.0.4 does
/// not know are `untyped`.
fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            let tail = match tail {
                "unknown" | "info" | "stateset" | "gaugehistogram" => "untyped",
                // 0.0.4 escapes only `\` and newlines in HELP.
                _ if *prefix == "# HELP " => &tail.replace("\\\"", "\""),
                _ => tail,
            };
            let suffix = if counters.contains(name) {
                "_total"
            } else {
                ""
            };
            Some(format!("{prefix}{name}{suffix} {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_only_when_asked() {
        let metrics = Metrics::new();
        metrics.reload("ok");
        let (kind, body) = metrics.negotiate(Some(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        ));
        assert_eq!(kind, OPENMETRICS);
        assert!(body.ends_with("# EOF\n"));
        assert!(body.contains("# TYPE portcullis_reloads counter\n"));
        assert!(body.contains("portcullis_reloads_total{result=\"ok\"} 1\n"));

        for accept in [None, Some("text/plain"), Some("*/*")] {
            let (kind, body) = metrics.negotiate(accept);
            assert_eq!(kind, PROMETHEUS_TEXT);
            assert!(!body.contains("# EOF"));
            assert!(body.contains("# TYPE portcullis_reloads_total counter\n"));
            assert!(body.contains("# HELP portcullis_reloads_total "));
            assert!(body.contains("# TYPE portcullis_outbox_backlog gauge\n"));
        }
        let (kind, _) =
            metrics.negotiate(Some("application/openmetrics-text;q=0.1, text/plain;q=0.9"));
        assert_eq!(kind, PROMETHEUS_TEXT);
    }
}
