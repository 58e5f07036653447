//! The state every request of `serve` shares: the live gateway, the one before it
//! (for rollback), the callers, and what a reload needs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::{Callers, Metrics, ServeError, import_api};
use crate::config::PipelineConfig;
use crate::flows::{Gateway, GatewayError};
use crate::runtime::engine::Runtime;

/// The live pipeline, the one before it (for rollback), and what reloads need.
pub struct AppState {
    pub(super) gateway: ArcSwap<Gateway>,
    pub(super) previous: Mutex<Option<Arc<Gateway>>>,
    pub(super) runtime: Runtime,
    pub(super) config_path: PathBuf,
    pub(super) admin_token: Option<String>,
    pub(super) callers: Callers,
    /// Support agents (`[[support.agent]]`), for the console's admin API.
    pub(super) agents: Callers,
    pub(super) max_body: usize,
    pub(super) request_timeout: std::time::Duration,
    pub(super) evaluations: tokio::sync::Semaphore,
    /// The users-imports API, when `[server.import_api]` is set (a reload keeps it).
    pub(super) import_api: Option<Arc<import_api::ImportApi>>,
    /// The semaphore's size: all free means no evaluation is running.
    pub(super) evaluation_slots: usize,
    /// The host's clock for every gateway this state opens; `None`: the system's.
    pub(super) clock: Option<Arc<dyn crate::flows::clock::Clock>>,
    pub metrics: Metrics,
}

impl AppState {
    /// Loads the config and its pipeline; the engine is kept for every reload.
    pub fn load(config_path: &Path) -> Result<Self, ServeError> {
        Self::load_with_clock(config_path, None)
    }

    /// As [`AppState::load`], deciding time by `clock` (tests move it by hand), in
    /// this gateway and every one a reload opens.
    pub fn load_with_clock(
        config_path: &Path,
        clock: Option<Arc<dyn crate::flows::clock::Clock>>,
    ) -> Result<Self, ServeError> {
        let config = PipelineConfig::load(config_path).map_err(|e| GatewayError::Load(e.into()))?;
        let runtime = Runtime::new(&config.engine).map_err(GatewayError::Load)?;
        let mut gateway = Gateway::open(&config, &runtime)?;
        if let Some(clock) = &clock {
            gateway = gateway.with_clock(clock.clone());
        }
        let admin_token = match &config.server.admin_token_env {
            Some(name) => {
                let token = std::env::var(name).map_err(|_| {
                    ServeError::Config(format!(
                        "server.admin_token_env names {name}, which is not set"
                    ))
                })?;
                if token.len() < 32 {
                    return Err(ServeError::Config(format!(
                        "{name} must hold at least 32 characters"
                    )));
                }
                Some(token)
            }
            None => None,
        };
        let callers = Callers::load(&config.server.callers).map_err(ServeError::Config)?;
        // Agents are callers of the admin API, each with a token of their own.
        let agents = Callers::load(&config.support.agents)
            .map_err(|e| ServeError::Config(e.replace("server.caller", "support.agent")))?;
        let import_api = config
            .server
            .import_api
            .as_ref()
            .map(|settings| {
                let protected = crate::jobs::import::records::protected_keys(&config);
                let factors = crate::jobs::import::records::FactorImport::from_config(&config)?;
                import_api::ImportApi::new(settings, protected, factors, &config.mfa).map(Arc::new)
            })
            .transpose()
            .map_err(ServeError::Config)?;
        let evaluation_slots = config.server.max_concurrent_evaluations.unwrap_or_else(|| {
            4 * std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        });
        Ok(Self {
            gateway: ArcSwap::from_pointee(gateway),
            previous: Mutex::new(None),
            runtime,
            config_path: config_path.to_owned(),
            admin_token,
            callers,
            agents,
            max_body: config.server.max_body_kb * 1024,
            request_timeout: std::time::Duration::from_millis(config.server.request_timeout_ms),
            evaluations: tokio::sync::Semaphore::new(evaluation_slots),
            import_api,
            evaluation_slots,
            clock,
            metrics: Metrics::new(),
        })
    }

    pub fn gateway(&self) -> Arc<Gateway> {
        self.gateway.load_full()
    }

    /// Re-reads the config and swaps the new pipeline in atomically. Logins already
    /// running finish on the pipeline they started with. On failure nothing changes.
    pub fn reload(&self) -> Result<usize, String> {
        let loaded = PipelineConfig::load(&self.config_path)
            .map_err(|e| e.to_string())
            .and_then(|config| Gateway::open(&config, &self.runtime).map_err(|e| e.to_string()))
            .map(|gateway| match &self.clock {
                Some(clock) => gateway.with_clock(clock.clone()),
                None => gateway,
            });
        match loaded {
            Ok(gateway) => {
                let rules = gateway.pipeline().rules().len();
                let names = |g: &Gateway| -> Vec<String> {
                    g.pipeline()
                        .rules()
                        .iter()
                        .map(|r| r.settings.name.clone())
                        .collect()
                };
                let now = names(&gateway);
                let old = self.gateway.swap(Arc::new(gateway));
                let before = names(&old);
                *self.previous.lock().unwrap_or_else(|p| p.into_inner()) = Some(old);
                self.metrics.reload("ok");
                // One line that says what was reloaded (shown by default: see main.rs).
                let differ = |a: &[String], b: &[String]| -> Vec<String> {
                    a.iter().filter(|n| !b.contains(n)).cloned().collect()
                };
                let (added, removed) = (differ(&now, &before), differ(&before, &now));
                tracing::info!(
                    "pipeline reloaded from {}: {rules} rule(s) ({}){}{}",
                    self.config_path.display(),
                    now.join(", "),
                    if added.is_empty() {
                        String::new()
                    } else {
                        format!("; added {}", added.join(", "))
                    },
                    if removed.is_empty() {
                        String::new()
                    } else {
                        format!("; removed {}", removed.join(", "))
                    }
                );
                Ok(rules)
            }
            Err(e) => {
                self.metrics.reload("failed");
                tracing::error!("reload failed, keeping the running pipeline: {e}");
                Err(e)
            }
        }
    }

    /// Puts the pipeline before the last reload back (and keeps the current one as the
    /// next rollback target).
    pub fn rollback(&self) -> Result<usize, String> {
        let mut previous = self.previous.lock().unwrap_or_else(|p| p.into_inner());
        let Some(older) = previous.take() else {
            return Err("there is no previous pipeline to roll back to".into());
        };
        let rules = older.pipeline().rules().len();
        *previous = Some(self.gateway.swap(older));
        self.metrics.reload("rollback");
        tracing::info!("pipeline rolled back to the one before the last reload: {rules} rule(s)");
        Ok(rules)
    }
}
