//! How far past its deadline a runaway rule runs, alone and with other evaluations
//! beside it on the same cores.
//!
//!     cargo bench -p portcullis --bench deadline [-- --deadline-ms 50 --runs 60 --parallel 1,4,8 --json]
//!
//! Every evaluation runs `rules/testing/infinite-loop` (it never returns) with the
//! deadline given; `P` threads each run `runs` evaluations back to back. Overshoot is
//! the trace's `duration_us` (sandbox creation to the trap) past the deadline, as a
//! share of the deadline. The machine's other load is whatever is running: the
//! report prints the load average beside the numbers.

use std::path::PathBuf;
use std::sync::Barrier;

use portcullis::{FaultKind, LoginAttempt, PipelineConfig, Runtime, Services};
use serde_json::json;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

struct Options {
    deadline_ms: u64,
    runs: usize,
    parallel: Vec<usize>,
    json: bool,
}

fn options() -> Options {
    let mut options = Options {
        deadline_ms: 50,
        runs: 60,
        parallel: vec![1, 4, 8],
        json: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().expect("a value after the flag");
        match arg.as_str() {
            "--deadline-ms" => options.deadline_ms = value().parse().expect("milliseconds"),
            "--runs" => options.runs = value().parse().expect("a count"),
            "--parallel" => {
                options.parallel = value()
                    .split(',')
                    .map(|n| n.parse().expect("counts, comma-separated"))
                    .collect()
            }
            "--json" => options.json = true,
            // `cargo bench` passes `--bench`.
            _ => {}
        }
    }
    options
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    let options = options();
    let guest = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
        .join("wasm32-wasip2/guest/guest_infinite_loop.wasm");
    assert!(
        guest.exists(),
        "{} is missing: cargo xtask build-rules",
        guest.display()
    );
    let config = PipelineConfig::parse(
        &format!(
            "[[rule]]\nname = \"spin\"\ncomponent = \"{}\"\ndeadline_ms = {}\n",
            guest.display(),
            options.deadline_ms
        ),
        &root(),
    )
    .expect("config");
    let runtime = Runtime::new(&config.engine).expect("engine");
    let pipeline = runtime.load(&config).expect("pipeline");
    let login = LoginAttempt::from_json(
        r#"{"transaction_id": "tx-spin", "time_ms": 1764403200000, "connection": "db",
            "client_id": "paste-web", "email": "carol@example.com",
            "request": {"ip": "192.0.2.1", "user_agent": "bench"}}"#,
    )
    .expect("login");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    let mut reports = Vec::new();
    for &parallel in &options.parallel {
        let barrier = Barrier::new(parallel);
        let mut overshoots: Vec<f64> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..parallel)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        (0..options.runs)
                            .map(|_| {
                                let verdict = pipeline.evaluate(&login, &Services::none());
                                let trace = &verdict.trace[0];
                                assert_eq!(
                                    trace.fault.as_ref().map(|f| f.kind),
                                    Some(FaultKind::Deadline),
                                    "{trace:?}"
                                );
                                let ran_ms = trace.duration_us as f64 / 1000.0;
                                (ran_ms - options.deadline_ms as f64) / options.deadline_ms as f64
                                    * 100.0
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            threads
                .into_iter()
                .flat_map(|t| t.join().expect("bench thread"))
                .collect()
        });
        overshoots.sort_by(f64::total_cmp);
        let report = json!({
            "parallel": parallel,
            "cores": cores,
            "deadline_ms": options.deadline_ms,
            "runs": overshoots.len(),
            "overshoot_pct": {
                "min": percentile(&overshoots, 0.0),
                "p50": percentile(&overshoots, 0.5),
                "p99": percentile(&overshoots, 0.99),
                "max": percentile(&overshoots, 1.0),
            },
            "load_average": load_average(),
        });
        if !options.json {
            println!(
                "{parallel} in parallel on {cores} cores, deadline {} ms, {} runs: overshoot p50 {:.1}%  p99 {:.1}%  max {:.1}%  (min {:.1}%; load {})",
                options.deadline_ms,
                overshoots.len(),
                percentile(&overshoots, 0.5),
                percentile(&overshoots, 0.99),
                percentile(&overshoots, 1.0),
                percentile(&overshoots, 0.0),
                load_average(),
            );
        }
        reports.push(report);
    }
    if options.json {
        println!("{}", serde_json::to_string_pretty(&reports).expect("json"));
    }
}
