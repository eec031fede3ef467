//! The one inference path every protocol takes: resolve the version, check
//! the request against it, answer it from the response cache or queue it on
//! that version's scheduler, wait for its rows, classify the outputs asked
//! for, and record the outcome.

use super::cache::{Lookup, ResponseCache};
use super::classify;
use super::types::{InferRequest, InferResponse, Limits, Protocol};
use super::validate::validate;
use crate::error::Result;
use crate::metrics::Metrics;
use crate::registry::{LoadedVersion, Registry};
use crate::scheduler::{Job, Timing};
use crate::telemetry;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Decrements the in-flight gauge however the request ends (even if the
/// caller goes away and the future is dropped).
struct InFlight(prometheus::IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The queue check before a body is read (see `Service::precheck`).
pub(super) fn precheck(
    registry: &Registry,
    model: &str,
    version: Option<u64>,
    protocol: Protocol,
) -> Result<()> {
    let Ok(v) = registry.resolve(model, version) else {
        return Ok(());
    };
    v.scheduler.check_room().inspect_err(|e| {
        v.metrics
            .record_request(protocol.label(), e.outcome(), Duration::ZERO, None);
    })
}

/// Checks, queues and runs one request.
pub(super) async fn infer(
    registry: &Arc<Registry>,
    metrics: &Metrics,
    limits: &Limits,
    cache: Option<&ResponseCache>,
    request: InferRequest,
    protocol: Protocol,
) -> Result<InferResponse> {
    let started = Instant::now();
    // On demand, a model that is not loaded loads now (or the request joins
    // the load under way), waiting at most as long as the request may.
    let wait = request
        .timeout_us
        .filter(|&us| us > 0)
        .map(Duration::from_micros);
    let mut version = match registry
        .resolve_or_load(&request.model, request.version, wait)
        .await
    {
        Ok(v) => v,
        Err(e) => {
            metrics.record_unrouted(&request.model, protocol.label(), e.outcome());
            telemetry::record_outcome(e.outcome(), None);
            return Err(e);
        }
    };
    let metrics = version.metrics.clone();
    // The cache serves only models that enable it.
    let cache = cache.filter(|_| version.config.response_cache);
    let outcome = infer_on(
        Some(registry),
        limits,
        cache,
        &mut version,
        request,
        started,
    )
    .await;
    telemetry::record_version(version.version);
    let (label, rows) = match &outcome {
        Ok((_, Served::Ran(_, rows) | Served::Cached(_, rows))) => ("success", Some(*rows)),
        Err(e) => (e.outcome(), None),
    };
    telemetry::record_outcome(label, rows);
    match &outcome {
        Ok((_, Served::Cached(lookup, rows))) => {
            metrics.record_cache_hit(protocol.label(), started.elapsed(), *lookup, *rows);
        }
        Ok((_, Served::Ran(timing, _))) => {
            metrics.record_request(protocol.label(), label, started.elapsed(), Some(*timing));
        }
        Err(_) => metrics.record_request(protocol.label(), label, started.elapsed(), None),
    }
    outcome.map(|(response, _)| response)
}

/// How a successful request was answered, with its rows.
enum Served {
    /// It ran, with these queue and compute times.
    Ran(Timing, usize),
    /// From the response cache, whose lookup took this long.
    Cached(Duration, usize),
}

/// Runs `request` on exactly `version`, as an ensemble step does: when that
/// version was swapped out it fails (`Unavailable`) rather than move to the
/// successor, so that one ensemble run never mixes versions. It counts
/// under its model like any request.
pub(super) async fn infer_pinned(
    mut version: Arc<LoadedVersion>,
    limits: &Limits,
    request: InferRequest,
    protocol: Protocol,
) -> Result<(InferResponse, Timing)> {
    let started = Instant::now();
    let outcome = infer_on(None, limits, None, &mut version, request, started).await;
    let (label, timing) = match &outcome {
        Ok((_, Served::Ran(timing, _))) => ("success", Some(*timing)),
        Ok((_, Served::Cached(..))) => ("success", None),
        Err(e) => (e.outcome(), None),
    };
    version
        .metrics
        .record_request(protocol.label(), label, started.elapsed(), timing);
    outcome.and_then(|(response, served)| match served {
        Served::Ran(timing, _) => Ok((response, timing)),
        Served::Cached(..) => Err(crate::error::Error::internal(
            "an ensemble step was answered from the cache, which steps never use",
        )),
    })
}

/// `successor`: where to find the version that replaced a closed one
/// (`None`: fail instead).
async fn infer_on(
    successor: Option<&Arc<Registry>>,
    limits: &Limits,
    cache: Option<&ResponseCache>,
    version: &mut Arc<LoadedVersion>,
    mut request: InferRequest,
    started: Instant,
) -> Result<(InferResponse, Served)> {
    // Moved out, not copied: validation reads neither.
    let (id, model, wanted_version) = (
        request.id.take(),
        std::mem::take(&mut request.model),
        request.version,
    );
    let mut classes = classify::plan(version, &request.classification)?;
    let mut job = validate(version, request, limits, started)?;
    // Looked up after validation, so that a request the version would refuse
    // is refused, and keyed on the validated (signature-ordered) inputs.
    let miss = match cache.map(|c| c.lookup(version, &job, &classes)) {
        Some(Lookup::Hit(outputs, took)) => {
            let response = InferResponse {
                model: version.model.clone(),
                version: version.version,
                id,
                outputs,
            };
            return Ok((response, Served::Cached(took, job.rows)));
        }
        Some(Lookup::Miss(miss)) => Some(miss),
        None => None,
    };
    let _inflight = {
        version.metrics.inflight.inc();
        InFlight(version.metrics.inflight.clone())
    };
    let mut attempts = 0;
    let mut names = output_names(version, &job);
    let pending = loop {
        job.trace = telemetry::queue_span();
        match version.scheduler.submit(job) {
            Ok(pending) => break pending,
            Err(rejected) => {
                // A closed scheduler means the version was swapped out
                // between resolve and submit; its successor is already
                // published, so take the job there.
                let (Some(returned), Some(registry)) = (rejected.job.map(|j| *j), successor) else {
                    return Err(rejected.error);
                };
                attempts += 1;
                // On demand the version may have been evicted rather than
                // swapped: then this loads it again.
                let fresh = registry
                    .resolve_or_load(
                        &model,
                        wanted_version,
                        returned
                            .deadline
                            .map(|d| d.saturating_duration_since(Instant::now())),
                    )
                    .await?;
                if attempts > 3 || Arc::ptr_eq(&fresh, version) {
                    return Err(rejected.error);
                }
                let request = InferRequest {
                    model: model.clone(),
                    version: wanted_version,
                    id: None,
                    outputs: Some(
                        returned
                            .outputs
                            .iter()
                            .filter_map(|&i| version.signature.outputs.get(i))
                            .map(|spec| spec.name.clone())
                            .collect(),
                    ),
                    classification: classes
                        .iter()
                        .map(|(name, count)| (name.clone(), u64::from(*count)))
                        .collect(),
                    priority: Some(returned.priority as u64),
                    timeout_us: returned.deadline.map(|d| {
                        d.saturating_duration_since(Instant::now())
                            .as_micros()
                            .max(1) as u64
                    }),
                    inputs: returned.inputs,
                };
                *version = fresh;
                classes = classify::plan(version, &request.classification)?;
                job = validate(version, request, limits, Instant::now())?;
                names = output_names(version, &job);
            }
        }
    };
    let completion = pending.wait().await?;
    telemetry::link_to(&tracing::Span::current(), &completion.batch_span);
    let timing = Timing {
        queue: completion.queue_time,
        compute: completion.compute_time,
        phases: completion.phases,
    };
    let mut outputs: Vec<_> = names.into_iter().zip(completion.outputs).collect();
    classify::apply(version, &classes, &mut outputs);
    if let Some(miss) = miss {
        miss.store(version, &outputs);
    }
    let response = InferResponse {
        model: version.model.clone(),
        version: version.version,
        id,
        outputs,
    };
    Ok((response, Served::Ran(timing, completion.batch_rows)))
}

fn output_names(version: &LoadedVersion, job: &Job) -> Vec<String> {
    // The indices are positions in this signature (validate() found them).
    job.outputs
        .iter()
        .filter_map(|&i| version.signature.outputs.get(i))
        .map(|spec| spec.name.clone())
        .collect()
}
