//! Triton's `model_warmup` samples onto Sluice's warmup runs. Data files are
//! read here, from the model's `warmup/` folder, and never from outside it.

use super::{pb, tensors};
use crate::repository::WarmupRun;
use crate::repository::spec::{ModelFiles, WarmupData, WarmupInput};
use crate::tensor::element_count;
use bytes::Bytes;
use std::collections::BTreeMap;

/// The folder of the model directory that holds warmup data files.
const WARMUP_DIR: &str = "warmup";
/// Largest warmup data file read (bytes).
const MAX_FILE: u64 = 256 << 20;
/// Most runs of one sample.
const MAX_COUNT: u32 = 1000;

pub(super) fn model_warmup(
    samples: &[pb::ModelWarmup],
    max_batch_size: Option<usize>,
    files: &ModelFiles,
) -> Result<Option<Vec<WarmupRun>>, String> {
    if samples.is_empty() {
        return Ok(None);
    }
    samples
        .iter()
        .enumerate()
        .map(|(i, s)| sample(s, i, max_batch_size, files))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn sample(
    s: &pb::ModelWarmup,
    index: usize,
    max_batch_size: Option<usize>,
    files: &ModelFiles,
) -> Result<WarmupRun, String> {
    let field = if s.name.is_empty() {
        format!("model_warmup[{index}]")
    } else {
        format!("model_warmup '{}'", s.name)
    };
    let batch_size = s.batch_size as usize;
    if batch_size == 0 {
        return Err(format!("`{field}.batch_size` must be ≥ 1. Given: 0"));
    }
    match max_batch_size {
        Some(0) if batch_size != 1 => {
            return Err(format!(
                "`{field}.batch_size` must be 1 for a model that does not batch (max_batch_size 0). Given: {batch_size}"
            ));
        }
        Some(max) if max > 0 && batch_size > max => {
            return Err(format!(
                "`{field}.batch_size` must be ≤ max_batch_size ({max}). Given: {batch_size}"
            ));
        }
        _ => {}
    }
    if s.count > MAX_COUNT {
        return Err(format!(
            "`{field}.count` must be ≤ {MAX_COUNT}. Given: {}",
            s.count
        ));
    }
    if s.inputs.is_empty() {
        return Err(format!(
            "`{field}.inputs` must give every input of the model"
        ));
    }
    let mut inputs = BTreeMap::new();
    for (name, input) in &s.inputs {
        let at = format!("{field}.inputs '{name}'");
        inputs.insert(name.clone(), warmup_input(input, &at, files)?);
    }
    Ok(WarmupRun {
        name: s.name.clone(),
        batch_size,
        // Triton: 0 means the sample runs once.
        count: (s.count as usize).max(1),
        random: false,
        dims: BTreeMap::new(),
        inputs,
    })
}

fn warmup_input(
    input: &pb::model_warmup::Input,
    field: &str,
    files: &ModelFiles,
) -> Result<WarmupInput, String> {
    let datatype = tensors::datatype(input.data_type, &format!("{field}.data_type"))?;
    let dims = input
        .dims
        .iter()
        .map(|&d| usize::try_from(d).ok().filter(|&d| d >= 1))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| {
            format!(
                "`{field}.dims` must be fixed sizes ≥ 1 (a warmup sample has a concrete shape). Given: {:?}",
                input.dims
            )
        })?;
    let count = element_count(&dims)
        .filter(|&c| c <= 1 << 28)
        .ok_or_else(|| format!("`{field}.dims` {dims:?} is too large"))?;
    use pb::model_warmup::input::InputDataType;
    let data = match &input.input_data_type {
        None => {
            return Err(format!(
                "`{field}` must set one of zero_data, random_data or input_data_file"
            ));
        }
        Some(InputDataType::ZeroData(_)) => WarmupData::Zero,
        // Triton: random data for STRING falls back to zeros.
        Some(InputDataType::RandomData(_)) if datatype.size().is_none() => WarmupData::Zero,
        Some(InputDataType::RandomData(_)) => WarmupData::Random,
        Some(InputDataType::InputDataFile(name)) => {
            let at = |e: String| format!("`{field}.input_data_file` {e}");
            let path = files.resolve(WARMUP_DIR, name).map_err(at)?;
            let size = std::fs::metadata(&path)
                .map_err(|e| at(format!("cannot be read: {e}")))?
                .len();
            if size > MAX_FILE {
                return Err(at(format!("is {size} bytes, over the limit of {MAX_FILE}")));
            }
            let bytes = std::fs::read(&path).map_err(|e| at(format!("cannot be read: {e}")))?;
            check_file(&bytes, datatype.size(), count).map_err(at)?;
            WarmupData::File {
                name: name.clone(),
                bytes: Bytes::from(bytes),
            }
        }
    };
    Ok(WarmupInput {
        datatype,
        dims,
        data,
    })
}

/// Checks that a data file holds exactly one sample of `count` elements.
fn check_file(bytes: &[u8], size: Option<usize>, count: usize) -> Result<(), String> {
    match size {
        Some(size) => {
            let want = count * size;
            if bytes.len() != want {
                return Err(format!(
                    "holds {} bytes; the sample needs {want} ({count} elements of {size} bytes)",
                    bytes.len()
                ));
            }
        }
        None => {
            let elements = split_bytes(bytes)?;
            if elements.len() != count {
                return Err(format!(
                    "holds {} BYTES elements; the sample needs {count}",
                    elements.len()
                ));
            }
        }
    }
    Ok(())
}

/// Splits Triton's BYTES serialisation: per element, a 4-byte little-endian
/// length, then that many bytes.
pub(crate) fn split_bytes(mut bytes: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut elements = Vec::new();
    while !bytes.is_empty() {
        let (len, rest) = bytes
            .split_first_chunk::<4>()
            .ok_or("ends inside an element's 4-byte length")?;
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return Err(format!(
                "has an element of {len} bytes but only {} bytes follow",
                rest.len()
            ));
        }
        let (element, rest) = rest.split_at(len);
        elements.push(element);
        bytes = rest;
    }
    Ok(elements)
}
