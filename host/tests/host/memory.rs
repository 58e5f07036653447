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

const LOG_CHILD_ENV: &str = "PORTCULLIS_LOG_CHILD";
/// The line the campaign logged: 100 MB in one `log` call.
const LOG_MB: u64 = 100;
/// What logging it may cost the host beyond what building it cost the guest: the
/// kept line is 1 KiB; a copy of the line would be 100 MB.
const MAX_LOG_COST_KIB: u64 = 16 * 1024;

/// The peak resident memory (VmHWM) of a fresh process that runs one login of the
/// hostile rule in `mode`.
fn peak_kib_of_one_login(mode: &str) -> Result<u64> {
    let output = std::process::Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "memory::huge_log_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(LOG_CHILD_ENV, mode)
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let peak = stdout
        .split_whitespace()
        .find_map(|word| word.strip_prefix("vm_hwm_kib="))
        .ok_or_else(|| format!("the child measured nothing: {stdout}"))?;
    Ok(peak.parse()?)
}

#[test]
fn a_huge_log_line_costs_the_host_no_copy_of_it() -> Result {
    // Same rule, same 100 MB line in guest memory; only the `log` call differs, so
    // the difference in peak is what the host copied out of the guest.
    let built = peak_kib_of_one_login("huge-string")?;
    let logged = peak_kib_of_one_login("huge-log")?;
    println!("peak KiB: line built {built}, line logged {logged}");
    assert!(
        built > LOG_MB * 1000 * 1000 / 1024,
        "the guest's line is in the peak: {built} KiB"
    );
    assert!(
        logged <= built + MAX_LOG_COST_KIB,
        "logging a {LOG_MB} MB line raised the host's peak from {built} KiB to {logged} KiB"
    );
    Ok(())
}

#[test]
#[ignore = "run by a_huge_log_line_costs_the_host_no_copy_of_it in a child process"]
fn huge_log_child() -> Result {
    let mode = std::env::var(LOG_CHILD_ENV)
        .map_err(|_| "run through a_huge_log_line_costs_the_host_no_copy_of_it")?;
    let pipeline = load(&[rule(
        "hostile",
        "hostile",
        &format!(
            "grants = [\"log\", \"config\", \"legacy\"]\nmemory_mb = 256\ndeadline_ms = 10000\nconfig = {{ mode = \"{mode}\", log_mb = \"{LOG_MB}\" }}"
        ),
    )])?;
    let verdict = pipeline.evaluate(&login("tx-huge-log"), &Services::none());
    assert_eq!(
        verdict.trace[0].result,
        portcullis::RuleResult::Continue,
        "{:?}",
        verdict.trace[0].fault
    );
    let status = std::fs::read_to_string("/proc/self/status")?;
    let peak = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .ok_or("no VmHWM in /proc/self/status")?
        .trim()
        .trim_end_matches("kB")
        .trim();
    println!("vm_hwm_kib={peak}");
    Ok(())
}
