//! The recordings in fixtures/recordings replay against the current rules; a changed
//! verdict is caught and shown as a diff; recordings never hold a password.

use std::path::PathBuf;

use crate::common::{Result, workspace_root};

fn recordings() -> Vec<PathBuf> {
    portcullis::replay::recording_files(&[workspace_root().join("fixtures/recordings")]).unwrap()
}

#[test]
fn every_recording_replays() -> Result {
    let files = recordings();
    assert!(
        files.len() >= 27,
        "the fixtures hold every scenario: {files:?}"
    );
    for path in [
        "recovery-wait",
        "recovery-code",
        "recovery-code-refused",
        "recovery-cancelled",
        "recovery-assisted",
    ] {
        assert!(
            files.iter().any(|f| f.ends_with(format!("{path}.json"))),
            "no recording of {path}: {files:?}"
        );
    }
    let mut replay =
        portcullis::replay::Replay::new(&workspace_root().join("fixtures/pipeline.toml"))?;
    for file in &files {
        let result = replay.run(file);
        assert!(
            result.error.is_none(),
            "{}: {:?}",
            file.display(),
            result.error
        );
        assert!(!result.steps.is_empty());
        for step in &result.steps {
            assert!(
                step.passed(),
                "{} step {}:\n{}",
                file.display(),
                step.step,
                step.diff()
            );
            assert!(
                step.unexpected_calls.is_empty(),
                "{:?}",
                step.unexpected_calls
            );
        }
    }
    Ok(())
}

/// Replays a copy of `fixtures/recordings/<name>` changed by `edit`.
fn replay_edited(
    name: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> Result<portcullis::replay::RecordingResult> {
    let dir = tempfile::tempdir()?;
    let original = workspace_root().join("fixtures/recordings").join(name);
    let mut recording: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(original)?)?;
    // The copy is elsewhere: a pipeline of its own is named from the fixtures.
    if let Some(pipeline) = recording["pipeline"].as_str() {
        let fixtures = workspace_root().join("fixtures/recordings").join(pipeline);
        recording["pipeline"] = fixtures.to_string_lossy().into_owned().into();
    }
    edit(&mut recording);
    let path = dir.path().join(name);
    std::fs::write(&path, recording.to_string())?;
    let mut replay =
        portcullis::replay::Replay::new(&workspace_root().join("fixtures/pipeline.toml"))?;
    Ok(replay.run(&path))
}

#[test]
fn a_changed_verdict_fails_with_a_diff() -> Result {
    let result = replay_edited("single-product-migrated.json", |recording| {
        // Pretend the product's answer changed: the password no longer matches.
        for call in recording["steps"][0]["calls"].as_array_mut().unwrap() {
            if call["call"] == "legacy.verify-password" {
                call["answer"] = serde_json::json!({"ok": false});
            }
        }
    })?;
    assert!(!result.passed());
    let diff = result.steps[0].diff();
    assert!(
        diff.contains("-    \"type\": \"allow\"") && diff.contains("+    \"type\": \"deny\""),
        "{diff}"
    );
    Ok(())
}

#[test]
fn a_recovery_resumes_the_rule_with_what_the_host_checked() -> Result {
    // The host's check of the new factor's enrolment depends on its state; the replay
    // resumes the recovering rule with what the host resumed it with live. Had the
    // host found nothing enrolled, the rule would not let the login through.
    let result = replay_edited("recovery-code.json", |recording| {
        let resume = &mut recording["steps"][1]["continue"];
        assert_eq!(resume["enrolment"]["host"], "completed");
        resume["enrolment"]["result"] = serde_json::json!({"enrolled": false});
    })?;
    assert!(result.error.is_none(), "{:?}", result.error);
    assert!(result.steps[0].passed(), "{}", result.steps[0].diff());
    assert!(!result.steps[1].passed());
    let diff = result.steps[1].diff();
    assert!(
        diff.contains("-    \"type\": \"allow\"") && diff.contains("recovery_incomplete"),
        "{diff}"
    );
    Ok(())
}

#[test]
fn a_continue_the_host_answered_alone_still_needs_the_rule_to_have_parked_the_login() -> Result {
    // As recorded: the login's rule decided use-code (the host parked it), and the
    // continue after the recovery was cancelled was the host's alone.
    let mut replay =
        portcullis::replay::Replay::new(&workspace_root().join("fixtures/pipeline.toml"))?;
    let recorded =
        replay.run(&workspace_root().join("fixtures/recordings/recovery-cancelled.json"));
    assert!(recorded.passed(), "{:?}", recorded.error);
    assert_eq!(recorded.steps[1].got.summary(), "host-only");
    // A rule that no longer asks to recover leaves nothing parked to continue.
    let result = replay_edited("recovery-cancelled.json", |recording| {
        for call in recording["steps"][0]["calls"].as_array_mut().unwrap() {
            if call["call"] == "recovery.facts" {
                call["answer"]["ok"]["has_code"] = false.into();
                call["answer"]["ok"]["status"] = "waiting".into();
            }
        }
    })?;
    assert!(!result.passed());
    assert!(
        result.steps[0].diff().contains("use_code"),
        "{}",
        result.steps[0].diff()
    );
    assert!(
        result
            .error
            .as_deref()
            .is_some_and(|e| e.contains("no earlier step redirected")),
        "{:?}",
        result.error
    );
    Ok(())
}

#[test]
fn deeply_nested_metadata_faults_no_rule() -> Result {
    // Metadata nested 116 levels deep (about what the host's JSON parser admits) used
    // to overflow a rule's 64 KiB stack while it parsed the document for one flag:
    // every login of that user was a fault, and the fail-closed pipeline denied it.
    let mut deep = serde_json::json!(1);
    for _ in 0..116 {
        deep = serde_json::json!({ "a": deep });
    }
    let result = replay_edited("already-migrated.json", |recording| {
        let user = &mut recording["steps"][0]["calls"][0]["answer"]["ok"][0];
        assert_eq!(user["app_metadata"]["migrated"], true);
        for which in ["app_metadata", "user_metadata"] {
            // First in the document, so a flag after it is only found by skipping it.
            let mut metadata = serde_json::Map::from_iter([("deep".to_owned(), deep.clone())]);
            metadata.extend(user[which].as_object().unwrap().clone());
            user[which] = serde_json::Value::Object(metadata);
        }
    })?;
    assert!(result.error.is_none(), "{:?}", result.error);
    let step = &result.steps[0];
    // Still allowed, no fault, and `migrated` still read: a settled user makes
    // ownership-check skip the legacy stores, which this recording never answers.
    assert!(step.passed(), "{}", step.diff());
    assert!(
        step.unexpected_calls.is_empty(),
        "{:?}",
        step.unexpected_calls
    );
    Ok(())
}

#[test]
fn recordings_hold_no_password_and_no_full_email() -> Result {
    for file in recordings() {
        let text = std::fs::read_to_string(&file)?;
        assert!(!text.contains("\"password\""), "{}", file.display());
        // Seeded passwords look like word-word-N.
        for word in [
            "copper-", "harbor-", "violet-", "summit-", "lantern-", "meadow-", "quartz-", "falcon-",
        ] {
            assert!(!text.contains(word), "{} holds a password", file.display());
        }
        let value: serde_json::Value = serde_json::from_str(&text)?;
        let email = value["steps"][0]["login"]["email"]
            .as_str()
            .unwrap_or("x***@y");
        assert!(email.contains("***"), "{}: {email}", file.display());
    }
    Ok(())
}

/// A recording written by the host reads back as the same recording: no field is
/// written twice (a flattened login once carried `has_password` beside its own, and
/// the fuzzer's re-recorded replay refused it as a duplicate field).
#[test]
fn every_recording_survives_a_write_and_a_read() -> Result {
    use portcullis::replay::record::Recording;
    for file in recordings() {
        let text = std::fs::read_to_string(&file)?;
        let recording: Recording = serde_json::from_str(&text)?;
        let written = serde_json::to_string(&recording)?;
        let again: Recording = serde_json::from_str(&written)
            .map_err(|e| format!("{}: written form does not read back: {e}", file.display()))?;
        assert_eq!(
            serde_json::to_value(&again)?,
            serde_json::to_value(&recording)?,
            "{}",
            file.display()
        );
    }
    Ok(())
}
