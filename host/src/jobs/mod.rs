//! Work that runs beside logins, not inside them: outbox delivery, re-sealing phone
//! numbers under a new key, and seeding the demo stores.

pub mod import;
pub mod keys;
pub mod outbox;
pub mod phone_export;
pub mod seed;

/// This process's peak resident memory in KiB (Linux `VmHWM`), for job reports; 0
/// where it cannot be read.
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
