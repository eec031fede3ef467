//! Generated protobuf / tonic client types for the `inference` package
//! (`proto/grpc_service.proto` + `proto/model_config.proto`).

#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("inference");
