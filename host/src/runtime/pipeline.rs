//! A loaded pipeline and its evaluation: each rule in order, each in a fresh store
//! and instance, every fault contained and turned into the rule's failure policy.

use crate::model::{AccountEvidence, Effect, LoginAttempt, Services};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use wasmtime::component::{ComponentExportIndex, TypedFunc};
use wasmtime::{Engine, Store, Trap};

use crate::config::{OnError, RuleSettings};
use crate::runtime::bindings::wit;
use crate::runtime::cache::CompileSource;
use crate::runtime::contract::{Contract, OutcomeV0_1};
use crate::runtime::grants::Import;
use crate::runtime::invariants::{self};
use crate::runtime::outcome_checks::{self, RuleOutcome, effect_to_wit};
use crate::runtime::sandbox::{LoginSeed, RuleState};
use crate::runtime::verdict::{Decision, Fault, FaultKind, RuleResult, RuleTrace, Verdict};

/// Where a redirected login resumes: the redirecting rule, its state and what the
/// redirect target reported.
#[derive(Debug, Clone)]
pub struct ResumePoint {
    pub rule: String,
    pub rule_index: usize,
    pub state: String,
    /// JSON from the party that handled the redirect.
    pub result: String,
}

/// The pipeline changed since the redirect: the token cannot resume in it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ResumeMismatch(pub String);

/// A rule ready to run: its settings and a pre-linked instance template.
pub struct LoadedRule {
    pub settings: Arc<RuleSettings>,
    pub imports: Vec<Import>,
    /// Exports `on-continue` (the `resumable-rule` world).
    pub resumable: bool,
    pub(crate) login_export: ComponentExportIndex,
    pub(crate) continue_export: Option<ComponentExportIndex>,
    /// Whether this load compiled the component or took it from the cache.
    pub source: CompileSource,
    /// The bytes of its core modules' data segments, copied back into its memory at
    /// every login (`None`: not measured).
    pub data_image_bytes: Option<u64>,
    pub(crate) deadline_ticks: u64,
    /// What one lift out of its guest may copy into the host (`outcome_checks::lift_budget`).
    pub(crate) lift_budget: usize,
    /// The contract version its exports were type-checked against at load.
    pub(crate) contract: Contract,
    pub(crate) pre: wasmtime::component::InstancePre<RuleState>,
    /// Imports no WASI: its instances can be made before their login.
    pub(crate) warmable: bool,
    /// Instances made ahead (`Pipeline::prepare`), each for one login.
    pub(crate) warm: Mutex<WarmSlots>,
}

/// A rule's instances made ahead, and how many are being made right now (so two
/// threads preparing at once do not both make the last one and throw one away).
#[derive(Default)]
pub(crate) struct WarmSlots {
    ready: Vec<Warm>,
    making: usize,
}

/// A fresh instance made before its login: never called, no login data in it.
pub(crate) struct Warm {
    store: Store<RuleState>,
    instance: wasmtime::component::Instance,
}

impl LoadedRule {
    fn slots(&self) -> std::sync::MutexGuard<'_, WarmSlots> {
        self.warm.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn warm_count(&self) -> usize {
        self.slots().ready.len()
    }

    fn take_warm(&self) -> Option<Warm> {
        if !self.warmable {
            return None;
        }
        self.slots().ready.pop()
    }

    /// Claims the making of one more instance, if fewer than `cap` are ready or being
    /// made.
    fn claim_making(&self, cap: usize) -> bool {
        let mut slots = self.slots();
        if slots.ready.len() + slots.making >= cap {
            return false;
        }
        slots.making += 1;
        true
    }

    /// The `portcullis:rule` contract version the component was built against, read
    /// off its imports (every rule imports the contract's `types`).
    pub fn contract_version(&self) -> &'static str {
        match self.contract {
            Contract::V0_1 => "0.1.0",
            Contract::V0_2 => "0.2.0",
        }
    }
}

pub struct Pipeline {
    engine: Engine,
    rules: Vec<LoadedRule>,
    /// App-metadata keys only rules granted them may write.
    protected_keys: Vec<String>,
    /// Instances `prepare` keeps made ahead per rule.
    warm_per_rule: usize,
}

/// One rule's run, before the pipeline decides what it means.
struct RuleRun {
    result: Result<RuleOutcome, (FaultKind, String)>,
    duration_us: u64,
    memory_kib: u64,
    logs: Vec<String>,
    output: String,
    evidence: AccountEvidence,
}

impl Pipeline {
    pub(crate) fn new(
        engine: Engine,
        rules: Vec<LoadedRule>,
        protected_keys: Vec<String>,
        warm_per_rule: usize,
    ) -> Self {
        Self {
            engine,
            rules,
            protected_keys,
            warm_per_rule,
        }
    }

    /// Makes each rule's next instances (`engine.warm_instances` per rule) so the
    /// logins that take them do not wait for instantiation. For a moment between
    /// logins (after a response is sent): it moves the work off the login's latency,
    /// it does not remove it. Each instance still serves exactly one login, and holds
    /// nothing of any login until it is taken. Rules that import WASI are skipped.
    /// An instance made ahead costs a little more than one made in its login, and
    /// threads preparing beside busy evaluations lose throughput (BENCHMARKS.md): call
    /// it where there is spare time, as `serve` does when no evaluation is running.
    pub fn prepare(&self) {
        for rule in self.rules.iter().filter(|r| r.warmable) {
            while rule.claim_making(self.warm_per_rule) {
                let mut store =
                    self.new_store(rule, RuleState::ahead_of_login(rule.settings.clone()));
                let made = rule.pre.instantiate(&mut store);
                let mut slots = rule.slots();
                slots.making -= 1;
                match made {
                    Ok(instance) => slots.ready.push(Warm { store, instance }),
                    Err(e) => {
                        // Its login will instantiate it and report the fault.
                        tracing::debug!(rule = %rule.settings.name, "cannot instantiate ahead: {e}");
                        break;
                    }
                }
            }
        }
    }

    /// Instances made ahead and not yet taken by a login, across the rules.
    pub fn warm_instances(&self) -> usize {
        self.rules.iter().map(LoadedRule::warm_count).sum()
    }

    /// A store for one instance of `rule`, its limits set.
    fn new_store(&self, rule: &LoadedRule, state: RuleState) -> Store<RuleState> {
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        // Results and capability arguments are copied out of the guest no further than
        // the rule's output bound (wasmtime's default would copy 128 MiB).
        store.set_hostcall_fuel(rule.lift_budget);
        // A new store's deadline is zero ticks away: set it before anything runs.
        store.set_epoch_deadline(rule.deadline_ticks);
        // The epoch says when to look; the clock says whether the time is up. A ticker
        // catching up can advance the epoch by several ticks at once: trapping on the
        // epoch alone could stop a rule early.
        store.epoch_deadline_callback(|store| {
            let left = store
                .data()
                .deadline
                .saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(wasmtime::UpdateDeadline::Interrupt);
            }
            let ticks = left
                .as_nanos()
                .div_ceil(crate::runtime::engine::EPOCH_TICK.as_nanos());
            Ok(wasmtime::UpdateDeadline::Continue(
                u64::try_from(ticks).unwrap_or(u64::MAX).max(1),
            ))
        });
        store
    }

    pub fn rules(&self) -> &[LoadedRule] {
        &self.rules
    }

    /// Runs every rule in order and returns the verdict. Never fails: a rule that
    /// misbehaves is a fault in the trace, handled by its `on_error` policy.
    pub fn evaluate(&self, login: &LoginAttempt, services: &Services) -> Verdict {
        self.run_from(
            login,
            services,
            0,
            None,
            Vec::new(),
            AccountEvidence::default(),
        )
    }

    /// Resumes a redirected login: the redirecting rule's `on-continue`, then the rules
    /// after it. `pending` are the effects held since the redirect, `evidence` what the
    /// host verified before it.
    pub fn resume(
        &self,
        login: &LoginAttempt,
        services: &Services,
        from: &ResumePoint,
        pending: Vec<Effect>,
        mut evidence: AccountEvidence,
    ) -> Result<Verdict, ResumeMismatch> {
        let rule = self
            .rules
            .get(from.rule_index)
            .filter(|rule| rule.settings.name == from.rule)
            .ok_or_else(|| {
                ResumeMismatch(format!(
                    "the pipeline no longer has rule {:?} at position {}",
                    from.rule,
                    from.rule_index + 1
                ))
            })?;
        if rule.continue_export.is_none() {
            return Err(ResumeMismatch(format!(
                "rule {:?} does not export on-continue",
                from.rule
            )));
        }
        let resume = wit::Resume {
            state: from.state.clone(),
            outcome_json: from.result.clone(),
        };
        // Coming back through the redirect is the proof of the inbox it asked for.
        evidence.inbox_proven = true;
        Ok(self.run_from(
            login,
            services,
            from.rule_index,
            Some(&resume),
            pending,
            evidence,
        ))
    }

    fn run_from(
        &self,
        login: &LoginAttempt,
        services: &Services,
        start: usize,
        mut resume: Option<&wit::Resume>,
        pending: Vec<Effect>,
        mut evidence: AccountEvidence,
    ) -> Verdict {
        let mut ctx = login.to_context();
        ctx.pending = pending.iter().map(effect_to_wit).collect();
        let seed = LoginSeed::of(&login.transaction_id);
        let mut effects = pending;
        let mut trace = Vec::with_capacity(self.rules.len());
        let mut decision = Decision::Allow;

        for rule in &self.rules[start.min(self.rules.len())..] {
            // A rule for some logins only: no sandbox for the others (a resumed rule
            // always runs: its login needed it).
            if resume.is_none()
                && rule.settings.only_when == Some(crate::config::RuleCondition::Recovery)
                && !crate::model::RecoveryRequest::asked(&login.recovery)
            {
                trace.push(RuleTrace {
                    rule: rule.settings.name.clone(),
                    result: RuleResult::Skipped,
                    duration_us: 0,
                    fault: None,
                    logs: Vec::new(),
                    output: String::new(),
                    memory_kib: 0,
                });
                continue;
            }
            let run = self.run_rule(
                rule,
                &ctx,
                resume.take(),
                login,
                seed,
                services,
                std::mem::take(&mut evidence),
            );
            evidence = run.evidence;
            let name = rule.settings.name.clone();
            let checked = run.result.and_then(|outcome| {
                invariants::check(
                    &rule.settings,
                    &self.protected_keys,
                    login,
                    &evidence,
                    &effects,
                    &outcome.effects,
                )
                .map(|()| outcome)
                .map_err(|message| (FaultKind::BadOutput, message))
            });
            let (result, fault, stop) = match checked {
                Ok(outcome) => {
                    let result = rule_result(&outcome.decision);
                    ctx.pending
                        .extend(outcome.effects.iter().map(effect_to_wit));
                    effects.extend(outcome.effects);
                    let stop = result != RuleResult::Continue;
                    if stop {
                        decision = outcome.decision;
                    }
                    (result, None, stop)
                }
                Err((kind, message)) => {
                    let fault = rule_fault(&rule.settings, login, kind, &message);
                    let stop = fault.policy == OnError::Deny;
                    if stop {
                        decision = Decision::Deny {
                            code: "rule_fault".into(),
                            message: "The login could not be checked; please try again.".into(),
                            retryable: true,
                        };
                    }
                    (RuleResult::Fault, Some(fault), stop)
                }
            };
            trace.push(RuleTrace {
                rule: name,
                result,
                duration_us: run.duration_us,
                fault,
                logs: run.logs,
                output: run.output,
                memory_kib: run.memory_kib,
            });
            if stop {
                break;
            }
        }
        if matches!(decision, Decision::Deny { .. }) {
            // Nothing of a denied login is ever applied.
            effects.clear();
        }
        Verdict {
            transaction_id: login.transaction_id.clone(),
            decision,
            effects,
            trace,
            applied: None,
            resume_token: None,
            proof_token: None,
            device_token: None,
            error: None,
            evidence,
            recovery: None,
            enrolment: None,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn run_rule(
        &self,
        rule: &LoadedRule,
        ctx: &wit::LoginContext,
        resume: Option<&wit::Resume>,
        login: &LoginAttempt,
        seed: LoginSeed,
        services: &Services,
        evidence: AccountEvidence,
    ) -> RuleRun {
        // Timed from the sandbox's creation: that is part of what a rule costs.
        let started = Instant::now();
        let state = RuleState::new(
            rule.settings.clone(),
            services.clone(),
            login,
            seed,
            evidence,
        );
        let (mut store, instance) = match rule.take_warm() {
            Some(Warm {
                mut store,
                instance,
            }) => {
                let ahead = std::mem::replace(store.data_mut(), state);
                // The memory it was made with counts as this login's.
                store.data_mut().limiter.peak_bytes = ahead.limiter.peak_bytes;
                // Its deadline counts from now, not from when it was made.
                store.set_epoch_deadline(rule.deadline_ticks);
                (store, Ok(instance))
            }
            None => {
                let mut store = self.new_store(rule, state);
                let instance = rule
                    .pre
                    .instantiate(&mut store)
                    .map_err(|e| (e, FaultKind::Instantiate));
                (store, instance)
            }
        };
        let called =
            instance.and_then(|instance| call_rule(&mut store, instance, rule, ctx, resume));
        let result = match called {
            Err((error, otherwise)) => Err(classify(&error, store.data(), otherwise)),
            Ok(returned) => match returned {
                Err(rule_error) => {
                    let kind = if store.data().capability_failures > 0 {
                        FaultKind::Capability
                    } else {
                        FaultKind::RuleError
                    };
                    outcome_checks::error_message(&rule_error, rule.settings.max_output_bytes)
                        .map_or_else(
                            |bad| Err((FaultKind::BadOutput, bad)),
                            |message| Err((kind, message)),
                        )
                }
                Ok(outcome) => outcome_checks::validate(
                    &rule.settings.name,
                    outcome,
                    rule.settings.max_output_bytes,
                )
                .map_err(|message| (FaultKind::BadOutput, message)),
            },
        };
        let duration_us = started.elapsed().as_micros() as u64;
        let state = store.data_mut();
        let run = RuleRun {
            result,
            duration_us,
            memory_kib: (state.limiter.peak_bytes / 1024) as u64,
            output: state.take_output(),
            logs: std::mem::take(&mut state.logs),
            evidence: std::mem::take(&mut state.evidence),
        };
        // The store (trapped or not) is dropped here, on the login's thread: its memory
        // is reset and its slot goes back to the pool, and nothing of this login
        // survives into the next. (Dropping on a background thread measured twice as
        // slow: the next login then gets a slot that is not warm. BENCHMARKS.md.)
        drop(store);
        run
    }
}

type Returned = Result<wit::Outcome, wit::RuleError>;
/// What a rule's export returns, read as the host's `Returned` wrapper: a result that
/// cannot be read within the rule's budget is the rule's bad output.
type Lifted<T> = (crate::runtime::lift::Returned<T>,);

/// Calls a rule's `on-login` (or `on-continue` when resuming) in the contract version
/// it was built against; the outcome comes back in the host's types.
fn call_rule(
    store: &mut Store<RuleState>,
    instance: wasmtime::component::Instance,
    rule: &LoadedRule,
    ctx: &wit::LoginContext,
    resume: Option<&wit::Resume>,
) -> Result<Returned, (wasmtime::Error, FaultKind)> {
    let trap = |e| (e, FaultKind::Trap);
    let missing = |what: &str| {
        (
            wasmtime::format_err!("no export `{what}`"),
            FaultKind::Instantiate,
        )
    };
    let Some(resume) = resume else {
        let func = instance
            .get_func(&mut *store, rule.login_export)
            .ok_or_else(|| missing("on-login"))?;
        // SAFETY: at load, `RulePre::new` of the rule's contract version type-checked
        // this export of this component against that version's types; checking it
        // again on every login costs more than the call itself. The 0.2.0 context has
        // 0.1.0's shape (the test `contract_shapes` checks it), and a typed function
        // is checked by shape.
        return match rule.contract {
            Contract::V0_2 => {
                let on_login = unsafe {
                    TypedFunc::<(&wit::LoginContext,), Lifted<Returned>>::new_unchecked(func)
                };
                on_login
                    .call(&mut *store, (ctx,))
                    .map(|(r,)| r.0)
                    .map_err(trap)
            }
            Contract::V0_1 => {
                let on_login = unsafe {
                    TypedFunc::<(&wit::LoginContext,), Lifted<Result<OutcomeV0_1, wit::RuleError>>>::new_unchecked(func)
                };
                on_login
                    .call(&mut *store, (ctx,))
                    .map(|(r,)| r.0.map(wit::Outcome::from))
                    .map_err(trap)
            }
        };
    };
    // Resuming is rare; this path keeps wasmtime's own type check.
    let export = rule
        .continue_export
        .as_ref()
        .ok_or_else(|| missing("on-continue"))?;
    let instantiate = |e| (e, FaultKind::Instantiate);
    match rule.contract {
        Contract::V0_2 => instance
            .get_typed_func::<(&wit::LoginContext, &wit::Resume), Lifted<Returned>>(&mut *store, export)
            .map_err(instantiate)?
            .call(&mut *store, (ctx, resume))
            .map(|(r,)| r.0)
            .map_err(trap),
        Contract::V0_1 => instance
            .get_typed_func::<(&wit::LoginContext, &wit::Resume), Lifted<Result<OutcomeV0_1, wit::RuleError>>>(
                &mut *store,
                export,
            )
            .map_err(instantiate)?
            .call(&mut *store, (ctx, resume))
            .map(|(r,)| r.0.map(wit::Outcome::from))
            .map_err(trap),
    }
}

/// What `rule_model` starts a panic's log line with.
const PANIC_PREFIX: &str = "panicked at ";

/// Recursion at an out-of-bounds access that means the guest's own (shadow) stack
/// ran out: Rust keeps locals in linear memory below its stack pointer, and running
/// past the bottom of that region is an out-of-bounds access, not the engine's
/// stack-overflow trap. With a 64 KiB stack, a recursion of 1 KiB frames is ~60
/// deep when it runs out; no honest call chain re-enters one function this often.
const OVERFLOW_REPEATS: usize = 16;

/// Whether a trap's wasm backtrace shows one function re-entered many times.
fn deep_recursion(error: &wasmtime::Error) -> bool {
    let Some(trace) = error.downcast_ref::<wasmtime::WasmBacktrace>() else {
        return false;
    };
    let mut counts = std::collections::HashMap::new();
    trace.frames().iter().any(|frame| {
        let seen = counts
            .entry((frame.module().name().map(str::to_owned), frame.func_index()))
            .or_insert(0usize);
        *seen += 1;
        *seen >= OVERFLOW_REPEATS
    })
}

/// Names a fault from what the host itself recorded (a refused capability call, the
/// limiter's flag, its own epoch interrupt, the trap code and the wasm backtrace),
/// never from message text.
fn classify(
    error: &wasmtime::Error,
    state: &RuleState,
    otherwise: FaultKind,
) -> (FaultKind, String) {
    let kind = if let Some(kind) = state.refused {
        kind
    } else if state.limiter.memory_cap_hit {
        FaultKind::Memory
    } else if let Some(unreadable) = error.downcast_ref::<crate::runtime::lift::Unreadable>() {
        return (
            FaultKind::BadOutput,
            format!(
                "outcome not read: over the rule's limit of {} bytes, or malformed ({unreadable})",
                state.rule.max_output_bytes
            ),
        );
    } else {
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => FaultKind::Deadline,
            Some(Trap::StackOverflow) => FaultKind::StackOverflow,
            Some(Trap::MemoryOutOfBounds) if deep_recursion(error) => FaultKind::StackOverflow,
            Some(_) => FaultKind::Trap,
            None => otherwise,
        }
    };
    let message = match kind {
        FaultKind::Deadline => format!("ran past its deadline of {} ms", state.rule.deadline_ms),
        // A rule built without WASI logs its panic just before it traps.
        FaultKind::Trap => match state.logs.last().and_then(|l| l.strip_prefix("error: ")) {
            Some(panic) if panic.starts_with(PANIC_PREFIX) => panic.to_owned(),
            _ => error.root_cause().to_string(),
        },
        _ => error.root_cause().to_string(),
    };
    (kind, message)
}

/// What a rule's decision makes of its step in the trace.
fn rule_result(decision: &Decision) -> RuleResult {
    match decision {
        Decision::Allow => RuleResult::Continue,
        Decision::Deny { .. } => RuleResult::Deny,
        Decision::Redirect { .. } => RuleResult::Redirect,
        Decision::Challenge { .. } => RuleResult::Challenge,
        Decision::Recover { .. } => RuleResult::Recover,
    }
}

/// A rule's fault as the trace keeps it and the log tells it; its `on_error` policy
/// decides whether the login goes on.
fn rule_fault(
    settings: &crate::config::RuleSettings,
    login: &LoginAttempt,
    kind: FaultKind,
    message: &str,
) -> Fault {
    // A rule's own error text may quote the login; keep emails out.
    let message = crate::model::redact::redact_text(message).into_owned();
    let policy = settings.on_error;
    tracing::warn!(
        transaction = %login.transaction_id, rule = %settings.name, ?kind, ?policy,
        "rule fault: {message}"
    );
    Fault {
        kind,
        message,
        policy,
    }
}
