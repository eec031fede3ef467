//! The spans of a request and of a batch. Every constructor returns
//! `Span::none()` when tracing is off, so the hot path pays one atomic load.

use super::enabled;
use opentelemetry::trace::{SpanContext, TraceContextExt as _};
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The `tracing` target of every span meant for export; the exporting
/// layer takes only this target, so log filters and traces stay apart.
pub(crate) const TARGET: &str = "sluice::trace";

/// One inference request's server span, continuing the caller's trace
/// from `headers` (`traceparent`, `tracestate`).
pub(crate) fn request_span(protocol: &'static str, model: &str, headers: &http::HeaderMap) -> Span {
    if !enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: "sluice::trace",
        "infer",
        otel.kind = "server",
        otel.status_code = Empty,
        protocol,
        model,
        version = Empty,
        batch_size = Empty,
        outcome = Empty,
    );
    // A malformed or absent parent starts a new trace.
    let _ = span.set_parent(super::extract(headers));
    span
}

/// The stages of a request and of a batch that get a span of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// The wire format into tensors.
    Decode,
    /// Tensors into the wire format.
    Encode,
    /// Batch assembly: the requests' inputs into the run's tensors.
    ComputeInput,
    /// The model run.
    ComputeInfer,
    /// The run's outputs copied out and split per request.
    ComputeOutput,
}

/// A child span of the current span for `phase`.
pub(crate) fn phase_span(phase: Phase) -> Span {
    if !enabled() {
        return Span::none();
    }
    match phase {
        Phase::Decode => tracing::info_span!(target: "sluice::trace", "decode"),
        Phase::Encode => tracing::info_span!(target: "sluice::trace", "encode"),
        Phase::ComputeInput => tracing::info_span!(target: "sluice::trace", "compute_input"),
        Phase::ComputeInfer => tracing::info_span!(target: "sluice::trace", "compute_infer"),
        Phase::ComputeOutput => tracing::info_span!(target: "sluice::trace", "compute_output"),
    }
}

/// The queue wait of the current request: opened when the job is queued,
/// closed (dropped) by the worker that takes it.
pub(crate) fn queue_span() -> Span {
    if !enabled() || Span::current().is_none() {
        return Span::none();
    }
    tracing::info_span!(target: "sluice::trace", "queue")
}

/// A reference to a span, to link to it from another trace.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct SpanLink(Option<SpanContext>);

/// A link to `span` (nothing when it is not recorded).
pub(crate) fn span_link(span: &Span) -> SpanLink {
    if span.is_none() {
        return SpanLink(None);
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    SpanLink(sc.is_valid().then_some(sc))
}

/// Adds a link from `span` to `link`.
pub(crate) fn link_to(span: &Span, link: &SpanLink) {
    if let (false, Some(sc)) = (span.is_none(), &link.0) {
        span.add_link(sc.clone());
    }
}

/// The span of one model run: a root of its own, linked to each request
/// it served.
#[derive(Debug)]
pub(crate) struct BatchSpan {
    pub(crate) span: Span,
}

/// Opens the span of a batch of `rows` rows of `model`, linked to `requests`.
pub(crate) fn batch_span<'a>(
    model: &str,
    rows: usize,
    requests: impl Iterator<Item = &'a Span>,
) -> BatchSpan {
    if !enabled() {
        return BatchSpan { span: Span::none() };
    }
    let mut links = requests.map(span_link).filter(|l| l.0.is_some()).peekable();
    if links.peek().is_none() {
        return BatchSpan { span: Span::none() };
    }
    let span = tracing::info_span!(
        target: "sluice::trace",
        parent: None,
        "batch",
        model,
        batch_size = i64::try_from(rows).unwrap_or(i64::MAX),
    );
    for link in links {
        link_to(&span, &link);
    }
    BatchSpan { span }
}

/// Records the version that answered on the current request span.
pub(crate) fn record_version(version: u64) {
    if enabled() {
        // As i64: tracing-opentelemetry exports u64 values as strings.
        Span::current().record("version", i64::try_from(version).unwrap_or(i64::MAX));
    }
}

/// Records how the current request ended, and its batch's size.
pub(crate) fn record_outcome(outcome: &'static str, batch_size: Option<usize>) {
    if !enabled() {
        return;
    }
    let span = Span::current();
    span.record("outcome", outcome);
    if let Some(rows) = batch_size {
        span.record("batch_size", i64::try_from(rows).unwrap_or(i64::MAX));
    }
    if outcome != "success" {
        span.record("otel.status_code", "ERROR");
    }
}
