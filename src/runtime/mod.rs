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

mod exec;
mod library;
mod provider;
mod session;
mod signature;

pub use crate::tensor::{ModelSignature, RunOutput, TensorSpec};
pub use exec::{BatchInput, Instance, RunTimes};
pub use library::{FETCHED_DIR, LIB_NAME, LibraryError, init, locate_library};
pub(crate) use provider::reserved_option;
pub use provider::{
    ArenaExtendStrategy, ConvAlgoSearch, ExecutionProvider, GraphOptimization, ProviderOptions,
    SessionOptions,
};
pub use session::{Placement, load_instance};
pub use signature::read_signature;
