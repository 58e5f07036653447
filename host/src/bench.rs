//! `portcullis bench`: what a pipeline costs per login, and what the compile cache
//! saves at start-up. Numbers for notes and BENCHMARKS.md, not for tests.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::{LoadError, LoginAttempt, PipelineConfig, Runtime, Services};

#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub p50_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
}

impl Percentiles {
    fn of(mut samples: Vec<f64>) -> Self {
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Self {
            p50_us: at(0.50),
            p99_us: at(0.99),
            mean_us: samples.iter().sum::<f64>() / samples.len() as f64,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct RuleLatency {
    pub rule: String,
    #[serde(flatten)]
    pub latency: Percentiles,
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub iterations: usize,
    /// Loading the pipeline with an empty compile cache (compiles every rule).
    pub load_cold_ms: f64,
    /// Loading it again in a new engine, from the cache.
    pub load_cached_ms: f64,
    /// Per rule: sandbox creation + instantiate + call + output checks.
    pub rules: Vec<RuleLatency>,
    /// The whole evaluation, as a caller sees it.
    pub pipeline: Percentiles,
}

pub fn run(
    config: &Path,
    login: &LoginAttempt,
    iterations: usize,
) -> Result<BenchReport, LoadError> {
    let mut config = PipelineConfig::load(config)?;
    let cache =
        tempfile::tempdir().map_err(|e| LoadError::Engine(format!("temporary cache dir: {e}")))?;
    config.engine.cache_dir = Some(cache.path().to_owned());

    let started = Instant::now();
    drop(Runtime::new(&config.engine)?.load(&config)?);
    let load_cold_ms = started.elapsed().as_secs_f64() * 1e3;
    let started = Instant::now();
    let pipeline = Runtime::new(&config.engine)?.load(&config)?;
    let load_cached_ms = started.elapsed().as_secs_f64() * 1e3;

    let services = Services::none();
    let warm_up = (iterations / 10).max(10);
    for _ in 0..warm_up {
        pipeline.evaluate(login, &services);
    }
    let mut per_rule: Vec<Vec<f64>> = vec![Vec::with_capacity(iterations); pipeline.rules().len()];
    let mut totals = Vec::with_capacity(iterations);
    for _ in 0..iterations.max(1) {
        let started = Instant::now();
        let verdict = pipeline.evaluate(login, &services);
        totals.push(started.elapsed().as_secs_f64() * 1e6);
        for (samples, trace) in per_rule.iter_mut().zip(&verdict.trace) {
            samples.push(trace.duration_us as f64);
        }
    }
    let rules = pipeline
        .rules()
        .iter()
        .zip(per_rule)
        .filter(|(_, samples)| !samples.is_empty())
        .map(|(rule, samples)| RuleLatency {
            rule: rule.settings.name.clone(),
            latency: Percentiles::of(samples),
        })
        .collect();
    Ok(BenchReport {
        iterations: totals.len(),
        load_cold_ms,
        load_cached_ms,
        rules,
        pipeline: Percentiles::of(totals),
    })
}
