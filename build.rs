//! Compiles `proto/*.proto` without a system `protoc`: `protox` parses the
//! protos into a `FileDescriptorSet`, which feeds `tonic_prost_build` and the
//! server-reflection service (`$OUT_DIR/inference_descriptor.bin`).
//!
//! Triton's `ModelConfig` (`proto/model_config.proto`) is generated once, for
//! the core: `src/repository/pbtxt/` parses `config.pbtxt` into it
//! (`$OUT_DIR/model_config/inference.rs`). The gRPC code refers to those
//! types by `extern_path` instead of generating a second copy, so the core
//! never imports the gRPC adapter and both speak the same `ModelConfig`.

use std::path::PathBuf;

const PROTOS: &[&str] = &["grpc_service.proto", "model_config.proto"];
const MODEL_CONFIG: &str = "model_config.proto";
/// Where the core includes the `ModelConfig` types from.
const MODEL_CONFIG_RUST: &str = "crate::repository::pbtxt::pb";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed=proto/{proto}");
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    // The core's copy of Triton's ModelConfig.
    let mut model_config = protox::Compiler::new(["proto"])?;
    model_config.include_imports(true).include_source_info(true);
    model_config.open_files([MODEL_CONFIG])?;
    let model_config_fds = model_config.file_descriptor_set();
    let model_config_dir = out_dir.join("model_config");
    std::fs::create_dir_all(&model_config_dir)?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(false)
        .out_dir(&model_config_dir)
        .compile_fds(model_config_fds.clone())?;

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTOS)?;
    std::fs::write(
        out_dir.join("inference_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    let mut config = tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Tensor payloads decode as `Bytes` (a slice of the received buffer)
        // and are sent without a copy.
        .bytes(".inference")
        // prost with a bound on what a request may decode to (src/grpc/codec.rs).
        .codec_path("crate::grpc::codec::BoundedCodec");
    // Every top-level type of model_config.proto comes from the core's copy
    // (nested types follow their parent's path).
    for file in &model_config_fds.file {
        let package = file.package();
        let names = file
            .message_type
            .iter()
            .map(|m| m.name())
            .chain(file.enum_type.iter().map(|e| e.name()));
        for name in names {
            config = config.extern_path(
                format!(".{package}.{name}"),
                format!("{MODEL_CONFIG_RUST}::{name}"),
            );
        }
    }
    config.compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
