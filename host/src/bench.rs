//! `portcullis bench`: what a pipeline costs per login. Each scenario is a recording
//! (a login and its capability answers), served from memory: no disk and no password
//! hashing in the timed loop, so the numbers are the sandboxes' and the rules' own.

use crate::runtime::verdict::Decision;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::config::PipelineConfig;
use crate::error::LoadError;
use crate::model::LoginAttempt;
use crate::model::Services;
use crate::replay::record::{Expectation, MemoryAnswers, Recording};
use crate::runtime::engine::Runtime;
use crate::runtime::pipeline::Pipeline;

#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub p50_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
}

impl Percentiles {
    pub fn of(mut samples: Vec<f64>) -> Self {
        if samples.is_empty() {
            return Self {
                p50_us: 0.0,
                p99_us: 0.0,
                mean_us: 0.0,
            };
        }
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
pub struct ScenarioReport {
    pub scenario: String,
    /// The whole evaluation, one at a time: the login's latency.
    pub pipeline: Percentiles,
    /// The evaluation and then `Pipeline::prepare` making the next login's instances
    /// (`engine.warm_instances`): the work per login, whoever waits for it.
    pub pipeline_and_prepare: Percentiles,
    pub rules: Vec<RuleLatency>,
    /// Evaluations per second with `threads` threads evaluating at once.
    pub evaluations_per_second: f64,
    pub threads: usize,
    /// The largest guest linear memory an evaluation held at once (rules run one
    /// after another, each in its own sandbox).
    pub peak_memory_kib_per_evaluation: u64,
    /// The verdict matched the recording's: the bench measured the path it claims.
    pub verdict_as_recorded: bool,
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub iterations: usize,
    /// Loading the pipeline with an empty compile cache (compiles every rule).
    pub load_cold_ms: f64,
    /// Loading it again in a new engine, from the cache.
    pub load_cached_ms: f64,
    pub scenarios: Vec<ScenarioReport>,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("scenario {}: {message}", path.display())]
    Scenario { path: PathBuf, message: String },
    #[error("counting instructions: {0}")]
    Instructions(String),
}

/// A recorded login ready to evaluate again and again.
pub struct Scenario {
    pub name: String,
    pub login: LoginAttempt,
    pub services: Services,
    pub expected: Expectation,
}

impl Scenario {
    /// The first step of a recording, its directory user resolved from its answers.
    pub fn from_recording(path: &Path) -> Result<Self, BenchError> {
        let fail = |message: String| BenchError::Scenario {
            path: path.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let recording: Recording = serde_json::from_str(&text).map_err(|e| fail(e.to_string()))?;
        let step = recording
            .steps
            .first()
            .ok_or_else(|| fail("no steps".into()))?;
        let recorded = step
            .login
            .as_ref()
            .ok_or_else(|| fail("the first step is not a login".into()))?;
        let mut login = recorded.login.to_attempt(recorded.login.time_ms);
        login.password = recorded.login.has_password.then(|| "bench-password".into());
        let services = MemoryAnswers::new(&step.calls).services();
        if login.user.is_none() {
            login.user = services
                .directory
                .find_by_email(&login.email)
                .map_err(|e| fail(e.message))?
                .into_iter()
                .next();
        }
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Self {
            name,
            login,
            services,
            expected: step.expect.clone(),
        })
    }
}

pub fn load_times(config: &PipelineConfig) -> Result<(f64, f64), LoadError> {
    let mut config = config.clone();
    let cache =
        tempfile::tempdir().map_err(|e| LoadError::Engine(format!("temporary cache dir: {e}")))?;
    config.engine.cache_dir = Some(cache.path().to_owned());
    let started = Instant::now();
    drop(Runtime::new(&config.engine)?.load(&config)?);
    let cold = started.elapsed().as_secs_f64() * 1e3;
    let started = Instant::now();
    drop(Runtime::new(&config.engine)?.load(&config)?);
    Ok((cold, started.elapsed().as_secs_f64() * 1e3))
}

pub fn measure(
    pipeline: &Pipeline,
    scenario: &Scenario,
    iterations: usize,
    threads: usize,
) -> ScenarioReport {
    let evaluate = || pipeline.evaluate(&scenario.login, &scenario.services);
    let first = evaluate();
    // The pipeline's verdict, before the gateway performs it: a challenge's code is
    // not sent here, so the recording's masked destination is not expected.
    let mut expected = scenario.expected.clone();
    if let Some(Decision::Challenge { destination, .. }) = &mut expected.decision {
        *destination = None;
    }
    let verdict_as_recorded =
        serde_json::to_value(Expectation::of(&first)).ok() == serde_json::to_value(&expected).ok();
    // As a gateway runs it: each login, then the next one's instances made ahead.
    let evaluate = || {
        let verdict = evaluate();
        pipeline.prepare();
        verdict
    };
    for _ in 0..(iterations / 10).max(20) {
        evaluate();
    }
    let mut per_rule: Vec<Vec<f64>> = vec![Vec::with_capacity(iterations); pipeline.rules().len()];
    let mut totals = Vec::with_capacity(iterations);
    let mut with_prepare = Vec::with_capacity(iterations);
    let mut peak_memory = 0;
    for _ in 0..iterations.max(1) {
        let started = Instant::now();
        let verdict = pipeline.evaluate(&scenario.login, &scenario.services);
        totals.push(started.elapsed().as_secs_f64() * 1e6);
        pipeline.prepare();
        with_prepare.push(started.elapsed().as_secs_f64() * 1e6);
        for (samples, trace) in per_rule.iter_mut().zip(&verdict.trace) {
            samples.push(trace.duration_us as f64);
            peak_memory = peak_memory.max(trace.memory_kib);
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

    let per_thread = iterations.max(1);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                for _ in 0..per_thread {
                    evaluate();
                }
            });
        }
    });
    let evaluations_per_second = (per_thread * threads) as f64 / started.elapsed().as_secs_f64();

    ScenarioReport {
        scenario: scenario.name.clone(),
        pipeline: Percentiles::of(totals),
        pipeline_and_prepare: Percentiles::of(with_prepare),
        rules,
        evaluations_per_second,
        threads,
        peak_memory_kib_per_evaluation: peak_memory,
        verdict_as_recorded,
    }
}

pub fn run(
    config_path: &Path,
    recordings: &[PathBuf],
    iterations: usize,
) -> Result<BenchReport, BenchError> {
    let config = PipelineConfig::load(config_path).map_err(LoadError::from)?;
    let (load_cold_ms, load_cached_ms) = load_times(&config)?;
    let pipeline = Runtime::new(&config.engine)?.load(&config)?;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let scenarios = recordings
        .iter()
        .map(|path| {
            Ok(measure(
                &pipeline,
                &Scenario::from_recording(path)?,
                iterations,
                threads,
            ))
        })
        .collect::<Result<_, BenchError>>()?;
    Ok(BenchReport {
        iterations,
        load_cold_ms,
        load_cached_ms,
        scenarios,
    })
}

/// Evaluations per counted run; two runs differ by this many, so one evaluation's
/// instructions are the difference divided by it, without start-up or compilation.
const COUNT_STEP: usize = 200;

/// Under valgrind (see [`instructions_per_evaluation`]): `n` evaluations of one
/// scenario and nothing else, with an engine small enough for valgrind to map.
pub fn count_only(config_path: &Path, recording: &Path, n: usize) -> Result<(), BenchError> {
    let mut config = PipelineConfig::load(config_path).map_err(LoadError::from)?;
    config.engine.max_instances = 2;
    // What a login costs whoever does it: the instances are made in it.
    config.engine.warm_instances = 0;
    let pipeline = Runtime::new(&config.engine)?.load(&config)?;
    let scenario = Scenario::from_recording(recording)?;
    for _ in 0..n {
        std::hint::black_box(pipeline.evaluate(&scenario.login, &scenario.services));
    }
    Ok(())
}

/// Instructions one evaluation of `recording` executes, counted by callgrind (the same
/// on a busy machine): this binary runs `bench --count-only` under valgrind with
/// `COUNT_STEP` and twice that many evaluations, and the difference is divided.
pub fn instructions_per_evaluation(
    binary: &Path,
    config_path: &Path,
    recording: &Path,
) -> Result<u64, BenchError> {
    let count = |n: usize| -> Result<u64, BenchError> {
        let out =
            tempfile::NamedTempFile::new().map_err(|e| BenchError::Instructions(e.to_string()))?;
        let status = std::process::Command::new("valgrind")
            .args(["--tool=callgrind", "--quiet"])
            .arg(format!("--callgrind-out-file={}", out.path().display()))
            .arg(binary)
            .arg("bench")
            .arg("--config")
            .arg(config_path)
            .arg("--recording")
            .arg(recording)
            .arg("--count-only")
            .arg(n.to_string())
            .status()
            .map_err(|e| {
                BenchError::Instructions(format!(
                    "cannot run valgrind ({e}); install it (apt-get install valgrind)"
                ))
            })?;
        if !status.success() {
            return Err(BenchError::Instructions(format!(
                "valgrind exited with {status}"
            )));
        }
        let text = std::fs::read_to_string(out.path())
            .map_err(|e| BenchError::Instructions(e.to_string()))?;
        text.lines()
            .find_map(|l| {
                l.strip_prefix("totals:")
                    .or_else(|| l.strip_prefix("summary:"))
            })
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| BenchError::Instructions("no totals in callgrind's output".into()))
    };
    // A first run under valgrind fills the compile cache: the cache is keyed by the
    // engine's settings and the CPU features it sees, and valgrind's CPU differs.
    count(0)?;
    let (low, high) = (count(COUNT_STEP)?, count(2 * COUNT_STEP)?);
    if high <= low {
        return Err(BenchError::Instructions(format!(
            "{} evaluations counted {high} instructions, {COUNT_STEP} counted {low}: the runs \
             were not alike (did one of them compile?)",
            2 * COUNT_STEP
        )));
    }
    Ok((high - low) / COUNT_STEP as u64)
}
