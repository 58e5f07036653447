//! Landed contract versions are frozen: a rule built against one keeps loading for as
//! long as the host links it. A change to a landed `wit/vX.Y.Z/` file fails here; it
//! belongs in the next version, linked beside the others.

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::common::{Result, workspace_root};

/// `wit/FROZEN.sha256`: `sha256sum` lines, relative to `wit/`.
fn frozen(wit: &Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(wit.join("FROZEN.sha256"))?;
    let mut listed = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (digest, file) = line
            .split_once("  ")
            .ok_or_else(|| format!("not a sha256sum line: {line:?}"))?;
        listed.insert(file.to_string(), digest.to_string());
    }
    Ok(listed)
}

fn wit_files(wit: &Path) -> Result<Vec<String>> {
    let mut files = Vec::new();
    for version in std::fs::read_dir(wit)? {
        let version = version?;
        if !version.file_type()?.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(version.path())? {
            let file = file?;
            files.push(format!(
                "{}/{}",
                version.file_name().to_string_lossy(),
                file.file_name().to_string_lossy()
            ));
        }
    }
    files.sort();
    Ok(files)
}

#[test]
fn landed_contracts_are_unchanged() -> Result {
    let wit = workspace_root().join("wit");
    let listed = frozen(&wit)?;
    assert!(
        listed.contains_key("v0.1.0/rule.wit") && listed.contains_key("v0.2.0/rule.wit"),
        "the landed versions are listed: {listed:?}"
    );
    for file in wit_files(&wit)? {
        let digest = listed.get(&file).ok_or_else(|| {
            format!(
                "wit/{file} is not in wit/FROZEN.sha256: a version is frozen when it lands; \
                 add its lines (cd wit && sha256sum {file})"
            )
        })?;
        let actual = hex::encode(Sha256::digest(std::fs::read(wit.join(&file))?));
        assert_eq!(
            &actual, digest,
            "wit/{file} changed after it landed: put the change in a new version beside it"
        );
    }
    for file in listed.keys() {
        assert!(wit.join(file).exists(), "wit/{file} is listed but gone");
    }
    Ok(())
}
