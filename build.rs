//! Compiles `proto/*.proto` into the tonic server and client of
//! `inference.GRPCInferenceService` without a system `protoc`: `protox`
//! parses the protos into a `FileDescriptorSet`, which feeds both
//! `tonic_prost_build` and the server-reflection service
//! (`$OUT_DIR/inference_descriptor.bin`).

use std::path::PathBuf;

const PROTOS: &[&str] = &["grpc_service.proto", "model_config.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed=proto/{proto}");
    }
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTOS)?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("inference_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Tensor payloads decode as `Bytes` (a slice of the received buffer)
        // and are sent without a copy.
        .bytes(".inference")
        // prost with a bound on what a request may decode to (src/grpc/codec.rs).
        .codec_path("crate::grpc::codec::BoundedCodec")
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
