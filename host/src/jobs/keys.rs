//! `portcullis keys rotate`: re-seals every stored phone number with the key ring's
//! current key, in chunks. Each re-seal is one conditional update (a factor changed
//! meanwhile keeps its change), so the job can be stopped at any moment and run again:
//! what is done stays done, and the rest is what a rerun finds. A phone that does not
//! open (its key is not in the ring, or the row was tampered with) is counted and
//! passed, never retried in a loop.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::mfa::sealed::KeyRing;
use crate::state::{StateStore, StoreError};

#[derive(Debug, Default, Serialize)]
pub struct RotateReport {
    /// The key everything is now sealed with.
    pub key_id: String,
    pub resealed: u64,
    /// Changed by someone else between the read and the write: left as they are.
    pub changed_meanwhile: u64,
    /// Phones that could not be opened, by reason.
    pub failed: BTreeMap<String, u64>,
    pub chunks: u64,
}

/// Re-seals up to `chunk` factors per store round trip; `progress` hears the running
/// count after each chunk.
pub fn rotate(
    state: &dyn StateStore,
    keys: &KeyRing,
    chunk: usize,
    mut progress: impl FnMut(&RotateReport),
) -> Result<RotateReport, StoreError> {
    let mut report = RotateReport {
        key_id: keys.current_key_id().to_owned(),
        ..Default::default()
    };
    let mut cursor = String::new();
    loop {
        let factors =
            state.factors_sealed_with_other_keys(keys.current_key_id(), &cursor, chunk.max(1))?;
        let Some(last) = factors.last() else {
            return Ok(report);
        };
        cursor = last.id.clone();
        for factor in &factors {
            let Some(old) = &factor.phone else { continue };
            match keys.reseal(old, &factor.user_id, &factor.id) {
                Ok(Some(new)) => {
                    if state.reseal_factor(&factor.id, old, &new)? {
                        report.resealed += 1;
                    } else {
                        report.changed_meanwhile += 1;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    let reason = match e {
                        crate::mfa::sealed::SealError::UnknownKey(_) => "key not in the ring",
                        _ => "does not open",
                    };
                    *report.failed.entry(reason.into()).or_default() += 1;
                }
            }
        }
        report.chunks += 1;
        progress(&report);
    }
}
