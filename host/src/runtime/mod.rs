//! Running rules: the engine and its compile cache, the per-login sandbox, the
//! contract's bindings and the host capabilities behind them, the checks on what a
//! rule returns, and the pipeline that runs rules in order into a verdict.

pub(crate) mod bindings;
pub mod cache;
pub(crate) mod capabilities;
pub(crate) mod contract;
pub(crate) mod data_image;
pub mod engine;
pub mod grants;
pub(crate) mod guest_stdio;
pub mod invariants;
pub(crate) mod lift;
pub(crate) mod outcome_checks;
pub mod pipeline;
pub(crate) mod sandbox;
pub mod verdict;
