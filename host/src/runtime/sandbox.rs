//! The per-rule, per-login sandbox: the data a `Store` carries, its limits, and a
//! WASI context with nothing in it but deterministic time and randomness.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use crate::config::RuleSettings;
use crate::model::redact::redact_text;
use crate::model::{AccountEvidence, LoginAttempt, Services};
use crate::runtime::guest_stdio::BoundedOutput;
use crate::runtime::verdict::FaultKind;

/// Guest stdout+stderr kept per run: enough for a panic message.
pub(crate) const OUTPUT_CAPACITY: usize = 4 * 1024;
const MAX_LOG_LINES: usize = 64;
pub(crate) const MAX_LOG_LINE: usize = 1024;
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Caps a store's memories and tables, and remembers that it had to.
pub(crate) struct Limiter {
    memory_bytes: usize,
    pub(crate) memory_cap_hit: bool,
    /// The largest linear memory this store had.
    pub(crate) peak_bytes: usize,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            // Recorded here because the error that reaches the caller carries no trap
            // code to classify it by.
            self.memory_cap_hit = true;
            return Err(wasmtime::format_err!(
                "memory cap of {} MiB reached (asked for {desired} bytes)",
                self.memory_bytes >> 20
            ));
        }
        self.peak_bytes = self.peak_bytes.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            self.memory_cap_hit = true;
            return Err(wasmtime::format_err!(
                "table cap of {MAX_TABLE_ELEMENTS} elements reached"
            ));
        }
        Ok(true)
    }
}

/// What a login's sandboxes derive their randomness from: the same for every rule of
/// the login, computed once per evaluation.
#[derive(Clone, Copy)]
pub(crate) struct LoginSeed([u8; 32]);

impl LoginSeed {
    pub(crate) fn of(transaction_id: &str) -> Self {
        Self(Sha256::digest(transaction_id.as_bytes()).into())
    }
}

/// Everything one rule's store holds for one login.
pub(crate) struct RuleState {
    /// Built at a component's first WASI call: a rule without WASI imports (the
    /// migration rules) never pays for one.
    wasi: Option<WasiCtx>,
    wasi_inputs: WasiInputs,
    table: ResourceTable,
    pub(crate) limiter: Limiter,
    pub(crate) rule: Arc<RuleSettings>,
    pub(crate) services: Services,
    pub(crate) password: Option<SecretString>,
    /// The login's directory user, the only one whose factors a rule may list.
    pub(crate) login_user: Option<String>,
    /// What the host prepared for a login asking to recover (rules granted `recovery`).
    pub(crate) recovery: Option<crate::model::RecoveryAsk>,
    pub(crate) logs: Vec<String>,
    pub(crate) capability_failures: u32,
    output: BoundedOutput,
    pub(crate) evidence: AccountEvidence,
    /// When the rule's time is up, by the host's monotonic clock.
    pub(crate) deadline: Instant,
    /// Set when the host refused a capability call and trapped the guest: the fault
    /// is this kind, whatever the trap looks like.
    pub(crate) refused: Option<FaultKind>,
}

impl RuleState {
    pub(crate) fn new(
        rule: Arc<RuleSettings>,
        services: Services,
        login: &LoginAttempt,
        seed: LoginSeed,
        evidence: AccountEvidence,
    ) -> Self {
        let output = BoundedOutput::new(OUTPUT_CAPACITY);
        Self {
            deadline: Instant::now() + Duration::from_millis(rule.deadline_ms),
            password: login.password.clone(),
            // Only a rule that may list factors needs it: no copy per rule otherwise.
            login_user: (rule.grants.contains(&crate::config::Capability::Mfa)
                || rule.grants.contains(&crate::config::Capability::Recovery))
            .then(|| login.user.as_ref().map(|u| u.id.clone()))
            .flatten(),
            recovery: rule
                .grants
                .contains(&crate::config::Capability::Recovery)
                .then(|| login.recovery_ask.clone())
                .flatten(),
            evidence,
            refused: None,
            wasi: None,
            wasi_inputs: WasiInputs {
                seed,
                time_ms: login.time_ms,
            },
            table: ResourceTable::new(),
            limiter: Limiter {
                memory_bytes: (rule.memory_mb as usize) << 20,
                memory_cap_hit: false,
                peak_bytes: 0,
            },
            rule,
            services,
            logs: Vec::new(),
            capability_failures: 0,
            output,
        }
    }

    /// The state of an instance made before its login (`Pipeline::prepare`): no login
    /// data and no stores, replaced by [`RuleState::new`]'s when the login takes it.
    pub(crate) fn ahead_of_login(rule: Arc<RuleSettings>) -> Self {
        Self {
            deadline: Instant::now() + Duration::from_millis(rule.deadline_ms),
            password: None,
            login_user: None,
            recovery: None,
            evidence: AccountEvidence::default(),
            refused: None,
            wasi: None,
            wasi_inputs: WasiInputs {
                seed: LoginSeed([0; 32]),
                time_ms: 0,
            },
            table: ResourceTable::new(),
            limiter: Limiter {
                memory_bytes: (rule.memory_mb as usize) << 20,
                memory_cap_hit: false,
                peak_bytes: 0,
            },
            rule,
            services: Services::none(),
            logs: Vec::new(),
            capability_failures: 0,
            output: BoundedOutput::new(OUTPUT_CAPACITY),
        }
    }

    /// Refuses a capability call: the guest traps, and the fault is `kind`.
    pub(crate) fn refuse(&mut self, kind: FaultKind, why: String) -> wasmtime::Error {
        self.refused = Some(kind);
        wasmtime::format_err!("{why}")
    }

    /// A capability call may not start once the rule's deadline has passed: the host's
    /// own work (a password hash) would otherwise run past it.
    pub(crate) fn check_deadline(&mut self, call: &str) -> wasmtime::Result<()> {
        if Instant::now() >= self.deadline {
            return Err(self.refuse(
                FaultKind::Deadline,
                format!(
                    "{call} refused: the rule's deadline of {} ms has passed",
                    self.rule.deadline_ms
                ),
            ));
        }
        Ok(())
    }

    /// A line the guest logged, as the `log` capability read it (see `GuestText`).
    pub(crate) fn push_guest_log(
        &mut self,
        level: &str,
        message: crate::runtime::lift::GuestText<MAX_LOG_LINE>,
    ) {
        let mut line = format!("{level}: {}", message.text);
        if message.cut {
            // Half an address at the cut would escape redaction.
            trim_partial_token(&mut line);
            line.push(CUT_MARK);
        }
        self.push_log(line);
    }

    pub(crate) fn push_log(&mut self, mut line: String) {
        if self.logs.len() >= MAX_LOG_LINES {
            return;
        }
        // Cut before redacting: redaction copies, and a guest may log megabytes.
        cut_guest_text(&mut line, MAX_LOG_LINE);
        let mut line = redact_text(&line).into_owned();
        // Redaction's markers can lengthen a line; whole tokens are already masked.
        if line.len() > MAX_LOG_LINE {
            truncate_at_char(&mut line, MAX_LOG_LINE);
            line.push(CUT_MARK);
        }
        tracing::debug!(rule = %self.rule.name, "{line}");
        self.logs.push(line);
    }

    /// What the guest wrote to stdout/stderr, redacted.
    pub(crate) fn take_output(&self) -> String {
        let (bytes, dropped) = self.output.contents();
        let mut text = String::from_utf8_lossy(&bytes).into_owned();
        if dropped > 0 {
            // An address cut in half would escape redaction: drop the partial token.
            trim_partial_token(&mut text);
        }
        let mut text = redact_text(text.trim_end()).into_owned();
        if dropped > 0 {
            text.push_str(&format!(" [output truncated: {dropped} more bytes]"));
        }
        text
    }
}

/// Marks where guest text was cut.
const CUT_MARK: char = '…';

/// Text a guest produced, cut to at most `max` bytes (the mark included) before
/// anything copies it (redaction copies), without leaving half an email address at the
/// cut for redaction to miss.
pub(crate) fn cut_guest_text(text: &mut String, max: usize) {
    if text.len() > max {
        truncate_at_char(text, max);
        trim_partial_token(text);
        text.push(CUT_MARK);
    }
}

fn trim_partial_token(text: &mut String) {
    while text
        .chars()
        .last()
        .is_some_and(|c| c.is_alphanumeric() || "._%+-*@".contains(c))
    {
        text.pop();
    }
}

/// Cuts `text` at a char boundary so that it and the mark fit in `max` bytes; the
/// caller adds the mark.
fn truncate_at_char(text: &mut String, max: usize) {
    if text.len() > max {
        let mut cut = max.saturating_sub(CUT_MARK.len_utf8());
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
}

/// What a rule's WASI context is made of.
struct WasiInputs {
    seed: LoginSeed,
    time_ms: u64,
}

impl WasiInputs {
    /// Rust std asks WASI for randomness (HashMap seeds) and clocks; both are derived
    /// from the login so a recorded login replays bit for bit. Output goes to the
    /// bounded buffer; no network, no files, no environment.
    fn build(&self, output: &BoundedOutput) -> WasiCtx {
        let LoginSeed(seed) = self.seed;
        WasiCtx::builder()
            .stdout(output.clone())
            .stderr(output.clone())
            .secure_random(rand::rngs::StdRng::from_seed(seed))
            .insecure_random(rand::rngs::StdRng::from_seed(seed))
            .insecure_random_seed(u128::from_le_bytes(
                seed[..16].try_into().unwrap_or_default(),
            ))
            .wall_clock(LoginClock {
                time_ms: self.time_ms,
            })
            .monotonic_clock(StepClock::default())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build()
    }
}

impl WasiView for RuleState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let (inputs, output) = (&self.wasi_inputs, &self.output);
        WasiCtxView {
            ctx: self.wasi.get_or_insert_with(|| inputs.build(output)),
            table: &mut self.table,
        }
    }
}

/// Wall time stands still at the moment of the login.
struct LoginClock {
    time_ms: u64,
}

impl HostWallClock for LoginClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        Duration::from_millis(self.time_ms)
    }
}

/// Monotonic time advances one microsecond per reading: deterministic, yet a guest
/// that waits for time to pass still sees it move (and meets its deadline).
#[derive(Default)]
struct StepClock {
    now_ns: AtomicU64,
}

impl HostMonotonicClock for StepClock {
    fn resolution(&self) -> u64 {
        1_000
    }
    fn now(&self) -> u64 {
        self.now_ns.fetch_add(1_000, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_text_fits_its_bound_mark_included() {
        // Found by the outcome fuzz target: the mark once went past the bound.
        for text in ["x".repeat(2000), "é".repeat(1000), "a-b ".repeat(500)] {
            for max in [0, 1, 3, 4, 1023, 1024] {
                let mut cut = text.clone();
                cut_guest_text(&mut cut, max);
                assert!(cut.len() <= max.max(CUT_MARK.len_utf8()), "{max}: {cut:?}");
                assert!(cut.ends_with(CUT_MARK));
            }
        }
        let mut short = "short".to_owned();
        cut_guest_text(&mut short, 1024);
        assert_eq!(short, "short");
    }
}
