//! Changing the model set: discovering the repository's models, loading
//! (with a configuration override from the repository API), polling, and
//! unloading. The read side (resolving a request's version, the index,
//! readiness) and the atomic publish are in the parent module.

use super::*;

impl Registry {
    /// Names of every model of the repositories (those in two included:
    /// their load reports the conflict); an error when a repository cannot
    /// be read, since its models are then unknown.
    pub(crate) fn discover(&self) -> std::result::Result<Vec<String>, String> {
        let scan = self.repos.scan();
        if !scan.errors.is_empty() {
            return Err(scan.errors.join("; "));
        }
        let mut names: Vec<String> = scan.models.into_iter().map(|m| m.name).collect();
        names.extend(scan.conflicts.into_iter().map(|(name, _)| name));
        names.sort();
        Ok(names)
    }

    /// Brings the local copies of remote repositories up to date (a no-op
    /// without one), holding the load lock so no load reads a directory
    /// while a download replaces it.
    pub(crate) async fn sync(&self, wanted: &(dyn Fn(&str) -> bool + Sync), now: bool) {
        if self.repos.has_remote() {
            let _serial = self.loads.lock().await;
            self.repos.sync(wanted, now).await;
        }
    }

    /// [`Registry::sync`] of one model, listing only its directory (a load
    /// call, an on-demand first request).
    pub(crate) async fn sync_model(&self, name: &str) {
        if self.repos.has_remote() {
            let _serial = self.loads.lock().await;
            self.repos.sync_one(name).await;
        }
    }

    /// The repository API's load: refused in `none` control mode. `config`
    /// (Triton's JSON `ModelConfig`) replaces the model's configuration files
    /// from this load on; `None` goes back to the files.
    pub async fn load(self: &Arc<Self>, name: &str, config: Option<String>) -> Result<()> {
        self.check_api()?;
        self.sync_model(name).await;
        if let Some(text) = &config {
            self.check_override(name, text)?;
        }
        self.load_as(name, Some(config.map(Arc::from))).await
    }

    /// Maps a load call's `config` against the model's directory, so that a
    /// configuration that cannot load is the caller's error (400), named as
    /// the parameter, before anything changes.
    fn check_override(&self, name: &str, text: &str) -> Result<()> {
        let Some(dir) = self.repos.model_dir(name) else {
            return Ok(()); // the load reports it
        };
        let context = repository::pbtxt::Context {
            dir: &dir,
            name,
            strict: self.defaults.strict_model_config,
        };
        repository::pbtxt::parse_json(text, &context)
            .map(drop)
            .map_err(|e| Error::invalid(format!("load parameter 'config': {e}")))
    }

    fn check_api(&self) -> Result<()> {
        if self.defaults.control_mode == ControlMode::None {
            return Err(Error::invalid(
                "explicit model load and unload are not allowed in model control mode 'none'; start with --model-control-mode explicit or poll",
            ));
        }
        Ok(())
    }

    /// Loads (or reloads) `name` from disk and publishes it. The error, if any,
    /// is also recorded in the index; other models are untouched.
    pub async fn load_internal(self: &Arc<Self>, name: &str) -> Result<()> {
        self.load_as(name, None).await
    }

    /// [`Registry::load_internal`], first setting (`Some(Some)`) or clearing
    /// (`Some(None)`) the model's configuration override; `None` keeps it.
    async fn load_as(self: &Arc<Self>, name: &str, config: Option<Option<Arc<str>>>) -> Result<()> {
        if !valid_model_name(name) {
            return Err(Error::invalid(format!(
                "model name '{name}' is not valid: use letters, digits, '_', '-' and '.', without path separators or a leading '.'"
            )));
        }
        let _serial = self.loads.lock().await;
        match self.repos.root_of(name) {
            Ok(Some(_)) => {}
            Ok(None) => {
                let why = match self.repos.problem(Some(name)) {
                    Some(problem) => {
                        format!("model '{name}' is not in the model repository ({problem})")
                    }
                    None => format!("model '{name}' is not in the model repository"),
                };
                return Err(Error::NotFound(why));
            }
            Err(conflict) => {
                self.set_state(
                    name,
                    None,
                    Some(VersionState::Unavailable(conflict.clone())),
                );
                return Err(Error::Unavailable(conflict));
            }
        }
        let probe = self.before_load(name).await;
        let previous = config.map(|config| {
            let mut overrides = self.overrides_lock();
            match config {
                Some(text) => overrides.insert(name.to_string(), text),
                None => overrides.remove(name),
            }
        });
        self.set_state(name, None, None);
        let this = self.clone();
        let owned = name.to_string();
        let started = Instant::now();
        let outcome = tokio::task::spawn_blocking(move || this.load_blocking(&owned))
            .await
            .map_err(|e| Error::internal(format!("model load task failed: {e}")))?
            .and_then(|loaded| self.measure(loaded, probe));
        let took = started.elapsed();
        match outcome {
            Ok(loaded) => {
                self.metrics.record_load(name, took, true);
                self.remember(name, Some(loaded.fingerprint.clone()));
                if let Some(ensemble) = loaded.ensemble {
                    return self.publish_ensemble(name, ensemble);
                }
                let fresh = loaded.fresh.clone();
                self.publish(name, loaded.versions);
                for v in &fresh {
                    if let Some(lv) = self.served.load().get(name).and_then(|m| m.versions.get(v)) {
                        self.metrics
                            .set_provider(name, *v, &lv.placement.to_string());
                        for fallback in &lv.placement.fell_back_from {
                            tracing::warn!(model = name, version = v, %fallback, "execution provider fell back");
                        }
                        tracing::info!(model = name, version = v, provider = %lv.placement, instances = lv.instances, max_batch_size = lv.max_batch_size, took_ms = took.as_millis() as u64, "model version ready");
                    }
                }
                self.after_publish(name).await;
                if self
                    .served
                    .load()
                    .get(name)
                    .is_none_or(|m| m.versions.is_empty())
                {
                    tracing::warn!(model = name, "model has no version to serve");
                }
                Ok(())
            }
            Err(failure) => {
                if let Some(previous) = previous {
                    let mut overrides = self.overrides_lock();
                    match previous {
                        Some(text) => overrides.insert(name.to_string(), text),
                        None => overrides.remove(name),
                    };
                }
                self.metrics.record_load(name, took, false);
                self.remember(name, failure.fingerprint.clone());
                tracing::error!(model = name, version = failure.version, reason = %failure.reason, "model failed to load; the serving versions are untouched");
                // A version that still serves its earlier session stays
                // READY (with the reason); only one that does not serve
                // becomes UNAVAILABLE.
                let served: Vec<u64> = self
                    .served
                    .load()
                    .get(name)
                    .map(|m| m.versions.keys().copied().collect())
                    .or_else(|| {
                        let ensembles = self.ensembles.load();
                        ensembles.get(name).map(|e| e.keys().copied().collect())
                    })
                    .unwrap_or_default();
                let still_serving: Vec<u64> = match failure.version {
                    Some(v) => served.into_iter().filter(|s| *s == v).collect(),
                    None => served,
                };
                if still_serving.is_empty() {
                    self.set_state(
                        name,
                        failure.version,
                        Some(VersionState::Unavailable(failure.reason.clone())),
                    );
                    if let Some(v) = failure.version {
                        self.metrics.set_state(name, v, ModelState::Unavailable);
                    }
                } else {
                    let reason = format!(
                        "serving the version loaded earlier; its reload failed: {}",
                        failure.reason
                    );
                    let mut index = self.index_lock();
                    let states = index.entry(name.to_string()).or_default();
                    states.retain(|v, s| v.is_some() && s.is_serving());
                    for v in still_serving {
                        states.insert(Some(v), VersionState::ReloadFailed(reason.clone()));
                    }
                }
                Err(Error::Unavailable(format!(
                    "model '{name}' failed to load: {}",
                    failure.reason
                )))
            }
        }
    }

    fn overrides_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<str>>> {
        self.overrides.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The configuration override of `name`, if a load call gave one.
    pub(super) fn config_override(&self, name: &str) -> Option<Arc<str>> {
        self.overrides_lock().get(name).cloned()
    }

    pub(super) fn remember(&self, name: &str, fingerprint: Option<Fingerprint>) {
        let mut attempted = self.attempted.lock().unwrap_or_else(|p| p.into_inner());
        match fingerprint {
            Some(fp) => {
                attempted.insert(name.to_string(), fp);
            }
            None => {
                attempted.remove(name);
            }
        }
    }

    /// One pass of repository polling: loads models that appeared or whose
    /// content changed since their last load attempt, and unloads models whose
    /// directory is gone. Version directories appear atomically by rename;
    /// anything else (a hidden or non-numeric name, a version without its
    /// model.onnx yet) is ignored until complete.
    pub(crate) async fn poll_once(self: &Arc<Self>) {
        self.sync(&|_: &str| true, false).await;
        let this = self.clone();
        let scanned = tokio::task::spawn_blocking(move || {
            let scan = this.repos.scan();
            let models = scan
                .models
                .into_iter()
                .map(|m| {
                    let fp = m.fingerprint();
                    (m.name, fp)
                })
                .collect::<Vec<_>>();
            (models, scan.conflicts, scan.errors.is_empty())
        })
        .await;
        let (models, conflicts, complete) = match scanned {
            Ok(scanned) => scanned,
            Err(e) => {
                tracing::warn!(error = %e, "repository scan failed; keeping what is served");
                return;
            }
        };
        let mut on_disk: Vec<String> = models.iter().map(|(n, _)| n.clone()).collect();
        for (name, conflict) in conflicts {
            // Serving what was loaded from the one repository it was in
            // before; a model never loaded becomes UNAVAILABLE.
            let serving = self.served.load().contains_key(&name);
            if !serving
                && self.index_lock().get(&name).is_none_or(|s| {
                    !s.values()
                        .any(|v| matches!(v, VersionState::Unavailable(r) if *r == conflict))
                })
            {
                tracing::error!(model = %name, "{conflict}");
                self.set_state(&name, None, Some(VersionState::Unavailable(conflict)));
            }
            on_disk.push(name);
        }
        for (name, fingerprint) in models {
            let fingerprint = match fingerprint {
                Ok(fingerprint) => fingerprint,
                Err(e) => {
                    // Unreadable right now (e.g. config.toml is a directory):
                    // keep serving what is loaded and try again next poll.
                    tracing::warn!(model = %name, error = %e, "cannot read the model directory; keeping what is served");
                    continue;
                }
            };
            let unchanged = self
                .attempted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&name)
                .is_some_and(|last| *last == fingerprint);
            if !unchanged && !self.defer_to_demand(&name, &fingerprint) {
                let _ = self.load_internal(&name).await;
            }
        }
        if !complete {
            return; // a model not seen may be in the repository not read
        }
        let gone: Vec<String> = self
            .index_lock()
            .keys()
            .filter(|n| !on_disk.contains(n))
            .cloned()
            .collect();
        for name in gone {
            tracing::info!(model = %name, "model directory removed; unloading");
            let _ = self.unload_internal(&name).await;
            self.index_lock().remove(&name);
            self.remember(&name, None);
            self.overrides_lock().remove(&name);
        }
    }

    /// Stops serving every version of `name`. In-flight requests complete.
    pub(crate) async fn unload(&self, name: &str) -> Result<()> {
        self.check_api()?;
        self.unload_internal(name).await
    }

    async fn unload_internal(&self, name: &str) -> Result<()> {
        let _serial = self.loads.lock().await;
        let known = self.index_lock().contains_key(name);
        let removed = self.replace(name, None);
        let was_ensemble = self.remove_ensemble(name);
        if removed.is_none() && !was_ensemble && !known {
            return Err(Error::NotFound(format!("model '{name}' is not loaded")));
        }
        if let Some(old) = removed {
            for (v, version) in &old.versions {
                version.close();
                self.metrics.forget_version(name, *v);
            }
        }
        self.remember(name, None);
        self.overrides_lock().remove(name);
        let mut index = self.index_lock();
        if let Some(states) = index.get_mut(name) {
            states.clear();
            states.insert(None, VersionState::Unloaded);
        }
        drop(index);
        self.refresh_demand_gauges();
        Ok(())
    }
}
