//! Warmup: runs made on every instance before a version is published, so the
//! first real request never pays for ONNX Runtime's first-run allocations.

use crate::repository::WarmupRun;
use crate::runtime::BatchInput;
use crate::scheduler::Executor;
use crate::tensor::ModelSignature;
use crate::tensor::{DataType, TensorData, element_count};
use bytes::Bytes;

/// Warms every executor. With no configured runs, the default (batch 1 and
/// batch `max_batch_size`, zeros) may fail without failing the load: a graph
/// can reject zeros or size-1 dims that real requests never send.
pub(super) fn warm(
    executors: &mut [Box<dyn Executor>],
    signature: &ModelSignature,
    max_batch_size: usize,
    configured: Option<&[WarmupRun]>,
) -> Result<(), String> {
    let default_runs: Vec<WarmupRun> = [1, max_batch_size]
        .into_iter()
        .filter(|&b| b >= 1)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|batch_size| WarmupRun {
            batch_size,
            count: 1,
            random: false,
            dims: Default::default(),
        })
        .collect();
    let (runs, strict) = match configured {
        Some(runs) => (runs, true),
        None => (&default_runs[..], false),
    };
    let wanted: Vec<usize> = (0..signature.outputs.len()).collect();
    for run in runs {
        let inputs = inputs_for(signature, max_batch_size, run)?;
        let batch: Vec<BatchInput<'_>> = inputs
            .iter()
            .map(|(name, datatype, shape, data)| BatchInput {
                name,
                datatype: *datatype,
                shape: shape.clone(),
                parts: vec![data],
            })
            .collect();
        for executor in executors.iter_mut() {
            for _ in 0..run.count {
                if let Err(e) = executor.run(&batch, &wanted) {
                    let message = format!("warmup run at batch {} failed: {e}", run.batch_size);
                    if strict {
                        return Err(message);
                    }
                    tracing::warn!(%message, "default warmup skipped; configure [[warmup]] with dims to warm this model");
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

type WarmInput = (String, DataType, Vec<usize>, TensorData);

fn inputs_for(
    signature: &ModelSignature,
    max_batch_size: usize,
    run: &WarmupRun,
) -> Result<Vec<WarmInput>, String> {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    signature
        .inputs
        .iter()
        .map(|spec| {
            let given = run.dims.get(&spec.name);
            let mut dynamic = given.into_iter().flatten();
            let shape: Vec<usize> = spec
                .shape
                .iter()
                .enumerate()
                .map(|(i, &d)| match (i, d) {
                    (0, -1) if max_batch_size > 0 => run.batch_size,
                    (_, -1) => dynamic.next().copied().unwrap_or(1),
                    (_, d) => usize::try_from(d).unwrap_or(1),
                })
                .collect();
            let count = element_count(&shape)
                .filter(|&c| c <= 1 << 28)
                .ok_or_else(|| format!("warmup input '{}' is too large", spec.name))?;
            let data = match spec.datatype.size() {
                None => {
                    TensorData::Bytes(vec![
                        Bytes::from_static(if run.random { b"x" } else { b"" });
                        count
                    ])
                }
                Some(size) => {
                    let mut bytes = vec![0u8; count * size];
                    if run.random {
                        fill_random(&mut bytes, spec.datatype, &mut seed);
                    }
                    TensorData::Fixed(Bytes::from(bytes))
                }
            };
            Ok((spec.name.clone(), spec.datatype, shape, data))
        })
        .collect()
}

/// Deterministic pseudo-random values in [0, 1) for floats, 0..=3 for
/// integers, 0/1 for BOOL: valid for every type, and cheap.
fn fill_random(bytes: &mut [u8], datatype: DataType, seed: &mut u64) {
    let mut next = || {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    };
    let size = datatype.size().unwrap_or(1);
    for chunk in bytes.chunks_exact_mut(size) {
        let r = next();
        let unit = (r >> 11) as f64 / (1u64 << 53) as f64;
        match datatype {
            DataType::Fp32 => chunk.copy_from_slice(&(unit as f32).to_le_bytes()),
            DataType::Fp64 => chunk.copy_from_slice(&unit.to_le_bytes()),
            DataType::Fp16 => chunk.copy_from_slice(&half::f16::from_f64(unit).to_le_bytes()),
            DataType::Bf16 => chunk.copy_from_slice(&half::bf16::from_f64(unit).to_le_bytes()),
            DataType::Bool => chunk[0] = (r & 1) as u8,
            _ => chunk[0] = (r & 3) as u8,
        }
    }
}
