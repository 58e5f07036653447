//! `portcullis import export`: Auth0's user-import files from the legacy products, on
//! SQLite, PostgreSQL and MariaDB.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use portcullis::PipelineConfig;
use serde_json::Value;

use super::{
    auth0_verifies, backfill_ids, directory_emails, export, exported_users, legacy_accounts,
    portcullis,
};
use crate::common::{Result, login_files, migration_config, seed_stores};

#[test]
fn the_export_holds_each_user_the_directory_lacks_once_with_hashes_auth0_verifies() -> Result {
    let dir = tempfile::tempdir()?;
    let config = migration_config(dir.path(), "pipeline.toml");
    seed_stores(&PipelineConfig::load(&config)?, dir.path(), 400, 150)?;
    let out = dir.path().join("export");
    let report = export(&config, &out, &["--max-file-kb", "20"])?;
    let users = exported_users(&out, 20 * 1024)?;
    assert!(users.len() > 300, "{} users", users.len());
    assert!(report["files"].as_array().unwrap().len() > 5, "{report}");
    let report_text = report.to_string();
    for secret in [
        "$2a$",
        "$2b$",
        "$2y$",
        "$argon2",
        "pbkdf2_sha256$",
        "sha1$",
        "md5$",
    ] {
        assert!(
            !report_text.contains(secret),
            "the report quotes a hash: {secret}"
        );
    }

    // Exactly the legacy users without a directory user.
    let legacy = legacy_accounts(dir.path());
    let in_directory = directory_emails(dir.path());
    let expected: BTreeSet<&String> = legacy
        .keys()
        .filter(|e| !in_directory.contains(*e))
        .collect();
    assert_eq!(users.keys().collect::<BTreeSet<_>>(), expected);
    assert_eq!(
        report["skipped_in_directory"].as_u64().unwrap() as usize,
        legacy.len() - expected.len()
    );

    for (email, user) in &users {
        let accounts = &legacy[email];
        let metadata = &user["app_metadata"];
        assert_eq!(metadata["bulkImported"], true);
        let listed: BTreeSet<(String, String)> = metadata["legacy_accounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["product"].as_str().unwrap().into(),
                    a["legacy_id"].as_str().unwrap().into(),
                )
            })
            .collect();
        assert_eq!(listed, accounts.iter().cloned().collect(), "{email}");
        if accounts.len() > 1 {
            // Several products, several passwords maybe: none usable, a reset.
            assert_eq!(metadata["forcePasswordReset"], true, "{email}");
            assert_eq!(user["custom_password_hash"]["algorithm"], "sha256");
        }
    }

    // A single product's user signs in with the password they know, as Auth0 would
    // check it; a wrong one does not.
    let (mut verified, mut refused) = (0, 0);
    let mut algorithms = BTreeSet::new();
    for file in login_files(dir.path()) {
        let login: Value = serde_json::from_str(&std::fs::read_to_string(file)?)?;
        let email = login["email"].as_str().unwrap().to_lowercase();
        let (Some(user), Some(password)) = (users.get(&email), login["password"].as_str()) else {
            continue;
        };
        if user["app_metadata"]["forcePasswordReset"] == true {
            assert!(!auth0_verifies(&user["custom_password_hash"], password));
            continue;
        }
        let custom = &user["custom_password_hash"];
        algorithms.insert(custom["algorithm"].as_str().unwrap().to_owned());
        if auth0_verifies(custom, password) {
            verified += 1;
        } else {
            refused += 1;
        }
        assert!(
            !auth0_verifies(custom, &format!("{password}-not")),
            "{email}"
        );
    }
    assert!(verified >= 20, "{verified} verified, {refused} refused");
    assert!(
        refused >= 1,
        "the seeded wrong passwords are refused: {refused}"
    );
    assert!(algorithms.len() >= 3, "{algorithms:?}");

    // The directory is new or empty: a second export there is refused.
    let again = portcullis(&[
        "import",
        "export",
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!again.0);
    assert!(again.2.contains("not empty"));
    Ok(())
}

#[test]
fn a_malformed_legacy_row_is_reported_and_the_rest_goes_on() -> Result {
    use portcullis::state::legacy_sqlite::LegacyRow;
    let dir = tempfile::tempdir()?;
    let config = migration_config(dir.path(), "pipeline.toml");
    seed_stores(&PipelineConfig::load(&config)?, dir.path(), 50, 0)?;
    let profile = serde_json::json!({"plan": "free"});
    let hash = portcullis::state::passwords::legacy_formats::salted_sha1("pw-one", "s1");
    let rows = [
        LegacyRow {
            legacy_id: "good-1",
            email: "good.one@example.net",
            email_verified: true,
            password_hash: Some(&hash),
            created_at_ms: 1,
            profile: &profile,
        },
        LegacyRow {
            legacy_id: "bad-email",
            email: "not an address",
            email_verified: false,
            password_hash: Some(&hash),
            created_at_ms: 1,
            profile: &profile,
        },
        LegacyRow {
            legacy_id: "huge",
            email: "huge@example.net",
            email_verified: false,
            password_hash: Some(&hash),
            created_at_ms: 1,
            profile: &serde_json::json!({"bio": "x".repeat(4000)}),
        },
    ];
    portcullis::state::LegacyProducts::replace(
        "transfer",
        &format!("sqlite://{}/legacy-transfer.db", dir.path().display()),
        dir.path(),
        &rows,
    )?;
    let out = dir.path().join("export");
    let report = export(&config, &out, &["--max-file-kb", "2"])?;
    let problems: BTreeMap<String, String> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["legacy_id"].as_str().unwrap().into(),
                p["reason"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        problems["bad-email"].contains("not an address"),
        "{problems:?}"
    );
    assert!(
        problems["huge"].contains("larger than a file"),
        "{problems:?}"
    );
    let users = exported_users(&out, 2048)?;
    let good = &users["good.one@example.net"];
    assert!(auth0_verifies(&good["custom_password_hash"], "pw-one"));
    assert!(!users.contains_key("huge@example.net"));
    assert!(
        users.len() > 20,
        "the other products' users are exported too"
    );
    Ok(())
}

#[test]
fn the_same_people_on_postgres_and_mariadb_export_as_from_sqlite() -> Result {
    let (Some(postgres), Some(mysql)) = (
        crate::postgres::fresh_database("export"),
        crate::legacy::fresh_mysql("export"),
    ) else {
        crate::common::not_run("PORTCULLIS_TEST_POSTGRES or PORTCULLIS_TEST_MYSQL is not set");
        return Ok(());
    };
    let sqlite_dir = tempfile::tempdir()?;
    let sqlite_config = migration_config(sqlite_dir.path(), "pipeline.toml");
    seed_stores(
        &PipelineConfig::load(&sqlite_config)?,
        sqlite_dir.path(),
        300,
        0,
    )?;
    let mixed_dir = tempfile::tempdir()?;
    let mixed_config = crate::legacy::config_with_legacy(
        mixed_dir.path(),
        &[("paste", &postgres), ("collect", &mysql)],
    );
    seed_stores(
        &PipelineConfig::load(&mixed_config)?,
        mixed_dir.path(),
        300,
        0,
    )?;
    // Page size 7: many pages, so keyset paging and grouping across pages is crossed.
    let shape = |dir: &Path, config: &Path| -> Result<BTreeMap<String, Value>> {
        let out = dir.join("export");
        export(config, &out, &["--page", "7"])?;
        Ok(exported_users(&out, 500 * 1024)?
            .into_iter()
            .map(|(email, user)| {
                let metadata = &user["app_metadata"];
                (
                    email,
                    serde_json::json!([
                        metadata["legacy_accounts"],
                        metadata["forcePasswordReset"],
                        user["custom_password_hash"]["algorithm"],
                        user["email_verified"],
                    ]),
                )
            })
            .collect())
    };
    let from_sqlite = shape(sqlite_dir.path(), &sqlite_config)?;
    let from_servers = shape(mixed_dir.path(), &mixed_config)?;
    assert!(from_sqlite.len() > 200);
    assert_eq!(from_sqlite, from_servers);

    // The unified ids go back into the products alike, and a second run writes none.
    let counts = |config: &Path| -> Vec<Value> {
        let mut seen = Vec::new();
        for extra in [&["--pregenerate"][..], &[], &[]] {
            let (ok, report, stderr) = backfill_ids(config, extra);
            assert!(ok, "{stderr}");
            seen.push(serde_json::json!([
                report["written"],
                report["repaired"],
                report["unchanged"],
                report["rows_seen"]
            ]));
        }
        seen
    };
    let on_sqlite = counts(&sqlite_config);
    assert!(on_sqlite[0][0].as_u64().unwrap() > 0 && on_sqlite[1][0].as_u64().unwrap() > 0);
    assert_eq!(on_sqlite[2][0], 0);
    assert_eq!(on_sqlite, counts(&mixed_config));
    Ok(())
}
