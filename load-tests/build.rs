//! Compiles the KServe v2 / Triton gRPC contract in `../proto` into a tonic
//! client with protox (pure Rust, no system `protoc` needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time, not baked in with env!(): a build script compiled
    // for one checkout can be reused for another sharing the target dir.
    let proto_dir = format!("{}/../proto", std::env::var("CARGO_MANIFEST_DIR")?);
    println!("cargo:rerun-if-changed={proto_dir}/grpc_service.proto");
    println!("cargo:rerun-if-changed={proto_dir}/model_config.proto");
    let fds = protox::compile(["grpc_service.proto"], [&proto_dir])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        // `bytes` fields (raw_input_contents, ...) become `bytes::Bytes`, so the
        // pre-encoded request can be cloned per call without copying tensors.
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}
