//! The import token in an attacker's hands: the victim keeps the account.

use std::collections::BTreeMap;
use std::path::Path;

use portcullis::PipelineConfig;
use serde_json::Value;

use super::{Serve, backfill_ids, unified_ids, user};
use crate::common::{Result, migration_config, seed_stores};

// The import token as an attacker's: two parties, a victim and an attacker, over
// HTTP against `serve`'s import API; the victim must keep the account.

const VICTIM: &str = "victim.one@victim.example";
const VICTIM_PASSWORD: &str = "victim-one-legacy-password";
const SECOND: &str = "victim.two@victim.example";
const SECOND_PASSWORD: &str = "victim-two-legacy-password";
const ATTACKER: &str = "attacker@evil.example";

/// A seeded migration (directory on `directory_url`, else SQLite) with the victims'
/// legacy accounts: VICTIM in paste (`P-victim-1`), SECOND in collect (`C-victim-2`),
/// and a bystander who holds `T-legit` in transfer under a differently cased email.
fn attack_setup(directory_url: Option<&str>) -> Result<(tempfile::TempDir, std::path::PathBuf)> {
    let dir = tempfile::tempdir()?;
    let config = migration_config(dir.path(), "pipeline.toml");
    if let Some(url) = directory_url {
        crate::common::move_directory_to(&config, url)?;
    }
    seed_stores(&PipelineConfig::load(&config)?, dir.path(), 20, 0)?;
    let hash = portcullis::state::passwords::legacy_formats::salted_sha1;
    for (product, legacy_id, email, password_hash) in [
        ("paste", "P-victim-1", VICTIM, hash(VICTIM_PASSWORD, "s1")),
        ("collect", "C-victim-2", SECOND, hash(SECOND_PASSWORD, "s2")),
        (
            "transfer",
            "T-legit",
            "Legit.Person@Victim.Example",
            hash("legit", "s3"),
        ),
    ] {
        rusqlite::Connection::open(dir.path().join(format!("legacy-{product}.db")))?.execute(
            "INSERT INTO accounts (legacy_id, email, email_norm, email_verified, password_hash,
                 created_at_ms, profile) VALUES (?1, ?2, ?3, 1, ?4, 1, '{}')",
            rusqlite::params![legacy_id, email, email.to_lowercase(), password_hash],
        )?;
    }
    Ok((dir, config))
}

fn directory_user(config: &Path, email: &str) -> Result<Option<portcullis::model::DirectoryUser>> {
    let config = PipelineConfig::load(config)?;
    let state =
        portcullis::state::open_state(&config.state.as_ref().unwrap().directory, &config.base_dir)?;
    Ok(state.find_by_email(email)?.into_iter().next())
}

fn submit_and_finish(
    serve: &Serve,
    users: &Value,
    external_id: &str,
    upsert: bool,
) -> Result<(Value, Vec<Value>)> {
    let response = serve.submit(serde_json::to_vec(users)?, external_id, upsert);
    assert_eq!(response.status(), 201);
    let job: Value = response.json()?;
    let id = job["id"].as_str().unwrap();
    let done = serve.finished(id);
    assert_eq!(done["status"], "completed", "{done}");
    let errors = serve.get(&format!("/api/v2/jobs/{id}/errors"));
    let errors = if errors.status() == 204 {
        Vec::new()
    } else {
        errors.json()?
    };
    Ok((done, errors))
}

/// (a) The attacker upserts a victim who has signed in, setting the reset and bulk
/// flags and dropping `migrated`: the victim still signs in with their password, and
/// those keys are as they were. A user nobody has seen sign in still takes a re-import's
/// flags.
pub(crate) fn an_upsert_leaves_a_signed_in_users_flags_alone(
    directory_url: Option<&str>,
) -> Result {
    let (dir, config) = attack_setup(directory_url)?;
    let serve = Serve::start(dir.path(), &config, "");
    let first = serve.login(VICTIM, VICTIM_PASSWORD, "tx-victim-migrates");
    assert_eq!(first["decision"]["type"], "allow", "{first}");
    let before = directory_user(&config, VICTIM)?.expect("the victim was migrated");
    assert_eq!(before.app_metadata["migrated"], true);

    // Imported earlier, never signed in: a later wave may still flag them.
    submit_and_finish(
        &serve,
        &serde_json::json!([user("dormant@victim.example")]),
        "wave-1",
        false,
    )?;

    let mut attack = user("Victim.One@VICTIM.example");
    attack["app_metadata"] = serde_json::json!({
        "bulkImported": true, "forcePasswordReset": true, "migrated": null, "imported_wave": 2,
    });
    let mut dormant = user("dormant@victim.example");
    dormant["app_metadata"]["forcePasswordReset"] = serde_json::json!(true);
    let (done, _) = submit_and_finish(
        &serve,
        &serde_json::json!([attack, dormant]),
        "attack-upsert",
        true,
    )?;
    assert_eq!(done["summary"]["updated"], 2, "{done}");

    let mut broken = Vec::new();
    let after = directory_user(&config, VICTIM)?.unwrap();
    for key in ["migrated", "bulkImported", "forcePasswordReset"] {
        if after.app_metadata.get(key) != before.app_metadata.get(key) {
            broken.push(format!(
                "the victim's {key} went from {:?} to {:?}",
                before.app_metadata.get(key),
                after.app_metadata.get(key)
            ));
        }
    }
    let again = serve.login(VICTIM, VICTIM_PASSWORD, "tx-victim-after-upsert");
    if again["decision"]["type"] != "allow" {
        broken.push(format!(
            "the victim no longer signs in: {}",
            again["decision"]
        ));
    }
    assert!(broken.is_empty(), "{broken:#?}");
    // The rest of the upsert is merged; the dormant user took the reset flag.
    assert_eq!(after.app_metadata["imported_wave"], 2);
    let dormant = directory_user(&config, "dormant@victim.example")?.unwrap();
    assert_eq!(dormant.app_metadata["forcePasswordReset"], true);
    Ok(())
}

/// (b) The attacker imports a new user whose `legacy_accounts` names the victim's
/// unlinked legacy account (another email): refused as CONFLICT; the victim then
/// migrates lazily with their legacy password, and `backfill-ids` gives the victim's
/// product row the victim's id, never the attacker's. A link under the record's own
/// email (in another case) is taken.
pub(crate) fn an_imported_link_to_someone_elses_account_is_refused(
    directory_url: Option<&str>,
) -> Result {
    let (dir, config) = attack_setup(directory_url)?;
    let serve = Serve::start(dir.path(), &config, "");
    let mut attack = user(ATTACKER);
    attack["app_metadata"]["legacy_accounts"] =
        serde_json::json!([{"product": "collect", "legacy_id": "C-victim-2"}]);
    let mut nowhere = user("nowhere@evil.example");
    nowhere["app_metadata"]["legacy_accounts"] =
        serde_json::json!([{"product": "paste", "legacy_id": "P-does-not-exist"}]);
    let mut legit = user("legit.person@victim.example");
    legit["app_metadata"]["legacy_accounts"] =
        serde_json::json!([{"product": "transfer", "legacy_id": "T-legit"}]);
    let (done, errors) = submit_and_finish(
        &serve,
        &serde_json::json!([attack, nowhere, legit]),
        "attack-links",
        false,
    )?;

    let mut broken = Vec::new();
    let login = serve.login(SECOND, SECOND_PASSWORD, "tx-second-migrates");
    if login["decision"]["type"] != "allow" {
        broken.push(format!("the victim cannot migrate: {}", login["decision"]));
    }
    let (ok, report, stderr) = backfill_ids(&config, &[]);
    assert!(ok, "{stderr}");
    let attacker_id = portcullis::jobs::import::records::user_id_for(ATTACKER);
    let row = unified_ids(dir.path(), "collect")["C-victim-2"].clone();
    let victim_id = directory_user(&config, SECOND)?.map(|u| u.id);
    if row.as_deref() == Some(attacker_id.as_str()) || row != victim_id {
        broken.push(format!(
            "the victim's product row holds {row:?}, not the victim's {victim_id:?} ({report})"
        ));
    }
    let refused: BTreeMap<String, Vec<String>> = errors
        .iter()
        .map(|e| {
            (
                e["user"]["email"].as_str().unwrap().to_owned(),
                e["errors"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["code"].as_str().unwrap().to_owned())
                    .collect(),
            )
        })
        .collect();
    let expected = BTreeMap::from([
        (ATTACKER.to_owned(), vec!["CONFLICT".to_owned()]),
        (
            "nowhere@evil.example".to_owned(),
            vec!["CONFLICT".to_owned()],
        ),
    ]);
    if refused != expected {
        broken.push(format!("refused {refused:?} ({done})"));
    }
    assert!(broken.is_empty(), "{broken:#?}");
    assert!(directory_user(&config, ATTACKER)?.is_none());
    assert_eq!(done["summary"]["inserted"], 1, "{done}");
    let legit = directory_user(&config, "legit.person@victim.example")?.unwrap();
    assert_eq!(legit.identities.len(), 1, "{legit:?}");
    assert_eq!(
        unified_ids(dir.path(), "transfer")["T-legit"].as_deref(),
        Some(legit.id.as_str())
    );
    Ok(())
}

#[test]
fn an_upsert_leaves_a_signed_in_users_flags_alone_on_sqlite() -> Result {
    an_upsert_leaves_a_signed_in_users_flags_alone(None)
}

#[test]
fn an_imported_link_to_someone_elses_account_is_refused_on_sqlite() -> Result {
    an_imported_link_to_someone_elses_account_is_refused(None)
}
