//! `portcullis seed`: demo stores for the migration story. Three products, each with
//! its own legacy database and its own password hash format, about a thousand people
//! with realistic overlaps, a directory that already holds a few of them (bulk
//! imports, migrated users, squatters), and a batch of login attempts.
//!
//! Everything derives from one seed: the same seed gives the same stores and logins.

use crate::model::{DirectoryUser, FactorKind, FactorProvider, FactorStatus, Identity};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};
use serde::Serialize;
use serde_json::json;

use crate::mfa::sealed::KeyRing;
use crate::state::factors::Factor;
use crate::state::legacy_sqlite::LegacyRow;
use crate::state::passwords::legacy_formats;
use crate::state::{LegacyProducts, StateStore, StoreError};

const FIRST: &[&str] = &[
    "ada",
    "alan",
    "grace",
    "linus",
    "margaret",
    "dennis",
    "barbara",
    "ken",
    "frances",
    "edsger",
    "radia",
    "tim",
    "hedy",
    "john",
    "katherine",
    "donald",
    "sophie",
    "guido",
    "anita",
    "bjarne",
];
const LAST: &[&str] = &[
    "lovelace",
    "turing",
    "hopper",
    "torvalds",
    "hamilton",
    "ritchie",
    "liskov",
    "thompson",
    "allen",
    "dijkstra",
    "perlman",
    "berners",
    "lamarr",
    "backus",
    "johnson",
    "knuth",
    "wilson",
    "rossum",
    "borg",
    "stroustrup",
];
const DOMAINS: &[&str] = &["example.com", "example.org", "example.net", "mail.example"];
const CLIENTS: &[&str] = &["paste-web", "collect-ios", "transfer-api"];
const WORDS: &[&str] = &[
    "copper", "harbor", "violet", "summit", "lantern", "meadow", "quartz", "falcon",
];

/// The demo's time: logins happen from here on, one second apart.
pub const DEMO_EPOCH_MS: u64 = 1_764_403_200_000;

#[derive(Debug, Clone)]
pub struct SeedOptions {
    pub users: usize,
    pub logins: usize,
    pub seed: u64,
    /// Give migrated users SMS factors (phones of the new provider sealed with these
    /// keys); see [`seed_factor`].
    pub mfa_keys: Option<std::sync::Arc<KeyRing>>,
}

#[derive(Debug, Default, Serialize)]
pub struct SeedReport {
    pub people: usize,
    pub legacy_accounts: BTreeMap<String, usize>,
    pub directory_users: usize,
    /// SMS factors by where their codes can go: `legacy-sms`, `verify`, `both`.
    pub factors: BTreeMap<&'static str, usize>,
    /// Old-provider ids handed out (`legacy_sms_id(0)` …): the simulator must know them.
    pub legacy_sms_users: usize,
    pub logins: usize,
    pub logins_dir: PathBuf,
}

struct Person {
    email: String,
    password: String,
    first: &'static str,
    last: &'static str,
    /// (product, legacy id, password that product holds)
    accounts: Vec<(String, String, String)>,
}

/// What a person's directory entry looks like before any login.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Prior {
    None,
    BulkImported,
    BulkImportedMustReset,
    Migrated,
    Squatted,
}

fn legacy_hash(product_index: usize, password: &str, rng: &mut StdRng, n: usize) -> String {
    let mut salt = [0u8; 16];
    rng.fill_bytes(&mut salt);
    let text_salt: String = hex::encode(&salt[..6]);
    if n % 97 == 13 {
        // Real legacy tables have a few rows nobody can read any more.
        return ["$2b$04$corrupted", "crypt:ab12cd34", "pbkdf2_sha256$x$y$z"][n % 3].to_owned();
    }
    match product_index % 3 {
        0 => legacy_formats::bcrypt(password, ["2a", "2b", "2y"][n % 3], salt),
        1 => legacy_formats::django_pbkdf2(password, &text_salt, 1_000),
        _ if n.is_multiple_of(5) => legacy_formats::salted_sha1(password, &text_salt),
        _ => legacy_formats::argon2id(password, &salt),
    }
}

pub fn seed(
    state: &dyn StateStore,
    legacy: &[(String, String)],
    logins_dir: &Path,
    options: &SeedOptions,
    mut progress: impl FnMut(&str),
) -> Result<SeedReport, StoreError> {
    if legacy.is_empty() {
        return Err(StoreError::Backend(
            "the config names no legacy products under [state.legacy]".into(),
        ));
    }
    // One generator drawn in this order (people, legacy hashes, directory, logins):
    // the same seed makes the same data.
    let mut rng = StdRng::seed_from_u64(options.seed);
    let products: Vec<&str> = legacy.iter().map(|(p, _)| p.as_str()).collect();
    let people = people(&mut rng, &products, options.users);
    progress(&format!(
        "hashing {} people's legacy passwords",
        people.len()
    ));
    let mut report = SeedReport {
        people: people.len(),
        ..Default::default()
    };
    write_legacy(legacy, &people, &mut rng, &mut report, &mut progress)?;
    write_directory(
        state,
        &people,
        options,
        &mut rng,
        &mut report,
        &mut progress,
    )?;
    write_logins(logins_dir, &people, options.logins, &mut rng)?;
    report.logins = options.logins;
    report.logins_dir = logins_dir.to_owned();
    Ok(report)
}

fn people(rng: &mut StdRng, products: &[&str], users: usize) -> Vec<Person> {
    let mut people = Vec::with_capacity(users);
    for n in 0..users {
        let first = FIRST[rng.random_range(0..FIRST.len())];
        let last = LAST[rng.random_range(0..LAST.len())];
        let domain = DOMAINS[rng.random_range(0..DOMAINS.len())];
        let email = if n % 10 == 3 {
            // Some products stored emails as typed: case must not matter.
            format!("{}.{}{n}@{domain}", capitalize(first), capitalize(last))
        } else {
            format!("{first}.{last}{n}@{domain}")
        };
        let password = format!(
            "{}-{}-{n}",
            WORDS[rng.random_range(0..WORDS.len())],
            WORDS[rng.random_range(0..WORDS.len())]
        );
        let product_count = match rng.random_range(0..100) {
            0..70 => 1,
            70..92 => 2,
            _ => 3,
        }
        .min(products.len());
        let start = rng.random_range(0..products.len());
        let accounts = (0..product_count)
            .map(|k| {
                let product = products[(start + k) % products.len()];
                // One in five people with several accounts uses another password in one.
                let pw = if k > 0 && n % 5 == 1 {
                    format!("{password}-old")
                } else {
                    password.clone()
                };
                (product.to_owned(), legacy_id(product, n), pw)
            })
            .collect();
        people.push(Person {
            email,
            password,
            first,
            last,
            accounts,
        });
    }
    people
}

/// Each product's own table, its passwords hashed the way that product did.
fn write_legacy(
    legacy: &[(String, String)],
    people: &[Person],
    rng: &mut StdRng,
    report: &mut SeedReport,
    progress: &mut impl FnMut(&str),
) -> Result<(), StoreError> {
    for (index, (product, url)) in legacy.iter().enumerate() {
        let mut rows = Vec::new();
        for (n, person) in people.iter().enumerate() {
            for (_, legacy_id, password) in person.accounts.iter().filter(|(p, _, _)| p == product)
            {
                let profile = json!({"name": format!("{} {}", capitalize(person.first), capitalize(person.last)), "product": product});
                rows.push((
                    legacy_id.clone(),
                    person.email.clone(),
                    n % 4 != 0,
                    legacy_hash(index, password, rng, n),
                    profile,
                ));
            }
        }
        let borrowed: Vec<LegacyRow<'_>> = rows
            .iter()
            .map(|(id, email, verified, hash, profile)| LegacyRow {
                legacy_id: id,
                email,
                email_verified: *verified,
                password_hash: Some(hash),
                created_at_ms: DEMO_EPOCH_MS - 400 * 86_400_000,
                profile,
            })
            .collect();
        LegacyProducts::replace(product, url, Path::new("/"), &borrowed)?;
        report.legacy_accounts.insert(product.clone(), rows.len());
        progress(&format!("{product}: {} legacy accounts", rows.len()));
    }
    Ok(())
}

/// What a person's directory entry is before any login: metadata, whether the email
/// is verified, linked identities and the password hash.
fn prior_entry(
    prior: Prior,
    person: &Person,
    salt: [u8; 16],
) -> Option<(serde_json::Value, bool, Vec<Identity>, Option<String>)> {
    let (product, legacy_id, _) = &person.accounts[0];
    let linked = vec![Identity {
        provider: product.clone(),
        user_id: legacy_id.clone(),
        connection: product.clone(),
    }];
    Some(match prior {
        Prior::None => return None,
        Prior::BulkImported => (
            json!({"bulkImported": true}),
            true,
            linked,
            Some(legacy_formats::bcrypt(&person.password, "2b", salt)),
        ),
        Prior::BulkImportedMustReset => (
            json!({"bulkImported": true, "forcePasswordReset": true}),
            true,
            linked,
            None,
        ),
        Prior::Migrated => (
            json!({"migrated": true, "migrated_from": [product]}),
            true,
            linked,
            Some(legacy_formats::argon2id(&person.password, &salt)),
        ),
        // Someone else signed up with this email before the migration.
        Prior::Squatted => (
            json!({}),
            false,
            Vec::new(),
            Some(legacy_formats::argon2id("squatter-password", &salt)),
        ),
    })
}

fn write_directory(
    state: &dyn StateStore,
    people: &[Person],
    options: &SeedOptions,
    rng: &mut StdRng,
    report: &mut SeedReport,
    progress: &mut impl FnMut(&str),
) -> Result<(), StoreError> {
    let mut skipped_factor = 0;
    for (n, person) in people.iter().enumerate() {
        let prior = match n % 50 {
            0..=2 => Prior::BulkImported,
            3 => Prior::BulkImportedMustReset,
            4 | 5 => Prior::Migrated,
            6 => Prior::Squatted,
            _ => Prior::None,
        };
        let mut salt = [0u8; 16];
        rng.fill_bytes(&mut salt);
        let Some((metadata, verified, identities, hash)) = prior_entry(prior, person, salt) else {
            continue;
        };
        let user = DirectoryUser {
            id: format!("usr_seed{n:05}"),
            email: Some(person.email.clone()),
            email_verified: verified,
            identities,
            app_metadata: metadata,
            user_metadata: json!({}),
            created_at_ms: DEMO_EPOCH_MS - 30 * 86_400_000,
            last_login_ms: None,
            logins_count: 0,
        };
        state.put_user(&user, hash.as_deref())?;
        report.directory_users += 1;
        if let (Prior::Migrated, Some(keys)) = (prior, &options.mfa_keys) {
            let migrated = report.factors.values().sum::<usize>() + skipped_factor;
            match seed_factor(&user.id, migrated, report.legacy_sms_users, keys) {
                Some((factor, kind)) => {
                    report.legacy_sms_users +=
                        usize::from(factor.legacy_provider_user_id.is_some());
                    *report.factors.entry(kind).or_default() += 1;
                    state.put_factor(&factor)?;
                }
                None => skipped_factor += 1,
            }
        }
        if report.directory_users.is_multiple_of(25) {
            progress(&format!("directory: {} users", report.directory_users));
        }
    }
    Ok(())
}

/// The demo's login attempts, one JSON file each; earlier runs' files go first.
fn write_logins(
    logins_dir: &Path,
    people: &[Person],
    logins: usize,
    rng: &mut StdRng,
) -> Result<(), StoreError> {
    std::fs::create_dir_all(logins_dir)
        .map_err(|e| StoreError::Backend(format!("{}: {e}", logins_dir.display())))?;
    for old in std::fs::read_dir(logins_dir)
        .map_err(|e| StoreError::Backend(e.to_string()))?
        .flatten()
    {
        if old.path().extension().is_some_and(|e| e == "json") {
            let _ = std::fs::remove_file(old.path());
        }
    }
    let now_ms = crate::flows::clock::Clock::now_ms(&crate::flows::clock::SystemClock);
    for i in 0..logins {
        let n = rng.random_range(0..people.len());
        let person = &people[n];
        let (email, password) = match rng.random_range(0..100) {
            0..80 => (person.email.clone(), person.password.clone()),
            80..92 => (person.email.clone(), format!("{}x", person.password)),
            _ => (
                format!("nobody{i}@example.com"),
                "whatever-password".to_owned(),
            ),
        };
        let login = json!({
            "transaction_id": format!("tx-demo-{i:05}"),
            // Logins happen now: the host refuses a login far from its own clock.
            "time_ms": now_ms + i as u64,
            "connection": "Username-Password-Authentication",
            "client_id": CLIENTS[i % 3],
            "email": email,
            "password": password,
            "request": {"ip": format!("198.51.100.{}", i % 250 + 1), "user_agent": "portcullis-demo"},
        });
        let path = logins_dir.join(format!("login-{i:05}.json"));
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&login).unwrap_or_default(),
        )
        .map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
    }
    Ok(())
}

fn legacy_id(product: &str, n: usize) -> String {
    match product {
        "paste" => format!("P{:06}", 100_000 + n * 7),
        "collect" => format!("{}", 5_000 + n * 3),
        _ => format!(
            "{product}-{:08x}",
            (n as u64).wrapping_mul(2_654_435_761) & 0xffff_ffff
        ),
    }
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// The first old-provider id the demo and the simulator hand out.
pub const LEGACY_SMS_FIRST_ID: usize = 1_000_000;

/// The id of the n-th old-provider user the demo and the simulator share: a number, as
/// real Authy ids are (the official clients refuse anything else before sending).
pub fn legacy_sms_id(n: usize) -> String {
    (LEGACY_SMS_FIRST_ID + n).to_string()
}

/// Which old-provider user an id of [`legacy_sms_id`] names.
pub fn legacy_sms_index(id: &str) -> Option<usize> {
    id.parse::<usize>().ok()?.checked_sub(LEGACY_SMS_FIRST_ID)
}

/// The phone of the n-th old-provider user the demo and the simulator share
/// ([`legacy_sms_id`]): +1 201-555-0000 on, then 202-555-…, all valid North American
/// numbers.
pub fn legacy_sms_phone(n: usize) -> String {
    format!("+1{}555{:04}", 201 + n / 10_000, n % 10_000)
}

/// The SMS factor of the `m`-th migrated user, in a fixed rotation: only the old
/// provider's id (cohort `internal` for every tenth of these), only a phone at the new
/// provider, both (exported earlier; `internal` for every other one, and every sixth
/// reverted by an operator), or none. `legacy` is the next old-provider id to hand out.
pub fn seed_factor(
    user_id: &str,
    m: usize,
    legacy: usize,
    keys: &KeyRing,
) -> Option<(Factor, &'static str)> {
    let id = format!("fac_{}", user_id.trim_start_matches("usr_"));
    let mut factor = Factor {
        id: id.clone(),
        user_id: user_id.to_owned(),
        kind: FactorKind::Sms,
        provider: FactorProvider::LegacySms,
        legacy_provider_user_id: None,
        phone: None,
        status: FactorStatus::Active,
        enrolled_at_ms: DEMO_EPOCH_MS - 60 * 86_400_000,
        updated_at_ms: DEMO_EPOCH_MS - 60 * 86_400_000,
        last_used_ms: None,
        cohort: None,
        reverted: false,
    };
    // The user's place among those of the same kind.
    let j = m / 4;
    let kind = match m % 4 {
        0 => {
            factor.legacy_provider_user_id = Some(legacy_sms_id(legacy));
            factor.cohort = Some(
                if j.is_multiple_of(10) {
                    "internal"
                } else {
                    "general"
                }
                .into(),
            );
            "legacy-sms"
        }
        1 => {
            factor.provider = FactorProvider::Verify;
            let phone = format!("+1303555{:04}", m % 10_000);
            factor.phone = Some(keys.seal(&phone, user_id, &id));
            "verify"
        }
        2 => {
            factor.legacy_provider_user_id = Some(legacy_sms_id(legacy));
            factor.phone = Some(keys.seal(&legacy_sms_phone(legacy), user_id, &id));
            factor.cohort = Some(
                if j.is_multiple_of(2) {
                    "internal"
                } else {
                    "general"
                }
                .into(),
            );
            factor.reverted = j % 6 == 2;
            "both"
        }
        _ => return None,
    };
    Some((factor, kind))
}

/// Directory users with only an old-provider SMS factor (`usr_sms000000` …, ids
/// `legacy_sms_id(first_legacy + i)`), the first `internal` in the `internal` cohort: the
/// population the MFA backfill moves. Returns how many were added.
pub fn seed_sms_users(
    state: &dyn StateStore,
    first_legacy: usize,
    count: usize,
    internal: usize,
    mut progress: impl FnMut(usize),
) -> Result<usize, StoreError> {
    for i in 0..count {
        let user_id = format!("usr_sms{i:06}");
        state.put_user(
            &DirectoryUser {
                id: user_id.clone(),
                email: Some(format!("sms{i}@example.com")),
                email_verified: true,
                identities: Vec::new(),
                app_metadata: json!({"migrated": true}),
                user_metadata: json!({}),
                created_at_ms: DEMO_EPOCH_MS - 400 * 86_400_000,
                last_login_ms: None,
                logins_count: 0,
            },
            None,
        )?;
        state.put_factor(&Factor {
            id: format!("fac_sms{i:06}"),
            user_id,
            kind: FactorKind::Sms,
            provider: FactorProvider::LegacySms,
            legacy_provider_user_id: Some(legacy_sms_id(first_legacy + i)),
            phone: None,
            status: FactorStatus::Active,
            enrolled_at_ms: DEMO_EPOCH_MS - 400 * 86_400_000,
            updated_at_ms: DEMO_EPOCH_MS - 400 * 86_400_000,
            last_used_ms: None,
            cohort: Some(if i < internal { "internal" } else { "general" }.into()),
            reverted: false,
        })?;
        if (i + 1) % 1000 == 0 {
            progress(i + 1);
        }
    }
    Ok(count)
}

/// The directory store and each legacy product's database URL (SQLite paths made
/// absolute).
pub type SeedTargets = (std::sync::Arc<dyn StateStore>, Vec<(String, String)>);

/// Opens the stores of a config for seeding, with the directory emptied: seeding
/// twice must not mix two populations. Unless `force`, refuses when any store holds
/// rows seeding did not make (see [`foreign_rows`]): pointed at a real database by
/// mistake, seeding must not delete anyone.
pub fn open_for_seed(
    config: &crate::config::PipelineConfig,
    force: bool,
) -> Result<SeedTargets, StoreError> {
    let settings = config
        .state
        .as_ref()
        .ok_or_else(|| StoreError::Backend("the config has no [state] section to seed".into()))?;
    let state = crate::state::open_state(&settings.directory, &config.base_dir)?;
    let legacy = crate::flows::legacy_urls(config)?;
    if !force {
        let found = foreign_rows(state.as_ref(), &legacy)?;
        if !found.is_empty() {
            return Err(StoreError::Refused(format!(
                "seeding replaces everything in the stores it is pointed at, and these hold rows it did not make: {}; if they are to go, run `seed --force`",
                found.join("; ")
            )));
        }
    }
    state.clear()?;
    Ok((state, legacy))
}

/// What in the stores seeding did not make: directory users and legacy accounts whose
/// email is not one of the example addresses seeding writes (RFC 2606 domains no real
/// person has), and SQLite files that are not product stores.
pub fn foreign_rows(
    state: &dyn StateStore,
    legacy: &[(String, String)],
) -> Result<Vec<String>, StoreError> {
    let mut found = Vec::new();
    let users = crate::state::users::count_outside(state.sql(), DOMAINS)?;
    if users > 0 {
        found.push(format!(
            "{users} directory user(s) with addresses seed does not make"
        ));
    }
    for (product, url) in legacy {
        if let Some(rows) = LegacyProducts::foreign_rows(product, url, Path::new("/"), DOMAINS)? {
            found.push(rows);
        }
    }
    Ok(found)
}
