//! The code generated from `proto/` by `build.rs` (messages, the tonic
//! server and client of `inference.GRPCInferenceService`), and the
//! descriptor set that server reflection serves.
#![allow(clippy::all, clippy::pedantic, missing_docs)]

// Triton's ModelConfig messages are generated once, in the core
// (repository::pbtxt::pb), and the service's code refers to them there.
pub use crate::repository::pbtxt::pb::*;
tonic::include_proto!("inference");

/// The encoded `FileDescriptorSet` of `proto/`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/inference_descriptor.bin"));
