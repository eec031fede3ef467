//! Downloads: one object streamed to a temporary file and checked against
//! its listing, and a whole version staged beside the cache's copy and
//! renamed into place.

use super::{ListedVersion, Mirror, Object, describe};
use futures::StreamExt;
use object_store::GetOptions;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// A body that delivers nothing for this long is a failed download.
const IDLE_READ: Duration = Duration::from_secs(60);
/// Files at least this large log their progress.
const PROGRESS_BYTES: u64 = 64 << 20;
/// How often a large download logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

impl Mirror {
    /// Downloads a whole version beside the cache's copy and renames it
    /// into place, so the registry sees all of it or none.
    pub(super) async fn download_version(
        &self,
        name: &str,
        version: u64,
        listed: &ListedVersion,
        dir: &Path,
    ) -> Result<(), String> {
        let staging = dir.join(format!(".{version}.partial"));
        let _ = tokio::fs::remove_dir_all(&staging).await;
        let started = Instant::now();
        let bytes: u64 = listed.files.values().map(|o| o.meta.size).sum();
        for (rel, object) in &listed.files {
            if let Err(e) = self.download(name, object, &staging.join(rel)).await {
                let _ = tokio::fs::remove_dir_all(&staging).await;
                return Err(format!("version {version}: {e}"));
            }
        }
        let target = dir.join(version.to_string());
        let retired = dir.join(format!(".{version}.old"));
        let _ = tokio::fs::remove_dir_all(&retired).await;
        let swap = async {
            if tokio::fs::metadata(&target).await.is_ok() {
                tokio::fs::rename(&target, &retired).await?;
            }
            tokio::fs::rename(&staging, &target).await
        };
        swap.await
            .map_err(|e| format!("version {version}: cannot move it into the cache: {e}"))?;
        let _ = tokio::fs::remove_dir_all(&retired).await;
        tracing::info!(repository = %self.display, model = name, version, bytes, took_ms = started.elapsed().as_millis() as u64, "model version downloaded");
        Ok(())
    }

    /// Streams one object to `path` through a temporary file, checking that
    /// it is the listed object and that every byte arrived.
    pub(super) async fn download(
        &self,
        model: &str,
        object: &Object,
        path: &Path,
    ) -> Result<(), String> {
        let started = Instant::now();
        let what = object.location.as_ref().to_string();
        let parent = path.parent().unwrap_or(path);
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = parent.join(format!(".{file_name}.download"));
        let result = self.fetch_to(model, object, &temp).await;
        match result {
            Ok(bytes) => {
                tokio::fs::rename(&temp, path)
                    .await
                    .map_err(|e| format!("{what}: cannot move it into place: {e}"))?;
                self.metrics.downloaded(bytes, started.elapsed());
                Ok(())
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&temp).await;
                Err(format!("{what}: {e}"))
            }
        }
    }

    async fn fetch_to(&self, model: &str, object: &Object, temp: &Path) -> Result<u64, String> {
        // A WebDAV server may quote ETags differently in a listing and a
        // GET, so it is compared after the fact (`bare_etag`), not asked.
        let options = GetOptions {
            if_match: object.meta.etag.clone().filter(|_| self.conditional_get),
            ..GetOptions::default()
        };
        let result = self
            .store
            .get_opts(&object.location, options)
            .await
            .map_err(|e| describe(&e))?;
        let expected = object.meta.size;
        let etag_changed = match (&object.meta.etag, &result.meta.e_tag) {
            (Some(listed), Some(got)) => bare_etag(listed) != bare_etag(got),
            _ => false,
        };
        if result.meta.size != expected || etag_changed {
            return Err("changed since it was listed; trying again at the next sync".into());
        }
        let mut file = tokio::fs::File::create(temp)
            .await
            .map_err(|e| format!("cannot create {}: {e}", temp.display()))?;
        let mut stream = result.into_stream();
        let mut written: u64 = 0;
        let started = Instant::now();
        let mut reported = Instant::now();
        loop {
            let chunk = match tokio::time::timeout(IDLE_READ, stream.next()).await {
                Err(_) => {
                    return Err(format!(
                        "no data for {} s after {written} of {expected} bytes",
                        IDLE_READ.as_secs()
                    ));
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(describe(&e)),
                Ok(Some(Ok(chunk))) => chunk,
            };
            written = written.saturating_add(chunk.len() as u64);
            if written > expected {
                return Err(format!(
                    "the store sent more than the {expected} bytes listed"
                ));
            }
            file.write_all(&chunk)
                .await
                .map_err(|e| format!("cannot write {}: {e}", temp.display()))?;
            if expected >= PROGRESS_BYTES && reported.elapsed() >= PROGRESS_EVERY {
                reported = Instant::now();
                log_progress(&self.display, model, object, written, started.elapsed());
            }
        }
        file.flush()
            .await
            .map_err(|e| format!("cannot write {}: {e}", temp.display()))?;
        if written != expected {
            return Err(format!(
                "truncated: {written} of the {expected} bytes listed arrived"
            ));
        }
        Ok(written)
    }
}

fn log_progress(repository: &str, model: &str, object: &Object, written: u64, took: Duration) {
    let total = object.meta.size;
    let rate = written as f64 / took.as_secs_f64().max(1e-3);
    let left = total.saturating_sub(written) as f64 / rate.max(1.0);
    tracing::info!(
        repository,
        model,
        object = %object.location,
        bytes = written,
        total,
        mib_per_s = format!("{:.1}", rate / f64::from(1 << 20)),
        seconds_left = format!("{left:.0}"),
        "downloading"
    );
}

/// An ETag without its quotes and weak prefix: stores quote it in headers
/// but not always in listings (Azure).
fn bare_etag(etag: &str) -> &str {
    etag.trim_start_matches("W/").trim_matches('"')
}
