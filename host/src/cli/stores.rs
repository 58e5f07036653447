//! Opening what a config names, for the commands that work on the stores directly.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use portcullis::state::{LegacyProducts, StateStore};
use portcullis::{Gateway, PipelineConfig, Runtime};

/// The pipeline with its stores and services, as `run` and `continue` use it.
pub fn open_gateway(config_path: &Path) -> Result<Gateway> {
    let config = PipelineConfig::load(config_path)?;
    let runtime = Runtime::new(&config.engine)?;
    Ok(Gateway::open(&config, &runtime)?)
}

/// The legacy SQLite stores a config names that are not there, by product.
pub fn missing_legacy(config: &PipelineConfig) -> Result<Vec<(String, PathBuf)>> {
    Ok(portcullis::flows::legacy_urls(config)?
        .into_iter()
        .filter_map(|(product, url)| {
            let path = PathBuf::from(url.strip_prefix("sqlite://")?);
            (!path.is_file()).then_some((product, path))
        })
        .collect())
}

/// The directory store of the config's `[state]`, which must exist: the commands
/// that open it this way read it or need what it holds, and a wrong path must not
/// leave an empty store behind that reads as "nothing to do".
pub fn directory_of(config: &PipelineConfig) -> Result<Arc<dyn StateStore>> {
    existing_directory(config, None)
}

/// As [`directory_of`], signing the audit rows it appends with the `[audit]` keys
/// (`audit verify --checkpoint`).
pub fn keyed_directory_of(config: &PipelineConfig) -> Result<Arc<dyn StateStore>> {
    let audit_keys = config.audit.keys().map_err(anyhow::Error::msg)?;
    existing_directory(config, audit_keys)
}

fn existing_directory(
    config: &PipelineConfig,
    audit_keys: Option<portcullis::state::audit::ChainKeys>,
) -> Result<Arc<dyn StateStore>> {
    let settings = config
        .state
        .as_ref()
        .context("the config has no [state] section: there are no stored factors")?;
    Ok(portcullis::state::open_existing_state(
        &settings.directory,
        &config.base_dir,
        audit_keys,
    )?)
}

/// Where the config's SQLite directory store is, when it names one that is not there
/// (`run --dry-run`, `check`: nothing may create it).
pub fn missing_directory(config: &PipelineConfig) -> Result<Option<PathBuf>> {
    // A server's database is not made by connecting to it: only a file can be missing.
    if !config
        .state
        .as_ref()
        .is_some_and(|s| s.directory.starts_with("sqlite://"))
    {
        return Ok(None);
    }
    Ok(portcullis::flows::directory_path(config)?.filter(|path| !path.is_file()))
}

/// The legacy product stores a config names.
pub fn legacy_of(config: &PipelineConfig) -> Result<LegacyProducts> {
    let settings = config
        .state
        .as_ref()
        .context("the config has no [state] section: there are no legacy stores")?;
    anyhow::ensure!(
        !settings.legacy.is_empty(),
        "the config's [state.legacy] names no product"
    );
    Ok(LegacyProducts::open(&settings.legacy, &config.base_dir)?)
}

/// The keys that open stored phones, when the config has the new SMS provider.
pub fn phone_keys(
    config: &PipelineConfig,
) -> Result<Option<Arc<portcullis::mfa::sealed::KeyRing>>> {
    match &config.mfa.verify {
        Some(_) => Ok(Some(Arc::new(config.mfa.key_ring().context("[mfa] keys")?))),
        None => Ok(None),
    }
}

/// The async runtime `serve` and the outbox dispatcher run on.
pub fn tokio_runtime() -> Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    tokio::runtime::Builder::new_multi_thread()
        // Evaluations and store calls run on blocking threads. Few of them, reused:
        // every thread that ever hashed a password keeps its allocator arena, so an
        // unbounded pool would let resident memory creep up under load.
        .max_blocking_threads(4 * cores)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
