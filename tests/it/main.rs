//! Integration tests: real servers on port 0, real ONNX Runtime sessions on
//! real `.onnx` files, real HTTP and gRPC clients. One test binary, because
//! linking `ort` is slow.

// Tests unwrap: a failed unwrap is a failed test with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bad_inputs;
mod batching;
mod binary;
mod cache;
mod classification;
mod demand;
mod direct_routes;
mod ensemble;
mod faults;
mod gpu;
mod grpc;
mod harness;
mod inline;
mod lifecycle;
mod loadgen;
mod no_inputs;
mod openapi;
mod operator;
mod optional_inputs;
mod overload;
mod panics;
mod pbtxt;
mod protocols;
mod readiness;
mod remote;
mod rest;
mod security;
mod shutdown;
mod stop_loop;
mod traces;
mod trailing_slash;
mod triton_config;
