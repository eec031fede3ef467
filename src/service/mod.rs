//! The protocol-neutral operations: every adapter (REST JSON, REST binary,
//! gRPC, v1 predict) decodes its wire format into an [`InferRequest`] and calls
//! [`Service::infer`]. Validation, admission, timing and metrics live here,
//! once.

mod validate;

pub use validate::validate;

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::registry::{LoadedVersion, Registry};
use crate::scheduler::Job;
use crate::tensor::RunOutput;
use crate::tensor::{DataType, Tensor};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Limits on what one request may ask for.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most elements in one input tensor.
    pub max_tensor_elements: usize,
    /// Most bytes in all of a request's input tensors together.
    pub max_request_bytes: usize,
    /// Most bytes in one element of a BYTES tensor.
    pub max_bytes_element: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_tensor_elements: 64 << 20,
            max_request_bytes: 256 << 20,
            max_bytes_element: 16 << 20,
        }
    }
}

/// A decoded inference request, before it is checked against the model.
#[derive(Debug, Clone, Default)]
pub struct InferRequest {
    pub model: String,
    pub version: Option<u64>,
    pub id: Option<String>,
    pub inputs: Vec<Tensor>,
    /// Outputs to return, by name; `None` means all of them.
    pub outputs: Option<Vec<String>>,
    /// Priority level (1 is the highest); `None` or 0 means the model's default.
    pub priority: Option<u64>,
    /// Queue timeout in µs; it can only shorten the model's default.
    pub timeout_us: Option<u64>,
}

/// The answer to an [`InferRequest`].
#[derive(Debug, Clone)]
pub struct InferResponse {
    pub model: String,
    pub version: u64,
    pub id: Option<String>,
    /// Requested outputs, in the requested (or graph) order.
    pub outputs: Vec<(String, RunOutput)>,
}

/// Which adapter a request came through, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Grpc,
}

impl Protocol {
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
        }
    }
}

/// The cheap, cloneable handle every adapter holds.
#[derive(Debug, Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Arc<Registry>,
    metrics: Metrics,
    limits: Limits,
    /// Set once the startup load finished.
    started: AtomicBool,
    /// Set at SIGTERM: readiness turns false at once.
    draining: AtomicBool,
}

/// Decrements the in-flight gauge however the request ends (even if the
/// caller goes away and the future is dropped).
struct InFlight(prometheus::IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Service {
    pub fn new(registry: Arc<Registry>, metrics: Metrics, limits: Limits) -> Self {
        Self {
            inner: Arc::new(Inner {
                registry,
                metrics,
                limits,
                started: AtomicBool::new(false),
                draining: AtomicBool::new(false),
            }),
        }
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.inner.registry
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Marks the startup load as finished.
    pub fn set_started(&self) {
        self.inner.started.store(true, Ordering::Release);
    }

    /// Turns readiness false (SIGTERM); liveness stays true.
    pub fn begin_drain(&self) {
        self.inner.draining.store(true, Ordering::Release);
    }

    pub fn is_live(&self) -> bool {
        true
    }

    /// Ready once every loadable model has loaded, until draining starts.
    pub fn is_ready(&self) -> bool {
        self.inner.started.load(Ordering::Acquire) && !self.inner.draining.load(Ordering::Acquire)
    }

    /// Whether a model (version) can take requests now.
    pub fn model_ready(&self, model: &str, version: Option<u64>) -> Result<bool> {
        match self.inner.registry.resolve(model, version) {
            Ok(_) => Ok(true),
            Err(Error::Unavailable(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The served version a request addresses.
    pub fn resolve(&self, model: &str, version: Option<u64>) -> Result<Arc<LoadedVersion>> {
        self.inner.registry.resolve(model, version)
    }

    /// Refuses at once a request for a model whose queue is full, before its
    /// body is read and decoded: under overload the 503 then costs no decode.
    /// Anything else (an unknown model, a bad version) passes, to be reported
    /// with the full request by [`Service::infer`].
    pub fn precheck(&self, model: &str, version: Option<u64>, protocol: Protocol) -> Result<()> {
        let Ok(v) = self.resolve(model, version) else {
            return Ok(());
        };
        v.scheduler.check_room().inspect_err(|e| {
            v.metrics
                .record_request(protocol.label(), e.outcome(), Duration::ZERO, None);
        })
    }

    /// Checks, queues and runs one request.
    pub async fn infer(&self, request: InferRequest, protocol: Protocol) -> Result<InferResponse> {
        let started = Instant::now();
        let mut version = match self.resolve(&request.model, request.version) {
            Ok(v) => v,
            Err(e) => {
                self.inner
                    .metrics
                    .record_unrouted(&request.model, protocol.label(), e.outcome());
                return Err(e);
            }
        };
        let metrics = version.metrics.clone();
        let outcome = self.infer_on(&mut version, request, started).await;
        let (label, times) = match &outcome {
            Ok((_, queue, compute)) => ("success", Some((*queue, *compute))),
            Err(e) => (e.outcome(), None),
        };
        metrics.record_request(protocol.label(), label, started.elapsed(), times);
        outcome.map(|(response, _, _)| response)
    }

    async fn infer_on(
        &self,
        version: &mut Arc<LoadedVersion>,
        request: InferRequest,
        started: Instant,
    ) -> Result<(InferResponse, Duration, Duration)> {
        let (id, model, wanted_version) =
            (request.id.clone(), request.model.clone(), request.version);
        let mut job = validate(version, request, &self.inner.limits, started)?;
        let _inflight = {
            version.metrics.inflight.inc();
            InFlight(version.metrics.inflight.clone())
        };
        let mut attempts = 0;
        let mut names = output_names(version, &job);
        let pending = loop {
            match version.scheduler.submit(job) {
                Ok(pending) => break pending,
                Err(rejected) => {
                    // A closed scheduler means the version was swapped out
                    // between resolve and submit; its successor is already
                    // published, so take the job there.
                    let Some(returned) = rejected.job.map(|j| *j) else {
                        return Err(rejected.error);
                    };
                    attempts += 1;
                    let fresh = self.resolve(&model, wanted_version)?;
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
                                .map(|&i| version.signature.outputs[i].name.clone())
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
                    job = validate(version, request, &self.inner.limits, Instant::now())?;
                    names = output_names(version, &job);
                }
            }
        };
        let completion = pending.wait().await?;
        let response = InferResponse {
            model: version.model.clone(),
            version: version.version,
            id,
            outputs: names.into_iter().zip(completion.outputs).collect(),
        };
        Ok((response, completion.queue_time, completion.compute_time))
    }
}

fn output_names(version: &LoadedVersion, job: &Job) -> Vec<String> {
    job.outputs
        .iter()
        .map(|&i| version.signature.outputs[i].name.clone())
        .collect()
}

/// Triton protocol extensions this server implements, as server metadata
/// reports them on both protocols.
pub const EXTENSIONS: &[&str] = &[
    "binary_tensor_data",
    "statistics",
    "model_configuration",
    "model_repository",
    "parameters",
    "logging",
];

/// One row of the repository index, as both adapters report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexRow {
    pub name: String,
    /// `None` when the state concerns the whole model (or it was never loaded).
    pub version: Option<u64>,
    /// `READY`, `LOADING` or `UNAVAILABLE`.
    pub state: &'static str,
    pub reason: String,
}

/// A tensor of a model's configuration; `dims` exclude the batch dimension
/// when the model batches (as Triton's `config.pbtxt` does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigTensor {
    pub name: String,
    pub datatype: DataType,
    pub dims: Vec<i64>,
}

/// A served version's effective configuration, Triton-style and
/// protocol-neutral: what the REST `config` route and gRPC `ModelConfig` show.
#[derive(Debug, Clone)]
pub struct ModelConfigView {
    pub name: String,
    pub max_batch_size: usize,
    pub inputs: Vec<ConfigTensor>,
    pub outputs: Vec<ConfigTensor>,
    pub instances: usize,
    /// Whether the sessions run on a GPU provider (`KIND_GPU`) or the CPU.
    pub gpu: bool,
    pub device_id: u32,
    pub dynamic_batching: crate::repository::config::DynamicBatching,
    pub version_policy: crate::repository::config::VersionPolicy,
}

impl Service {
    /// Rejects model names that could address anything outside the repository.
    pub fn check_model_name(name: &str) -> Result<()> {
        if crate::repository::valid_model_name(name) {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "model name '{name}' is not valid: use letters, digits, '_', '-' and '.', without path separators or a leading '.'"
            )))
        }
    }

    /// Every model of the repository: those the registry knows (loaded,
    /// failed, unloaded) and those on disk that were never loaded. With
    /// `ready_only`, only versions that serve.
    pub fn repository_index(&self, ready_only: bool) -> Result<Vec<IndexRow>> {
        let mut rows: Vec<IndexRow> = self
            .inner
            .registry
            .index()
            .into_iter()
            .map(|e| IndexRow {
                state: e.state.label(),
                reason: e.state.reason().to_string(),
                name: e.name,
                version: e.version,
            })
            .collect();
        let on_disk = self
            .inner
            .registry
            .discover()
            .map_err(|e| Error::internal(format!("cannot read the model repository: {e}")))?;
        for name in on_disk {
            if !rows.iter().any(|r| r.name == name) {
                rows.push(IndexRow {
                    name,
                    version: None,
                    state: "UNAVAILABLE",
                    reason: "not loaded".into(),
                });
            }
        }
        rows.sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
        if ready_only {
            rows.retain(|r| r.state == "READY");
        }
        Ok(rows)
    }

    /// Loads (or reloads from disk) one model.
    pub async fn load_model(&self, name: &str) -> Result<()> {
        Self::check_model_name(name)?;
        self.inner.registry.load(name).await
    }

    /// Stops serving one model; in-flight requests complete.
    pub async fn unload_model(&self, name: &str) -> Result<()> {
        Self::check_model_name(name)?;
        self.inner.registry.unload(name).await
    }

    /// The effective configuration of the version a request would reach.
    pub fn model_config(&self, name: &str, version: Option<u64>) -> Result<ModelConfigView> {
        Self::check_model_name(name)?;
        let v = self.resolve(name, version)?;
        let batching = v.max_batch_size > 0;
        let tensors = |specs: &[crate::tensor::TensorSpec]| -> Vec<ConfigTensor> {
            specs
                .iter()
                .map(|t| ConfigTensor {
                    name: t.name.clone(),
                    datatype: t.datatype,
                    dims: if batching && !t.shape.is_empty() {
                        t.shape[1..].to_vec()
                    } else {
                        t.shape.clone()
                    },
                })
                .collect()
        };
        Ok(ModelConfigView {
            name: v.model.clone(),
            max_batch_size: v.max_batch_size,
            inputs: tensors(&v.signature.inputs),
            outputs: tensors(&v.signature.outputs),
            instances: v.instances,
            gpu: v.placement.provider != "cpu",
            device_id: v.placement.device_id,
            dynamic_batching: v.config.dynamic_batching.clone(),
            version_policy: v.config.version_policy.clone(),
        })
    }

    /// The served versions statistics are reported for: one model (all its
    /// versions, or one), or every model when `name` is `None`.
    pub fn stats_versions(
        &self,
        name: Option<&str>,
        version: Option<u64>,
    ) -> Result<Vec<Arc<LoadedVersion>>> {
        let served = self.inner.registry.served();
        let Some(name) = name else {
            let mut names: Vec<&String> = served.keys().collect();
            names.sort();
            return Ok(names
                .into_iter()
                .flat_map(|n| served[n].versions.values().cloned())
                .collect());
        };
        match (version, served.get(name)) {
            (None, Some(m)) if !m.versions.is_empty() => Ok(m.versions.values().cloned().collect()),
            _ => Ok(vec![self.resolve(name, version)?]),
        }
    }
}
