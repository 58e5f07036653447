//! Versioned migrations (`state::migrations`): a directory made by every schema the
//! project has shipped (tests/host/schemas, written from git by `extract.py`) opens
//! with today's store, keeps its rows, ends with exactly the tables, columns and
//! indexes a new directory has, and records every version; a directory from a newer
//! build is refused. SQLite always; PostgreSQL when PORTCULLIS_TEST_POSTGRES is set.

use std::collections::BTreeSet;
use std::path::PathBuf;

use portcullis::state::migrations::LATEST;
use portcullis::state::{PostgresState, SqliteState};

use crate::common::{Result, workspace_root};

fn shipped(dialect: &str) -> Vec<PathBuf> {
    let dir = workspace_root().join("host/tests/host/schemas");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{dialect}-"))
        })
        .collect();
    files.sort();
    files
}

/// Every table's columns (name, type, not null, default, key) and every index: the
/// shape, whatever order columns were added in.
fn sqlite_shape(conn: &rusqlite::Connection) -> BTreeSet<String> {
    let mut shape = BTreeSet::new();
    let mut tables = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .unwrap();
    let tables: Vec<String> = tables
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    for table in tables {
        let mut columns = conn
            .prepare("SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info(?1)")
            .unwrap();
        for column in columns
            .query_map([&table], |r| {
                Ok(format!(
                    "{table}.{}: {} notnull={} default={:?} pk={}",
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, i64>(4)?
                ))
            })
            .unwrap()
        {
            shape.insert(column.unwrap());
        }
    }
    let mut indexes = conn
        .prepare(
            "SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL",
        )
        .unwrap();
    for index in indexes
        .query_map([], |r| {
            Ok(format!(
                "index {} on {}",
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?
            ))
        })
        .unwrap()
    {
        shape.insert(index.unwrap());
    }
    shape
}

/// A row in `users` whatever its shape: a value for each column that needs one.
fn insert_user(columns: &[(String, String, bool, bool)]) -> String {
    let (names, values): (Vec<&str>, Vec<String>) = columns
        .iter()
        .filter(|(name, _, not_null, has_default)| name == "id" || (*not_null && !has_default))
        .map(|(name, kind, _, _)| {
            let value = match name.as_str() {
                "id" => "'usr_upgrade'".to_owned(),
                _ if kind.to_ascii_uppercase().contains("INT") => "0".to_owned(),
                _ if kind.to_ascii_uppercase().contains("BOOL") => "false".to_owned(),
                _ => format!("'{name}-upgrade@example.com'"),
            };
            (name.as_str(), value)
        })
        .unzip();
    format!(
        "INSERT INTO users ({}) VALUES ({})",
        names.join(", "),
        values.join(", ")
    )
}

fn versions_sqlite(conn: &rusqlite::Connection) -> Vec<u32> {
    let mut statement = conn
        .prepare("SELECT version FROM schema_migrations ORDER BY version")
        .unwrap();
    statement
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

#[test]
fn every_shipped_sqlite_schema_upgrades_in_place() -> Result {
    let files = shipped("sqlite");
    assert!(files.len() >= 13, "{files:?}");
    let dir = tempfile::tempdir()?;
    let fresh_path = dir.path().join("fresh.db");
    drop(SqliteState::open(&fresh_path)?);
    let fresh = sqlite_shape(&rusqlite::Connection::open(&fresh_path)?);
    let all: Vec<u32> = (1..=LATEST).collect();
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let path = dir.path().join(format!("{name}.db"));
        {
            let conn = rusqlite::Connection::open(&path)?;
            conn.execute_batch(&std::fs::read_to_string(&file)?)?;
            let mut info = conn.prepare(
                "SELECT name, type, \"notnull\", dflt_value IS NOT NULL FROM pragma_table_info('users')",
            )?;
            let columns: Vec<(String, String, bool, bool)> = info
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<rusqlite::Result<_>>()?;
            conn.execute_batch(&insert_user(&columns))?;
        }
        SqliteState::open(&path).map_err(|e| format!("{name}: {e}"))?;
        // Opened again, nothing is applied twice.
        SqliteState::open(&path).map_err(|e| format!("{name}, again: {e}"))?;
        let conn = rusqlite::Connection::open(&path)?;
        assert_eq!(versions_sqlite(&conn), all, "{name}");
        let kept: i64 = conn.query_row(
            "SELECT COUNT(*) FROM users WHERE id = 'usr_upgrade'",
            [],
            |r| r.get(0),
        )?;
        assert_eq!(kept, 1, "{name}: the row made before the upgrade");
        let upgraded = sqlite_shape(&conn);
        assert_eq!(
            upgraded.symmetric_difference(&fresh).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "{name}: the upgraded shape differs from a new directory's"
        );
    }
    Ok(())
}

#[test]
fn a_directory_from_a_newer_build_is_refused() -> Result {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("directory.db");
    drop(SqliteState::open(&path)?);
    rusqlite::Connection::open(&path)?.execute(
        "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (?1, 'from the future', 0)",
        [LATEST + 1],
    )?;
    let Err(refused) = SqliteState::open(&path) else {
        panic!("a newer schema opened");
    };
    assert!(
        refused.to_string().contains("newer than this build"),
        "{refused}"
    );
    Ok(())
}

fn postgres_shape(client: &mut postgres::Client) -> BTreeSet<String> {
    let mut shape = BTreeSet::new();
    for row in client
        .query(
            "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text,
                    COALESCE(regexp_replace(column_default, 'pc_[a-z_]+_[0-9]+\\.', ''), '')
             FROM information_schema.columns WHERE table_schema = current_schema()",
            &[],
        )
        .unwrap()
    {
        shape.insert(format!(
            "{}.{}: {} nullable={} default={}",
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, String>(2),
            row.get::<_, String>(3),
            row.get::<_, String>(4)
        ));
    }
    for row in client
        .query(
            "SELECT indexname::text, tablename::text FROM pg_indexes WHERE schemaname = current_schema()",
            &[],
        )
        .unwrap()
    {
        shape.insert(format!(
            "index {} on {}",
            row.get::<_, String>(0),
            row.get::<_, String>(1)
        ));
    }
    shape
}

#[test]
fn every_shipped_postgres_schema_upgrades_in_place() -> Result {
    let files = shipped("postgres");
    assert!(files.len() >= 12, "{files:?}");
    let Some(fresh_url) = crate::postgres::fresh_database("schema_fresh") else {
        crate::common::not_run("PORTCULLIS_TEST_POSTGRES is not set");
        return Ok(());
    };
    drop(PostgresState::connect(&fresh_url)?);
    let fresh = postgres_shape(&mut postgres::Client::connect(&fresh_url, postgres::NoTls)?);
    let all: Vec<i32> = (1..=LATEST as i32).collect();
    for (n, file) in files.iter().enumerate() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let url = crate::postgres::fresh_database(&format!("schema_{n}")).unwrap();
        let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
        client.batch_execute(&std::fs::read_to_string(file)?)?;
        let columns: Vec<(String, String, bool, bool)> = client
            .query(
                "SELECT column_name::text, data_type::text, is_nullable = 'NO', column_default IS NOT NULL
                 FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = 'users'",
                &[],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
        client.batch_execute(&insert_user(&columns))?;
        drop(PostgresState::connect(&url).map_err(|e| format!("{name}: {e}"))?);
        drop(PostgresState::connect(&url).map_err(|e| format!("{name}, again: {e}"))?);
        let versions: Vec<i32> = client
            .query(
                "SELECT version FROM schema_migrations ORDER BY version",
                &[],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(versions, all, "{name}");
        let kept: i64 = client
            .query_one("SELECT COUNT(*) FROM users WHERE id = 'usr_upgrade'", &[])?
            .get(0);
        assert_eq!(kept, 1, "{name}: the row made before the upgrade");
        let upgraded = postgres_shape(&mut client);
        assert_eq!(
            upgraded.symmetric_difference(&fresh).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "{name}: the upgraded shape differs from a new directory's"
        );
    }
    Ok(())
}

/// `schema_migrations` must hold 1..=N each once: a gap, or another tool's table of
/// that name, is refused with a message rather than opened half-migrated (or a
/// crash, as a `bigint` version once was on PostgreSQL).
#[test]
fn a_migrations_table_with_gaps_or_of_another_shape_is_refused() -> Result {
    let dir = tempfile::tempdir()?;
    let gaps = dir.path().join("gaps.db");
    drop(SqliteState::open(&gaps)?);
    rusqlite::Connection::open(&gaps)?
        .execute("DELETE FROM schema_migrations WHERE version = 3", [])?;
    let Err(refused) = SqliteState::open(&gaps) else {
        panic!("a directory missing migration 3 opened");
    };
    assert!(refused.to_string().contains("not 1 to"), "{refused}");

    let other = dir.path().join("other.db");
    rusqlite::Connection::open(&other)?.execute_batch(
        "CREATE TABLE schema_migrations (version BIGINT NOT NULL PRIMARY KEY, dirty BOOLEAN NOT NULL);
         INSERT INTO schema_migrations VALUES (11, false);",
    )?;
    let Err(refused) = SqliteState::open(&other) else {
        panic!("another tool's migrations table opened");
    };
    assert!(refused.to_string().contains("not 1 to"), "{refused}");

    let Some(url) = crate::postgres::fresh_database("schema_other") else {
        crate::common::not_run("PORTCULLIS_TEST_POSTGRES is not set");
        return Ok(());
    };
    postgres::Client::connect(&url, postgres::NoTls)?.batch_execute(
        "CREATE TABLE schema_migrations (version BIGINT NOT NULL PRIMARY KEY, dirty BOOLEAN NOT NULL);
         INSERT INTO schema_migrations VALUES (11, false);",
    )?;
    let Err(refused) = PostgresState::connect(&url) else {
        panic!("another tool's migrations table opened on PostgreSQL");
    };
    assert!(refused.to_string().contains("not 1 to"), "{refused}");
    Ok(())
}

/// Seeding empties the whole directory it made: a table added without being named in
/// `users::CLEARED` (as the recovery tables once were) keeps the last run's rows.
#[test]
fn seeding_clears_every_table_but_the_schema_version_and_import_progress() -> Result {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("directory.db");
    drop(portcullis::state::open_state(
        &format!("sqlite://{}", path.display()),
        dir.path(),
    )?);
    let conn = rusqlite::Connection::open(&path)?;
    let mut tables: BTreeSet<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        )?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for kept in ["schema_migrations", "import_files"] {
        assert!(tables.remove(kept), "{kept} is gone: update this test");
    }
    let cleared: BTreeSet<String> = portcullis::state::users::CLEARED
        .iter()
        .map(|t| t.to_string())
        .collect();
    assert_eq!(
        tables, cleared,
        "tables seeding would leave behind, or name in vain"
    );
    Ok(())
}
