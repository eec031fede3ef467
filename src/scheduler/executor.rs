//! What runs a batch: an ONNX Runtime session, or a test double.

use crate::runtime::{BatchInput, RunTimes};
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

    /// [`Executor::run`], with how long its steps took; an executor that
    /// cannot tell counts the whole run as the model run.
    fn run_timed(
        &mut self,
        inputs: &[BatchInput<'_>],
        wanted: &[usize],
    ) -> Result<(Vec<RunOutput>, RunTimes), String> {
        let started = std::time::Instant::now();
        let outputs = self.run(inputs, wanted)?;
        let times = RunTimes {
            run: started.elapsed(),
            ..RunTimes::default()
        };
        Ok((outputs, times))
    }
}

impl Executor for crate::runtime::Instance {
    fn run(
        &mut self,
        inputs: &[BatchInput<'_>],
        wanted: &[usize],
    ) -> Result<Vec<RunOutput>, String> {
        crate::runtime::Instance::run(self, inputs, wanted)
    }

    fn run_timed(
        &mut self,
        inputs: &[BatchInput<'_>],
        wanted: &[usize],
    ) -> Result<(Vec<RunOutput>, RunTimes), String> {
        crate::runtime::Instance::run_timed(self, inputs, wanted)
    }
}

/// Builds a fresh executor for worker `i` (after a panic), e.g. on that
/// worker's GPU.
pub type ExecutorFactory = Arc<dyn Fn(usize) -> Result<Box<dyn Executor>, String> + Send + Sync>;
