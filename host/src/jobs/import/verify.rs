//! `portcullis import verify`: where the migration stands, person by person and row by
//! row. Every legacy person (an email in any product) should have exactly one
//! directory user, and every product row its user's unified id; what is not there
//! yet is counted with the reason.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::state::{LegacyProducts, StateStore, StoreError};

#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    /// Distinct emails across the products.
    pub legacy_people: u64,
    pub with_directory_user: u64,
    /// Not migrated and not imported yet.
    pub without_directory_user: u64,
    pub rows: u64,
    /// Rows holding the unified id of the user they are linked to.
    pub rows_with_unified_id: u64,
    /// Linked rows whose id is missing: `backfill-ids` has not run since the link.
    pub rows_linked_without_id: u64,
    /// Rows whose id is not their linked user's (pre-generated and not yet repaired,
    /// or a conflict).
    pub rows_with_other_id: u64,
    /// Rows of people in the directory that are not linked to them: ownership not
    /// proven yet (another password, or someone else's account under that email).
    pub rows_unlinked_ownership_unproven: u64,
    /// Rows of people not in the directory.
    pub rows_of_people_not_in_directory: u64,
    pub peak_rss_kib: u64,
}

pub fn verify(state: &dyn StateStore, legacy: &LegacyProducts) -> Result<VerifyReport, StoreError> {
    let mut report = VerifyReport::default();
    let mut people: BTreeSet<String> = BTreeSet::new();
    let mut rows_by_product = BTreeMap::new();
    let products: Vec<String> = legacy.product_names().map(str::to_owned).collect();
    for product in &products {
        let unified = legacy.has_unified_id(product)?;
        let mut links = BTreeMap::new();
        let mut after = String::new();
        loop {
            let page = state.legacy_links_page(product, &after, 5000)?;
            let Some((last, _)) = page.last() else { break };
            after = last.clone();
            links.extend(page);
        }
        let mut after: Option<String> = None;
        let mut rows = Vec::new();
        loop {
            let page = legacy.export_page(product, after.as_deref(), 0, 5000, unified)?;
            let Some(last) = page.last() else { break };
            after = Some(last.legacy_id.clone());
            for row in page {
                people.insert(row.email_norm.clone());
                rows.push((
                    row.email_norm,
                    links.get(&row.legacy_id).cloned(),
                    row.unified_id,
                ));
            }
        }
        rows_by_product.insert(product.clone(), rows);
    }
    let mut in_directory = BTreeSet::new();
    for email in &people {
        let users = state
            .find_by_email(email)
            .map_err(|e| StoreError::Backend(e.message))?;
        if users.is_empty() {
            report.without_directory_user += 1;
        } else {
            report.with_directory_user += 1;
            in_directory.insert(email.clone());
        }
    }
    report.legacy_people = people.len() as u64;
    for rows in rows_by_product.values() {
        for (email, linked, unified) in rows {
            report.rows += 1;
            match (linked, unified) {
                (Some(user), Some(id)) if user == id => report.rows_with_unified_id += 1,
                (Some(_), None) => report.rows_linked_without_id += 1,
                (Some(_), Some(_)) => report.rows_with_other_id += 1,
                (None, _) if in_directory.contains(email) => {
                    report.rows_unlinked_ownership_unproven += 1
                }
                (None, _) => report.rows_of_people_not_in_directory += 1,
            }
        }
    }
    report.peak_rss_kib = crate::jobs::peak_rss_kib();
    Ok(report)
}
