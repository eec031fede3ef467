//! Building the OTLP exporter and the tracer, with a bounded, counted
//! export queue.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter,
    SpanProcessor, Tracer,
};
use prometheus::IntCounter;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// Spans dropped: over the export queue, or in an export that failed.
pub static SPANS_DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        "sluice_trace_spans_dropped_total",
        "Trace spans dropped: the export queue was full, or the collector did not take them.",
    )
    .unwrap_or_else(|e| unreachable!("static counter is valid: {e}"))
});

/// Spans the collector accepted.
pub static SPANS_EXPORTED: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        "sluice_trace_spans_exported_total",
        "Trace spans the OTLP collector accepted.",
    )
    .unwrap_or_else(|e| unreachable!("static counter is valid: {e}"))
});

/// Spans waiting for export at most; more are dropped (and counted).
const MAX_QUEUE: usize = 8192;

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (port 4317 by convention).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (port 4318; path `/v1/traces`).
    HttpProtobuf,
}

impl std::fmt::Display for OtlpProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OtlpProtocol::Grpc => "grpc",
            OtlpProtocol::HttpProtobuf => "http/protobuf",
        })
    }
}

/// Where traces go. Without an endpoint here or in the `OTEL_*` variables,
/// tracing stays off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    /// The collector; `None`: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, if set.
    pub(crate) endpoint: Option<String>,
    /// `None`: `OTEL_EXPORTER_OTLP_PROTOCOL` (`grpc`, `http/protobuf`), else gRPC.
    pub(crate) protocol: Option<OtlpProtocol>,
}

/// The running exporter; dropping it flushes and stops export.
#[derive(Debug)]
pub struct Exporter {
    provider: SdkTracerProvider,
    pub tracer: Tracer,
    pub endpoint: String,
    pub protocol: OtlpProtocol,
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.provider.shutdown_with_timeout(Duration::from_secs(2));
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Starts exporting when an endpoint is configured, reading the standard
/// `OTEL_*` variables for what the flags leave unset (sampler:
/// `OTEL_TRACES_SAMPLER`/`_ARG`; service name: `OTEL_SERVICE_NAME`, else
/// `sluice`). Must be called inside the tokio runtime (the gRPC exporter's
/// channel runs on it).
pub fn init(config: &OtlpConfig) -> Result<Option<Exporter>, String> {
    let endpoint = config
        .endpoint
        .clone()
        .or_else(|| env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"));
    let Some(endpoint) = endpoint else {
        return Ok(None);
    };
    let protocol = match config.protocol {
        Some(p) => p,
        None => match env("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
            None | Some("grpc") => OtlpProtocol::Grpc,
            Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
            Some(other) => {
                return Err(format!(
                    "OTEL_EXPORTER_OTLP_PROTOCOL: expected grpc or http/protobuf, got '{other}'"
                ));
            }
        },
    };
    let queued = Arc::new(AtomicUsize::new(0));
    let processor = match protocol {
        OtlpProtocol::Grpc => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .with_timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| format!("--otlp-endpoint {endpoint}: {e}"))?;
            bounded(exporter, queued)
        }
        OtlpProtocol::HttpProtobuf => {
            // A programmatic endpoint is used as given: add the signal path.
            let url = if endpoint.ends_with("/v1/traces") {
                endpoint.clone()
            } else {
                format!("{}/v1/traces", endpoint.trim_end_matches('/'))
            };
            // The blocking HTTP client may not be built on the async runtime.
            let built = std::thread::spawn(move || {
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_endpoint(url)
                    .with_timeout(Duration::from_secs(5))
                    .build()
            })
            .join()
            .map_err(|_| "building the OTLP/HTTP exporter panicked".to_string())?
            .map_err(|e| format!("--otlp-endpoint {endpoint}: {e}"))?;
            bounded(built, queued)
        }
    };
    let resource = Resource::builder()
        .with_service_name(env("OTEL_SERVICE_NAME").unwrap_or_else(|| "sluice".to_string()));
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer("sluice");
    super::set_enabled();
    Ok(Some(Exporter {
        provider,
        tracer,
        endpoint,
        protocol,
    }))
}

fn bounded<E: SpanExporter + 'static>(exporter: E, queued: Arc<AtomicUsize>) -> Bounded {
    let config = BatchConfigBuilder::default()
        .with_max_queue_size(MAX_QUEUE)
        .with_scheduled_delay(Duration::from_millis(500))
        .build();
    let inner = BatchSpanProcessor::builder(Counting {
        inner: exporter,
        queued: queued.clone(),
    })
    .with_batch_config(config)
    .build();
    Bounded { inner, queued }
}

/// The SDK's batch processor behind a queue bound of our own, so that what
/// is dropped is counted (the SDK's own queue drops silently).
#[derive(Debug)]
struct Bounded {
    inner: BatchSpanProcessor,
    /// Spans handed on and not yet taken by an export.
    queued: Arc<AtomicUsize>,
}

impl SpanProcessor for Bounded {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.queued.fetch_add(1, Ordering::AcqRel) >= MAX_QUEUE {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            SPANS_DROPPED.inc();
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporter, counting what it delivers and what it fails to.
#[derive(Debug)]
struct Counting<E> {
    inner: E,
    queued: Arc<AtomicUsize>,
}

impl<E: SpanExporter> SpanExporter for Counting<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        self.queued
            .fetch_sub(n.min(self.queued.load(Ordering::Acquire)), Ordering::AcqRel);
        let result = self.inner.export(batch).await;
        match &result {
            Ok(()) => SPANS_EXPORTED.inc_by(n as u64),
            Err(_) => SPANS_DROPPED.inc_by(n as u64),
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
