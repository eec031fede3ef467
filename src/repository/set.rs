//! The model repositories a server serves from (`--model-repository` may
//! repeat), local or remote, seen as one: a model name belongs to exactly
//! one of them. A name found in two is an error for that model only.
//!
//! Remote repositories are read through their local copies (see
//! [`super::remote`]); everything after a sync reads directories.

use super::location::Location;
use super::remote::{CacheSettings, Mirror};
use super::{ModelDir, read_model, valid_model_name};
use crate::metrics::RepositoryFamilies;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One repository and the directory its models are read from.
#[derive(Debug)]
struct Repo {
    display: String,
    root: PathBuf,
    mirror: Option<Mirror>,
}

/// Every repository of a server.
#[derive(Debug)]
pub struct Repositories {
    repos: Vec<Repo>,
    max_cache_bytes: u64,
}

/// One scan of every repository's directory.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// The models found in exactly one repository.
    pub(crate) models: Vec<ModelDir>,
    /// Names found in more than one, with the error to report.
    pub(crate) conflicts: Vec<(String, String)>,
    /// Why a repository could not be read, one line each: a model that was
    /// not seen may only be in one of them, and is not "gone".
    pub(crate) errors: Vec<String>,
}

impl Repositories {
    /// One local directory (what tests and benchmarks build).
    pub fn local(root: PathBuf) -> Self {
        Self {
            repos: vec![Repo {
                display: root.display().to_string(),
                root,
                mirror: None,
            }],
            max_cache_bytes: 0,
        }
    }

    /// Sets up every repository: a remote one gets its store client and
    /// cache directory now (nothing is listed yet), so a location that
    /// cannot work at all stops the start with its reason.
    pub(crate) fn new(
        locations: &[Location],
        cache: &CacheSettings,
        metrics: &RepositoryFamilies,
    ) -> Result<Self, String> {
        let mut repos = Vec::new();
        for location in locations {
            match location {
                Location::Local(path) => {
                    std::fs::read_dir(path).map_err(|e| {
                        format!("cannot read the model repository {}: {e}", path.display())
                    })?;
                    repos.push(Repo {
                        display: path.display().to_string(),
                        root: path.clone(),
                        mirror: None,
                    });
                }
                Location::Remote(remote) => {
                    let mirror = Mirror::new(remote, cache, metrics.repository(&remote.display))?;
                    repos.push(Repo {
                        display: remote.display.clone(),
                        root: mirror.root.clone(),
                        mirror: Some(mirror),
                    });
                }
            }
        }
        Ok(Self {
            repos,
            max_cache_bytes: cache.max_bytes,
        })
    }

    /// The repositories, as logs print them.
    pub(crate) fn describe(&self) -> String {
        self.repos
            .iter()
            .map(|r| r.display.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub(crate) fn has_remote(&self) -> bool {
        self.repos.iter().any(|r| r.mirror.is_some())
    }

    /// Brings every remote repository's copy of the models `wanted` accepts
    /// up to date, then keeps the cache within its budget. A repository
    /// that fails keeps its copy; its error is reported by [`Self::problem`].
    /// Unless `now`, a failing repository is retried only after its backoff.
    pub(crate) async fn sync(&self, wanted: &(dyn Fn(&str) -> bool + Sync), now: bool) {
        let mirrors = self.repos.iter().filter_map(|r| r.mirror.as_ref());
        futures::future::join_all(mirrors.map(|m| m.sync(wanted, now))).await;
        self.enforce_budget();
    }

    /// Brings the copy of one model up to date in every remote repository
    /// that has it, listing only that model's directory.
    pub(crate) async fn sync_one(&self, name: &str) {
        if !valid_model_name(name) {
            return;
        }
        let mirrors = self.repos.iter().filter_map(|r| r.mirror.as_ref());
        futures::future::join_all(mirrors.map(|m| m.sync_one(name))).await;
        self.enforce_budget();
    }

    /// Removes cached versions that no policy selects, least recently
    /// selected first, until the cache fits `--model-cache-max-bytes`.
    /// Versions being served are never removed; if they alone exceed the
    /// budget, that is logged.
    fn enforce_budget(&self) {
        if self.max_cache_bytes == 0 {
            return;
        }
        let mirrors: Vec<&Mirror> = self
            .repos
            .iter()
            .filter_map(|r| r.mirror.as_ref())
            .collect();
        let mut total: u64 = mirrors.iter().map(|m| m.cached_bytes()).sum();
        if total <= self.max_cache_bytes {
            return;
        }
        let mut candidates: Vec<(usize, super::remote::Evictable)> = mirrors
            .iter()
            .enumerate()
            .flat_map(|(i, m)| m.evictable().into_iter().map(move |e| (i, e)))
            .collect();
        candidates.sort_by_key(|(_, e)| e.last_selected);
        for (i, candidate) in candidates {
            if total <= self.max_cache_bytes {
                break;
            }
            if let Some(mirror) = mirrors.get(i) {
                mirror.evict(&candidate.model, candidate.version);
                total = total.saturating_sub(candidate.bytes);
            }
        }
        if total > self.max_cache_bytes {
            tracing::warn!(
                cached_bytes = total,
                max_bytes = self.max_cache_bytes,
                "the model versions being served need more than --model-cache-max-bytes; none of them is removed"
            );
        }
    }

    /// Reads every repository's directory.
    pub(crate) fn scan(&self) -> Scan {
        let mut found: HashMap<String, Vec<(usize, ModelDir)>> = HashMap::new();
        let mut errors = Vec::new();
        for (i, repo) in self.repos.iter().enumerate() {
            match super::scan(&repo.root) {
                Ok(models) => {
                    for m in models {
                        found.entry(m.name.clone()).or_default().push((i, m));
                    }
                }
                Err(e) => {
                    tracing::warn!(repository = %repo.display, error = %e, "cannot scan the model repository; keeping what is served");
                    errors.push(format!(
                        "cannot read the model repository {}: {e}",
                        repo.display
                    ));
                }
            }
        }
        let mut scan = Scan {
            errors,
            ..Scan::default()
        };
        for (name, mut places) in found {
            if places.len() == 1 {
                if let Some((_, m)) = places.pop() {
                    scan.models.push(m);
                }
            } else {
                let reason = self.conflict(&name, places.iter().map(|(i, _)| *i));
                scan.conflicts.push((name, reason));
            }
        }
        scan.models.sort_by(|a, b| a.name.cmp(&b.name));
        scan.conflicts.sort();
        scan
    }

    fn conflict(&self, name: &str, places: impl Iterator<Item = usize>) -> String {
        let names: Vec<&str> = places
            .filter_map(|i| self.repos.get(i).map(|r| r.display.as_str()))
            .collect();
        format!(
            "model '{name}' is in more than one model repository ({}); a model name must be unique across --model-repository",
            names.join(" and ")
        )
    }

    /// The repository directory that holds `name`: `Ok(None)` when none
    /// does; an error when more than one does.
    pub(crate) fn root_of(&self, name: &str) -> Result<Option<&Path>, String> {
        if !valid_model_name(name) {
            return Ok(None);
        }
        let places: Vec<usize> = self
            .repos
            .iter()
            .enumerate()
            .filter(|(_, r)| r.root.join(name).is_dir())
            .map(|(i, _)| i)
            .collect();
        match places.as_slice() {
            [] => Ok(None),
            [one] => Ok(self.repos.get(*one).map(|r| r.root.as_path())),
            _ => Err(self.conflict(name, places.into_iter())),
        }
    }

    /// The directory of model `name`, if exactly one repository has it.
    pub(crate) fn model_dir(&self, name: &str) -> Option<PathBuf> {
        self.root_of(name)
            .ok()
            .flatten()
            .map(|root| root.join(name))
    }

    /// Reads model `name` from the repository that holds it.
    pub(crate) fn read_model(&self, name: &str) -> std::io::Result<ModelDir> {
        match self.root_of(name) {
            Ok(Some(root)) => read_model(root, name),
            Ok(None) => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("model '{name}' is not in the model repository"),
            )),
            Err(conflict) => Err(std::io::Error::other(conflict)),
        }
    }

    /// Why the remote repository that has (or would have) model `name` is
    /// not up to date with its store; with `None`, any repository's reason.
    pub(crate) fn problem(&self, name: Option<&str>) -> Option<String> {
        let holder = name.and_then(|n| {
            self.repos
                .iter()
                .find(|r| r.mirror.is_some() && r.root.join(n).is_dir())
        });
        match holder {
            Some(repo) => repo.mirror.as_ref().and_then(|m| m.problem(name)),
            None => {
                let problems: Vec<String> = self
                    .repos
                    .iter()
                    .filter_map(|r| r.mirror.as_ref().and_then(|m| m.problem(None)))
                    .collect();
                (!problems.is_empty()).then(|| problems.join("; "))
            }
        }
    }
}
