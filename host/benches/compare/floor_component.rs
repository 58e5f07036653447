//! The floor's buffers through the component model: the same four rules as components
//! (`rule_model`'s `floor-component` feature) whose `on-login` takes and returns one
//! `list<u8>` and whose one import is `host.call(op, list<u8>) -> list<u8>`. Against
//! the floor, this is what a component instance and a component call cost; against the
//! real components, what the typed context and the contract's many imports cost.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use ::portcullis::LoginAttempt;
use ::portcullis::model::Services;
use rule_model::floor::{decode, encode};
use rule_model::{Outcome, RuleError};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};

use super::floor::{RULES, answer};
use super::{ModelVerdict, run_rules};

wasmtime::component::bindgen!({
    inline: "package portcullis:floor;
interface host { call: func(op: u32, args: list<u8>) -> list<u8>; }
world floor { import host; export on-login: func(ctx: list<u8>) -> list<u8>; }",
});

struct ComponentState {
    services: Services,
    config: Arc<BTreeMap<String, String>>,
}

impl portcullis::floor::host::Host for ComponentState {
    fn call(&mut self, op: u32, args: Vec<u8>) -> Vec<u8> {
        // A malformed call gets an empty answer, which the guest cannot decode (trap).
        answer(&self.services, &self.config, op, &args).unwrap_or_default()
    }
}

/// A rule's instance template and its config.
type ComponentRule = (FloorPre<ComponentState>, Arc<BTreeMap<String, String>>);

pub struct FloorComponent {
    engine: Engine,
    rules: Vec<ComponentRule>,
}

impl FloorComponent {
    pub fn load(
        root: &Path,
        configs: &[BTreeMap<String, String>],
        instances: u32,
    ) -> Result<Self, String> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(instances)
            .total_core_instances(instances.saturating_mul(8))
            .total_memories(instances.saturating_mul(2))
            .total_tables(instances.saturating_mul(4))
            .max_core_instances_per_component(16)
            .max_memories_per_component(2)
            .max_tables_per_component(8)
            .max_memory_size(256 << 20)
            .linear_memory_keep_resident(2 << 20)
            .table_keep_resident(2 << 20);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .max_wasm_stack(512 << 10)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| e.to_string())?;
        let mut linker = Linker::<ComponentState>::new(&engine);
        Floor::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(|e| e.to_string())?;
        let mut rules = Vec::new();
        for (name, config) in RULES.iter().zip(configs) {
            let path = root.join(format!("target/floor-component/{name}.wasm"));
            let component = Component::from_file(&engine, &path).map_err(|e| {
                format!(
                    "cannot load {} ({e}): build it with `cargo xtask bench`",
                    path.display()
                )
            })?;
            let pre = linker
                .instantiate_pre(&component)
                .and_then(FloorPre::new)
                .map_err(|e| e.to_string())?;
            rules.push((pre, Arc::new(config.clone())));
        }
        Ok(Self { engine, rules })
    }

    /// The pipeline's semantics, each rule in a fresh component instance.
    pub fn evaluate(&self, login: &LoginAttempt, services: &Services) -> ModelVerdict {
        run_rules(login, &self.rules, |(pre, config), ctx| {
            let state = ComponentState {
                services: services.clone(),
                config: config.clone(),
            };
            let mut store = Store::new(&self.engine, state);
            store.set_epoch_deadline(1000);
            let answer = pre
                .instantiate(&mut store)
                .and_then(|floor| floor.call_on_login(&mut store, &encode(ctx)))
                .ok()?;
            decode::<Result<Outcome, RuleError>>(&answer)?.ok()
        })
    }
}
