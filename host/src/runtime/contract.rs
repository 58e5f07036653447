//! The `portcullis:rule` versions the host links, and calling a rule's exports in the
//! host's types (the newest version's). Every record 0.2.0 shares with 0.1.0 has the
//! same shape, and the component model checks types by shape: a 0.1.0 rule takes the
//! 0.2.0 `login-context` as it is (no copy per login), and only its outcome, whose
//! challenge named a kind alone, has a type of its own here.

use wasmtime::component::{ComponentType, Lift};

use crate::runtime::bindings::wit;

/// The versions this host links, oldest first.
pub(crate) const VERSIONS: [&str; 2] = ["0.1.0", "0.2.0"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Contract {
    V0_1,
    V0_2,
}

impl Contract {
    pub(crate) fn of_version(version: &str) -> Option<Self> {
        match version {
            "0.1.0" => Some(Self::V0_1),
            "0.2.0" => Some(Self::V0_2),
            _ => None,
        }
    }
}

/// `portcullis:rule@0.1.0`'s `outcome`.
#[derive(ComponentType, Lift)]
#[component(record)]
pub(crate) struct OutcomeV0_1 {
    decision: DecisionV0_1,
    effects: Vec<wit::Effect>,
}

/// `portcullis:rule@0.1.0`'s `decision`.
#[derive(ComponentType, Lift)]
#[component(variant)]
pub(crate) enum DecisionV0_1 {
    #[component(name = "continue")]
    Continue,
    #[component(name = "deny")]
    Deny(wit::DenyInfo),
    #[component(name = "redirect")]
    Redirect(wit::RedirectInfo),
    #[component(name = "challenge")]
    Challenge(wit::ChallengeKind),
}

impl From<OutcomeV0_1> for wit::Outcome {
    fn from(outcome: OutcomeV0_1) -> Self {
        wit::Outcome {
            decision: match outcome.decision {
                DecisionV0_1::Continue => wit::Decision::Continue,
                DecisionV0_1::Deny(info) => wit::Decision::Deny(info),
                DecisionV0_1::Redirect(info) => wit::Decision::Redirect(info),
                // A 0.1.0 challenge names no factor: the gateway performs it, as before.
                DecisionV0_1::Challenge(kind) => wit::Decision::Challenge(wit::ChallengeInfo {
                    kind,
                    factor_id: None,
                    via: None,
                    state: String::new(),
                }),
            },
            effects: outcome.effects,
        }
    }
}
