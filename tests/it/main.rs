//! Integration tests: real servers on port 0, real ONNX Runtime sessions.
