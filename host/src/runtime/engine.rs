//! One WebAssembly engine per process: component model, pooling allocator, epoch
//! interruption driven by one ticker thread, bounded stacks, and the linker that
//! offers every rule the same sandboxed imports.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::config::{EngineSettings, PipelineConfig, RuleSettings};
use crate::error::LoadError;
use crate::runtime::bindings::{v0_1, v0_2};
use crate::runtime::cache::{CompileCache, CompileSource};
use crate::runtime::contract::Contract;
use crate::runtime::grants::{Import, check_imports};
use crate::runtime::pipeline::{LoadedRule, Pipeline};
use crate::runtime::sandbox::RuleState;

/// How often the epoch advances: when a running rule's deadline is checked.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Per pooled slot: about what a small Rust rule's memory holds (1 MiB of stack plus
/// its data).
const KEEP_RESIDENT_BYTES: usize = 2 << 20;

/// The engine, its linker and its compile cache. Cheap to share; pipelines loaded
/// from it keep the engine alive.
pub struct Runtime {
    engine: Engine,
    linker: Linker<RuleState>,
    cache: CompileCache,
    settings: EngineSettings,
}

impl Runtime {
    pub fn new(settings: &EngineSettings) -> Result<Self, LoadError> {
        let engine_error = |e: wasmtime::Error| LoadError::Engine(e.to_string());
        let mut pool = PoolingAllocationConfig::default();
        let instances = settings.max_instances;
        // A Rust rule is one component of a few core instances (the module plus the
        // shims wit-component adds), one memory and a couple of tables.
        pool.total_component_instances(instances)
            .total_core_instances(instances.saturating_mul(8))
            .total_memories(instances.saturating_mul(2))
            .total_tables(instances.saturating_mul(4))
            .max_core_instances_per_component(16)
            .max_memories_per_component(2)
            .max_tables_per_component(8)
            .max_memory_size((settings.max_memory_mb as usize) << 20)
            // Reset a returned slot by zeroing what a typical rule touched instead of
            // handing the pages back to the kernel and faulting them in again.
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .table_keep_resident(KEEP_RESIDENT_BYTES);

        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .max_wasm_stack(settings.max_wasm_stack_kb * 1024)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(engine_error)?;
        start_epoch_ticker(&engine).map_err(|e| LoadError::Engine(e.to_string()))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(engine_error)?;
        // Every contract version side by side: a pipeline may mix rules built
        // against any of them.
        v0_1::Rule::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(engine_error)?;
        v0_2::Rule::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(engine_error)?;
        // `log` reads no more of a message than it keeps.
        crate::runtime::capabilities::log::link(&mut linker).map_err(engine_error)?;

        Ok(Self {
            cache: CompileCache::new(&engine, settings.cache_dir.clone()),
            engine,
            linker,
            settings: settings.clone(),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Loads every rule of a pipeline: compiles (or takes from the cache), checks
    /// imports against grants, and pre-links an instance template per rule.
    pub fn load(&self, config: &PipelineConfig) -> Result<Pipeline, LoadError> {
        let rules = config
            .rules
            .iter()
            .map(|settings| self.load_rule(settings))
            .collect::<Result<Vec<_>, _>>()?;
        // Instances made ahead hold pool slots: half the pool stays for logins.
        let warm = self.settings.warm_instances as usize;
        let held = warm.saturating_mul(rules.iter().filter(|r| r.warmable).count());
        if held > self.settings.max_instances as usize / 2 {
            return Err(LoadError::Config(crate::error::ConfigError::Invalid {
                path: None,
                message: format!(
                    "engine.warm_instances ({warm}) for each of {} rules is over half of engine.max_instances ({})",
                    held / warm.max(1),
                    self.settings.max_instances
                ),
            }));
        }
        Ok(Pipeline::new(
            self.engine.clone(),
            rules,
            config.effects.protected_app_metadata.clone(),
            warm,
        ))
    }

    fn load_rule(&self, settings: &RuleSettings) -> Result<LoadedRule, LoadError> {
        let rule = &settings.name;
        if settings.memory_mb > self.settings.max_memory_mb {
            return Err(LoadError::Config(crate::error::ConfigError::Invalid {
                path: None,
                message: format!(
                    "rule {rule:?}: memory_mb {} is over the engine's max_memory_mb {}",
                    settings.memory_mb, self.settings.max_memory_mb
                ),
            }));
        }
        let bytes =
            std::fs::read(&settings.component).map_err(|source| LoadError::ReadComponent {
                rule: rule.clone(),
                path: settings.component.clone(),
                source,
            })?;
        let (component, source): (_, CompileSource) = self
            .cache
            .load(&self.engine, &bytes)
            .map_err(|e| LoadError::InvalidComponent {
                rule: rule.clone(),
                path: settings.component.clone(),
                message: e.root_cause().to_string(),
            })?;
        let component_type = component.component_type();
        let imports: Vec<Import> = check_imports(
            rule,
            &settings.grants,
            component_type.imports(&self.engine).map(|(name, _)| name),
        )?;
        let contract = |e: wasmtime::Error| LoadError::Contract {
            rule: rule.clone(),
            message: e.root_cause().to_string(),
        };
        let instance_pre = self.linker.instantiate_pre(&component).map_err(contract)?;
        // The version its imports name; a component importing none of the contract
        // is whichever version its exports type-check against.
        let named = imports
            .iter()
            .find_map(|i| i.name.strip_prefix("portcullis:rule/")?.split_once('@'))
            .and_then(|(_, version)| Contract::of_version(version));
        // `RulePre::new` type-checks `on-login` against this component, so the
        // pipeline can take it by index per login without checking it again.
        let version = match named {
            Some(Contract::V0_1) => v0_1::RulePre::new(instance_pre.clone())
                .map(|_| Contract::V0_1)
                .map_err(contract)?,
            Some(Contract::V0_2) => v0_2::RulePre::new(instance_pre.clone())
                .map(|_| Contract::V0_2)
                .map_err(contract)?,
            None => match v0_2::RulePre::new(instance_pre.clone()) {
                Ok(_) => Contract::V0_2,
                Err(newest) => v0_1::RulePre::new(instance_pre.clone())
                    .map(|_| Contract::V0_1)
                    .map_err(|_| contract(newest))?,
            },
        };
        let login_export = component
            .get_export_index(None, "on-login")
            .ok_or_else(|| contract(wasmtime::format_err!("no export `on-login`")))?;
        let continue_export = component.get_export_index(None, "on-continue");
        Ok(LoadedRule {
            // A WASI context is made from the login (its clock and seed): a rule that
            // imports WASI cannot be instantiated before its login is known.
            warmable: !imports.iter().any(|i| i.name.starts_with("wasi:")),
            warm: Default::default(),
            login_export,
            resumable: continue_export.is_some(),
            continue_export,
            // No tick of margin: the store's callback checks the deadline by the clock.
            deadline_ticks: settings.deadline_ms.div_ceil(EPOCH_TICK.as_millis() as u64),
            lift_budget: crate::runtime::outcome_checks::lift_budget(settings.max_output_bytes),
            settings: Arc::new(settings.clone()),
            imports,
            source,
            data_image_bytes: crate::runtime::data_image::data_image_bytes(&bytes),
            contract: version,
            pre: instance_pre,
        })
    }
}

/// One thread per engine advances the epoch; it ends when the engine is dropped.
///
/// The epoch follows the monotonic clock (ticks since the thread started), not the
/// number of wake-ups: a ticker woken late catches up instead of falling behind, which
/// is what made deadlines run long on a busy machine (BENCHMARKS.md, "Deadlines under
/// contention"). Catching up can move the epoch several ticks at once, so a store
/// never traps on the epoch alone: its callback checks the rule's deadline by the
/// clock (`Pipeline::new_store`).
fn start_epoch_ticker(engine: &Engine) -> std::io::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("portcullis-epoch".into())
        .spawn(move || {
            ask_for_realtime_priority();
            let start = Instant::now();
            let tick_ns = EPOCH_TICK.as_nanos() as u64;
            let mut ticks: u64 = 0;
            while let Some(engine) = weak.upgrade() {
                let due = start.elapsed().as_nanos() as u64 / tick_ns;
                while ticks < due {
                    engine.increment_epoch();
                    ticks += 1;
                }
                drop(engine);
                let next = start + Duration::from_nanos((ticks + 1).saturating_mul(tick_ns));
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        })?;
    Ok(())
}

/// The ticker's wake-ups are what stop runaway rules; on a machine busier than its
/// cores they wait behind every runnable thread. A real-time priority (SCHED_FIFO,
/// the lowest level) lets them through; the ticker uses microseconds per
/// millisecond, so it takes nothing from the rules. Needs CAP_SYS_NICE (or an
/// RLIMIT_RTPRIO); without it the ticker runs at normal priority, and deadlines run
/// longer under load (docs/configuration.md, "Deadlines").
fn ask_for_realtime_priority() {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: sets the calling thread's own scheduling policy; no memory is shared.
    let refused =
        unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
    if refused != 0 {
        tracing::debug!(
            "epoch ticker keeps normal priority: SCHED_FIFO refused ({})",
            std::io::Error::from_raw_os_error(refused)
        );
    }
}
