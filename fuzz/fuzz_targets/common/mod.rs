//! Shared by the end-to-end targets (`rest_router`, `grpc_service`): the
//! fuzz repository, the one server per process, the documented status
//! tables, and the check that runs after every input.
#![allow(dead_code)] // each target uses part of it

use sluice::fuzzing::{GrpcCall, GrpcReply, Harness};
use sluice::grpc::pb;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Tokens the harness accepts: every scope, and `infer` alone.
pub const ADMIN_TOKEN: &str = "fuzz-admin-token-0123456789";
pub const INFER_TOKEN: &str = "fuzz-infer-token-0123456789";

/// Models of tests/models left out of the fuzz repository, and why:
/// `matmul_dyn` passes shape validation and then fails inside ONNX Runtime
/// by design (a 500 "the model failed to run"), which the targets treat as
/// a crash.
const LEFT_OUT: &[&str] = &["matmul_dyn"];

/// Models of tests/fixtures added to the fuzz repository: `constant` has no
/// inputs (issue 14: v1 predict panicked on such a model).
const FIXTURES: &[(&str, &str)] = &[("constant", "constant.onnx")];

/// The known model and request of the after-input check.
pub const SENTINEL_MODEL: &str = "iris";
pub const SENTINEL_BODY: &str =
    r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}"#;

fn debug() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("SLUICE_FUZZ_DEBUG").is_some())
}

/// Prints what an input did when `SLUICE_FUZZ_DEBUG` is set.
pub fn trace(what: std::fmt::Arguments<'_>) {
    if debug() {
        eprintln!("{what}");
    }
}

/// The server, built once per process over a copy of tests/models.
pub fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/models");
        let repository = copy_repository(&source);
        // ONNX Runtime as `sluice serve` finds it: ORT_DYLIB_PATH, else make setup's.
        let env = std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from);
        let library = match sluice::runtime::locate_library(None, env.as_deref()) {
            Ok(path) => path,
            Err(e) => panic!("cannot find ONNX Runtime (run make setup): {e}"),
        };
        let mut config = sluice::ServerConfig::new(repository, library);
        // One instance and one thread per model: 2 cores, ~18 models.
        config.cores = 1;
        // Auth on, so the `authorization` header and the scopes are fuzzed too.
        config.auth.admin_tokens = vec![ADMIN_TOKEN.parse().expect("a token")];
        config.auth.infer_tokens = vec![INFER_TOKEN.parse().expect("a token")];
        config.auth.protect_metrics = true;
        if std::env::var("SLUICE_FUZZ_LIMITS").as_deref() == Ok("small") {
            // Limits a few-KiB input can reach: 413s, element and byte caps,
            // JSON depth. The server's defaults otherwise.
            config.http.max_body_bytes = 256;
            config.limits.max_tensor_elements = 64;
            config.limits.max_request_bytes = 512;
            config.limits.max_bytes_element = 16;
            config.body.max_json_depth = 8;
        }
        match Harness::new(config) {
            Ok(h) => h,
            Err(e) => panic!("cannot start the fuzz harness: {e:#}"),
        }
    })
}

/// Copies every model of `source` but [`LEFT_OUT`] into a fresh folder
/// (loads and unloads never write to it; the copy keeps tests/models out of
/// reach of anything that might).
fn copy_repository(source: &Path) -> PathBuf {
    const PREFIX: &str = "sluice-fuzz-repository-";
    let tmp = std::env::temp_dir();
    // Copies of fuzz processes that are gone (libFuzzer exits without
    // running destructors, so each process leaves its copy behind).
    for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let pid = name.to_str().and_then(|n| n.strip_prefix(PREFIX));
        if pid.is_some_and(|pid| !Path::new("/proc").join(pid).exists()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let dest = tmp.join(format!("{PREFIX}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dest);
    copy_dir(source, &dest, true);
    for (name, fixture) in FIXTURES {
        let dir = dest.join(name).join("1");
        std::fs::create_dir_all(&dir).expect("create a fixture model's folder");
        let from = source.join("../fixtures").join(fixture);
        std::fs::copy(&from, dir.join("model.onnx")).expect("copy a fixture model");
    }
    dest
}

fn copy_dir(from: &Path, to: &Path, top: bool) {
    std::fs::create_dir_all(to).expect("create the fuzz repository");
    for entry in std::fs::read_dir(from).expect("read tests/models") {
        let entry = entry.expect("read tests/models");
        let name = entry.file_name();
        if top && LEFT_OUT.iter().any(|l| name == *l) {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_dir(&path, &to.join(&name), false);
        } else if top {
            // README.md and such: not a model.
        } else {
            std::fs::copy(&path, to.join(&name)).expect("copy a model file");
        }
    }
}

/// REST statuses of the documented error table (docs/protocols.md,
/// src/http/error.rs) plus 200. 500 is in the table only for a model that
/// fails to run, which the fuzz repository does not hold, so here it is a
/// crash (and the catch-panic layer answers a panic with 500).
pub fn documented_rest_status(status: u16) -> bool {
    matches!(
        status,
        200 | 400 | 401 | 403 | 404 | 405 | 408 | 413 | 503 | 504
    )
}

/// gRPC codes of the same table (`INTERNAL` left out, as 500 above).
pub fn documented_grpc_code(code: sluice::fuzzing::Code) -> bool {
    use sluice::fuzzing::Code;
    matches!(
        code,
        Code::Ok
            | Code::InvalidArgument
            | Code::ResourceExhausted
            | Code::NotFound
            | Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unauthenticated
            | Code::PermissionDenied
    )
}

/// After every input: the model set goes back to the start-up load's (an
/// input may have unloaded a model), then a known-good request over REST
/// and over gRPC must succeed with the known answer.
pub fn after_input() {
    let h = harness();
    if let Err(e) = h.restore() {
        panic!("after the input, the repository cannot be restored: {e}");
    }
    let request = http::Request::post(format!("/v2/models/{SENTINEL_MODEL}/infer"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(bytes::Bytes::from_static(SENTINEL_BODY.as_bytes()))
        .expect("a valid request");
    let response = h.rest(request);
    let body = String::from_utf8_lossy(&response.body);
    assert_eq!(
        response.status.as_u16(),
        200,
        "after the input, a valid REST request failed: {body}"
    );
    assert!(
        body.contains(r#""name":"label""#) && body.contains(r#""data":[0]"#),
        "after the input, a valid REST request got a wrong answer: {body}"
    );
    let reply = h.grpc(GrpcCall::ModelInfer(sentinel_grpc()));
    match reply {
        Ok(GrpcReply::Infer(r)) => assert_eq!(
            r.outputs.len(),
            2,
            "after the input, a valid gRPC request got a wrong answer: {r:?}"
        ),
        other => panic!("after the input, a valid gRPC request failed: {other:?}"),
    }
}

fn sentinel_grpc() -> pb::ModelInferRequest {
    let data: Vec<u8> = [5.1f32, 3.5, 1.4, 0.2]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    pb::ModelInferRequest {
        model_name: SENTINEL_MODEL.into(),
        inputs: vec![pb::model_infer_request::InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, 4],
            ..Default::default()
        }],
        raw_input_contents: vec![data.into()],
        ..Default::default()
    }
}
