//! OpenTelemetry traces, end to end: the `sluice` binary exports OTLP/gRPC
//! to a receiver in this test (a tonic server on `opentelemetry-proto`),
//! which checks the span tree of a REST and a gRPC request, the caller's
//! trace id carried through, the links between requests and their batch,
//! and that a collector that is down changes nothing for requests.

use crate::harness::grpc::client;
use crate::harness::metrics::{metric, scrape};
use crate::harness::models::Repo;
use crate::harness::process::Sluice;
use crate::harness::test_repo;
use crate::harness::wait::{PATIENCE, eventually, until};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::json;
use std::sync::{Arc, Mutex};
use tokio_stream::wrappers::TcpListenerStream;

/// Every span the receiver was sent.
#[derive(Debug, Clone, Default)]
struct Received(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Received {
    /// Starts a receiver on a free loopback port; returns its endpoint.
    async fn start() -> (Self, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let received = Self::default();
        let service = TraceServiceServer::new(received.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        (received, endpoint)
    }

    fn spans(&self) -> Vec<Span> {
        self.0.lock().unwrap().clone()
    }
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a Any> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.as_ref())
}

fn string_attr(span: &Span, key: &str) -> Option<String> {
    match attr(span, key)? {
        Any::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn int_attr(span: &Span, key: &str) -> Option<i64> {
    match attr(span, key)? {
        Any::IntValue(i) => Some(*i),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The spans of one request's trace and of the batch it ran in, once
/// every one has arrived: (request span, its children, batch span, the
/// batch's children).
async fn request_and_batch(
    received: &Received,
    trace_id: &str,
) -> (Span, Vec<Span>, Span, Vec<Span>) {
    until(
        format!("the spans of trace {trace_id} and of its batch"),
        PATIENCE,
        || async {
            let spans = received.spans();
            let request = spans
                .iter()
                .find(|s| s.name == "infer" && hex(&s.trace_id) == trace_id)?
                .clone();
            let children: Vec<Span> = spans
                .iter()
                .filter(|s| s.parent_span_id == request.span_id)
                .cloned()
                .collect();
            let batch = spans
                .iter()
                .find(|s| {
                    s.name == "batch" && s.links.iter().any(|l| hex(&l.trace_id) == trace_id)
                })?
                .clone();
            let phases: Vec<Span> = spans
                .iter()
                .filter(|s| s.parent_span_id == batch.span_id)
                .cloned()
                .collect();
            (children.len() >= 3 && phases.len() >= 3).then_some((request, children, batch, phases))
        },
    )
    .await
}

fn names(spans: &[Span]) -> Vec<String> {
    let mut names: Vec<String> = spans.iter().map(|s| s.name.clone()).collect();
    names.sort();
    names.dedup();
    names
}

#[tokio::test]
async fn a_request_continues_the_callers_trace_and_links_to_its_batch() {
    let (received, endpoint) = Received::start().await;
    let repo = Repo::new().with("iris", &test_repo().join("iris/1/model.onnx"), None);
    let process = Sluice::serve(repo.path())
        .args(["--otlp-endpoint", endpoint.as_str()])
        .start()
        .await;
    let http = reqwest::Client::new();

    // REST, with the caller's trace context.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let body = json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
        "data": [5.1, 3.5, 1.4, 0.2]}]});
    let answer = http
        .post(format!("{}/v2/models/iris/infer", process.base))
        .header("traceparent", format!("00-{trace_id}-{parent_id}-01"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let (request, children, batch, phases) = request_and_batch(&received, trace_id).await;
    assert_eq!(hex(&request.parent_span_id), parent_id);
    assert_eq!(request.kind, 2, "a server span"); // SPAN_KIND_SERVER
    assert_eq!(string_attr(&request, "model").as_deref(), Some("iris"));
    assert_eq!(string_attr(&request, "protocol").as_deref(), Some("http"));
    assert_eq!(int_attr(&request, "version"), Some(1));
    assert_eq!(int_attr(&request, "batch_size"), Some(1));
    assert_eq!(string_attr(&request, "outcome").as_deref(), Some("success"));
    assert_eq!(names(&children), ["decode", "encode", "queue"]);
    assert_eq!(
        names(&phases),
        ["compute_infer", "compute_input", "compute_output"]
    );
    // The batch is its own trace, linked both ways.
    assert_ne!(hex(&batch.trace_id), trace_id);
    assert!(
        request.links.iter().any(|l| l.span_id == batch.span_id),
        "the request links to its batch"
    );
    assert_eq!(int_attr(&batch, "batch_size"), Some(1));

    // gRPC, with the context in metadata.
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let mut grpc = client(process.grpc).await;
    let mut request = tonic::Request::new(crate::harness::grpc::raw_request(
        "iris",
        &[sluice::tensor::Tensor {
            name: "input".into(),
            datatype: sluice::tensor::DataType::Fp32,
            shape: vec![1, 4],
            data: sluice::tensor::TensorData::Fixed(bytes::Bytes::from(
                [5.1f32, 3.5, 1.4, 0.2]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect::<Vec<u8>>(),
            )),
        }],
    ));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-b7ad6b7169203331-01")
            .parse()
            .unwrap(),
    );
    grpc.model_infer(request).await.unwrap();
    let (request, children, _, _) = request_and_batch(&received, trace_id).await;
    assert_eq!(hex(&request.parent_span_id), "b7ad6b7169203331");
    assert_eq!(string_attr(&request, "protocol").as_deref(), Some("grpc"));
    assert_eq!(names(&children), ["decode", "encode", "queue"]);

    // Nothing was dropped on the way.
    let metrics = scrape(&http, &process.base).await;
    assert_eq!(
        metric(&metrics, "sluice_trace_spans_dropped_total", &[]),
        0.0
    );
}

#[tokio::test]
async fn a_collector_that_is_down_changes_nothing_for_requests() {
    // A port with nothing behind it.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let repo = Repo::new().with("iris", &test_repo().join("iris/1/model.onnx"), None);
    let process = Sluice::serve(repo.path())
        .args(["--otlp-endpoint", dead.as_str()])
        .start()
        .await;
    let http = reqwest::Client::new();
    let body = json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
        "data": [5.1, 3.5, 1.4, 0.2]}]});
    for _ in 0..50 {
        let answer = http
            .post(format!("{}/v2/models/iris/infer", process.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
    }
    // The spans that could not be delivered are counted, not kept.
    eventually("the failed export to be counted", PATIENCE, || {
        let (http, base) = (&http, &process.base);
        async move {
            metric(
                &scrape(http, base).await,
                "sluice_trace_spans_dropped_total",
                &[],
            ) > 0.0
        }
    })
    .await;
}
