//! The on-disk model repository, in Triton's layout:
//!
//! ```text
//! <repo>/<model>/config.toml          optional, Sluice's format (docs/configuration.md)
//! <repo>/<model>/config.pbtxt         or Triton's (at most one of the two)
//! <repo>/<model>/<version>/model.onnx versions are positive integers
//! ```
//!
//! Directories whose name is not a positive integer are ignored, so a version
//! can be staged under any other name (`.3.tmp`) and published by an atomic
//! rename. A version directory without its model file (`model.onnx`, or
//! config.pbtxt's `default_model_filename`) is not (yet) a version.

pub(crate) mod config;
pub(crate) mod location;
pub(crate) mod pbtxt;
pub(crate) mod remote;
mod set;
mod source;
pub(crate) mod spec;

pub use config::{DynamicBatching, ModelConfig, VersionPolicy, WarmupRun};
pub use location::Location;
pub use remote::CacheSettings;
pub use set::Repositories;
pub(crate) use source::load_config;

use std::path::{Path, PathBuf};

/// The file each version directory holds, unless the config names another.
pub(crate) const MODEL_FILE: &str = "model.onnx";

/// One model directory as found on disk.
#[derive(Debug, Clone)]
pub(crate) struct ModelDir {
    pub(crate) name: String,
    pub(crate) path: PathBuf,
    /// The model file of each version directory.
    pub(crate) model_file: String,
    /// Versions with their model file, ascending.
    pub(crate) versions: Vec<u64>,
}

impl ModelDir {
    pub(crate) fn version_path(&self, version: u64) -> PathBuf {
        self.path.join(version.to_string()).join(&self.model_file)
    }
}

/// A hash of a file's content (0 when it does not exist). Changes are found
/// by content, not by modification time.
pub(crate) fn content_hash(path: &Path) -> std::io::Result<u64> {
    use std::io::Read;
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok(hasher.digest());
        }
        hasher.update(&buffer[..n]);
    }
}

/// What a model directory holds now: its config's hash and each version's
/// model hash. Two equal fingerprints mean nothing to reload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    pub(crate) config: u64,
    pub(crate) versions: std::collections::BTreeMap<u64, u64>,
}

impl ModelDir {
    /// Hashes the config and every version's model file. "The config" is
    /// every file beside the version directories (config.toml, config.pbtxt,
    /// label files) and in `warmup/`: a change to any reloads the model.
    pub(crate) fn fingerprint(&self) -> std::io::Result<Fingerprint> {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        for dir in [self.path.clone(), self.path.join("warmup")] {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let mut files = Vec::new();
            for entry in entries {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let is_file = entry.file_type()?.is_file();
                // A configuration that is not a file (a directory, say) is
                // unreadable, not absent: the poll reports it and keeps
                // what serves, rather than reload without it.
                if !is_file && (name == source::TOML_FILE || name == pbtxt::FILE_NAME) {
                    return Err(std::io::Error::other(format!(
                        "{} is not a regular file",
                        entry.path().display()
                    )));
                }
                if !name.starts_with('.') && is_file {
                    files.push((name, entry.path()));
                }
            }
            files.sort();
            for (name, path) in files {
                hasher.update(name.as_bytes());
                hasher.update(&content_hash(&path)?.to_le_bytes());
            }
        }
        let config = hasher.digest();
        let mut versions = std::collections::BTreeMap::new();
        for &v in &self.versions {
            versions.insert(v, content_hash(&self.version_path(v))?);
        }
        Ok(Fingerprint { config, versions })
    }
}

/// Whether `name` can name a model: no path separators, no `..`, nothing hidden.
/// Model names in API calls can never reach outside the repository.
pub(crate) fn valid_model_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn parse_version(name: &str) -> Option<u64> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) || name.starts_with('0') {
        return None;
    }
    name.parse().ok()
}

/// Reads one model directory.
pub(crate) fn read_model(root: &Path, name: &str) -> std::io::Result<ModelDir> {
    let path = root.join(name);
    let model_file = pbtxt::model_filename(&path).unwrap_or_else(|| MODEL_FILE.to_string());
    let mut versions = Vec::new();
    for entry in std::fs::read_dir(&path)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(version) = file_name.to_str().and_then(parse_version) else {
            continue;
        };
        if entry.path().join(&model_file).is_file() {
            versions.push(version);
        }
    }
    versions.sort_unstable();
    Ok(ModelDir {
        name: name.to_string(),
        path,
        model_file,
        versions,
    })
}

/// The version directories of a model directory, ascending, whatever they
/// hold (an ensemble's versions hold no model file).
pub(crate) fn version_dirs(path: &Path) -> std::io::Result<Vec<u64>> {
    let mut versions = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            if let Some(v) = entry.file_name().to_str().and_then(parse_version) {
                versions.push(v);
            }
        }
    }
    versions.sort_unstable();
    Ok(versions)
}

/// Lists every model directory of the repository, by name.
pub(crate) fn scan(root: &Path) -> std::io::Result<Vec<ModelDir>> {
    let mut models = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if !valid_model_name(&name) {
            continue;
        }
        models.push(read_model(root, &name)?);
    }
    models.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(models)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_cannot_escape() {
        for bad in [
            "", "..", ".", "../x", "a/b", "/abs", ".hidden", "a\\b", "a b",
        ] {
            assert!(!valid_model_name(bad), "{bad:?}");
        }
        for good in ["iris", "dense-v2", "m_1", "resnet50.onnx"] {
            assert!(valid_model_name(good), "{good:?}");
        }
    }

    #[test]
    fn versions_are_positive_integers() {
        assert_eq!(parse_version("1"), Some(1));
        assert_eq!(parse_version("42"), Some(42));
        for bad in ["0", "01", "-1", "1.0", "v1", ".1.tmp", ""] {
            assert_eq!(parse_version(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn scan_finds_complete_versions_only() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("m");
        for v in ["1", "3", ".4.tmp", "x"] {
            std::fs::create_dir_all(m.join(v)).unwrap();
            std::fs::write(m.join(v).join(MODEL_FILE), b"x").unwrap();
        }
        std::fs::create_dir_all(m.join("5")).unwrap(); // no model.onnx yet
        let models = scan(dir.path()).unwrap();
        assert_eq!(models.len(), 1);
        assert_eq!(models[0].versions, vec![1, 3]);
    }
}
