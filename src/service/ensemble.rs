//! Running an ensemble request: check it against the ensemble's declared
//! inputs, run each step once every tensor it maps is there (independent
//! steps at once), each on its composing model's own scheduler through
//! [`infer::infer_pinned`], and answer the requested outputs. Intermediate
//! tensors stay in memory as they came out of the step, never re-encoded.
//!
//! # Versions
//! Every step runs on the version the run was bound to (one snapshot of the
//! served set, `registry::ensemble`), so a run never mixes versions. When a
//! step fails because its pinned version was swapped out meanwhile, the
//! whole run starts again on a fresh snapshot, at most [`RESTARTS`] times:
//! a swap takes effect for the next run and costs the current one a rerun,
//! never an error.

use super::infer;
use super::types::{InferRequest, InferResponse, Limits, Protocol};
use super::validate::check_type_and_shape;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::registry::{LoadedEnsemble, LoadedVersion, Registry, step_label};
use crate::scheduler::job::{Phases, Timing};
use crate::telemetry;
use crate::tensor::{DataType, RunOutput, Tensor, TensorData, element_count, fmt_shape};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How many times a run may start again after a swap of a composing model.
const RESTARTS: usize = 3;

/// An ensemble bound to its composing versions, one per step.
pub(super) type Bound = (Arc<LoadedEnsemble>, Vec<Arc<LoadedVersion>>);

/// Decrements the ensemble's in-flight gauge however the request ends.
struct InFlight(prometheus::IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Checks and runs one ensemble request; `bound` is what the registry
/// answered for its name. Counted under the ensemble in `/metrics` and the
/// statistics; each step counts under its own model too.
pub(super) async fn infer(
    registry: &Registry,
    metrics: &Metrics,
    limits: &Limits,
    bound: Result<Bound>,
    request: InferRequest,
    protocol: Protocol,
) -> Result<InferResponse> {
    let started = Instant::now();
    let (ensemble, pinned) = match bound {
        Ok(bound) => bound,
        Err(e) => {
            metrics.record_unrouted(&request.model, protocol.label(), e.outcome());
            telemetry::record_outcome(e.outcome(), None);
            return Err(e);
        }
    };
    let _inflight = {
        ensemble.metrics.inflight.inc();
        InFlight(ensemble.metrics.inflight.clone())
    };
    let outcome = run(
        registry, limits, &ensemble, pinned, request, protocol, started,
    )
    .await;
    let took = started.elapsed();
    telemetry::record_version(ensemble.version);
    let (label, timing, rows) = match &outcome {
        Ok((_, timing, rows)) => {
            ensemble
                .metrics
                .record_execution(*rows, took, timing.phases);
            ("success", Some(*timing), Some(*rows))
        }
        Err(e) => (e.outcome(), None, None),
    };
    telemetry::record_outcome(label, rows);
    ensemble
        .metrics
        .record_request(protocol.label(), label, took, timing);
    outcome.map(|(response, _, _)| response)
}

async fn run(
    registry: &Registry,
    limits: &Limits,
    ensemble: &LoadedEnsemble,
    mut pinned: Vec<Arc<LoadedVersion>>,
    request: InferRequest,
    protocol: Protocol,
    started: Instant,
) -> Result<(InferResponse, Timing, usize)> {
    let (inputs, rows) = check_inputs(ensemble, request.inputs, limits)?;
    let wanted = requested_outputs(ensemble, request.outputs)?;
    let classes =
        super::classify::plan_for(&ensemble.name, &ensemble.outputs, &request.classification)?;
    let run = Run {
        ensemble,
        limits,
        protocol,
        priority: request.priority,
        deadline: request
            .timeout_us
            .filter(|&us| us > 0)
            .map(|us| started + Duration::from_micros(us)),
    };
    let mut restarts = 0;
    loop {
        match run.once(&pinned, inputs.clone()).await {
            Ok((mut tensors, timing)) => {
                let outputs = wanted
                    .into_iter()
                    .map(|name| {
                        let t = tensors.remove(&name).ok_or_else(|| {
                            Error::internal(format!(
                                "ensemble '{}': no step produced output '{name}'",
                                ensemble.name
                            ))
                        })?;
                        let out = RunOutput {
                            datatype: t.datatype,
                            shape: t.shape,
                            data: t.data,
                        };
                        Ok((name, out))
                    })
                    .collect::<Result<Vec<_>>>()?;
                let mut outputs = outputs;
                super::classify::apply_for(
                    ensemble.max_batch_size > 0,
                    &ensemble.config,
                    &classes,
                    &mut outputs,
                );
                let response = InferResponse {
                    model: ensemble.name.clone(),
                    version: ensemble.version,
                    id: request.id,
                    outputs,
                };
                return Ok((response, timing, rows));
            }
            Err(e) if restarts < RESTARTS && matches!(e, Error::Unavailable(_)) => {
                // Was a pinned version swapped out? Then run again on the
                // successors; otherwise the error stands.
                let Some(Ok((now, fresh))) =
                    registry.ensemble(&ensemble.name, Some(ensemble.version))
                else {
                    return Err(e);
                };
                // The fresh versions are bound to the ensemble's steps now;
                // they fit this run only if its steps are the same.
                if now.steps != ensemble.steps {
                    return Err(e);
                }
                let same = fresh.len() == pinned.len()
                    && fresh.iter().zip(&pinned).all(|(a, b)| Arc::ptr_eq(a, b));
                if same {
                    return Err(e);
                }
                tracing::debug!(model = %ensemble.name, restarts, "a composing model was swapped during an ensemble run; running again");
                restarts += 1;
                pinned = fresh;
            }
            Err(e) => return Err(e),
        }
    }
}

/// What every step of one request shares.
struct Run<'a> {
    ensemble: &'a LoadedEnsemble,
    limits: &'a Limits,
    protocol: Protocol,
    priority: Option<u64>,
    deadline: Option<Instant>,
}

impl Run<'_> {
    /// One pass over the steps on the versions `pinned`; the ensemble
    /// tensors at the end, and the steps' queue and compute times summed.
    async fn once(
        &self,
        pinned: &[Arc<LoadedVersion>],
        mut tensors: HashMap<String, Tensor>,
    ) -> Result<(HashMap<String, Tensor>, Timing)> {
        let steps = &self.ensemble.steps;
        let mut waiting: Vec<usize> = (0..steps.len()).collect();
        let mut running = FuturesUnordered::new();
        let mut timing = Timing {
            queue: Duration::ZERO,
            compute: Duration::ZERO,
            phases: Phases::default(),
        };
        loop {
            let (ready, rest): (Vec<usize>, Vec<usize>) = waiting.into_iter().partition(|&i| {
                steps
                    .get(i)
                    .is_some_and(|s| s.input_map.values().all(|t| tensors.contains_key(t)))
            });
            waiting = rest;
            for i in ready {
                let (Some(step), Some(version)) = (steps.get(i), pinned.get(i)) else {
                    continue;
                };
                let request = self.step_request(i, &tensors)?;
                let version = version.clone();
                let (limits, protocol) = (self.limits, self.protocol);
                let at = format!("ensemble '{}' {}", self.ensemble.name, step_label(i, step));
                running.push(async move {
                    let outcome = infer::infer_pinned(version, limits, request, protocol).await;
                    (i, outcome.map_err(|e| in_step(e, &at)))
                });
            }
            let Some((i, outcome)) = running.next().await else {
                break;
            };
            let (response, t) = outcome?;
            timing.queue += t.queue;
            timing.compute += t.compute;
            timing.phases.input += t.phases.input;
            timing.phases.infer += t.phases.infer;
            timing.phases.output += t.phases.output;
            let Some(step) = steps.get(i) else { continue };
            for (name, out) in response.outputs {
                if let Some(tensor) = step.output_map.get(&name) {
                    tensors.insert(
                        tensor.clone(),
                        Tensor {
                            name: tensor.clone(),
                            datatype: out.datatype,
                            shape: out.shape,
                            data: out.data,
                        },
                    );
                }
            }
        }
        if let Some(stuck) = waiting.first().and_then(|&i| steps.get(i).map(|s| (i, s))) {
            return Err(Error::internal(format!(
                "ensemble '{}': {} never got all its inputs",
                self.ensemble.name,
                step_label(stuck.0, stuck.1)
            )));
        }
        Ok((tensors, timing))
    }

    /// The request of step `i`: its mapped tensors under the model's input
    /// names, its mapped outputs only, the ensemble request's priority, and
    /// what remains of its timeout.
    fn step_request(&self, i: usize, tensors: &HashMap<String, Tensor>) -> Result<InferRequest> {
        let Some(step) = self.ensemble.steps.get(i) else {
            return Err(Error::internal("ensemble step out of range"));
        };
        let timeout_us = match self.deadline {
            None => None,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Error::DeadlineExceeded(format!(
                        "ensemble '{}': the request's timeout passed before {} could run",
                        self.ensemble.name,
                        step_label(i, step)
                    )));
                }
                Some(u64::try_from(left.as_micros()).unwrap_or(u64::MAX).max(1))
            }
        };
        let inputs = step
            .input_map
            .iter()
            .filter_map(|(input, tensor)| {
                tensors.get(tensor).map(|t| Tensor {
                    name: input.clone(),
                    ..t.clone()
                })
            })
            .collect();
        Ok(InferRequest {
            model: step.model_name.clone(),
            version: step.model_version,
            id: None,
            inputs,
            outputs: Some(step.output_map.keys().cloned().collect()),
            classification: Vec::new(),
            priority: self.priority,
            timeout_us,
        })
    }
}

/// A step's error, with the step named, keeping its kind (and so its status).
fn in_step(e: Error, at: &str) -> Error {
    match e {
        Error::InvalidArgument(m) => Error::InvalidArgument(format!("{at}: {m}")),
        Error::TooLarge(m) => Error::TooLarge(format!("{at}: {m}")),
        Error::NotFound(m) => Error::NotFound(format!("{at}: {m}")),
        Error::Unavailable(m) => Error::Unavailable(format!("{at}: {m}")),
        Error::Overloaded {
            message,
            retry_after,
        } => Error::Overloaded {
            message: format!("{at}: {message}"),
            retry_after,
        },
        Error::DeadlineExceeded(m) => Error::DeadlineExceeded(format!("{at}: {m}")),
        Error::ClientTimeout(m) => Error::ClientTimeout(format!("{at}: {m}")),
        Error::Unauthenticated(m) => Error::Unauthenticated(format!("{at}: {m}")),
        Error::PermissionDenied(m) => Error::PermissionDenied(format!("{at}: {m}")),
        Error::Internal(m) => Error::Internal(format!("{at}: {m}")),
    }
}

/// The names of the outputs to answer, in the order asked (every declared
/// output when none is named).
fn requested_outputs(e: &LoadedEnsemble, asked: Option<Vec<String>>) -> Result<Vec<String>> {
    let Some(asked) = asked else {
        return Ok(e.outputs.iter().map(|o| o.name.clone()).collect());
    };
    let mut names: Vec<String> = Vec::with_capacity(asked.len());
    for name in asked {
        if !e.outputs.iter().any(|o| o.name == name) {
            let known: Vec<&str> = e.outputs.iter().map(|o| o.name.as_str()).collect();
            return Err(Error::invalid(format!(
                "unknown output '{name}' for model '{}'; expected outputs: {}",
                e.name,
                known.join(", ")
            )));
        }
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Ok(names)
}

/// Checks a request's inputs against the ensemble's declared inputs, as the
/// service checks a model's (names, datatypes, shapes, batch rows, limits);
/// the inputs by name, and the batch size.
fn check_inputs(
    e: &LoadedEnsemble,
    given: Vec<Tensor>,
    limits: &Limits,
) -> Result<(HashMap<String, Tensor>, usize)> {
    let batching = e.max_batch_size > 0;
    let mut inputs = HashMap::with_capacity(given.len());
    let mut rows: Option<(usize, String)> = None;
    let mut total_bytes = 0usize;
    for tensor in given {
        let Some(spec) = e.inputs.iter().find(|s| s.name == tensor.name) else {
            let known: Vec<&str> = e.inputs.iter().map(|s| s.name.as_str()).collect();
            return Err(Error::invalid(format!(
                "unknown input '{}' for model '{}'; expected inputs: {}",
                tensor.name,
                e.name,
                known.join(", ")
            )));
        };
        if inputs.contains_key(&tensor.name) {
            return Err(Error::invalid(format!(
                "input '{}' is given more than once",
                tensor.name
            )));
        }
        check_type_and_shape(spec, &tensor)?;
        let count = element_count(&tensor.shape).unwrap_or(usize::MAX);
        if count > limits.max_tensor_elements {
            return Err(Error::TooLarge(format!(
                "input '{}': {count} elements exceed the limit of {} (--max-tensor-elements)",
                tensor.name, limits.max_tensor_elements
            )));
        }
        tensor.check_consistent().map_err(Error::InvalidArgument)?;
        if let (DataType::Bytes, TensorData::Bytes(elements)) = (spec.datatype, &tensor.data) {
            if let Some(i) = elements
                .iter()
                .position(|b| b.len() > limits.max_bytes_element)
            {
                return Err(Error::TooLarge(format!(
                    "input '{}': BYTES element {i} is over the limit of {} bytes (--max-bytes-element)",
                    tensor.name, limits.max_bytes_element
                )));
            }
        }
        total_bytes = total_bytes.saturating_add(tensor.data.byte_len());
        if batching {
            let n = tensor.rows();
            if n == 0 || n > e.max_batch_size {
                return Err(Error::invalid(format!(
                    "input '{}': the batch dimension must be between 1 and max_batch_size {} of model '{}', got {n}",
                    spec.name, e.max_batch_size, e.name
                )));
            }
            match &rows {
                Some((r, first)) if *r != n => {
                    return Err(Error::invalid(format!(
                        "input '{}': has {n} rows but input '{first}' has {r}; every input needs the same batch size",
                        spec.name
                    )));
                }
                Some(_) => {}
                None => rows = Some((n, spec.name.clone())),
            }
        }
        inputs.insert(tensor.name.clone(), tensor);
    }
    if total_bytes > limits.max_request_bytes {
        return Err(Error::TooLarge(format!(
            "request tensors hold {total_bytes} bytes, over the limit of {} (--max-request-tensor-bytes)",
            limits.max_request_bytes
        )));
    }
    if let Some(spec) = e.inputs.iter().find(|s| !inputs.contains_key(&s.name)) {
        return Err(Error::invalid(format!(
            "missing input '{}' ({} {}) for model '{}'",
            spec.name,
            spec.datatype,
            fmt_shape(&spec.shape),
            e.name
        )));
    }
    Ok((inputs, rows.map_or(1, |(r, _)| r)))
}
