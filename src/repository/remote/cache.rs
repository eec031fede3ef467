//! The cache's own records: each model directory's `.sluice-remote.json`
//! (what it holds from the store), the leftovers of an interrupted sync,
//! and the budget's view of the cached versions.

use object_store::ObjectMeta;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Each model directory's record of what it holds from the store.
pub(super) const MANIFEST: &str = ".sluice-remote.json";

/// What one object looked like in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Meta {
    pub(super) size: u64,
    pub(super) etag: Option<String>,
    pub(super) modified: String,
}

impl From<&ObjectMeta> for Meta {
    fn from(m: &ObjectMeta) -> Self {
        Self {
            size: m.size,
            etag: m.e_tag.clone(),
            modified: m.last_modified.to_rfc3339(),
        }
    }
}

/// What a model's cache directory holds from the store.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Manifest {
    pub(super) files: BTreeMap<String, Meta>,
    pub(super) versions: BTreeMap<u64, CachedVersion>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(super) struct CachedVersion {
    pub(super) files: BTreeMap<String, Meta>,
    /// Whether the model's version policy selected it at the last sync.
    pub(super) selected: bool,
    /// Unix seconds when it was last selected (or downloaded).
    pub(super) last_selected: u64,
}

impl CachedVersion {
    pub(super) fn bytes(&self) -> u64 {
        self.files.values().map(|m| m.size).sum()
    }
}

/// A cached version the budget may remove.
#[derive(Debug, Clone)]
pub(crate) struct Evictable {
    pub(crate) model: String,
    pub(crate) version: u64,
    pub(crate) bytes: u64,
    pub(crate) last_selected: u64,
}

/// Bytes of every file the cache directory `root` holds.
pub(super) fn cached_bytes(root: &Path) -> u64 {
    manifests(root)
        .values()
        .map(|m| {
            m.files.values().map(|f| f.size).sum::<u64>()
                + m.versions.values().map(CachedVersion::bytes).sum::<u64>()
        })
        .sum()
}

/// Every model's record under `root`, by model.
fn manifests(root: &Path) -> HashMap<String, Manifest> {
    let mut all = HashMap::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return all;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        if dir.join(MANIFEST).is_file() {
            all.insert(
                entry.file_name().to_string_lossy().into_owned(),
                read_manifest(&dir),
            );
        }
    }
    all
}

/// Cached versions under `root` that no version policy selects now.
pub(super) fn evictable(root: &Path) -> Vec<Evictable> {
    let mut out = Vec::new();
    for (model, manifest) in manifests(root) {
        for (v, cached) in &manifest.versions {
            if !cached.selected {
                out.push(Evictable {
                    model: model.clone(),
                    version: *v,
                    bytes: cached.bytes(),
                    last_selected: cached.last_selected,
                });
            }
        }
    }
    out
}

/// Removes one cached version unless a version policy selects it; whether
/// it did.
pub(super) fn evict(root: &Path, model: &str, version: u64) -> bool {
    let dir = root.join(model);
    let mut manifest = read_manifest(&dir);
    if manifest.versions.get(&version).is_none_or(|c| c.selected) {
        return false;
    }
    let _ = std::fs::remove_dir_all(dir.join(version.to_string()));
    manifest.versions.remove(&version);
    let _ = write_manifest(&dir, &manifest);
    true
}

/// A directory name for a repository's cache: readable, and unique per URL.
pub(super) fn cache_name(display: &str) -> String {
    let readable: String = display
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(60)
        .collect();
    let hash = xxhash_rust::xxh3::xxh3_64(display.as_bytes());
    format!("{readable}-{hash:016x}")
}

pub(super) fn read_manifest(dir: &Path) -> Manifest {
    std::fs::read(dir.join(MANIFEST))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

pub(super) fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), String> {
    let temp = dir.join(format!("{MANIFEST}.tmp"));
    let bytes =
        serde_json::to_vec(manifest).map_err(|e| format!("cannot encode the cache record: {e}"))?;
    std::fs::write(&temp, bytes)
        .and_then(|()| std::fs::rename(&temp, dir.join(MANIFEST)))
        .map_err(|e| format!("cannot write {}: {e}", dir.join(MANIFEST).display()))
}

/// Removes leftovers of an interrupted sync: hidden staging directories and
/// version directories the manifest does not know.
pub(super) fn clean_strays(dir: &Path, manifest: &Manifest) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let stray_version =
            super::super::parse_version(&name).is_some_and(|v| !manifest.versions.contains_key(&v));
        let staging =
            name.starts_with('.') && (name.ends_with(".partial") || name.ends_with(".old"));
        if is_dir && (stray_version || staging) {
            let _ = std::fs::remove_dir_all(entry.path());
        } else if !is_dir && name.starts_with('.') && name.ends_with(".download") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_names_are_distinct_and_plain() {
        let a = cache_name("s3://bucket/models");
        let b = cache_name("s3://bucket/models2");
        assert_ne!(a, b);
        assert!(a.starts_with("s3___bucket_models-"), "{a}");
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
        );
    }

    #[test]
    fn stray_versions_and_staging_are_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["1", "2", ".3.partial", ".1.old", "warmup"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join(".config.pbtxt.download"), b"x").unwrap();
        let mut manifest = Manifest::default();
        manifest.versions.insert(1, CachedVersion::default());
        clean_strays(dir.path(), &manifest);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["1", "warmup"]);
    }
}
