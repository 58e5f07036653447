//! Thousands of evaluations mixing faulty and healthy rules keep the process's
//! resident memory flat. Measured in a child process so other tests' allocations do
//! not blur the numbers.

use portcullis::Services;

use crate::common::{Result, load, login, rule};

const CHILD_ENV: &str = "PORTCULLIS_RSS_CHILD";
const EVALUATIONS: usize = 2_000;
/// Growth allowed between the warmed-up state and the end: allocator noise, not a
/// per-evaluation leak (2,000 leaked stores would be hundreds of MiB).
const MAX_GROWTH_KIB: u64 = 16 * 1024;

fn resident_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4
}

#[test]
fn resident_memory_stays_flat() -> Result {
    let output = std::process::Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "memory::rss_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("rss_kib"), "the child measured: {stdout}");
    Ok(())
}

#[test]
#[ignore = "run by resident_memory_stays_flat in a child process"]
fn rss_child() -> Result {
    assert!(
        std::env::var_os(CHILD_ENV).is_some(),
        "run through resident_memory_stays_flat"
    );
    let pipeline = load(&[
        rule("bomb", "memory-bomb", "on_error = \"skip\"\nmemory_mb = 8"),
        rule("panic", "panic", "on_error = \"skip\""),
        rule("unreachable", "unreachable", "on_error = \"skip\""),
        rule("recurse", "deep-recursion", "on_error = \"skip\""),
        rule(
            "bad",
            "bad-output",
            "on_error = \"skip\"\ngrants = [\"config\"]\nconfig = { mode = \"invalid-json\" }",
        ),
        rule("healthy", "add-claim", "grants = [\"log\", \"config\"]"),
    ])?;
    let services = Services::none();
    let evaluate = |i: usize| {
        let verdict = pipeline.evaluate(&login(&format!("tx-{i}")), &services);
        assert_eq!(verdict.faults().count(), 5, "{verdict:?}");
        assert_eq!(verdict.decision, portcullis::Decision::Allow);
    };
    // Warm up: the pool's slots, the allocator's arenas and lazy statics settle first.
    for i in 0..200 {
        evaluate(i);
    }
    let before = resident_kib();
    for i in 0..EVALUATIONS {
        evaluate(i);
    }
    let after = resident_kib();
    println!(
        "rss_kib before={before} after={after} growth={}",
        after as i64 - before as i64
    );
    assert!(
        after <= before + MAX_GROWTH_KIB,
        "resident memory grew from {before} KiB to {after} KiB over {EVALUATIONS} evaluations"
    );
    Ok(())
}
