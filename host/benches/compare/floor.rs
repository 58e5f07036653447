//! The floor of per-rule isolation in wasmtime: the same four rules as plain core
//! modules (`cargo xtask bench` builds them with `rule_model`'s `floor` feature), one
//! host import, a bump allocator, the context as one hand-written buffer
//! (`rule_model::floor`), a fresh instance per rule per login from a pooling
//! allocator configured as the runtime's is. What the components cost above this is
//! what the component model, the typed context and the host's bookkeeping cost.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

use portcullis::LoginAttempt;
use portcullis::model::Services;
use rule_model::floor::{
    OP_CONFIG, OP_FIND_LEGACY_ACCOUNTS, OP_LOG, OP_TAKE, OP_VERIFY_DIRECTORY_PASSWORD,
    OP_VERIFY_LEGACY_PASSWORD, decode, encode,
};
use rule_model::{Host, LogLevel, LoginContext, Outcome, RuleError};
use wasmtime::{
    Caller, Config, Engine, Instance, InstanceAllocationStrategy, InstancePre, Linker, Memory,
    Module, PoolingAllocationConfig, Store,
};

use super::{ModelVerdict, NativeHost, run_rules};

/// The rules in the fixture pipeline's order.
pub(super) const RULES: [&str; 4] = [
    "rule_bulk_imported_skip",
    "rule_migrate_on_login",
    "rule_ownership_check",
    "rule_id_propagation",
];

/// What a host call may hand over; the floor bounds inputs as the runtime does.
const MAX_REQUEST: usize = 64 << 10;

struct FloorState {
    /// `None` in an instance made ahead, until its login takes it.
    services: Option<Services>,
    config: Arc<BTreeMap<String, String>>,
    /// An answer too big for the guest's buffer, until it takes it.
    kept: Vec<u8>,
}

/// A rule's instance template and its config.
type FloorRule = (InstancePre<FloorState>, Arc<BTreeMap<String, String>>);

/// An instance made ahead of its login, with no login data in it.
type Ahead = (Store<FloorState>, Instance);

pub struct Floor {
    engine: Engine,
    rules: Vec<FloorRule>,
    /// Per rule, the instance made ahead for the next login (as the runtime's
    /// `engine.warm_instances = 1`).
    ahead: Mutex<Vec<Option<Ahead>>>,
    /// Per thread, per rule, one instance kept across logins (`evaluate_reused`).
    kept: Mutex<HashMap<ThreadId, Vec<Option<Kept>>>>,
}

/// An instance kept across logins, with its memory as instantiation left it.
struct Kept {
    store: Store<FloorState>,
    instance: Instance,
    memory: Memory,
    /// The memory's bytes as instantiated; `data` the span from its first to its last
    /// non-zero byte (the data segments), the rest zero.
    image: Vec<u8>,
    data: std::ops::Range<usize>,
}

/// What `evaluate_reused` does to a kept instance between logins.
#[derive(Clone, Copy, PartialEq)]
pub enum Between {
    /// Every byte of its memory put back as instantiation left it: no login's data
    /// reaches the next (its globals are not reset: the rules' one mutable global,
    /// the stack pointer, is back where it was whenever a call returns).
    Restore,
    /// Nothing: the next login sees what the last one left (a reused Lua state).
    Nothing,
}

impl Floor {
    /// The floor modules from `target/floor/`, with each rule's config; `instances`
    /// and the limits as the runtime's engine settings (`[engine]` defaults).
    pub fn load(
        root: &Path,
        configs: &[BTreeMap<String, String>],
        instances: u32,
    ) -> Result<Self, String> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(instances)
            .total_memories(instances)
            .total_tables(instances)
            .max_memory_size(256 << 20)
            .linear_memory_keep_resident(2 << 20)
            .table_keep_resident(2 << 20);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .max_wasm_stack(512 << 10)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| e.to_string())?;
        let mut linker = Linker::<FloorState>::new(&engine);
        linker
            .func_wrap("portcullis", "call", host_call)
            .map_err(|e| e.to_string())?;
        let mut rules = Vec::new();
        for (name, config) in RULES.iter().zip(configs) {
            let path = root.join(format!("target/floor/{name}.wasm"));
            let bytes = std::fs::read(&path).map_err(|e| {
                format!(
                    "cannot read {} ({e}): build it with `cargo xtask bench`",
                    path.display()
                )
            })?;
            let module = Module::new(&engine, bytes).map_err(|e| e.to_string())?;
            let pre = linker.instantiate_pre(&module).map_err(|e| e.to_string())?;
            rules.push((pre, Arc::new(config.clone())));
        }
        let ahead = Mutex::new(rules.iter().map(|_| None).collect());
        let kept = Mutex::new(HashMap::new());
        Ok(Self {
            engine,
            rules,
            ahead,
            kept,
        })
    }

    /// The pipeline's semantics, as `native_evaluate`, each rule in a fresh instance.
    pub fn evaluate(&self, login: &LoginAttempt, services: &Services) -> ModelVerdict {
        run_rules(login, &self.rules, |rule, ctx| {
            let (mut store, instance) = self.instance(rule, Some(services.clone()))?;
            call(instance, &mut store, ctx).ok()?.ok()
        })
    }

    /// As `evaluate`, each rule taking the instance made ahead for it (or making one
    /// if there is none): what a login waits for when instances are made ahead.
    pub fn evaluate_made_ahead(&self, login: &LoginAttempt, services: &Services) -> ModelVerdict {
        let taken: Vec<Option<Ahead>> = std::mem::take(&mut *self.ahead.lock().unwrap());
        let mut taken = taken.into_iter();
        run_rules(login, &self.rules, |rule, ctx| {
            let (mut store, instance) = match taken.next().flatten() {
                Some((mut store, instance)) => {
                    store.data_mut().services = Some(services.clone());
                    store.set_epoch_deadline(1000);
                    (store, instance)
                }
                None => self.instance(rule, Some(services.clone()))?,
            };
            call(instance, &mut store, ctx).ok()?.ok()
        })
    }

    /// As `evaluate`, but each rule's instance is kept from login to login (made again
    /// only after a failure or a grown memory), with `between` done after each call:
    /// what a design that reuses instances would cost, against a fresh one per login.
    pub fn evaluate_reused(
        &self,
        login: &LoginAttempt,
        services: &Services,
        between: Between,
    ) -> ModelVerdict {
        let thread = std::thread::current().id();
        let taken = self.kept.lock().unwrap().remove(&thread);
        let mut kept = taken.unwrap_or_else(|| self.rules.iter().map(|_| None).collect());
        let mut slots = kept.iter_mut();
        let verdict = run_rules(login, &self.rules, |rule, ctx| {
            let slot = slots.next()?;
            if slot.is_none() {
                let (mut store, instance) = self.instance(rule, None)?;
                let memory = instance.get_memory(&mut store, "memory")?;
                let image = memory.data(&store).to_vec();
                let start = image.iter().position(|b| *b != 0).unwrap_or(0);
                let end = image.iter().rposition(|b| *b != 0).map_or(start, |i| i + 1);
                *slot = Some(Kept {
                    store,
                    instance,
                    memory,
                    image,
                    data: start..end,
                });
            }
            let k = slot.as_mut()?;
            k.store.data_mut().services = Some(services.clone());
            k.store.set_epoch_deadline(1000);
            let out = call(k.instance, &mut k.store, ctx);
            k.store.data_mut().services = None;
            if out.is_err() || k.memory.data_size(&k.store) != k.image.len() {
                *slot = None;
            } else if between == Between::Restore {
                // As wasmtime's pool resets a memory it keeps resident: zeroes around
                // the data image, the image copied back.
                let memory = k.memory.data_mut(&mut k.store);
                memory[..k.data.start].fill(0);
                memory[k.data.clone()].copy_from_slice(&k.image[k.data.clone()]);
                memory[k.data.end..].fill(0);
            }
            out.ok()?.ok()
        });
        self.kept.lock().unwrap().insert(thread, kept);
        verdict
    }

    /// Makes each rule's next instance, with no login in it (outside the login's
    /// latency, as the runtime's `Pipeline::prepare`).
    pub fn prepare(&self) {
        let made = self
            .rules
            .iter()
            .map(|rule| self.instance(rule, None))
            .collect();
        *self.ahead.lock().unwrap() = made;
    }

    /// A fresh store and instance of `rule`; `services` is `None` ahead of a login.
    fn instance(&self, (pre, config): &FloorRule, services: Option<Services>) -> Option<Ahead> {
        let state = FloorState {
            services,
            config: config.clone(),
            kept: Vec::new(),
        };
        let mut store = Store::new(&self.engine, state);
        store.set_epoch_deadline(1000);
        let instance = pre.instantiate(&mut store).ok()?;
        Some((store, instance))
    }
}

fn call(
    instance: Instance,
    store: &mut Store<FloorState>,
    ctx: &LoginContext,
) -> wasmtime::Result<Result<Outcome, RuleError>> {
    let alloc = instance.get_typed_func::<u32, u32>(&mut *store, "portcullis_alloc")?;
    let on_login =
        instance.get_typed_func::<(u32, u32), u64>(&mut *store, "portcullis_on_login")?;
    let memory = instance
        .get_memory(&mut *store, "memory")
        .ok_or_else(|| wasmtime::format_err!("no memory export"))?;
    let bytes = encode(ctx);
    let ptr = alloc.call(&mut *store, bytes.len() as u32)?;
    memory.write(&mut *store, ptr as usize, &bytes)?;
    let packed = on_login.call(&mut *store, (ptr, bytes.len() as u32))?;
    let (at, len) = ((packed >> 32) as usize, (packed & 0xffff_ffff) as usize);
    let answer = memory
        .data(&*store)
        .get(at..at.saturating_add(len))
        .ok_or_else(|| wasmtime::format_err!("the answer is outside the memory"))?;
    decode(answer).ok_or_else(|| wasmtime::format_err!("the answer does not decode"))
}

/// The one import: `call(op, ptr, len, out, cap) -> len`.
fn host_call(
    mut caller: Caller<'_, FloorState>,
    op: u32,
    ptr: u32,
    len: u32,
    out: u32,
    cap: u32,
) -> wasmtime::Result<u32> {
    let memory = caller
        .get_export("memory")
        .and_then(|e| e.into_memory())
        .ok_or_else(|| wasmtime::format_err!("no memory export"))?;
    let answer = if op == OP_TAKE {
        std::mem::take(&mut caller.data_mut().kept)
    } else {
        if len as usize > MAX_REQUEST {
            wasmtime::bail!("a host call of {len} bytes");
        }
        let mut request = vec![0; len as usize];
        memory.read(&caller, ptr as usize, &mut request)?;
        let state = caller.data();
        let services = state
            .services
            .as_ref()
            .ok_or_else(|| wasmtime::format_err!("a host call before the login"))?;
        answer(services, &state.config, op, &request)
            .ok_or_else(|| wasmtime::format_err!("a malformed host call"))?
    };
    let answer_len = answer.len() as u32;
    if answer_len <= cap {
        memory.write(&mut caller, out as usize, &answer)?;
    } else {
        caller.data_mut().kept = answer;
    }
    Ok(answer_len)
}

/// The answer to one host call, from the recordings' in-memory services.
pub(super) fn answer(
    services: &Services,
    config: &BTreeMap<String, String>,
    op: u32,
    request: &[u8],
) -> Option<Vec<u8>> {
    let mut host = NativeHost { services, config };
    Some(match op {
        OP_LOG => {
            let (_level, message): (u8, String) = decode(request)?;
            host.log(LogLevel::Info, &message);
            encode(&())
        }
        OP_CONFIG => encode(&host.config(&decode::<String>(request)?)),
        OP_VERIFY_DIRECTORY_PASSWORD => {
            encode(&host.verify_directory_password(&decode::<String>(request)?))
        }
        OP_FIND_LEGACY_ACCOUNTS => encode(&host.find_legacy_accounts(&decode::<String>(request)?)),
        OP_VERIFY_LEGACY_PASSWORD => {
            let (product, legacy_id): (String, String) = decode(request)?;
            encode(&host.verify_legacy_password(&product, &legacy_id))
        }
        _ => return None,
    })
}
