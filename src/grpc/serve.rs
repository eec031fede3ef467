//! The gRPC listener: tonic's HTTP/2 server over the connections
//! [`crate::net`] admits, behind the edge guard, with health and reflection.

use super::codec;
use super::guard;
use super::pb::FILE_DESCRIPTOR_SET;
use super::pb::grpc_inference_service_server::GrpcInferenceServiceServer;
use super::service::Inference;
use crate::service::Service;
use futures::StreamExt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio_stream::wrappers::ReceiverStream;

/// Settings of the gRPC adapter.
#[derive(Debug, Clone)]
pub(crate) struct GrpcConfig {
    /// Largest accepted request message; larger gets `RESOURCE_EXHAUSTED`.
    /// Responses are not limited.
    pub(crate) max_message_bytes: usize,
    /// Concurrent streams (calls) on one HTTP/2 connection.
    pub(crate) max_concurrent_streams: u32,
    /// Largest header list (metadata) of a call.
    pub(crate) max_header_bytes: usize,
    /// Keep-alive ping interval; a peer that does not answer is dropped.
    pub(crate) keepalive_interval: Option<Duration>,
}

/// Serves gRPC on the connections from `incoming` until it ends (the accept
/// loop stops on the same signal as `shutdown` and closes the channel once
/// the connections it accepted have been handed over, so none is dropped
/// unserved); then every connection gets GOAWAY and is waited for.
/// Health follows the server's readiness: `SERVING` once started,
/// `NOT_SERVING` while draining.
pub(crate) async fn serve(
    service: Service,
    logging: crate::logging::LogControl,
    incoming: tokio::sync::mpsc::Receiver<crate::net::Conn>,
    config: GrpcConfig,
    guard: guard::GrpcGuard,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    codec::allow_decoded_bytes(service.limits().max_request_bytes);
    let inference = GrpcInferenceServiceServer::new(Inference::new(
        service.clone(),
        logging,
        config.max_message_bytes,
    ))
    .max_decoding_message_size(config.max_message_bytes)
    .max_encoding_message_size(usize::MAX);
    let (health, health_service) = tonic_health::server::health_reporter();
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let mut shutdown: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(shutdown);
    let health_watch = async move {
        let mut last = None;
        loop {
            let ready = service.is_ready();
            if last != Some(ready) {
                let s = if ready {
                    tonic_health::ServingStatus::Serving
                } else {
                    tonic_health::ServingStatus::NotServing
                };
                health.set_service_status("", s).await;
                health
                    .set_service_status("inference.GRPCInferenceService", s)
                    .await;
                last = Some(ready);
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    };
    tokio::spawn(health_watch);

    let keepalive_timeout = config
        .keepalive_interval
        .map(|i| i.max(Duration::from_secs(1)));
    tonic::transport::Server::builder()
        .max_concurrent_streams(config.max_concurrent_streams)
        .http2_max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
        .http2_keepalive_interval(config.keepalive_interval)
        .http2_keepalive_timeout(keepalive_timeout)
        .layer(guard::GuardLayer {
            guard: std::sync::Arc::new(guard),
            inference: inference.clone(),
        })
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        // Still routed, for completeness: the guard calls it directly.
        .add_service(inference)
        // The end of `incoming` is the stop; a signal that never fires only
        // selects tonic's graceful mode (GOAWAY, then wait for connections).
        .serve_with_incoming_shutdown(
            ReceiverStream::new(incoming).map(Ok::<_, std::io::Error>),
            std::future::pending::<()>(),
        )
        .await?;
    Ok(())
}
