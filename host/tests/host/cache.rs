//! Compiled components are cached on disk: a restart does not recompile, and a broken
//! cache entry is recompiled rather than trusted.

use portcullis::{CompileSource, EngineSettings, PipelineConfig, Runtime, Services};

use crate::common::{Result, login, rule, workspace_root};

fn sources(settings: &EngineSettings, config: &PipelineConfig) -> Result<Vec<CompileSource>> {
    // A new Runtime is a new engine, as after a process restart.
    let pipeline = Runtime::new(settings)?.load(config)?;
    let verdict = pipeline.evaluate(&login("tx-cache"), &Services::none());
    assert_eq!(verdict.decision, portcullis::Decision::Allow);
    Ok(pipeline.rules().iter().map(|r| r.source).collect())
}

#[test]
fn a_restart_loads_from_the_cache() -> Result {
    let dir = tempfile::tempdir()?;
    let settings = EngineSettings {
        cache_dir: Some(dir.path().to_owned()),
        ..Default::default()
    };
    let config = PipelineConfig::parse(
        &[
            rule("a", "add-claim", "grants = [\"log\", \"config\"]"),
            rule("b", "scripted", "grants = [\"log\", \"config\"]"),
        ]
        .concat(),
        &workspace_root(),
    )?;
    assert_eq!(sources(&settings, &config)?, [CompileSource::Compiled; 2]);
    assert_eq!(sources(&settings, &config)?, [CompileSource::Cache; 2]);

    // Corrupt every entry: the host must recompile, not crash or trust them.
    for entry in std::fs::read_dir(dir.path())? {
        std::fs::write(entry?.path(), b"garbage")?;
    }
    assert_eq!(sources(&settings, &config)?, [CompileSource::Compiled; 2]);
    assert_eq!(sources(&settings, &config)?, [CompileSource::Cache; 2]);
    Ok(())
}

#[test]
fn no_cache_dir_means_no_files() -> Result {
    let config = PipelineConfig::parse(
        &rule("a", "add-claim", "grants = [\"log\", \"config\"]"),
        &workspace_root(),
    )?;
    let settings = EngineSettings::default();
    assert_eq!(sources(&settings, &config)?, [CompileSource::Compiled]);
    assert_eq!(sources(&settings, &config)?, [CompileSource::Compiled]);
    Ok(())
}
