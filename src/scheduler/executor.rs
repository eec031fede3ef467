//! What runs a batch: an ONNX Runtime session, or a test double.

use crate::runtime::BatchInput;
use crate::tensor::RunOutput;
use std::sync::Arc;

/// Runs one assembled batch. Implemented by ONNX Runtime sessions
/// ([`crate::runtime::Instance`]) and by test doubles of the scheduler.
pub trait Executor: Send {
    fn run(
        &mut self,
        inputs: &[BatchInput<'_>],
        wanted: &[usize],
    ) -> Result<Vec<RunOutput>, String>;
}

impl Executor for crate::runtime::Instance {
    fn run(
        &mut self,
        inputs: &[BatchInput<'_>],
        wanted: &[usize],
    ) -> Result<Vec<RunOutput>, String> {
        crate::runtime::Instance::run(self, inputs, wanted)
    }
}

/// Builds a fresh executor for worker `i` (after a panic), e.g. on that
/// worker's GPU.
pub type ExecutorFactory = Arc<dyn Fn(usize) -> Result<Box<dyn Executor>, String> + Send + Sync>;
