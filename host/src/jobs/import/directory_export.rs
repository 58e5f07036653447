//! `portcullis import export --from-directory`: the directory's own users into Auth0's
//! user-import files, second factors included, for moving them to another directory
//! (an Auth0 tenant, or another Portcullis) without anyone enrolling again.
//!
//! A user's password hash leaves as Auth0's `custom_password_hash` when it is a format
//! Auth0 takes (see [`custom_password_hash`]), else as a hash no password matches with
//! the reset flag. Each active SMS factor with a phone on file leaves as
//! `mfa_factors: [{"phone": {"value": "+1…"}}]`, the phone unsealed with the keys the
//! host holds. A user whose factor cannot leave with them (its phone is only at the old
//! provider, or does not open) is not exported at all, and the report names them: a
//! user must not arrive somewhere without the second factor they have here.
//!
//! These files hold password hashes and phone numbers in clear: they are as sensitive
//! as the database itself (mode 0600, a new directory only its owner may list).

use std::time::Instant;

use serde::Serialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::export::{
    ExportError, ExportFile, ExportOptions, Files, Manifest, Problem, custom_password_hash,
    prepare_out_dir, unusable_hash, write_manifest,
};
use crate::mfa::sealed::KeyRing;
use crate::model::{FactorKind, FactorStatus};
use crate::state::StateStore;
use crate::state::users::{ExportedUser, export_page};

#[derive(Debug, Default, Serialize)]
pub struct DirectoryExportReport {
    pub out_dir: String,
    pub files: Vec<ExportFile>,
    pub users_read: u64,
    pub users_exported: u64,
    /// Users whose hash is a format Auth0 takes: they sign in with their password.
    pub with_password: u64,
    /// Users without a hash Auth0 takes: exported with the reset flag.
    pub forced_resets: u64,
    /// Phone factors written into `mfa_factors`.
    pub factors_exported: u64,
    /// Users left out because a factor of theirs could not leave with them.
    pub held_back: u64,
    /// Why users were left out (never a phone or a hash).
    pub problems: Vec<Problem>,
    pub bytes_written: u64,
    pub elapsed_ms: u64,
}

/// Why a user's factors cannot leave with them.
fn held_back(user: &ExportedUser, reason: &str) -> Problem {
    Problem {
        product: "directory".into(),
        legacy_id: user.user.id.clone(),
        reason: reason.into(),
    }
}

/// The phones of the user's active SMS factors, unsealed; or why not. Pending,
/// disabled and not-yet-completed (`confirmed`) factors are not the user's second
/// factor yet (or any more), and do not leave.
fn phones(
    user: &ExportedUser,
    keys: Option<&KeyRing>,
) -> Result<Vec<Zeroizing<String>>, &'static str> {
    let mut phones = Vec::new();
    for factor in &user.factors {
        if factor.kind != FactorKind::Sms || factor.status != FactorStatus::Active {
            continue;
        }
        let Some(sealed) = &factor.phone else {
            return Err(
                "an active SMS factor has its phone only at the old provider: run `portcullis mfa backfill` first",
            );
        };
        let keys =
            keys.ok_or("an active SMS factor is sealed, and no [mfa] keys are configured")?;
        let phone = keys
            .open(sealed, &factor.user_id, &factor.id)
            .map_err(|_| "an active SMS factor's phone does not open with the configured keys")?;
        phones.push(phone);
    }
    Ok(phones)
}

/// One user's record, with `mfa_factors` spliced in as bytes that are wiped after use
/// (a phone is digits and `+`: nothing to escape).
/// Also says whether the user leaves with the reset flag.
fn record(
    user: &ExportedUser,
    phones: &[Zeroizing<String>],
    options: &ExportOptions,
) -> (Zeroizing<Vec<u8>>, bool) {
    let (password, reset) = match user.password_hash.as_deref().map(custom_password_hash) {
        Some(Ok(hash)) => (hash, false),
        _ => (unusable_hash(), true),
    };
    let mut app_metadata = match &user.user.app_metadata {
        Value::Object(map) => map.clone(),
        _ => serde_json::Map::new(),
    };
    if reset {
        app_metadata.insert(options.reset_flag.clone(), Value::Bool(true));
    }
    // Links to legacy accounts travel as the legacy export writes them.
    let links: Vec<Value> = user
        .user
        .identities
        .iter()
        .filter(|i| i.provider == i.connection)
        .map(|i| json!({"product": i.provider, "legacy_id": i.user_id}))
        .collect();
    if !links.is_empty() && !app_metadata.contains_key("legacy_accounts") {
        app_metadata.insert("legacy_accounts".into(), Value::Array(links));
    }
    let value = json!({
        "email": user.user.email.as_deref().unwrap_or_default().trim(),
        "email_verified": user.user.email_verified,
        "custom_password_hash": password,
        "app_metadata": app_metadata,
        "user_metadata": match &user.user.user_metadata {
            Value::Object(_) => user.user.user_metadata.clone(),
            _ => json!({}),
        },
    });
    let mut bytes = Zeroizing::new(serde_json::to_vec(&value).expect("a user serializes"));
    if !phones.is_empty() {
        bytes.pop(); // the closing brace
        bytes.extend_from_slice(b",\"mfa_factors\":[");
        for (n, phone) in phones.iter().enumerate() {
            if n > 0 {
                bytes.push(b',');
            }
            bytes.extend_from_slice(b"{\"phone\":{\"value\":\"");
            bytes.extend_from_slice(phone.as_bytes());
            bytes.extend_from_slice(b"\"}}");
        }
        bytes.extend_from_slice(b"]}");
    }
    (bytes, reset)
}

/// Exports every directory user, a page at a time in id order. `keys` open the sealed
/// phones (`[mfa]`); without them a user with a sealed factor is held back.
pub fn run(
    directory: &dyn StateStore,
    keys: Option<&KeyRing>,
    options: &ExportOptions,
    mut progress: impl FnMut(&DirectoryExportReport),
) -> Result<DirectoryExportReport, ExportError> {
    if options.max_file_bytes < 1024 || options.page == 0 {
        return Err(ExportError::Invalid(
            "the file size limit must be at least 1 KB and the page size at least 1".into(),
        ));
    }
    let dir = &options.out_dir;
    prepare_out_dir(dir)?;
    let started = Instant::now();
    let mut files = Files::new(dir, options.max_file_bytes);
    let mut report = DirectoryExportReport {
        out_dir: dir.display().to_string(),
        ..Default::default()
    };
    let mut after = String::new();
    loop {
        let page = export_page(directory.sql(), &after, options.page)?;
        let Some(last) = page.last() else { break };
        after = last.user.id.clone();
        for user in &page {
            report.users_read += 1;
            if user
                .user
                .email
                .as_deref()
                .is_none_or(|e| e.trim().is_empty())
            {
                report
                    .problems
                    .push(held_back(user, "the user has no email"));
                continue;
            }
            let phones = match phones(user, keys) {
                Ok(phones) => phones,
                Err(why) => {
                    report.held_back += 1;
                    report.problems.push(held_back(user, why));
                    continue;
                }
            };
            let (bytes, reset) = record(user, &phones, options);
            if !files.push(&bytes)? {
                report.problems.push(held_back(
                    user,
                    "the user's record is larger than a file may be",
                ));
                continue;
            }
            report.users_exported += 1;
            report.factors_exported += phones.len() as u64;
            if reset {
                report.forced_resets += 1;
            } else {
                report.with_password += 1;
            }
        }
        progress(&report);
    }
    report.files = files.close()?;
    report.bytes_written = report.files.iter().map(|f| f.bytes).sum();
    write_manifest(
        dir,
        &Manifest {
            format: "auth0-users-import".into(),
            since_ms: 0,
            files: report.files.clone(),
        },
    )?;
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}
