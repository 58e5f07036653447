//! Rules without WASI: the migration rules are built for `wasm32-unknown-unknown` (one
//! core module, no imports but the contract's) and wrapped into components here, with
//! the component type wit-bindgen embedded in each.

use std::path::Path;

use anyhow::{Context, Result};

use crate::{cargo, run, workspace_root};

pub const CORE_TARGET: &str = "wasm32-unknown-unknown";

/// The rule crates built without WASI: the migration rules, the docs' example rule
/// (tag-client) and the test guests built the same way. The other test guests keep
/// WASI: a host must run those unchanged.
pub const RULES: &[&str] = &[
    "rule-bulk-imported-skip",
    "rule-migrate-on-login",
    "rule-ownership-check",
    "rule-id-propagation",
    "rule-mfa-route",
    "rule-recovery-guard",
    "rule-tag-client",
    "guest-model-panic",
    "guest-warm-probe",
];

/// Builds [`RULES`] as core modules and writes each as a component to
/// `target/rules/<crate_name>.wasm`.
pub fn build() -> Result<()> {
    build_into(RULES, None, "target/rules", Output::Component)
}

/// The migration rules the benchmark's floor runs: contract 0.1.0, `on_login` only.
pub const FLOOR_RULES: &[&str] = &[
    "rule-bulk-imported-skip",
    "rule-migrate-on-login",
    "rule-ownership-check",
    "rule-id-propagation",
];

/// Builds [`FLOOR_RULES`] as plain core modules over `rule_model`'s floor ABI (its
/// `floor` feature) to `target/floor/<crate_name>.wasm`. The same core output paths as
/// [`build`]: run this before it, and `build` rebuilds the components' modules.
pub fn build_floor() -> Result<()> {
    build_into(FLOOR_RULES, Some("floor"), "target/floor", Output::Core)
}

/// The same rules as components over buffers (`rule_model`'s `floor-component`
/// feature), to `target/floor-component/<crate_name>.wasm`: what the component model
/// costs above the floor once the typed context is out of the way.
pub fn build_floor_component() -> Result<()> {
    build_into(
        FLOOR_RULES,
        Some("floor-component"),
        "target/floor-component",
        Output::Component,
    )
}

/// What each built core module becomes in the output directory.
enum Output {
    Core,
    Component,
}

/// Builds `rules` for [`CORE_TARGET`] (with a `rule_model` feature) and writes each to
/// `out` (relative to the workspace), as the core module or wrapped as a component.
fn build_into(rules: &[&str], feature: Option<&str>, out: &str, output: Output) -> Result<()> {
    crate::ensure_target(CORE_TARGET)?;
    let mut build = cargo();
    build.args(["build", "--profile", "guest", "--target", CORE_TARGET]);
    if let Some(feature) = feature {
        build.args(["--features", &format!("portcullis-rule-model/{feature}")]);
    }
    for rule in rules {
        build.args(["-p", rule]);
    }
    run(build)?;
    let root = workspace_root();
    let out = root.join(out);
    std::fs::create_dir_all(&out)?;
    for rule in rules {
        let name = format!("{}.wasm", rule.replace('-', "_"));
        let core = root
            .join("target")
            .join(CORE_TARGET)
            .join("guest")
            .join(&name);
        match output {
            Output::Core => {
                std::fs::copy(&core, out.join(&name))
                    .with_context(|| format!("cannot copy {}", core.display()))?;
            }
            Output::Component => componentize(&core, &out.join(&name))?,
        }
    }
    Ok(())
}

fn componentize(core: &Path, component: &Path) -> Result<()> {
    let module = std::fs::read(core).with_context(|| format!("cannot read {}", core.display()))?;
    let encoded = wit_component::ComponentEncoder::default()
        .module(&module)
        .and_then(|encoder| encoder.validate(true).encode())
        .with_context(|| format!("cannot make a component of {}", core.display()))?;
    std::fs::write(component, encoded)
        .with_context(|| format!("cannot write {}", component.display()))
}
