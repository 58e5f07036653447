//! `portcullis import backfill-ids`: every product learns its users' unified id. For
//! each product, the directory's links to its accounts are read a chunk at a time and
//! each linked row gets its user's id, one transaction per chunk, throttled. Writing
//! only where the id is missing (or pre-generated and since superseded) makes the job
//! idempotent, so it is resumed by running it again: a second run changes nothing.
//!
//! `--pregenerate`, before the migration starts: people whose email is in several
//! products get an id derived from the email (the one the bulk import gives them), so
//! the products can share it at once; when lazy migration later creates the person
//! under another id, the backfill repairs those rows.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::time::Instant;

use governor::{Quota, RateLimiter, clock::Clock as _};
use serde::Serialize;

use super::records::user_id_for;
use crate::state::legacy_ids::IdWrites;
use crate::state::{LegacyProducts, StateStore, StoreError};

#[derive(Debug, Clone)]
pub struct IdOptions {
    /// Rows per read and per write transaction.
    pub chunk: usize,
    /// Rows written per second (0: unthrottled).
    pub rate_per_second: u32,
    /// Add the `unified_id` column to a product table that lacks it.
    pub add_column: bool,
}

#[derive(Debug, Serialize)]
pub struct Conflict {
    pub product: String,
    pub legacy_id: String,
    /// The id the row holds (not this person's): left as it is.
    pub holds: String,
}

#[derive(Debug, Default, Serialize)]
pub struct ProductIds {
    pub written: u64,
    pub repaired: u64,
    pub unchanged: u64,
    pub missing: u64,
    pub conflicts: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct IdReport {
    pub mode: &'static str,
    pub products: BTreeMap<String, ProductIds>,
    pub columns_added: Vec<String>,
    pub rows_seen: u64,
    pub written: u64,
    pub repaired: u64,
    pub unchanged: u64,
    pub missing: u64,
    pub conflicts: Vec<Conflict>,
    pub elapsed_ms: u64,
    pub rows_per_second: f64,
    pub peak_rss_kib: u64,
}

impl IdReport {
    fn add(&mut self, product: &str, writes: IdWrites) {
        let entry = self.products.entry(product.to_owned()).or_default();
        entry.written += writes.written;
        entry.repaired += writes.repaired;
        entry.unchanged += writes.unchanged;
        entry.missing += writes.missing;
        entry.conflicts += writes.conflicts.len() as u64;
        self.written += writes.written;
        self.repaired += writes.repaired;
        self.unchanged += writes.unchanged;
        self.missing += writes.missing;
        self.conflicts.extend(
            writes
                .conflicts
                .into_iter()
                .map(|(legacy_id, holds)| Conflict {
                    product: product.to_owned(),
                    legacy_id,
                    holds,
                }),
        );
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
}

/// Waits until `n` more rows may be written.
struct Throttle(Option<governor::DefaultDirectRateLimiter>);

impl Throttle {
    fn new(rate: u32) -> Self {
        Self(NonZeroU32::new(rate).map(|r| RateLimiter::direct(Quota::per_second(r))))
    }

    fn take(&self, n: usize) {
        let Some(limiter) = &self.0 else { return };
        for _ in 0..n {
            while let Err(wait) = limiter.check() {
                std::thread::sleep(
                    wait.wait_time_from(governor::clock::DefaultClock::default().now()),
                );
            }
        }
    }
}

fn prepare(
    legacy: &LegacyProducts,
    options: &IdOptions,
    report: &mut IdReport,
) -> Result<Vec<String>, IdError> {
    if options.chunk == 0 {
        return Err(IdError::Invalid("--chunk must be at least 1".into()));
    }
    let products: Vec<String> = legacy.product_names().map(str::to_owned).collect();
    for product in &products {
        if options.add_column {
            if legacy.add_unified_id_column(product)? {
                report.columns_added.push(product.clone());
            }
        } else if !legacy.has_unified_id(product)? {
            return Err(IdError::Invalid(format!(
                "the {product} store has no unified_id column: add it (a nullable text column), or run with --add-column"
            )));
        }
    }
    Ok(products)
}

fn finish(mut report: IdReport, started: Instant) -> IdReport {
    let elapsed = started.elapsed().as_secs_f64();
    report.elapsed_ms = (elapsed * 1000.0) as u64;
    report.rows_per_second = report.rows_seen as f64 / elapsed.max(1e-9);
    report.peak_rss_kib = crate::jobs::peak_rss_kib();
    report
}

/// Writes every linked account's unified id into its product.
pub fn backfill(
    state: &dyn StateStore,
    legacy: &LegacyProducts,
    options: &IdOptions,
    mut progress: impl FnMut(&IdReport),
) -> Result<IdReport, IdError> {
    let started = Instant::now();
    let mut report = IdReport {
        mode: "backfill",
        ..Default::default()
    };
    let products = prepare(legacy, options, &mut report)?;
    let throttle = Throttle::new(options.rate_per_second);
    for product in &products {
        let mut after = String::new();
        loop {
            let links = state.legacy_links_page(product, &after, options.chunk)?;
            let Some((last, _)) = links.last() else { break };
            after = last.clone();
            throttle.take(links.len());
            report.rows_seen += links.len() as u64;
            let writes = legacy.write_unified_ids(product, &links, user_id_for, false)?;
            report.add(product, writes);
            progress(&report);
        }
    }
    Ok(finish(report, started))
}

/// Gives people whose email is in several products an id derived from it.
pub fn pregenerate(
    legacy: &LegacyProducts,
    options: &IdOptions,
    mut progress: impl FnMut(&IdReport),
) -> Result<IdReport, IdError> {
    let started = Instant::now();
    let mut report = IdReport {
        mode: "pregenerate",
        ..Default::default()
    };
    let products = prepare(legacy, options, &mut report)?;
    let throttle = Throttle::new(options.rate_per_second);
    for product in &products {
        let mut after: Option<String> = None;
        loop {
            let page = legacy.export_page(product, after.as_deref(), 0, options.chunk, true)?;
            let Some(last) = page.last() else { break };
            after = Some(last.legacy_id.clone());
            report.rows_seen += page.len() as u64;
            let mut emails: Vec<&str> = page.iter().map(|r| r.email_norm.as_str()).collect();
            emails.sort_unstable();
            emails.dedup();
            // Which products hold each of the page's emails.
            let mut holders: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for other in &products {
                for row in legacy.accounts_of(other, &emails, false)? {
                    holders
                        .entry(row.email_norm)
                        .or_default()
                        .insert(other.clone());
                }
            }
            let shared: Vec<(String, String)> = page
                .iter()
                .filter(|r| holders.get(&r.email_norm).is_some_and(|p| p.len() > 1))
                .map(|r| (r.legacy_id.clone(), user_id_for(&r.email_norm)))
                .collect();
            throttle.take(shared.len());
            let writes = legacy.write_unified_ids(product, &shared, user_id_for, true)?;
            report.add(product, writes);
            progress(&report);
        }
    }
    Ok(finish(report, started))
}
