//! The products' legacy stores on real servers: PostgreSQL and MariaDB beside SQLite,
//! seeded the same way, must give the migration the same answers.

use portcullis::{Decision, Gateway, LoginAttempt, PipelineConfig};

use crate::common::{Result, login_files, migration_config, runtime};

/// A fresh MySQL/MariaDB database for one test, when `PORTCULLIS_TEST_MYSQL` names
/// the server (`mysql://root@127.0.0.1:3306/test`).
pub(crate) fn fresh_mysql(name: &str) -> Option<String> {
    use mysql::prelude::Queryable;
    let base = std::env::var("PORTCULLIS_TEST_MYSQL").ok()?;
    let database = format!("pc_{name}_{}", std::process::id());
    let mut admin =
        mysql::Conn::new(mysql::Opts::from_url(&base).unwrap()).expect("MySQL is reachable");
    admin
        .query_drop(format!("DROP DATABASE IF EXISTS {database}"))
        .unwrap();
    admin
        .query_drop(format!("CREATE DATABASE {database}"))
        .unwrap();
    let server = base
        .rsplit_once('/')
        .map_or(base.as_str(), |(server, _)| server);
    Some(format!("{server}/{database}"))
}

/// Drops what differs between two seedings of the same people: generated user ids
/// (also inside JSON payloads) and times.
fn scrub(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.remove("migrated_at");
            map.values_mut().for_each(scrub);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(scrub),
        serde_json::Value::String(text) => {
            while let Some(start) = text.find("usr_") {
                let end = text[start..]
                    .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                    .map_or(text.len(), |n| start + n);
                text.replace_range(start..end, "USER");
            }
        }
        _ => {}
    }
}

/// The migration fixture in a new directory, with these legacy store URLs.
pub(crate) fn config_with_legacy(
    dir: &std::path::Path,
    urls: &[(&str, &str)],
) -> std::path::PathBuf {
    let path = migration_config(dir, "pipeline.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (product, url) in urls {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{product} = ")))
            .unwrap()
            .to_owned();
        text = text.replace(&line, &format!("{product} = \"{url}\""));
    }
    std::fs::write(&path, text).unwrap();
    path
}

fn seeded_gateway(config: &std::path::Path, dir: &std::path::Path) -> Gateway {
    let loaded = PipelineConfig::load(config).unwrap();
    crate::common::seed_stores(&loaded, dir, 400, 120).unwrap();
    Gateway::open(&loaded, runtime())
        .unwrap()
        .without_applying()
}

#[test]
fn postgres_and_mysql_legacy_stores_migrate_as_sqlite_does() -> Result {
    let (Some(postgres), Some(mysql)) = (
        crate::postgres::fresh_database("legacy"),
        fresh_mysql("legacy"),
    ) else {
        crate::common::not_run("PORTCULLIS_TEST_POSTGRES or PORTCULLIS_TEST_MYSQL is not set");
        return Ok(());
    };
    let sqlite_dir = tempfile::tempdir()?;
    let sqlite = seeded_gateway(
        &migration_config(sqlite_dir.path(), "pipeline.toml"),
        sqlite_dir.path(),
    );
    // paste on PostgreSQL, collect on MariaDB, transfer stays a SQLite file.
    let mixed_dir = tempfile::tempdir()?;
    let mixed_config = config_with_legacy(
        mixed_dir.path(),
        &[("paste", &postgres), ("collect", &mysql)],
    );
    let mixed = seeded_gateway(&mixed_config, mixed_dir.path());

    let (mut compared, mut migrated) = (0, 0);
    let files = login_files(sqlite_dir.path());
    assert_eq!(files.len(), login_files(mixed_dir.path()).len());
    for (a, b) in files.iter().zip(login_files(mixed_dir.path())) {
        let one = LoginAttempt::from_json(&std::fs::read_to_string(a)?)?;
        let other = LoginAttempt::from_json(&std::fs::read_to_string(b)?)?;
        let (x, y) = (sqlite.login(&one)?, mixed.login(&other)?);
        // Same people, same passwords, same hashes: the same verdicts, to the effect
        // (but for the user ids and times two seedings generate).
        let effects = |v: &portcullis::Verdict| {
            let mut value = serde_json::to_value(&v.effects).unwrap();
            scrub(&mut value);
            value
        };
        assert_eq!(
            serde_json::to_value(&x.decision)?,
            serde_json::to_value(&y.decision)?,
            "{}",
            one.transaction_id
        );
        assert_eq!(effects(&x), effects(&y), "{}", one.transaction_id);
        compared += 1;
        migrated += usize::from(
            x.effects
                .iter()
                .any(|e| matches!(e, portcullis::Effect::LinkLegacyAccount { .. })),
        );
    }
    assert!(
        compared >= 100 && migrated >= 20,
        "{compared} compared, {migrated} with links"
    );

    // A server that does not answer is a store that is down: the migration fails
    // closed and says to retry.
    let down_dir = tempfile::tempdir()?;
    let down_config = config_with_legacy(
        down_dir.path(),
        &[
            ("paste", "postgres://postgres@127.0.0.1:1/test"),
            ("collect", "mysql://root@127.0.0.1:1/test"),
        ],
    );
    let down = Gateway::open(&PipelineConfig::load(&down_config)?, runtime())?;
    let first_login = files
        .iter()
        .map(|f| LoginAttempt::from_json(&std::fs::read_to_string(f).unwrap()).unwrap())
        .find(|l| l.email.contains('@') && !l.email.starts_with("nobody"))
        .unwrap();
    // (Its directory is empty: every login asks the legacy stores.)
    let verdict = down.login(&first_login)?;
    match verdict.decision {
        Decision::Deny { retryable, .. } => assert!(retryable, "{:?}", verdict.trace),
        other => panic!("{other:?}"),
    }
    Ok(())
}
