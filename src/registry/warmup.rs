//! Warmup: runs made on every instance before a version is published, so the
//! first real request never pays for ONNX Runtime's first-run allocations.
//!
//! A run either sizes every input from the signature (`config.toml`'s
//! `[[warmup]]`, and the default runs), or gives each input's datatype,
//! shape and data (config.pbtxt's `model_warmup`), which is checked against
//! the served signature here.

use crate::repository::WarmupRun;
use crate::repository::spec::{WarmupData, WarmupInput};
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
            name: String::new(),
            batch_size,
            count: 1,
            random: false,
            dims: Default::default(),
            inputs: Default::default(),
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
                    let message = format!(
                        "warmup run{} at batch {} failed: {e}",
                        label(run),
                        run.batch_size
                    );
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

fn label(run: &WarmupRun) -> String {
    if run.name.is_empty() {
        String::new()
    } else {
        format!(" '{}'", run.name)
    }
}

fn inputs_for(
    signature: &ModelSignature,
    max_batch_size: usize,
    run: &WarmupRun,
) -> Result<Vec<WarmInput>, String> {
    if !run.inputs.is_empty() {
        return given_inputs(signature, max_batch_size, run);
    }
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

/// The inputs of a run that gives each one (config.pbtxt's `model_warmup`):
/// every served input must be given, with its datatype and a shape that
/// fits; one sample is repeated for each row of the batch.
fn given_inputs(
    signature: &ModelSignature,
    max_batch_size: usize,
    run: &WarmupRun,
) -> Result<Vec<WarmInput>, String> {
    let field = format!("model_warmup{}", label(run));
    if let Some(extra) = run
        .inputs
        .keys()
        .find(|n| !signature.inputs.iter().any(|s| &s.name == *n))
    {
        return Err(format!("{field}: '{extra}' is not an input of the model"));
    }
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let optional = |name: &str| signature.defaulted.iter().any(|d| d.name == name);
    signature
        .inputs
        .iter()
        .filter(|spec| run.inputs.contains_key(&spec.name) || !optional(&spec.name))
        .map(|spec| {
            let input = run.inputs.get(&spec.name).ok_or_else(|| {
                format!(
                    "{field}: input '{}' is not given; a sample gives every input that is not optional",
                    spec.name
                )
            })?;
            sample_input(spec, input, max_batch_size, run.batch_size, &mut seed)
                .map_err(|e| format!("{field}, input '{}': {e}", spec.name))
        })
        .collect()
}

fn sample_input(
    spec: &crate::runtime::TensorSpec,
    input: &WarmupInput,
    max_batch_size: usize,
    batch_size: usize,
    seed: &mut u64,
) -> Result<WarmInput, String> {
    if input.datatype != spec.datatype {
        return Err(format!(
            "data_type is {}, the model's input is {}",
            input.datatype, spec.datatype
        ));
    }
    let batching = max_batch_size > 0;
    let pattern = if batching {
        &spec.shape[1..]
    } else {
        &spec.shape[..]
    };
    let fits = pattern.len() == input.dims.len()
        && pattern
            .iter()
            .zip(&input.dims)
            .all(|(&p, &d)| p < 0 || i64::try_from(d).is_ok_and(|d| d == p));
    if !fits {
        return Err(format!(
            "dims {} do not fit the input's {}",
            crate::tensor::fmt_shape(&input.dims),
            crate::tensor::fmt_shape(pattern)
        ));
    }
    let rows = if batching { batch_size } else { 1 };
    let shape: Vec<usize> = if batching {
        std::iter::once(rows)
            .chain(input.dims.iter().copied())
            .collect()
    } else {
        input.dims.clone()
    };
    let per_row = element_count(&input.dims).ok_or("dims overflow")?;
    let count = per_row
        .checked_mul(rows)
        .filter(|&c| c <= 1 << 28)
        .ok_or("too large")?;
    let data = match (spec.datatype.size(), &input.data) {
        (None, WarmupData::File { bytes, .. }) => {
            let sample = crate::repository::pbtxt::split_bytes(bytes)?;
            let elements = (0..rows)
                .flat_map(|_| sample.iter().map(|e| Bytes::copy_from_slice(e)))
                .collect();
            TensorData::Bytes(elements)
        }
        (None, _) => TensorData::Bytes(vec![Bytes::new(); count]),
        (Some(size), data) => {
            let mut bytes = vec![0u8; count * size];
            match data {
                WarmupData::Zero => {}
                WarmupData::Random => fill_random(&mut bytes, spec.datatype, seed),
                WarmupData::File { bytes: sample, .. } => {
                    for chunk in bytes.chunks_exact_mut(sample.len().max(1)) {
                        chunk.copy_from_slice(sample);
                    }
                }
            }
            TensorData::Fixed(Bytes::from(bytes))
        }
    };
    Ok((spec.name.clone(), spec.datatype, shape, data))
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
