//! A job's users file sealed at rest, opened only in memory; errors show no secret.

use portcullis::state::StateStore;
use portcullis::state::import_jobs::Admission;
use serde_json::{Value, json};

use crate::common::{Exposure, Result};
use crate::import::{Serve, user};

use super::{
    PHONE, config_on, finished, held_mid_job, not_run_without_postgres, secret_file, stored_job,
    submitted, users, wait_for,
};

#[test]
fn a_running_jobs_users_file_is_sealed_in_sqlite_and_its_wal() -> Result {
    let dir = tempfile::tempdir()?;
    let config = config_on(dir.path(), None)?;
    let (file, hash) = secret_file("held", 40)?;
    held_mid_job(dir.path(), &config, file)?;
    let exposure = Exposure::new().databases_under(dir.path());
    exposure.assert_no_phone(PHONE);
    exposure.assert_absent("password hash", &hash);
    Ok(())
}

#[test]
fn a_running_jobs_users_file_is_sealed_in_postgres() -> Result {
    let Some(url) = crate::postgres::fresh_database("jobs_sealed") else {
        return not_run_without_postgres();
    };
    let dir = tempfile::tempdir()?;
    let config = config_on(dir.path(), Some(&url))?;
    let (file, hash) = secret_file("held", 40)?;
    let id = held_mid_job(dir.path(), &config, file)?;
    let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
    let row = client.query_one(
        "SELECT status, users_file, users_file_key_id, t::text FROM import_jobs t WHERE id = $1",
        &[&id],
    )?;
    assert_eq!(row.get::<_, String>(0), "processing");
    let stored: Vec<u8> = row.get(1);
    assert!(!stored.is_empty(), "the file is kept while the job runs");
    assert!(
        row.get::<_, Option<String>>(2).is_some(),
        "sealed: a key id"
    );
    let exposure = Exposure::new()
        .text("import_jobs.users_file", &stored)
        .text("import_jobs row", row.get::<_, String>(3));
    exposure.assert_no_phone(PHONE);
    exposure.assert_absent("password hash", &hash);
    Ok(())
}

/// A job stored by the version before the file was sealed, its file in clear, left
/// running by an instance that died: today's instance upgrades the database, reads the
/// clear file as it is, and finishes the job (which then drops the file).
#[test]
fn a_clear_file_from_before_the_upgrade_is_still_run() -> Result {
    let dir = tempfile::tempdir()?;
    let config = config_on(dir.path(), None)?;
    // A directory at version 13: today's, without what migration 14 added.
    drop(portcullis::state::SqliteState::open(
        &dir.path().join("directory.db"),
    )?);
    let db = rusqlite::Connection::open(dir.path().join("directory.db"))?;
    db.execute_batch(
        "ALTER TABLE import_jobs DROP COLUMN users_file_key_id;
         ALTER TABLE import_jobs DROP COLUMN users_file_nonce;
         ALTER TABLE import_jobs DROP COLUMN stalled_at;
         ALTER TABLE import_jobs DROP COLUMN takeovers;
         DELETE FROM schema_migrations WHERE version = 14;",
    )?;
    db.execute(
        "INSERT INTO import_jobs (id, status, connection_id, upsert, send_completion_email,
             users_file, total, done, inserted, updated, failed, created_at_ms, started_at_ms,
             updated_at_ms, lease_owner, lease_until_ms)
         VALUES ('job_old', 'processing', 'con_portcullis', 0, 0, ?1, 3, 1, 1, 0, 0, ?2, ?2, ?2,
                 'serve-dead', 0)",
        rusqlite::params![
            users("old", 3)?,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis() as i64
        ],
    )?;
    drop(db);
    let serve = Serve::start(dir.path(), &config, "");
    let done = wait_for(&serve, "job_old", "finished", finished);
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        done["summary"],
        json!({"failed": 0, "updated": 0, "inserted": 3, "total": 3}),
        "went on from record 1"
    );
    let db = rusqlite::Connection::open(dir.path().join("directory.db"))?;
    let (rows, file): (i64, Option<Vec<u8>>) = (
        db.query_row(
            "SELECT COUNT(*) FROM users WHERE email_norm LIKE 'old%'",
            [],
            |r| r.get(0),
        )?,
        db.query_row(
            "SELECT users_file FROM import_jobs WHERE id = 'job_old'",
            [],
            |r| r.get(0),
        )?,
    );
    assert_eq!(rows, 2, "record 0 was the dead instance's");
    assert!(file.is_none(), "an ended job's file is dropped");
    Ok(())
}

/// A file sealed under a key the ring no longer holds (a key dropped from `[mfa]` too
/// early in a rotation) fails its job, saying which key, never anything of the file.
#[test]
fn a_file_sealed_with_a_key_the_ring_lacks_fails_its_job_saying_which() -> Result {
    let dir = tempfile::tempdir()?;
    let config = config_on(dir.path(), None)?;
    let state: &dyn StateStore =
        &portcullis::state::SqliteState::open(&dir.path().join("directory.db"))?;
    let mut job = stored_job("job_rotated", &users("rotated", 2)?);
    job.created_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    assert_eq!(state.insert_import_job(&job, 2)?, Admission::Stored);
    let serve = Serve::start(dir.path(), &config, "");
    let failed = wait_for(&serve, "job_rotated", "failed", finished);
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(
        failed["status_details"],
        "The users file was sealed with key \"t1\", which is not in the [mfa] key ring"
    );
    Ok(())
}

/// A refused record's secrets stay hidden however deep they sit: a pepper or a
/// plaintext password put in a property Auth0's schema does not know, inside
/// `custom_password_hash` or its `hash`, `hash.key`, `salt` or `password` (refused as
/// additional properties, like a top-level one), is shown as `*****` by the errors
/// endpoint, and is not kept in clear in the job's errors in SQLite or its WAL.
#[test]
fn a_refused_records_nested_secrets_are_hidden_in_its_errors_on_sqlite() -> Result {
    let dir = tempfile::tempdir()?;
    let config = config_on(dir.path(), None)?;
    let serve = Serve::start(dir.path(), &config, "");
    let mut record = user("not-an-address");
    let custom = record["custom_password_hash"]
        .as_object_mut()
        .ok_or("a custom hash")?;
    custom.insert("plaintext".into(), json!("Nested-Secret-0"));
    custom["hash"]["backup"] = json!("Nested-Secret-1");
    custom["hash"]["key"] = json!({"value": "k", "old_value": "Nested-Secret-2"});
    custom.insert(
        "salt".into(),
        json!({"value": "s", "pepper": "Nested-Secret-3"}),
    );
    custom.insert(
        "password".into(),
        json!({"encoding": "utf8", "value": "Nested-Secret-4"}),
    );
    let id = submitted(&serve, serde_json::to_vec(&json!([record]))?, "nested")?;
    let done = wait_for(&serve, &id, "finished", finished);
    assert_eq!(done["summary"]["failed"], 1, "{done}");
    let errors = serve.get(&format!("/api/v2/jobs/{id}/errors")).text()?;
    assert!(errors.contains("OBJECT_ADDITIONAL_PROPERTIES"), "{errors}");
    let shown: Vec<Value> = serde_json::from_str(&errors)?;
    // What is not secret is still shown, as Auth0 shows it.
    assert_eq!(
        shown[0]["user"]["custom_password_hash"]["algorithm"],
        "sha1"
    );
    assert_eq!(
        shown[0]["user"]["custom_password_hash"]["password"]["encoding"],
        "utf8"
    );
    let seen = Exposure::new()
        .text("the errors endpoint", &errors)
        .databases_under(dir.path());
    for n in 0..5 {
        seen.assert_absent(
            "secret in an unknown property",
            &format!("Nested-Secret-{n}"),
        );
    }
    Ok(())
}
