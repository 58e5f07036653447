//! The hash vectors made apart from the directory: each signs in with its password.

use std::collections::BTreeSet;

use portcullis::PipelineConfig;
use serde_json::Value;

use super::{Serve, stored_hash};
use crate::common::{Result, migration_config, seed_stores};

/// The vectors `fixtures/import/hash_vectors.py` made with implementations apart from
/// the directory's (hashlib, pycryptodome, bcrypt, argon2-cffi).
fn hash_vectors() -> Vec<Value> {
    let path = crate::common::workspace_root().join("fixtures/import/hash-vectors.json");
    let file: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    file["vectors"].as_array().unwrap().clone()
}

#[test]
fn every_hash_vector_signs_in_with_its_password_and_no_other() -> Result {
    let vectors = hash_vectors();
    // Every algorithm Auth0 documents but scrypt, each encoding of the hash, the salt
    // (and no salt), both salt positions and every password encoding.
    let seen = |key: &str| -> BTreeSet<String> {
        vectors
            .iter()
            .filter_map(|v| v["combination"][key].as_str().map(String::from))
            .collect()
    };
    assert_eq!(
        seen("algorithm").into_iter().collect::<Vec<_>>(),
        [
            "argon2", "bcrypt", "hmac", "ldap", "md4", "md5", "pbkdf2", "sha1", "sha256", "sha512"
        ]
    );
    assert_eq!(seen("salt.position").len(), 2);
    assert_eq!(seen("salt.encoding").len(), 3);
    assert_eq!(seen("hash.encoding").len(), 4);
    assert_eq!(seen("password.encoding").len(), 6);
    assert_eq!(seen("hash.digest").len(), 8);
    assert_eq!(seen("digest").len(), 8, "PBKDF2 over every digest");

    let dir = tempfile::tempdir()?;
    let config = migration_config(dir.path(), "pipeline.toml");
    seed_stores(&PipelineConfig::load(&config)?, dir.path(), 10, 0)?;
    let serve = Serve::start(dir.path(), &config, "");
    let records: Vec<&Value> = vectors.iter().map(|v| &v["record"]).collect();
    let job: Value = serve
        .submit(serde_json::to_vec(&records)?, "vectors", false)
        .json()?;
    let done = serve.finished(job["id"].as_str().unwrap());
    let errors = serve
        .get(&format!(
            "/api/v2/jobs/{}/errors",
            job["id"].as_str().unwrap()
        ))
        .text()?;
    assert_eq!(
        done["summary"]["inserted"],
        vectors.len(),
        "{done} {errors}"
    );

    // Through the login's own path: a wrong password first (the right one replaces
    // the imported hash with argon2id), then the right one.
    let mut failures = Vec::new();
    for (n, vector) in vectors.iter().enumerate() {
        let email = vector["record"]["email"].as_str().unwrap();
        // The stored format's name and parameters, not its salt or hash.
        let stored = stored_hash(dir.path(), email).unwrap();
        let format = stored.rsplitn(3, '$').last().unwrap_or_default().to_owned();
        let wrong = serve.login(
            email,
            vector["wrong_password"].as_str().unwrap(),
            &format!("tx-wrong-{n}"),
        );
        let right = serve.login(
            email,
            vector["password"].as_str().unwrap(),
            &format!("tx-right-{n}"),
        );
        if wrong["decision"]["type"] != "deny" || right["decision"]["type"] != "allow" {
            failures.push(format!(
                "{} (stored as {format}$…): wrong {}, right {}",
                vector["name"], wrong["decision"], right["decision"]
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}
