//! Compiled components on disk, keyed by the component's content hash and the
//! engine's compatibility hash, so a restart loads rules without recompiling them.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where a component came from on this load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CompileSource {
    Compiled,
    Cache,
}

pub(crate) struct CompileCache {
    dir: Option<PathBuf>,
    engine_key: String,
}

impl CompileCache {
    pub(crate) fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        // DefaultHasher::new() has fixed keys: stable for one build of the host, which
        // is all a precompiled artifact may be used with anyway.
        #[allow(deprecated)]
        let mut hasher = std::hash::SipHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Self {
            dir,
            engine_key: format!("{:016x}", hasher.finish()),
        }
    }

    fn entry(&self, dir: &Path, bytes: &[u8]) -> PathBuf {
        let content = hex::encode(Sha256::digest(bytes));
        dir.join(format!("{content}-{}.cwasm", self.engine_key))
    }

    pub(crate) fn load(
        &self,
        engine: &Engine,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, CompileSource)> {
        let Some(dir) = &self.dir else {
            return Ok((Component::new(engine, bytes)?, CompileSource::Compiled));
        };
        let entry = self.entry(dir, bytes);
        if entry.exists() {
            // SAFETY: the cache directory holds only what `store` below wrote, named by
            // the hash of the source component and of this engine's configuration.
            match unsafe { Component::deserialize_file(engine, &entry) } {
                Ok(component) => return Ok((component, CompileSource::Cache)),
                Err(e) => {
                    tracing::warn!(entry = %entry.display(), "ignoring unusable cache entry: {e}")
                }
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Err(e) = store(dir, &entry, &component) {
            tracing::warn!(dir = %dir.display(), "cannot write compile cache: {e}");
        }
        Ok((component, CompileSource::Compiled))
    }
}

fn store(dir: &Path, entry: &Path, component: &Component) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let serialized = component.serialize().map_err(|e| e.to_string())?;
    // Write then rename: a reader never sees half a file, even with two hosts racing.
    let tmp = entry.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, serialized).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, entry).map_err(|e| e.to_string())
}
