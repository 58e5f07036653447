//! `portcullis check`: load and validate a pipeline, list its rules.

use anyhow::Result;
use portcullis::Pipeline;

use super::Exit;
use super::options::ConfigArg;
use super::stores::directory_of;

/// Load and validate a pipeline; print each rule with its imports and grants.
#[derive(clap::Args)]
pub struct Check {
    #[command(flatten)]
    config: ConfigArg,
}

impl Check {
    pub fn execute(self) -> Result<Exit> {
        let pipeline = Pipeline::load(&self.config.config)?;
        for (position, rule) in pipeline.rules().iter().enumerate() {
            print_rule(position + 1, rule);
        }
        // Whether the old SMS provider can be retired yet.
        let loaded = self.config.load()?;
        if loaded.mfa.legacy_sms.is_some() && loaded.state.is_some() {
            let depending = directory_of(&loaded)?.factors_depending_on_legacy()?;
            if depending > 0 {
                eprintln!(
                    "warning: {depending} active SMS factors still depend on the old provider \
                     (no phone on file, or reverted): it cannot be retired yet"
                );
            } else {
                println!(
                    "the old SMS provider is no longer needed: no active factor depends on it"
                );
            }
        }
        println!("ok: {} rule(s)", pipeline.rules().len());
        Ok(Exit::Done)
    }
}

fn print_rule(position: usize, rule: &portcullis::LoadedRule) {
    let s = &rule.settings;
    let grants: Vec<String> = s.grants.iter().map(|g| g.to_string()).collect();
    println!(
        "{}. {} ({}) deadline {} ms, memory {} MiB, on_error {:?}, {} component, contract {}{}",
        position,
        s.name,
        s.component.display(),
        s.deadline_ms,
        s.memory_mb,
        s.on_error,
        if rule.resumable { "resumable" } else { "plain" },
        rule.contract_version(),
        match rule.source {
            portcullis::CompileSource::Cache => " (from compile cache)",
            portcullis::CompileSource::Compiled => "",
        }
    );
    if let Some(condition) = s.only_when {
        println!("   only when: {condition:?} (skipped for other logins)");
    }
    println!("   grants:  {}", list_or_none(&grants));
    let effects: Vec<&str> = s.effects.iter().map(|e| e.name()).collect();
    println!(
        "   effects: {}{}",
        list_or_none(&effects),
        if s.protected_keys.is_empty() {
            String::new()
        } else {
            format!("; protected keys: {}", s.protected_keys.join(", "))
        }
    );
    for import in &rule.imports {
        let note = import
            .capability
            .map(|c| format!("  [capability: {c}]"))
            .unwrap_or_default();
        println!("   imports: {}{note}", import.name);
    }
}

fn list_or_none(items: &[impl AsRef<str>]) -> String {
    if items.is_empty() {
        "(none)".into()
    } else {
        items
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<_>>()
            .join(", ")
    }
}
