//! OpenTelemetry traces, off by default.
//!
//! With an OTLP endpoint configured (`--otlp-endpoint`, or the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`),
//! every inference request gets one server span, continued from the
//! caller's W3C `traceparent`/`tracestate` (HTTP headers or gRPC metadata),
//! with child spans for decode, queue wait and encode. The batch a request
//! ran in is one span of its own (children: compute input, the model run,
//! compute output) that links to every request it served, and each request
//! links back to it: one run is recorded once, not N times. The span
//! context rides with each queued job to the worker thread.
//!
//! Export is batched on the SDK's own thread and never blocks a request.
//! The queue is bounded; what does not fit, and what an export fails to
//! deliver (a collector that is down), is dropped and counted in
//! `sluice_trace_spans_dropped_total`.
//!
//! Off, no span is created at all: every span constructor here checks one
//! atomic flag first, so tracing off costs one relaxed load per site.

mod export;
mod propagate;
mod spans;

pub use export::{Exporter, OtlpConfig, OtlpProtocol, SPANS_DROPPED, SPANS_EXPORTED, init};
pub(crate) use propagate::extract;
pub(crate) use spans::{
    Phase, SpanLink, TARGET, batch_span, link_to, phase_span, queue_span, record_outcome,
    record_version, request_span, span_link,
};

use std::sync::atomic::{AtomicBool, Ordering};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether traces are exported (set once, by [`init`]).
pub(crate) fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

fn set_enabled() {
    ENABLED.store(true, Ordering::Relaxed);
}
