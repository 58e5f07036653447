//! `portcullis import export`: every legacy user the directory does not have yet, from
//! all products, into files in Auth0's bulk user-import format, each at most
//! `max_file_bytes` (Auth0 takes 500 KB).
//!
//! A user is everyone holding one normalized email, in any product. Products are read
//! a page at a time in their own key order; a page's emails are looked up in every
//! product at once, and a user is written when the page reaches the first of their
//! accounts (by product, then legacy id): exactly once, with flat memory.
//!
//! Passwords: a user with one account keeps its hash, mapped to Auth0's
//! `custom_password_hash` for its format, so they sign in with the password they know.
//! A user with accounts in several products (whose passwords may differ) gets a hash
//! no password matches and `forcePasswordReset`, which the `bulk-imported-skip` rule
//! turns into a reset challenge; so does a single account without a usable hash.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::state::legacy_export::{ExportRow, unified_columns};
use crate::state::{LegacyProducts, StateStore, StoreError};

/// Auth0's limit on one import file.
pub const AUTH0_MAX_FILE_BYTES: usize = 500 * 1024;

#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// A new or empty directory: the files and `manifest.json` go there.
    pub out_dir: PathBuf,
    pub max_file_bytes: usize,
    /// Only accounts created at or after this (ms since the epoch): incremental runs.
    pub since_ms: i64,
    /// Accounts read per query.
    pub page: usize,
    /// The app_metadata flags the migration rules read (`bulk_flag`, `reset_flag`).
    pub bulk_flag: String,
    pub reset_flag: String,
}

impl ExportOptions {
    pub fn new(out_dir: PathBuf) -> Self {
        Self {
            out_dir,
            max_file_bytes: AUTH0_MAX_FILE_BYTES,
            since_ms: 0,
            page: 1000,
            bulk_flag: "bulkImported".into(),
            reset_flag: "forcePasswordReset".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One file written, as `import run` submits it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct ExportFile {
    pub name: String,
    pub users: u64,
    pub bytes: u64,
    /// Hex SHA-256 of the file: `import run` uses it as the file's external id, so a
    /// job whose id was never recorded is found again rather than submitted twice.
    pub sha256: String,
}

/// An account (or user) left out, and why; never a hash or a password.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub product: String,
    pub legacy_id: String,
    pub reason: String,
}

#[derive(Debug, Default, Serialize)]
pub struct ExportReport {
    pub out_dir: String,
    pub files: Vec<ExportFile>,
    pub users_exported: u64,
    pub accounts_exported: u64,
    /// Users with one account: their own hash, they sign in with their password.
    pub single_product_users: u64,
    /// Users with accounts in several products: no usable password, forced reset.
    pub multi_product_users: u64,
    /// Single-account users without a usable hash (none, or a format Auth0 cannot
    /// take): exported with a forced reset.
    pub unusable_passwords: u64,
    /// Already in the directory (lazy migration got there first): not exported.
    pub skipped_in_directory: u64,
    /// A product row already holds their unified id: not exported.
    pub skipped_with_unified_id: u64,
    pub accounts_read: u64,
    pub problems: Vec<Problem>,
    pub bytes_written: u64,
    pub elapsed_ms: u64,
    pub users_per_second: f64,
    pub megabytes_per_second: f64,
    pub peak_rss_kib: u64,
}

/// Progress for a bar: accounts read so far.
pub struct Progress<'a> {
    pub accounts_read: u64,
    pub report: &'a ExportReport,
}

/// Auth0's `custom_password_hash` for a stored legacy hash, or why it cannot be one.
/// The reason never quotes the hash.
pub fn custom_password_hash(stored: &str) -> Result<Value, String> {
    if let Some(rest) = ["$2a$", "$2b$", "$2y$"]
        .iter()
        .find_map(|p| stored.strip_prefix(p))
    {
        if stored.len() != 60 || !rest.is_ascii() {
            return Err("corrupt bcrypt hash".into());
        }
        // `$2y$` is PHP's name for the same algorithm as `$2b$`.
        return Ok(json!({
            "algorithm": "bcrypt",
            "hash": {"value": format!("$2b${rest}"), "encoding": "utf8"},
        }));
    }
    if stored.starts_with("$argon2") {
        argon2::password_hash::phc::PasswordHash::new(stored)
            .map_err(|_| "corrupt argon2 hash".to_string())?;
        return Ok(json!({"algorithm": "argon2", "hash": {"value": stored, "encoding": "utf8"}}));
    }
    if let Some(rest) = stored.strip_prefix("pbkdf2_sha256$") {
        let corrupt = || "corrupt pbkdf2_sha256 hash".to_string();
        let mut parts = rest.splitn(3, '$');
        let (Some(iterations), Some(salt), Some(hash)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(corrupt());
        };
        let iterations: u32 = iterations.parse().map_err(|_| corrupt())?;
        let hash = STANDARD.decode(hash).map_err(|_| corrupt())?;
        if hash.is_empty() || salt.is_empty() {
            return Err(corrupt());
        }
        // Auth0 wants PBKDF2 as a PHC string: digest in the id, `i` iterations, `l` the
        // key length in bytes, salt and hash in unpadded base64 (the salt's bytes are
        // Django's salt text).
        let value = format!(
            "$pbkdf2-sha256$i={iterations},l={}${}${}",
            hash.len(),
            STANDARD_NO_PAD.encode(salt.as_bytes()),
            STANDARD_NO_PAD.encode(&hash)
        );
        return Ok(json!({"algorithm": "pbkdf2", "hash": {"value": value, "encoding": "utf8"}}));
    }
    for (prefix, algorithm, len) in [("sha1$", "sha1", 20), ("md5$", "md5", 16)] {
        if let Some(rest) = stored.strip_prefix(prefix) {
            let corrupt = || format!("corrupt {algorithm} hash");
            let (salt, digest) = rest.split_once('$').ok_or_else(corrupt)?;
            if hex::decode(digest).map_err(|_| corrupt())?.len() != len {
                return Err(corrupt());
            }
            // The products hashed `salt + password`.
            return Ok(json!({
                "algorithm": algorithm,
                "hash": {"value": digest.to_ascii_lowercase(), "encoding": "hex"},
                "salt": {"value": salt, "encoding": "utf8", "position": "prefix"},
            }));
        }
    }
    Err("unknown password hash format".into())
}

/// A hash no password matches: SHA-256 of nothing anyone knows (32 random bytes,
/// never kept). Auth0 needs some hash to create a password user; this one only a
/// reset replaces.
pub(super) fn unusable_hash() -> Value {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    json!({"algorithm": "sha256", "hash": {"value": hex::encode(bytes), "encoding": "hex"}})
}

/// What is wrong with a row that makes it unfit to import, if anything.
fn malformed(row: &ExportRow) -> Option<String> {
    let email = row.email.trim();
    if email.is_empty() || email.len() > 320 || !email.contains('@') || email.contains(' ') {
        return Some("the email is not an address".into());
    }
    if row.created_at_ms < 0 {
        return Some("created_at_ms is negative".into());
    }
    match serde_json::from_str::<Value>(&row.profile) {
        Ok(Value::Object(_)) => None,
        _ => Some("the profile is not a JSON object".into()),
    }
}

/// The files of one export, each a JSON array of users within the size limit. They
/// hold password hashes (and, from the directory, phone numbers): each is created new
/// (never an existing file overwritten), readable by its owner only, and checked to be
/// so before anything is written to it.
pub(super) struct Files {
    dir: PathBuf,
    max_bytes: usize,
    open: Option<OpenFile>,
    done: Vec<ExportFile>,
}

struct OpenFile {
    name: String,
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
    hash: Sha256,
    users: u64,
    bytes: u64,
}

impl Files {
    pub(super) fn new(dir: &Path, max_bytes: usize) -> Self {
        Self {
            dir: dir.to_owned(),
            max_bytes,
            open: None,
            done: Vec::new(),
        }
    }

    fn write(file: &mut OpenFile, bytes: &[u8]) -> Result<(), ExportError> {
        file.out.write_all(bytes).map_err(io(&file.path))?;
        file.hash.update(bytes);
        file.bytes += bytes.len() as u64;
        Ok(())
    }

    /// Adds one user's JSON; false if it cannot fit any file.
    pub(super) fn push(&mut self, user: &[u8]) -> Result<bool, ExportError> {
        // "[" + user + "]" must fit an empty file.
        if user.len() + 2 > self.max_bytes {
            return Ok(false);
        }
        if let Some(file) = &self.open
            && file.bytes as usize + 1 + user.len() + 1 > self.max_bytes
        {
            self.close_open()?;
        }
        if self.open.is_none() {
            let name = format!("users-{:06}.json", self.done.len() + 1);
            let path = self.dir.join(&name);
            let out = std::io::BufWriter::new(private_file(&path)?);
            let mut file = OpenFile {
                name,
                path,
                out,
                hash: Sha256::new(),
                users: 0,
                bytes: 0,
            };
            Self::write(&mut file, b"[")?;
            self.open = Some(file);
        }
        let file = self.open.as_mut().expect("opened above");
        if file.users > 0 {
            Self::write(file, b",")?;
        }
        Self::write(file, user)?;
        file.users += 1;
        Ok(true)
    }

    pub(super) fn close(&mut self) -> Result<Vec<ExportFile>, ExportError> {
        self.close_open()?;
        Ok(std::mem::take(&mut self.done))
    }

    fn close_open(&mut self) -> Result<(), ExportError> {
        if let Some(mut file) = self.open.take() {
            Self::write(&mut file, b"]")?;
            file.out.flush().map_err(io(&file.path))?;
            file.out.get_ref().sync_all().map_err(io(&file.path))?;
            self.done.push(ExportFile {
                name: file.name,
                users: file.users,
                bytes: file.bytes,
                sha256: hex::encode(file.hash.finalize()),
            });
        }
        Ok(())
    }
}

/// A new file only its owner can read or write. Never an existing one (`create_new`):
/// the export does not overwrite, so it never inherits a file someone else can read.
/// The mode is checked on the open file before anything is written: a filesystem that
/// ignores modes (some network and FAT mounts, or a default ACL) would leave the file
/// readable by others, and the export then stops and removes it rather than chmod it
/// (a chmod such a filesystem ignores as well would only hide the problem).
fn private_file(path: &Path) -> Result<std::fs::File, ExportError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path).map_err(io(path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata().map_err(io(path))?.permissions().mode();
        if mode & 0o077 != 0 {
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(ExportError::Invalid(format!(
                "{} came out with mode {:o}, readable by others: export files hold password \
                 hashes and phone numbers; write them to a filesystem that keeps file modes",
                path.display(),
                mode & 0o777
            )));
        }
    }
    Ok(file)
}

/// The export's directory: made if missing (only its owner may list it), and empty.
pub(super) fn prepare_out_dir(dir: &Path) -> Result<(), ExportError> {
    if !dir.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(io(dir))?;
    }
    private_dir(dir)?;
    if std::fs::read_dir(dir).map_err(io(dir))?.next().is_some() {
        return Err(ExportError::Invalid(format!(
            "{} is not empty: an export goes to a new directory (its files are what `import run` submits)",
            dir.display()
        )));
    }
    Ok(())
}

/// An export's directory is as private as its files: owned by whoever runs the export
/// and closed to the group and others. A directory made here is; one that was there
/// already (`--out` names an existing empty directory) is refused otherwise, before
/// anything is written: files of mode 0600 in a directory others may list, or that
/// another user owns (and may open, rename or replace files in), are not private.
pub(super) fn private_dir(dir: &Path) -> Result<(), ExportError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // Not followed: what a link names is what its owner says at the moment of
        // each open, not what was checked here.
        let meta = std::fs::symlink_metadata(dir).map_err(io(dir))?;
        if meta.file_type().is_symlink() {
            return Err(ExportError::Invalid(format!(
                "{} is a symbolic link: whoever owns the link can point it elsewhere while the export writes; name the directory itself",
                dir.display()
            )));
        }
        if !meta.is_dir() {
            return Err(ExportError::Invalid(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(ExportError::Invalid(format!(
                "{} belongs to another user (uid {}): the export's files hold password hashes and phone numbers, and go to a directory of your own",
                dir.display(),
                meta.uid()
            )));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(ExportError::Invalid(format!(
                "{} is open to its group or others (mode {:o}): the export's files hold password hashes and phone numbers; `chmod 700` it or name a new directory",
                dir.display(),
                meta.mode() & 0o777
            )));
        }
        replaceable_from_above(dir, me)?;
    }
    Ok(())
}

/// Whoever may write in a directory above the export's may rename the checked
/// directory (or one above it) away and put one of their own in its place before the
/// files are written. So every directory above it, as named and as links resolve it,
/// must be the exporter's or root's and closed to writes by others unless sticky (as
/// `/tmp`, where only an entry's owner may rename it); a link on the way must be the
/// exporter's or root's.
#[cfg(unix)]
fn replaceable_from_above(dir: &Path, me: u32) -> Result<(), ExportError> {
    let absolute = std::path::absolute(dir).map_err(io(dir))?;
    let mut named = PathBuf::new();
    for part in absolute.parent().into_iter().flat_map(Path::components) {
        named.push(part);
        let meta = std::fs::symlink_metadata(&named).map_err(io(&named))?;
        closed_to_others(dir, &named, &meta, me)?;
        if !meta.file_type().is_symlink() {
            continue;
        }
        let real = std::fs::canonicalize(&named).map_err(io(&named))?;
        for above in real.ancestors() {
            let meta = std::fs::metadata(above).map_err(io(above))?;
            closed_to_others(dir, above, &meta, me)?;
        }
    }
    Ok(())
}

/// `above` (a directory above `dir`, or a link on the way to it) is the exporter's or
/// root's, and a directory others may not write unless it is sticky.
#[cfg(unix)]
fn closed_to_others(
    dir: &Path,
    above: &Path,
    meta: &std::fs::Metadata,
    me: u32,
) -> Result<(), ExportError> {
    use std::os::unix::fs::MetadataExt;
    if meta.uid() != me && meta.uid() != 0 {
        return Err(ExportError::Invalid(format!(
            "{} is under {}, which belongs to another user (uid {}), who may replace it while the export writes: the export's files hold password hashes and phone numbers",
            dir.display(),
            above.display(),
            meta.uid()
        )));
    }
    let sticky = meta.mode() & 0o1000 != 0;
    if meta.is_dir() && meta.mode() & 0o022 != 0 && !sticky {
        return Err(ExportError::Invalid(format!(
            "{} is under {}, which its group or others may write (mode {:o}) and so replace it while the export writes: the export's files hold password hashes and phone numbers",
            dir.display(),
            above.display(),
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Writes the manifest last, through a temporary file renamed into place.
pub(super) fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), ExportError> {
    let manifest_path = dir.join(MANIFEST);
    let temporary = dir.join(".manifest.json.tmp");
    let mut file = private_file(&temporary)?;
    file.write_all(&serde_json::to_vec_pretty(manifest).expect("a manifest serializes"))
        .and_then(|()| file.sync_all())
        .map_err(io(&temporary))?;
    std::fs::rename(&temporary, &manifest_path).map_err(io(&manifest_path))
}

/// The manifest an export leaves beside its files (written last: a directory without
/// one holds an export that did not finish).
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct Manifest {
    pub format: String,
    pub since_ms: i64,
    pub files: Vec<ExportFile>,
}

pub const MANIFEST: &str = "manifest.json";

pub fn run(
    legacy: &LegacyProducts,
    directory: &dyn StateStore,
    options: &ExportOptions,
    mut progress: impl FnMut(Progress<'_>),
) -> Result<ExportReport, ExportError> {
    if options.max_file_bytes < 1024 {
        return Err(ExportError::Invalid(
            "the file size limit must be at least 1 KB".into(),
        ));
    }
    if options.page == 0 {
        return Err(ExportError::Invalid(
            "the page size must be at least 1".into(),
        ));
    }
    let dir = &options.out_dir;
    prepare_out_dir(dir)?;
    let started = Instant::now();
    let unified = unified_columns(legacy)?;
    let products: Vec<String> = unified.keys().cloned().collect();
    let mut files = Files::new(dir, options.max_file_bytes);
    let mut report = ExportReport {
        out_dir: dir.display().to_string(),
        ..Default::default()
    };
    for product in &products {
        let mut after: Option<String> = None;
        loop {
            let page = legacy.export_page(
                product,
                after.as_deref(),
                options.since_ms,
                options.page,
                unified[product],
            )?;
            let Some(last) = page.last() else { break };
            after = Some(last.legacy_id.clone());
            report.accounts_read += page.len() as u64;
            let mut emails: Vec<&str> = page.iter().map(|r| r.email_norm.as_str()).collect();
            emails.sort_unstable();
            emails.dedup();
            let mut holders: Vec<ExportRow> = Vec::new();
            for other in &products {
                holders.extend(legacy.accounts_of(other, &emails, unified[other])?);
            }
            let mut groups: Vec<Vec<&ExportRow>> = Vec::new();
            for row in &page {
                let mut group: Vec<&ExportRow> = holders
                    .iter()
                    .filter(|h| h.email_norm == row.email_norm)
                    .collect();
                group.sort_by(|a, b| (&a.product, &a.legacy_id).cmp(&(&b.product, &b.legacy_id)));
                // Written once: at the first of its accounts this run reads.
                let first = group
                    .iter()
                    .find(|h| h.created_at_ms >= options.since_ms)
                    .copied();
                if first.is_some_and(|f| f.product == row.product && f.legacy_id == row.legacy_id) {
                    groups.push(group);
                }
            }
            // Who of them the directory has: one query for the page.
            let people: Vec<&str> = groups.iter().map(|g| g[0].email_norm.as_str()).collect();
            let known = directory.emails_in_directory(&people)?;
            for group in &groups {
                let in_directory = known.contains(&group[0].email_norm);
                export_user(group, in_directory, options, &mut files, &mut report)?;
            }
            progress(Progress {
                accounts_read: report.accounts_read,
                report: &report,
            });
        }
    }
    report.files = files.close()?;
    report.bytes_written = report.files.iter().map(|f| f.bytes).sum();
    write_manifest(
        dir,
        &Manifest {
            format: "auth0-users-import".into(),
            since_ms: options.since_ms,
            files: report.files.clone(),
        },
    )?;
    let elapsed = started.elapsed().as_secs_f64();
    report.elapsed_ms = (elapsed * 1000.0) as u64;
    report.users_per_second = report.users_exported as f64 / elapsed.max(1e-9);
    report.megabytes_per_second = report.bytes_written as f64 / 1e6 / elapsed.max(1e-9);
    report.peak_rss_kib = crate::jobs::peak_rss_kib();
    Ok(report)
}

fn export_user(
    group: &[&ExportRow],
    in_directory: bool,
    options: &ExportOptions,
    files: &mut Files,
    report: &mut ExportReport,
) -> Result<(), ExportError> {
    let first = group[0];
    let problem = |row: &ExportRow, reason: String| Problem {
        product: row.product.clone(),
        legacy_id: row.legacy_id.clone(),
        reason,
    };
    if let Some(bad) = group.iter().find_map(|r| malformed(r).map(|why| (r, why))) {
        report.problems.push(problem(bad.0, bad.1));
        return Ok(());
    }
    if group.iter().any(|r| r.unified_id.is_some()) {
        report.skipped_with_unified_id += 1;
        return Ok(());
    }
    if in_directory {
        report.skipped_in_directory += 1;
        return Ok(());
    }
    let mut products: Vec<&str> = group.iter().map(|r| r.product.as_str()).collect();
    products.dedup();
    let (password, reset) = if group.len() == 1 {
        match first.password_hash.as_deref().map(custom_password_hash) {
            Some(Ok(hash)) => (hash, false),
            Some(Err(reason)) => {
                report.unusable_passwords += 1;
                report.problems.push(problem(
                    first,
                    format!("{reason}: exported with a forced reset"),
                ));
                (unusable_hash(), true)
            }
            None => {
                report.unusable_passwords += 1;
                (unusable_hash(), true)
            }
        }
    } else {
        (unusable_hash(), true)
    };
    let mut app_metadata = serde_json::Map::new();
    app_metadata.insert(options.bulk_flag.clone(), Value::Bool(true));
    if reset {
        app_metadata.insert(options.reset_flag.clone(), Value::Bool(true));
    }
    app_metadata.insert("imported_from".into(), json!(products));
    app_metadata.insert(
        "legacy_accounts".into(),
        Value::Array(
            group
                .iter()
                .map(|r| json!({"product": r.product, "legacy_id": r.legacy_id}))
                .collect(),
        ),
    );
    let user = json!({
        "email": first.email.trim(),
        "email_verified": group.iter().any(|r| r.email_verified),
        "custom_password_hash": password,
        "app_metadata": app_metadata,
        "user_metadata": serde_json::from_str::<Value>(&first.profile).unwrap_or_else(|_| json!({})),
    });
    let bytes = serde_json::to_vec(&user).expect("a user serializes");
    if !files.push(&bytes)? {
        report.problems.push(problem(
            first,
            format!(
                "the user's record ({} bytes) is larger than a file may be",
                bytes.len()
            ),
        ));
        return Ok(());
    }
    report.users_exported += 1;
    report.accounts_exported += group.len() as u64;
    if group.len() == 1 {
        report.single_product_users += 1;
    } else {
        report.multi_product_users += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_legacy_format_maps_to_its_auth0_algorithm() {
        let bcrypt = format!("$2y$10${}", "a".repeat(53));
        assert_eq!(
            custom_password_hash(&bcrypt).unwrap()["algorithm"],
            "bcrypt"
        );
        assert!(
            custom_password_hash(&bcrypt).unwrap()["hash"]["value"]
                .as_str()
                .unwrap()
                .starts_with("$2b$10$")
        );
        let pbkdf2 = format!("pbkdf2_sha256$260000$salty${}", STANDARD.encode([7u8; 32]));
        let mapped = custom_password_hash(&pbkdf2).unwrap();
        assert_eq!(mapped["algorithm"], "pbkdf2");
        assert_eq!(
            mapped["hash"]["value"],
            format!(
                "$pbkdf2-sha256$i=260000,l=32${}${}",
                STANDARD_NO_PAD.encode("salty"),
                STANDARD_NO_PAD.encode([7u8; 32])
            )
        );
        let sha1 = format!("sha1$ab$${}", "0".repeat(40)).replacen("$$", "$", 1);
        let mapped = custom_password_hash(&sha1).unwrap();
        assert_eq!(mapped["algorithm"], "sha1");
        assert_eq!(mapped["salt"]["position"], "prefix");
        assert_eq!(mapped["salt"]["value"], "ab");
        let md5 = format!("md5$xy${}", "f".repeat(32));
        assert_eq!(
            custom_password_hash(&md5).unwrap()["hash"]["encoding"],
            "hex"
        );
    }

    #[test]
    fn corrupt_and_unknown_hashes_are_refused_without_quoting_them() {
        for stored in [
            "$2b$10$short",
            "pbkdf2_sha256$many$salt$AAAA",
            "sha1$salt$nothex-SECRET",
            "md5$salt$abcd",
            "plaintext-SECRET",
        ] {
            let reason = custom_password_hash(stored).unwrap_err();
            assert!(
                !reason.contains("SECRET") && !reason.contains(stored),
                "{reason}"
            );
        }
    }
}
