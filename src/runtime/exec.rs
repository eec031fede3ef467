//! Running one assembled batch on a session.
//!
//! Batch assembly is one copy: every request's packed bytes are appended, in
//! batch order, to one typed buffer that ONNX Runtime then owns. Outputs are
//! copied out once into a [`Bytes`] buffer, which the scheduler slices per
//! request without copying again.

use super::signature::{datatype_of, read_signature};
use crate::tensor::{DataType, ModelSignature, RunOutput, TensorData, element_count};
use bytes::Bytes;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, PrimitiveTensorElementType, Tensor, ValueType};
use std::borrow::Cow;
use std::time::{Duration, Instant};

/// One model input of a batch: the requests' parts, concatenated along dim 0.
#[derive(Debug)]
pub struct BatchInput<'a> {
    pub name: &'a str,
    pub datatype: DataType,
    /// The batch's shape: the sum of the parts' rows, then the shared dims.
    pub shape: Vec<usize>,
    pub parts: Vec<&'a TensorData>,
}

/// How long each step of one run took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunTimes {
    /// Concatenating the requests' inputs into the run's tensors.
    pub(crate) assemble: Duration,
    /// `Session::run`.
    pub(crate) run: Duration,
    /// Copying the outputs out of ONNX Runtime.
    pub(crate) extract: Duration,
}

/// One ONNX Runtime session, owned by one instance worker thread.
pub struct Instance {
    session: Session,
    output_names: Vec<String>,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("outputs", &self.output_names)
            .finish_non_exhaustive()
    }
}

impl Instance {
    pub fn new(session: Session) -> Result<Self, String> {
        let output_names = session
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        Ok(Self {
            session,
            output_names,
        })
    }

    /// The graph's signature.
    pub fn signature(&self) -> Result<ModelSignature, String> {
        read_signature(&self.session)
    }

    /// Runs the batch and returns the outputs at `wanted` (indices into the
    /// graph's outputs), in that order.
    pub fn run(
        &mut self,
        inputs: &[BatchInput<'_>],
        wanted: &[usize],
    ) -> Result<Vec<RunOutput>, String> {
        self.run_timed(inputs, wanted).map(|(outputs, _)| outputs)
    }

    /// [`Instance::run`], with how long assembly, the run and the copy-out
    /// took (each also a trace span when tracing is on).
    pub(crate) fn run_timed(
        &mut self,
        inputs: &[BatchInput<'_>],
        wanted: &[usize],
    ) -> Result<(Vec<RunOutput>, RunTimes), String> {
        use crate::telemetry::{Phase, phase_span};
        let mut times = RunTimes::default();
        let started = Instant::now();
        let mut values: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
            Vec::with_capacity(inputs.len());
        phase_span(Phase::ComputeInput).in_scope(|| -> Result<(), String> {
            for input in inputs {
                let value = assemble(input).map_err(|e| format!("input '{}': {e}", input.name))?;
                values.push((Cow::Borrowed(input.name), SessionInputValue::from(value)));
            }
            Ok(())
        })?;
        let ran = Instant::now();
        times.assemble = ran - started;
        let mut outputs = phase_span(Phase::ComputeInfer)
            .in_scope(|| self.session.run(values))
            .map_err(|e| format!("onnx runtime failed to run the model: {e}"))?;
        let extracting = Instant::now();
        times.run = extracting - ran;
        let _copy_out = phase_span(Phase::ComputeOutput).entered();
        let extracted = wanted
            .iter()
            .map(|&i| {
                let name = self
                    .output_names
                    .get(i)
                    .ok_or_else(|| format!("output index {i} out of range"))?;
                let value = outputs
                    .remove(name.as_str())
                    .ok_or_else(|| format!("output '{name}' missing from the run"))?;
                extract(&value).map_err(|e| format!("output '{name}': {e}"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        times.extract = extracting.elapsed();
        Ok((extracted, times))
    }
}

fn to_dims(shape: &[usize]) -> Result<Vec<i64>, String> {
    shape
        .iter()
        .map(|&d| i64::try_from(d).map_err(|_| format!("dimension {d} too large")))
        .collect()
}

fn concat_pod<T>(shape: &[usize], parts: &[&TensorData]) -> Result<DynValue, String>
where
    T: bytemuck::Pod + PrimitiveTensorElementType + std::fmt::Debug,
{
    let n = element_count(shape).ok_or("shape overflows")?;
    let mut buffer: Vec<T> = Vec::with_capacity(n);
    for part in parts {
        let TensorData::Fixed(bytes) = part else {
            return Err("BYTES data for a fixed-size tensor".into());
        };
        match bytemuck::try_cast_slice::<u8, T>(bytes) {
            Ok(aligned) => buffer.extend_from_slice(aligned),
            Err(_) => buffer.extend(
                bytes
                    .chunks_exact(std::mem::size_of::<T>())
                    .map(bytemuck::pod_read_unaligned::<T>),
            ),
        }
    }
    if buffer.len() != n {
        return Err(format!(
            "batch holds {} elements, shape needs {n}",
            buffer.len()
        ));
    }
    Tensor::from_array((to_dims(shape)?, buffer))
        .map(Tensor::into_dyn)
        .map_err(|e| e.to_string())
}

fn assemble(input: &BatchInput<'_>) -> Result<DynValue, String> {
    let (shape, parts) = (&input.shape[..], &input.parts[..]);
    match input.datatype {
        DataType::Uint8 => concat_pod::<u8>(shape, parts),
        DataType::Uint16 => concat_pod::<u16>(shape, parts),
        DataType::Uint32 => concat_pod::<u32>(shape, parts),
        DataType::Uint64 => concat_pod::<u64>(shape, parts),
        DataType::Int8 => concat_pod::<i8>(shape, parts),
        DataType::Int16 => concat_pod::<i16>(shape, parts),
        DataType::Int32 => concat_pod::<i32>(shape, parts),
        DataType::Int64 => concat_pod::<i64>(shape, parts),
        DataType::Fp16 => concat_pod::<half::f16>(shape, parts),
        DataType::Fp32 => concat_pod::<f32>(shape, parts),
        DataType::Fp64 => concat_pod::<f64>(shape, parts),
        DataType::Bf16 => concat_pod::<half::bf16>(shape, parts),
        DataType::Bool => {
            let mut buffer: Vec<bool> = Vec::new();
            for part in parts {
                let TensorData::Fixed(bytes) = part else {
                    return Err("BYTES data for a BOOL tensor".into());
                };
                buffer.extend(bytes.iter().map(|&b| b != 0));
            }
            Tensor::from_array((to_dims(shape)?, buffer))
                .map(Tensor::into_dyn)
                .map_err(|e| e.to_string())
        }
        DataType::Bytes => {
            let mut strings: Vec<String> = Vec::new();
            for part in parts {
                let TensorData::Bytes(elements) = part else {
                    return Err("fixed-size data for a BYTES tensor".into());
                };
                for (i, element) in elements.iter().enumerate() {
                    let s = std::str::from_utf8(element).map_err(|_| {
                        format!("BYTES element {i} is not valid UTF-8, which ONNX string tensors require")
                    })?;
                    strings.push(s.to_string());
                }
            }
            Tensor::from_string_array((to_dims(shape)?, strings.as_slice()))
                .map(Tensor::into_dyn)
                .map_err(|e| e.to_string())
        }
    }
}

fn copy_pod<T>(value: &DynValue) -> Result<(Vec<usize>, Bytes), String>
where
    T: bytemuck::Pod + PrimitiveTensorElementType,
{
    let (shape, data) = value.try_extract_tensor::<T>().map_err(|e| e.to_string())?;
    let dims = shape
        .iter()
        .map(|&d| usize::try_from(d).unwrap_or(0))
        .collect();
    Ok((dims, Bytes::copy_from_slice(bytemuck::cast_slice(data))))
}

fn extract(value: &DynValue) -> Result<RunOutput, String> {
    let ValueType::Tensor { ty, .. } = value.dtype() else {
        return Err("not a tensor".into());
    };
    let datatype =
        datatype_of(*ty).ok_or_else(|| format!("element type {ty:?} cannot be served"))?;
    let (shape, data) = match datatype {
        DataType::Uint8 => copy_pod::<u8>(value)?,
        DataType::Uint16 => copy_pod::<u16>(value)?,
        DataType::Uint32 => copy_pod::<u32>(value)?,
        DataType::Uint64 => copy_pod::<u64>(value)?,
        DataType::Int8 => copy_pod::<i8>(value)?,
        DataType::Int16 => copy_pod::<i16>(value)?,
        DataType::Int32 => copy_pod::<i32>(value)?,
        DataType::Int64 => copy_pod::<i64>(value)?,
        DataType::Fp16 => copy_pod::<half::f16>(value)?,
        DataType::Fp32 => copy_pod::<f32>(value)?,
        DataType::Fp64 => copy_pod::<f64>(value)?,
        DataType::Bf16 => copy_pod::<half::bf16>(value)?,
        DataType::Bool => {
            let (shape, data) = value
                .try_extract_tensor::<bool>()
                .map_err(|e| e.to_string())?;
            let dims = shape
                .iter()
                .map(|&d| usize::try_from(d).unwrap_or(0))
                .collect();
            let bytes: Vec<u8> = data.iter().map(|&b| u8::from(b)).collect();
            (dims, Bytes::from(bytes))
        }
        DataType::Bytes => {
            let (shape, strings) = value.try_extract_strings().map_err(|e| e.to_string())?;
            let dims = shape
                .iter()
                .map(|&d| usize::try_from(d).unwrap_or(0))
                .collect();
            let elements = strings.into_iter().map(Bytes::from).collect();
            return Ok(RunOutput {
                datatype,
                shape: dims,
                data: TensorData::Bytes(elements),
            });
        }
    };
    Ok(RunOutput {
        datatype,
        shape,
        data: TensorData::Fixed(data),
    })
}
