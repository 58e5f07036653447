//! `portcullis check`: load and validate a pipeline, list its rules, and find, before
//! `run` or `serve` does, everything in the config or the environment they would
//! refuse. It opens no store that is not there: a check must not create what it checks.
//!
//! Exit codes (README, "Exit codes"): 0 nothing found; 1 warnings only (the config
//! works, but something in it is probably not what is meant); 2 errors (`run` or
//! `serve` would refuse the config, or the pipeline does not load).

use anyhow::Result;
use portcullis::{Pipeline, PipelineConfig};

use super::Exit;
use super::options::{ConfigArg, JsonArg};
use super::stores::{directory_of, missing_directory};

/// Load and validate a pipeline; print each rule with its imports and grants; report
/// what `run` and `serve` would refuse (errors, exit 2) and what is probably wrong
/// (warnings, exit 1), each with what to do.
#[derive(clap::Args)]
pub struct Check {
    #[command(flatten)]
    config: ConfigArg,
    /// Check for `serve` too: what only `serve` needs (callers and their tokens, the
    /// admin token, outbox endpoints) is an error instead of a warning.
    #[arg(long)]
    serve: bool,
    #[command(flatten)]
    json: JsonArg,
}

/// What a check found.
#[derive(Default)]
struct Findings {
    errors: Vec<String>,
    warnings: Vec<String>,
    /// What it concluded that is neither (the old SMS provider is no longer needed).
    notes: Vec<String>,
}

impl Findings {
    fn error(&mut self, text: String) {
        self.errors.push(text);
    }

    fn warning(&mut self, text: String) {
        self.warnings.push(text);
    }

    /// An error for `serve`, a warning for a config only `run` uses.
    fn for_serve(&mut self, serve: bool, text: String) {
        if serve {
            self.error(text);
        } else {
            self.warning(format!("{text} (an error with --serve)"));
        }
    }
}

impl Check {
    pub fn execute(self) -> Result<Exit> {
        let pipeline = Pipeline::load(&self.config.config)?;
        let json = self.json.json;
        if !json {
            for (position, rule) in pipeline.rules().iter().enumerate() {
                print_rule(position + 1, rule);
            }
        }
        let config = self.config.load()?;
        let mut findings = Findings::default();
        secrets(&config, &mut findings);
        stores(&config, &mut findings)?;
        legacy_stores(&config, &mut findings)?;
        serving(&config, self.serve, &mut findings);
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "config": self.config.config,
                    "serve": self.serve,
                    "rules": pipeline.rules().iter().map(rule_json).collect::<Vec<_>>(),
                    "errors": findings.errors,
                    "warnings": findings.warnings,
                    "notes": findings.notes,
                }))?
            );
        } else {
            for note in &findings.notes {
                println!("{note}");
            }
            for error in &findings.errors {
                eprintln!("error: {error}");
            }
            for warning in &findings.warnings {
                eprintln!("warning: {warning}");
            }
        }
        let rules = pipeline.rules().len();
        if !findings.errors.is_empty() {
            return Ok(Exit::Usage(format!(
                "{} error(s), {} warning(s) in {}: `run`{} would refuse it",
                findings.errors.len(),
                findings.warnings.len(),
                self.config.config.display(),
                if self.serve { " or `serve`" } else { "" }
            )));
        }
        if !findings.warnings.is_empty() {
            if !json {
                println!("{rules} rule(s), {} warning(s)", findings.warnings.len());
            }
            return Ok(Exit::Failures(format!(
                "{} warning(s) in {} (see {})",
                findings.warnings.len(),
                self.config.config.display(),
                if json { "\"warnings\"" } else { "above" }
            )));
        }
        if !json {
            println!("ok: {rules} rule(s)");
        }
        Ok(Exit::Done)
    }
}

/// The keys and provider secrets `run` and `serve` read when they start.
fn secrets(config: &PipelineConfig, findings: &mut Findings) {
    if let Some(name) = &config.resume.key_env {
        match std::env::var(name) {
            Err(_) => findings.error(format!(
                "[resume] key_env names {name}, which is not set: export it (32+ random characters, the same for every process)"
            )),
            Ok(key) if key.len() < 32 => findings.error(format!(
                "{name} ([resume] key_env) holds fewer than 32 characters: use a longer random key"
            )),
            Ok(_) => {}
        }
    }
    if (config.mfa.verify.is_some() || config.mfa.legacy_sms.is_some())
        && let Err(e) = config.mfa.key_ring()
    {
        findings.error(format!(
            "[mfa] keys: {e}: set keys_env or keys_file to the phone-sealing keys"
        ));
    }
    if let Some(legacy) = &config.mfa.legacy_sms
        && let Err(e) = portcullis::config::secret_from(
            "[mfa.legacy_sms]",
            legacy.api_key_env.as_deref(),
            legacy.api_key_file.as_deref(),
        )
    {
        findings.error(format!("{e}: the old provider's API key is needed"));
    }
    if let Some(verify) = &config.mfa.verify
        && let Err(e) = portcullis::config::secret_from(
            "[mfa.verify]",
            verify.auth_token_env.as_deref(),
            verify.auth_token_file.as_deref(),
        )
    {
        findings.error(format!("{e}: the new provider's auth token is needed"));
    }
    if let Err(e) = config.audit.keys() {
        findings.error(format!("{e}: the audit log's key is needed"));
    }
    if let Some(recovery) = &config.recovery
        && let Err(e) = recovery.key()
    {
        findings.error(format!("{e}: the recovery codes' key is needed"));
    }
}

/// The products' own stores: `run` refuses a config whose store is not there, and
/// `serve` denies every login that needs it (a store that is down): an error, so the
/// preflight's exit code says what `run` will do. (A directory not made yet stays a
/// warning: `run` and `serve` make it.)
fn legacy_stores(config: &PipelineConfig, findings: &mut Findings) -> Result<()> {
    for (product, path) in super::stores::missing_legacy(config)? {
        findings.error(format!(
            "there is no legacy store for {product} at {}: `run` refuses the config and `serve` denies every login that needs it; correct [state.legacy] {product} (`seed` creates the demo's)",
            path.display()
        ));
    }
    Ok(())
}

/// The directory store: there, and what it says about retiring the old SMS provider.
fn stores(config: &PipelineConfig, findings: &mut Findings) -> Result<()> {
    let Some(settings) = &config.state else {
        return Ok(());
    };
    let sms = config.mfa.legacy_sms.is_some() || config.mfa.verify.is_some();
    if let Some(path) = missing_directory(config)? {
        findings.warning(format!(
            "there is no directory store at {}: `serve` and `run` would create it empty{}; if the directory already exists, correct [state] directory",
            path.display(),
            if sms {
                " (and nothing can be said about the old SMS provider)"
            } else {
                ""
            }
        ));
        return Ok(());
    }
    if !sms {
        return Ok(());
    }
    let state = match directory_of(config) {
        Ok(state) => state,
        Err(e) => {
            findings.error(super::exit::causes(&e));
            return Ok(());
        }
    };
    let factors: u64 = state.mfa_status()?.iter().map(|c| c.factors).sum();
    let depending = state.factors_depending_on_legacy()?;
    let store = store_name(&settings.directory);
    match (config.mfa.legacy_sms.is_some(), depending) {
        (true, 0) => findings.notes.push(format!(
            "the old SMS provider is no longer needed: none of the {factors} SMS factor(s) in {store} depends on it"
        )),
        (true, depending) => findings.warning(format!(
            "{depending} of the {factors} SMS factor(s) in {store} still depend on the old provider (no phone on file, or reverted): it cannot be retired yet (`portcullis mfa status` shows where they are)"
        )),
        (false, 0) => {}
        (false, depending) => findings.error(format!(
            "the config has no [mfa.legacy_sms], but {depending} of the {factors} SMS factor(s) in {store} still depend on the old provider: put [mfa.legacy_sms] back until `portcullis mfa status` shows none"
        )),
    }
    Ok(())
}

/// A store's URL as printed: without the password a server URL may hold.
fn store_name(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://…{}", &url[at..]),
        _ => url.to_owned(),
    }
}

/// What `serve` needs beyond `run`.
fn serving(config: &PipelineConfig, serve: bool, findings: &mut Findings) {
    if config.server.callers.is_empty() {
        findings.for_serve(
            serve,
            "there is no [[server.caller]]: `serve` would answer every /v1/login with 401; add one per gateway, with name and token_env".into(),
        );
    } else if let Err(e) = portcullis::server::Callers::load(&config.server.callers) {
        findings.for_serve(serve, format!("{e}: `serve` would refuse to start"));
    }
    if let Err(e) = portcullis::server::Callers::load(&config.support.agents) {
        findings.for_serve(
            serve,
            format!(
                "{}: `serve` would refuse to start",
                e.replace("server.caller", "support.agent")
            ),
        );
    }
    if let Some(name) = &config.server.admin_token_env {
        match std::env::var(name) {
            Err(_) => findings.for_serve(
                serve,
                format!("server.admin_token_env names {name}, which is not set: `serve` would refuse to start"),
            ),
            Ok(token) if token.len() < 32 => findings.for_serve(
                serve,
                format!("{name} (server.admin_token_env) holds fewer than 32 characters: `serve` would refuse to start"),
            ),
            Ok(_) => {}
        }
    }
    // The outbox delivers each message to its product's endpoint (the key's prefix).
    let enqueuing: Vec<&str> = config
        .rules
        .iter()
        .filter(|r| {
            r.effects
                .contains(&portcullis::config::EffectKind::EnqueueOutbox)
        })
        .map(|r| r.name.as_str())
        .collect();
    if !enqueuing.is_empty() {
        let products: Vec<&str> = config
            .state
            .iter()
            .flat_map(|s| s.legacy.keys())
            .map(String::as_str)
            .filter(|p| !config.outbox.endpoints.contains_key(*p))
            .collect();
        if !products.is_empty() {
            findings.for_serve(
                serve && config.server.dispatch_outbox,
                format!(
                    "{} enqueue(s) outbox messages, and [outbox.endpoints] names no endpoint for {}: every message to them would be dead-lettered; add `{} = \"https://…\"` under [outbox.endpoints]",
                    enqueuing.join(", "),
                    products.join(", "),
                    products[0]
                ),
            );
        }
    }
}

fn print_rule(position: usize, rule: &portcullis::LoadedRule) {
    let s = &rule.settings;
    let grants: Vec<String> = s.grants.iter().map(|g| g.to_string()).collect();
    println!(
        "{}. {} ({}) deadline {} ms, memory {} MiB, on_error = \"{}\", {} component, contract {}{}",
        position,
        s.name,
        s.component.display(),
        s.deadline_ms,
        s.memory_mb,
        s.on_error.name(),
        if rule.resumable { "resumable" } else { "plain" },
        rule.contract_version(),
        match rule.source {
            portcullis::CompileSource::Cache => " (from compile cache)",
            portcullis::CompileSource::Compiled => "",
        }
    );
    if let Some(bytes) = rule.data_image_bytes {
        println!(
            "   data image: {bytes} bytes, copied back into its memory at every login (docs/writing-rules.md)"
        );
    }
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

/// One rule as `check --json` lists it: what the text lines say.
fn rule_json(rule: &portcullis::LoadedRule) -> serde_json::Value {
    let s = &rule.settings;
    serde_json::json!({
        "name": s.name,
        "component": s.component,
        "deadline_ms": s.deadline_ms,
        "memory_mb": s.memory_mb,
        "on_error": s.on_error.name(),
        "resumable": rule.resumable,
        "contract": rule.contract_version().to_string(),
        "from_compile_cache": matches!(rule.source, portcullis::CompileSource::Cache),
        "only_when": s.only_when.map(|c| format!("{c:?}")),
        "grants": s.grants.iter().map(|g| g.to_string()).collect::<Vec<_>>(),
        "effects": s.effects.iter().map(|e| e.name()).collect::<Vec<_>>(),
        "protected_keys": s.protected_keys,
        "imports": rule.imports.iter().map(|i| serde_json::json!({
            "name": i.name,
            "capability": i.capability.map(|c| c.to_string()),
        })).collect::<Vec<_>>(),
    })
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
