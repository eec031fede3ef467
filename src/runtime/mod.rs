//! The ONNX Runtime boundary: the only module that imports `ort`.
//!
//! It locates and loads the shared library once per process ([`init`]), builds
//! sessions with their execution providers ([`session`]), reads a graph's
//! signature, and runs one assembled batch ([`exec`]). Everything above it speaks
//! in [`crate::tensor`] types only.
//!
//! ONNX Runtime allows one environment per process, for the life of the process:
//! a second `init` with another library fails even after the first is dropped.
//! [`init`] therefore remembers the library it loaded and accepts repeated calls
//! for the same file (tests start many servers in one process).

pub mod exec;
pub mod provider;
pub mod session;

pub use exec::{BatchInput, Instance, RunOutput};
pub use provider::{ExecutionProvider, GraphOptimization, ProviderOptions, SessionOptions};
pub use session::{ModelSignature, Placement, TensorSpec, load_instance, read_signature};

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Where the build fetches ONNX Runtime (`make setup`), relative to the repo root.
pub const FETCHED_DIR: &str = ".onnxruntime/lib";
/// The library's file name on Linux.
pub const LIB_NAME: &str = "libonnxruntime.so";

static ENVIRONMENT: OnceLock<(PathBuf, ort::environment::Environment)> = OnceLock::new();

/// The library could not be found or loaded. `Display` is the one-line message
/// the binary prints before exiting.
#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    #[error(
        "onnx runtime library not found (looked in: {searched}); run `make setup` from the repository root, or pass --onnxruntime-lib PATH or set ORT_DYLIB_PATH"
    )]
    NotFound { searched: String },
    #[error(
        "cannot load onnx runtime from {path}: {reason}; run `make setup` or point --onnxruntime-lib at a libonnxruntime.so of version 1.31 or newer"
    )]
    Load { path: String, reason: String },
    #[error(
        "onnx runtime is already loaded from {loaded}; cannot switch to {requested} in the same process"
    )]
    AlreadyLoaded { loaded: String, requested: String },
}

/// Finds the library: `explicit` (the flag), then `env` (`ORT_DYLIB_PATH`),
/// then [`FETCHED_DIR`] under the working directory and under the source tree
/// the binary was built from, then the folder of the executable.
///
/// An explicit path or env value that does not exist is an error, not a reason
/// to keep looking: the operator asked for that file.
pub fn locate_library(
    explicit: Option<&Path>,
    env: Option<&Path>,
) -> Result<PathBuf, LibraryError> {
    if let Some(chosen) = explicit.or(env) {
        let path = if chosen.is_dir() {
            chosen.join(LIB_NAME)
        } else {
            chosen.to_path_buf()
        };
        return if path.is_file() {
            Ok(path)
        } else {
            Err(LibraryError::NotFound {
                searched: path.display().to_string(),
            })
        };
    }
    let mut candidates = vec![
        PathBuf::from(FETCHED_DIR).join(LIB_NAME),
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(FETCHED_DIR)
            .join(LIB_NAME),
    ];
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        candidates.push(dir.join(LIB_NAME));
    }
    for candidate in &candidates {
        if candidate.is_file() {
            return Ok(candidate.clone());
        }
    }
    let searched: Vec<String> = candidates.iter().map(|c| c.display().to_string()).collect();
    Err(LibraryError::NotFound {
        searched: searched.join(", "),
    })
}

/// Loads ONNX Runtime from `path` and creates the process-wide environment.
/// Returns the ONNX Runtime version, read from the library's file name.
pub fn init(path: &Path) -> Result<String, LibraryError> {
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    if let Some((loaded, _)) = ENVIRONMENT.get() {
        return if *loaded == canonical {
            Ok(version_of(loaded))
        } else {
            Err(LibraryError::AlreadyLoaded {
                loaded: loaded.display().to_string(),
                requested: canonical.display().to_string(),
            })
        };
    }
    let load_error = |reason: String| LibraryError::Load {
        path: canonical.display().to_string(),
        reason,
    };
    let environment = ort::init_from(&canonical)
        .map_err(|e| load_error(e.to_string()))?
        .with_name("sluice")
        .with_telemetry(false)
        .build()
        .map_err(|e| load_error(e.to_string()))?;
    // Keep the environment for the life of the process: ONNX Runtime allows one.
    let _ = ENVIRONMENT.set((canonical.clone(), environment));
    Ok(version_of(&canonical))
}

/// The process-wide environment, once [`init`] has succeeded.
pub(crate) fn environment() -> Option<&'static ort::environment::Environment> {
    ENVIRONMENT.get().map(|(_, env)| env)
}

/// `libonnxruntime.so.1.32.0` -> `1.32.0`.
fn version_of(path: &Path) -> String {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("libonnxruntime.so."))
        .unwrap_or("unknown")
        .to_string()
}
