//! Integration tests: real servers on port 0, real ONNX Runtime sessions on
//! real `.onnx` files, real HTTP and gRPC clients. One test binary, because
//! linking `ort` is slow.

mod batching;
mod harness;
mod rest;
