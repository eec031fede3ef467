//! A model repository in an object store, mirrored into a local cache
//! directory that the registry then reads like any local repository.
//!
//! # Rules
//! - One **listing** of the prefix per sync tells what changed: a file's
//!   size, ETag and last-modified time are compared with what was
//!   downloaded (kept in each model's `.sluice-remote.json`). Nothing is
//!   downloaded to find out.
//! - A **download** streams to a hidden temporary file, asks the store for
//!   exactly the listed object (`If-Match` on its ETag), checks the byte
//!   count against the listed size, and is renamed into place. A version is
//!   downloaded whole into a hidden directory and renamed to its number, so
//!   the registry never sees part of one.
//! - With a **ready marker** (`--model-ready-marker .ready`), a version
//!   directory counts only once `<version>/.ready` exists: publishers upload
//!   the files, then the marker. A version without it is never downloaded.
//! - Only the versions the model's version policy selects are downloaded.
//!   Others already in the cache stay there (a rollback by deleting the
//!   newest version needs no download) until the cache budget removes them.
//! - A **failed listing is not a deletion.** Nothing cached is removed, what
//!   serves keeps serving, and the error is kept for the index and the log;
//!   the next attempt backs off. An empty listing counts as a failure (a
//!   missing prefix looks the same as an empty one), never as "every model
//!   was deleted".
//! - A model or version that is gone from a listing that succeeded is
//!   removed from the cache; the registry then applies its usual rules.

mod cache;
mod download;
pub(crate) mod store;

pub(crate) use cache::Evictable;
use cache::{MANIFEST, Manifest, Meta, cache_name, clean_strays, read_manifest, write_manifest};

use super::config::VersionPolicy;
use crate::metrics::RepositoryMetrics;
use futures::StreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectMeta, ObjectStore};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// The longest wait between attempts at a failing store.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// The most one listing may take.
const LIST_TIMEOUT: Duration = Duration::from_secs(120);

/// Settings shared by every remote repository.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Where downloaded repositories are kept; one subdirectory each.
    pub dir: PathBuf,
    /// Bound on the bytes of every cached repository together; 0: none.
    pub max_bytes: u64,
    /// The marker object a version needs before it is loaded.
    pub ready_marker: Option<String>,
    /// Models downloaded at once.
    pub downloads: usize,
    /// The first wait after a failed listing; it doubles up to a minute.
    pub backoff: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            dir: std::env::temp_dir().join("sluice-model-cache"),
            max_bytes: 0,
            ready_marker: None,
            downloads: 4,
            backoff: Duration::from_secs(1),
        }
    }
}

/// One listed object: where it is and what it looked like.
#[derive(Debug, Clone)]
struct Object {
    location: StorePath,
    meta: Meta,
}

/// One version directory as listed.
#[derive(Debug, Default)]
struct ListedVersion {
    files: BTreeMap<String, Object>,
    marker: bool,
}

/// One model directory as listed: its own files (config, labels,
/// `warmup/...`, by path relative to the model directory) and versions.
#[derive(Debug, Default)]
struct ListedModel {
    files: BTreeMap<String, Object>,
    versions: BTreeMap<u64, ListedVersion>,
}

/// The last sync's outcome.
#[derive(Debug, Default)]
struct Status {
    /// Why the last listing failed; `None` after one that succeeded.
    error: Option<String>,
    /// Models whose last download failed, with why.
    model_errors: BTreeMap<String, String>,
    failures: u32,
    retry_at: Option<Instant>,
}

/// One remote repository and its local copy.
pub(crate) struct Mirror {
    pub(crate) display: String,
    store: Arc<dyn ObjectStore>,
    prefix: StorePath,
    /// The local copy: a repository directory in Triton's layout.
    pub(crate) root: PathBuf,
    settings: CacheSettings,
    /// Whether downloads send `If-Match` (not to plain HTTP servers).
    conditional_get: bool,
    status: Mutex<Status>,
    metrics: RepositoryMetrics,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("repository", &self.display)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Mirror {
    pub(crate) fn new(
        remote: &super::location::RemoteUrl,
        settings: &CacheSettings,
        metrics: RepositoryMetrics,
    ) -> Result<Self, String> {
        let (store, prefix) = store::build(remote)?;
        let root = settings.dir.join(cache_name(&remote.display));
        std::fs::create_dir_all(&root).map_err(|e| {
            format!(
                "--model-cache-dir: cannot create {} for {}: {e}",
                root.display(),
                remote.display
            )
        })?;
        tracing::info!(repository = %remote.display, cache = %root.display(), "remote model repository");
        Ok(Self {
            display: remote.display.clone(),
            store,
            prefix,
            root,
            settings: settings.clone(),
            conditional_get: !matches!(remote.url.scheme(), "http" | "https"),
            status: Mutex::new(Status::default()),
            metrics,
        })
    }

    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes of every file this repository's cache holds.
    pub(crate) fn cached_bytes(&self) -> u64 {
        cache::cached_bytes(&self.root)
    }

    /// Cached versions that no version policy selects now: what a cache
    /// budget may remove.
    pub(crate) fn evictable(&self) -> Vec<Evictable> {
        cache::evictable(&self.root)
    }

    /// Removes one cached version, if no version policy selects it.
    pub(crate) fn evict(&self, model: &str, version: u64) {
        if cache::evict(&self.root, model, version) {
            tracing::info!(repository = %self.display, model, version, "removed a cached version that is not served, to stay within --model-cache-max-bytes");
        }
        self.metrics.set_cache_bytes(self.cached_bytes());
    }

    /// Why this repository, or this model of it, is not up to date with the
    /// store, if it is not.
    pub(crate) fn problem(&self, model: Option<&str>) -> Option<String> {
        let status = self.status();
        let model_error = model.and_then(|m| status.model_errors.get(m));
        match (&status.error, model_error) {
            (Some(e), _) => Some(format!("repository {}: {e}", self.display)),
            (None, Some(e)) => Some(format!("repository {}: {e}", self.display)),
            (None, None) => None,
        }
    }

    /// Lists the store and brings the local copy of every model `wanted`
    /// accepts up to date. Unless `now`, a repository that failed recently
    /// waits out its backoff (and answers with its last error).
    pub(crate) async fn sync(
        &self,
        wanted: &(dyn Fn(&str) -> bool + Sync),
        now: bool,
    ) -> Result<(), String> {
        if !now {
            let status = self.status();
            if let (Some(at), Some(e)) = (status.retry_at, &status.error) {
                if Instant::now() < at {
                    return Err(e.clone());
                }
            }
        }
        let listed = match self.list().await {
            Ok(listed) => listed,
            Err(e) => {
                self.metrics.failure("list");
                let mut status = self.status();
                status.failures = status.failures.saturating_add(1);
                let backoff = self
                    .settings
                    .backoff
                    .saturating_mul(1 << status.failures.min(8).saturating_sub(1))
                    .min(MAX_BACKOFF);
                status.retry_at = Some(Instant::now() + backoff);
                if status.error.as_deref() != Some(e.as_str()) {
                    tracing::warn!(repository = %self.display, error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot list the model repository; keeping what is cached and served");
                }
                status.error = Some(e.clone());
                return Err(e);
            }
        };
        let recovered = {
            let mut status = self.status();
            let recovered = status.error.take().is_some();
            status.failures = 0;
            status.retry_at = None;
            recovered
        };
        if recovered {
            tracing::info!(repository = %self.display, "model repository reachable again");
        }
        self.remove_deleted(&listed);
        // A model not downloaded now still gets its (empty) directory, so
        // the repository index lists it and a load call can fetch it.
        for name in listed.keys().filter(|name| !wanted(name)) {
            let dir = self.root.join(name);
            if !dir.join(MANIFEST).is_file() {
                let made = std::fs::create_dir_all(&dir)
                    .map_err(|e| e.to_string())
                    .and_then(|()| write_manifest(&dir, &Manifest::default()));
                if let Err(e) = made {
                    tracing::warn!(repository = %self.display, model = %name, error = %e, "cannot record the model in the cache");
                }
            }
        }
        let jobs =
            listed
                .into_iter()
                .filter(|(name, _)| wanted(name))
                .map(|(name, model)| async move {
                    let outcome = self.sync_model(&name, model).await;
                    (name, outcome)
                });
        let outcomes: Vec<(String, Result<(), String>)> = futures::stream::iter(jobs)
            .buffer_unordered(self.settings.downloads.max(1))
            .collect()
            .await;
        let mut status = self.status();
        for (name, outcome) in outcomes {
            match outcome {
                Ok(()) => {
                    status.model_errors.remove(&name);
                }
                Err(e) => {
                    self.metrics.failure("download");
                    if status.model_errors.get(&name) != Some(&e) {
                        tracing::warn!(repository = %self.display, model = %name, error = %e, "cannot download the model; keeping what is cached");
                    }
                    status.model_errors.insert(name, e);
                }
            }
        }
        drop(status);
        self.metrics.synced();
        self.metrics.set_cache_bytes(self.cached_bytes());
        Ok(())
    }

    /// Every object under the prefix, grouped by model.
    async fn list(&self) -> Result<BTreeMap<String, ListedModel>, String> {
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let objects = self.objects(prefix).await?;
        if objects.is_empty() {
            return Err(
                "the listing is empty: the prefix is missing or holds no model (what is cached stays)"
                    .into(),
            );
        }
        Ok(self.group(&objects))
    }

    /// Brings one model's copy up to date from a listing of its own
    /// directory only: what a load call or an on-demand first request needs,
    /// without listing the whole repository. A model this repository does
    /// not have is left alone (a full sync decides deletions).
    pub(crate) async fn sync_one(&self, name: &str) -> Result<(), String> {
        let prefix = self.prefix.clone().join(name);
        let outcome = match self.objects(Some(&prefix)).await {
            Ok(objects) => match self.group(&objects).remove(name) {
                Some(model) => self.sync_model(name, model).await,
                None => return Ok(()),
            },
            Err(e) => Err(e),
        };
        let mut status = self.status();
        match &outcome {
            Ok(()) => {
                status.model_errors.remove(name);
            }
            Err(e) => {
                self.metrics.failure("download");
                tracing::warn!(repository = %self.display, model = name, error = %e, "cannot download the model; keeping what is cached");
                status.model_errors.insert(name.to_string(), e.clone());
            }
        }
        drop(status);
        self.metrics.set_cache_bytes(self.cached_bytes());
        outcome
    }

    /// Every object under `prefix`, within [`LIST_TIMEOUT`].
    async fn objects(&self, prefix: Option<&StorePath>) -> Result<Vec<ObjectMeta>, String> {
        tokio::time::timeout(LIST_TIMEOUT, async {
            let mut stream = self.store.list(prefix);
            let mut objects = Vec::new();
            while let Some(item) = stream.next().await {
                objects.push(item.map_err(|e| describe(&e))?);
            }
            Ok::<_, String>(objects)
        })
        .await
        .map_err(|_| format!("listing took over {} s", LIST_TIMEOUT.as_secs()))?
    }

    /// Listed objects grouped by model, with versions and markers found.
    fn group(&self, objects: &[ObjectMeta]) -> BTreeMap<String, ListedModel> {
        let depth = self.prefix.parts().count();
        let marker = self.settings.ready_marker.as_deref();
        let mut models: BTreeMap<String, ListedModel> = BTreeMap::new();
        for meta in objects {
            let parts: Vec<String> = meta
                .location
                .parts()
                .skip(depth)
                .map(|p| p.as_ref().to_string())
                .collect();
            let Some((model, rest)) = parts.split_first() else {
                continue;
            };
            if !super::valid_model_name(model)
                || rest.is_empty()
                || !rest.iter().all(|p| safe_part(p))
            {
                continue;
            }
            let entry = models.entry(model.clone()).or_default();
            let object = Object {
                location: meta.location.clone(),
                meta: Meta::from(meta),
            };
            match (rest.first().and_then(|p| super::parse_version(p)), rest) {
                (Some(v), [_, file]) if Some(file.as_str()) == marker => {
                    entry.versions.entry(v).or_default().marker = true;
                }
                (Some(v), [_, inner @ ..]) if !inner.is_empty() => {
                    if inner.iter().any(|p| p.starts_with('.')) {
                        continue;
                    }
                    entry
                        .versions
                        .entry(v)
                        .or_default()
                        .files
                        .insert(inner.join("/"), object);
                }
                _ => {
                    // Hidden files, and a file named like a version, are
                    // not part of a model directory.
                    let version_named = rest.len() == 1 && super::parse_version(&rest[0]).is_some();
                    if version_named || rest.iter().any(|p| p.starts_with('.')) {
                        continue;
                    }
                    entry.files.insert(rest.join("/"), object);
                }
            }
        }
        models
    }

    /// Removes the cached models that a successful listing no longer has.
    fn remove_deleted(&self, listed: &BTreeMap<String, ListedModel>) {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if listed.contains_key(&name) || !path.join(MANIFEST).is_file() {
                continue;
            }
            tracing::info!(repository = %self.display, model = %name, "model deleted from the store; removing its cached copy");
            if let Err(e) = std::fs::remove_dir_all(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a deleted model's cached copy");
            }
        }
    }

    /// Brings one model's cache directory up to date with its listing.
    async fn sync_model(&self, name: &str, listed: ListedModel) -> Result<(), String> {
        let dir = self.root.join(name);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut manifest = read_manifest(&dir);
        clean_strays(&dir, &manifest);

        // The model's own files first: the version policy is in its config.
        for (rel, object) in &listed.files {
            let path = dir.join(rel);
            if manifest.files.get(rel) == Some(&object.meta) && path.is_file() {
                continue;
            }
            self.download(name, object, &path).await?;
            manifest.files.insert(rel.clone(), object.meta.clone());
        }
        let stale: Vec<String> = manifest
            .files
            .keys()
            .filter(|rel| !listed.files.contains_key(*rel))
            .cloned()
            .collect();
        for rel in stale {
            let _ = std::fs::remove_file(dir.join(&rel));
            manifest.files.remove(&rel);
        }
        write_manifest(&dir, &manifest)?;

        let marker = self.settings.ready_marker.is_some();
        let complete: Vec<u64> = listed
            .versions
            .iter()
            .filter(|(_, v)| !v.files.is_empty() && (v.marker || !marker))
            .map(|(v, _)| *v)
            .collect();
        let gone: Vec<u64> = manifest
            .versions
            .keys()
            .filter(|v| !complete.contains(v))
            .copied()
            .collect();
        for v in gone {
            tracing::info!(repository = %self.display, model = name, version = v, "version gone from the store (or its marker is); removing its cached copy");
            let _ = std::fs::remove_dir_all(dir.join(v.to_string()));
            manifest.versions.remove(&v);
        }
        let policy = super::load_config(&dir, name, false)
            .map(|c| c.version_policy)
            .unwrap_or(VersionPolicy::Latest(1));
        let selected = policy.select(&complete);
        let now = now_secs();
        for cached in manifest.versions.values_mut() {
            cached.selected = false;
        }
        let mut outcome = Ok(());
        for v in selected {
            let Some(version) = listed.versions.get(&v) else {
                continue;
            };
            let remote: BTreeMap<String, Meta> = version
                .files
                .iter()
                .map(|(rel, o)| (rel.clone(), o.meta.clone()))
                .collect();
            let current = manifest
                .versions
                .get(&v)
                .is_some_and(|c| c.files == remote && dir.join(v.to_string()).is_dir());
            if !current {
                if let Err(e) = self.download_version(name, v, version, &dir).await {
                    outcome = Err(e);
                    continue;
                }
            }
            let record = manifest.versions.entry(v).or_default();
            record.files = remote;
            record.selected = true;
            record.last_selected = now;
        }
        write_manifest(&dir, &manifest)?;
        outcome
    }
}

/// An object store error as Sluice prints it: what it means first, then
/// the store's own words without the response body, and never a secret.
fn describe(e: &object_store::Error) -> String {
    // The whole chain: the root cause (connection refused, a TLS failure)
    // is in the sources, not in the top error's text.
    let mut full = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !full.contains(&text) {
            full.push_str(": ");
            full.push_str(&text);
        }
        source = cause.source();
    }
    // The store's words, up to the XML or JSON body some stores append.
    let detail = full
        .split_once("<?xml")
        .or_else(|| full.split_once(": {"))
        .map_or(full.as_str(), |(head, _)| head.trim_end_matches([':', ' ']));
    let code = |codes: &[&str]| codes.iter().any(|c| full.contains(c));
    let meaning = match e {
        object_store::Error::Precondition { .. } => {
            return "changed since it was listed; trying again at the next sync".to_string();
        }
        _ if code(&["NoSuchBucket", "ContainerNotFound"]) => {
            "the bucket or container does not exist"
        }
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => "access denied",
        _ if code(&[
            "AccessDenied",
            "AuthenticationFailed",
            "AuthorizationFailure",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "403 Forbidden",
            "401 Unauthorized",
        ]) =>
        {
            "access denied"
        }
        object_store::Error::NotFound { .. } => "not found",
        _ if code(&[
            "Connection refused",
            "error trying to connect",
            "dns error",
            "timed out",
        ]) =>
        {
            "the store is unreachable"
        }
        _ => "the store failed",
    };
    store::redact(&format!("{meaning}: {detail}"))
}

/// A path part that is safe to use as a file name.
fn safe_part(part: &str) -> bool {
    !part.is_empty()
        && part != "."
        && part != ".."
        && !part.contains(['/', '\\', '\0'])
        && part.len() <= 255
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_parts_are_refused() {
        for bad in ["", ".", "..", "a\\b", "a\0"] {
            assert!(!safe_part(bad), "{bad:?}");
        }
        assert!(safe_part("model.onnx"));
    }
}
