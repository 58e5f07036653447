//! Both contracts over one host: the same context shape, 0.1.0 rules beside a 0.2.0 one, a
//! phone-exporting import refused at load.

use portcullis::{LoadError, PipelineConfig};

use crate::common::{Result, core_rule_component, guest, runtime, workspace_root};

#[test]
fn the_login_context_and_resume_have_one_shape_in_both_contracts() -> Result {
    // The host hands a 0.1.0 rule the 0.2.0 context without converting it (see
    // `runtime::contract`): the component model must agree the two are one type.
    use wasmtime::component::types::ComponentItem;
    let engine = runtime().engine();
    let params = |crate_name: &str, export: &str| -> Vec<wasmtime::component::types::Type> {
        let component =
            wasmtime::component::Component::from_file(engine, core_rule_component(crate_name))
                .unwrap();
        let component_type = component.component_type();
        let found = component_type
            .get_export(engine, export)
            .unwrap_or_else(|| panic!("{crate_name} exports {export}"));
        match found.ty {
            ComponentItem::ComponentFunc(f) => f.params().map(|(_, ty)| ty).collect(),
            _ => panic!("{export} is a function"),
        }
    };
    let old = params("rule-ownership-check", "on-continue");
    let new = params("rule-mfa-route", "on-continue");
    assert_eq!(old.len(), 2);
    assert_eq!(old[0], new[0], "login-context");
    assert_eq!(old[1], new[1], "resume");
    assert_eq!(
        params("rule-migrate-on-login", "on-login")[0],
        params("rule-mfa-route", "on-login")[0]
    );
    // And the comparison can fail: the context is not the resume.
    assert_ne!(old[0], new[1]);
    Ok(())
}

#[test]
fn rules_built_against_0_1_replay_every_recording_beside_a_0_2_rule() -> Result {
    let dir = tempfile::tempdir()?;
    let base = crate::common::migration_config(dir.path(), "pipeline.toml");
    // A 0.2.0 rule first: it runs on every login before the four 0.1.0 rules.
    let observer = format!(
        "[[rule]]\nname = \"observer\"\ncomponent = \"{}\"\ngrants = [\"log\"]\non_error = \"deny\"\n\n",
        guest("v02-observer").display()
    );
    let text =
        std::fs::read_to_string(&base)?.replacen("[[rule]]", &format!("{observer}[[rule]]"), 1);
    let mixed = dir.path().join("pipeline-mixed.toml");
    std::fs::write(&mixed, text)?;

    let pipeline = runtime().load(&PipelineConfig::load(&mixed)?)?;
    let versions: Vec<&str> = pipeline
        .rules()
        .iter()
        .map(|r| r.contract_version())
        .collect();
    assert_eq!(versions, ["0.2.0", "0.1.0", "0.1.0", "0.1.0", "0.1.0"]);

    let files =
        portcullis::replay::recording_files(&[workspace_root().join("fixtures/recordings")])?;
    let mut replay = portcullis::replay::Replay::new(&mixed)?;
    let mut replayed = 0;
    for file in &files {
        let text = std::fs::read_to_string(file)?;
        let recording: portcullis::replay::record::Recording = serde_json::from_str(&text)?;
        let result = replay.run_text(file, &text);
        assert!(result.passed(), "{}: {:?}", file.display(), result.error);
        // Recordings with a pipeline of their own ran that one; the rest ran beside
        // the 0.2.0 rule.
        replayed += usize::from(recording.pipeline.is_none());
    }
    assert!(
        replayed >= 10,
        "{replayed} recordings ran in the mixed pipeline"
    );
    Ok(())
}

#[test]
fn an_import_that_could_export_a_phone_is_refused_at_load() -> Result {
    let rule = crate::common::rule(
        "exporter",
        "phone-export",
        "grants = [\"log\", \"config\", \"directory\", \"legacy\", \"mfa\"]",
    );
    match crate::common::load(&[rule]) {
        Err(LoadError::Unsupported { rule, import }) => {
            assert_eq!(rule, "exporter");
            assert_eq!(import, "portcullis:rule/legacy-sms-export@0.2.0");
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a rule that imports a phone export was loaded"),
    }
    Ok(())
}
