//! The gRPC adapter: `inference.GRPCInferenceService` (KServe v2 plus
//! Triton's configuration, statistics, repository, logging and streaming
//! extensions), `grpc.health.v1.Health`, and server reflection.
//!
//! Like the REST handlers, every method decodes ([`convert`]), calls
//! [`crate::service::Service`], and encodes; errors map to a `tonic::Code`
//! in `status`, once. Below the service sit the generated code ([`pb`]),
//! the bounded message codec ([`codec`]) and the edge guard ([`guard`]);
//! [`serve`] runs the listener.

pub mod codec;
mod conn;
pub mod convert;
pub(crate) mod guard;
pub mod pb;
mod serve;
pub(crate) mod service;
mod status;

pub use pb::FILE_DESCRIPTOR_SET;
pub(crate) use serve::{GrpcConfig, serve};
