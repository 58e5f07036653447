//! A bad pipeline config is refused with an error that names what is wrong.

use portcullis::{ConfigError, LoadError, PipelineConfig};

use crate::common::{load, rule, workspace_root};

fn config_error(text: &str) -> String {
    match PipelineConfig::parse(text, &workspace_root()) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn invalid_configs_name_the_problem() {
    let good = rule("r", "add-claim", "");
    let cases = [
        (String::new(), "no [[rule]]"),
        (format!("{good}colour = \"red\""), "unknown field `colour`"),
        (
            good.replace("name = \"r\"", "name = \"r\"\non_error = \"maybe\""),
            "unknown variant `maybe`",
        ),
        (
            good.replace("name = \"r\"", "name = \"r\"\ngrants = [\"network\"]"),
            "unknown variant `network`",
        ),
        (
            good.replace("name = \"r\"", "name = \"r\"\ndeadline_ms = 0"),
            "deadline_ms",
        ),
        (
            good.replace("name = \"r\"", "name = \"r\"\nmemory_mb = 100000"),
            "memory_mb",
        ),
        (format!("{good}{good}"), "used twice"),
        ("[[rule]]\nname = \"x\"".into(), "missing field `component`"),
        ("[[rule]\n".into(), "invalid pipeline config"),
    ];
    for (text, expected) in cases {
        let message = config_error(&text);
        assert!(
            message.contains(expected),
            "{message:?} should mention {expected:?}"
        );
    }
}

#[test]
fn missing_and_invalid_components_are_refused() {
    let missing = load(&[rule("r", "add-claim", "").replace("guest_add_claim.wasm", "nope.wasm")])
        .err()
        .unwrap();
    assert!(
        matches!(missing, LoadError::ReadComponent { .. }),
        "{missing}"
    );
    assert!(missing.to_string().contains("nope.wasm"));

    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"this is not wasm").unwrap();
    let text = format!(
        "[[rule]]\nname = \"junk\"\ncomponent = \"{}\"\n",
        junk.display()
    );
    let config = PipelineConfig::parse(&text, dir.path()).unwrap();
    let invalid = crate::common::runtime().load(&config).err().unwrap();
    assert!(
        matches!(invalid, LoadError::InvalidComponent { .. }),
        "{invalid}"
    );
    assert!(invalid.to_string().contains("junk"), "{invalid}");
}

#[test]
fn a_missing_config_file_names_the_path() {
    let err = PipelineConfig::load(std::path::Path::new("/nonexistent/pipeline.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err.to_string().contains("/nonexistent/pipeline.toml"));
}
