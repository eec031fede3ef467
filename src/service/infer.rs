//! The one inference path every protocol takes: resolve the version, check
//! the request against it, queue it on that version's scheduler, wait for
//! its rows, and record the outcome.

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
    registry: &Registry,
    metrics: &Metrics,
    limits: &Limits,
    request: InferRequest,
    protocol: Protocol,
) -> Result<InferResponse> {
    let started = Instant::now();
    let mut version = match registry.resolve(&request.model, request.version) {
        Ok(v) => v,
        Err(e) => {
            metrics.record_unrouted(&request.model, protocol.label(), e.outcome());
            telemetry::record_outcome(e.outcome(), None);
            return Err(e);
        }
    };
    let metrics = version.metrics.clone();
    let outcome = infer_on(Some(registry), limits, &mut version, request, started).await;
    telemetry::record_version(version.version);
    let (label, timing, rows) = match &outcome {
        Ok((_, timing, rows)) => ("success", Some(*timing), Some(*rows)),
        Err(e) => (e.outcome(), None, None),
    };
    telemetry::record_outcome(label, rows);
    metrics.record_request(protocol.label(), label, started.elapsed(), timing);
    outcome.map(|(response, _, _)| response)
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
    let outcome = infer_on(None, limits, &mut version, request, started).await;
    let (label, timing) = match &outcome {
        Ok((_, timing, _)) => ("success", Some(*timing)),
        Err(e) => (e.outcome(), None),
    };
    version
        .metrics
        .record_request(protocol.label(), label, started.elapsed(), timing);
    outcome.map(|(response, timing, _)| (response, timing))
}

/// `successor`: where to find the version that replaced a closed one
/// (`None`: fail instead).
async fn infer_on(
    successor: Option<&Registry>,
    limits: &Limits,
    version: &mut Arc<LoadedVersion>,
    request: InferRequest,
    started: Instant,
) -> Result<(InferResponse, Timing, usize)> {
    let (id, model, wanted_version) = (request.id.clone(), request.model.clone(), request.version);
    let mut job = validate(version, request, limits, started)?;
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
                let fresh = registry.resolve(&model, wanted_version)?;
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
                    priority: Some(returned.priority as u64),
                    timeout_us: returned.deadline.map(|d| {
                        d.saturating_duration_since(Instant::now())
                            .as_micros()
                            .max(1) as u64
                    }),
                    inputs: returned.inputs,
                };
                *version = fresh;
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
    let response = InferResponse {
        model: version.model.clone(),
        version: version.version,
        id,
        outputs: names.into_iter().zip(completion.outputs).collect(),
    };
    Ok((response, timing, completion.batch_rows))
}

fn output_names(version: &LoadedVersion, job: &Job) -> Vec<String> {
    // The indices are positions in this signature (validate() found them).
    job.outputs
        .iter()
        .filter_map(|&i| version.signature.outputs.get(i))
        .map(|spec| spec.name.clone())
        .collect()
}
