//! Tensors as the server sees them: a KServe v2 datatype, a shape, and bytes.
//!
//! Fixed-size types are kept as one packed little-endian byte buffer, which is
//! exactly the layout of the binary extension, of gRPC's `raw_input_contents`,
//! and of ONNX Runtime's tensors, so moving between them is at most one copy.
//! BYTES tensors are a list of byte strings. Shape arithmetic is checked: no
//! multiplication can overflow and no allocation is sized by an unchecked product.

mod spec;
mod wire;

pub use spec::{ModelSignature, RunOutput, TensorSpec};
pub use wire::{check_shape, decode_raw, encode_raw, parse_datatype};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A KServe v2 tensor datatype. The names are the protocol's (`FP32`, `BYTES`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DataType {
    #[serde(rename = "BOOL")]
    Bool,
    #[serde(rename = "UINT8")]
    Uint8,
    #[serde(rename = "UINT16")]
    Uint16,
    #[serde(rename = "UINT32")]
    Uint32,
    #[serde(rename = "UINT64")]
    Uint64,
    #[serde(rename = "INT8")]
    Int8,
    #[serde(rename = "INT16")]
    Int16,
    #[serde(rename = "INT32")]
    Int32,
    #[serde(rename = "INT64")]
    Int64,
    #[serde(rename = "FP16")]
    Fp16,
    #[serde(rename = "FP32")]
    Fp32,
    #[serde(rename = "FP64")]
    Fp64,
    #[serde(rename = "BF16")]
    Bf16,
    #[serde(rename = "BYTES")]
    Bytes,
}

impl DataType {
    pub const ALL: [DataType; 14] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Fp32,
        DataType::Fp64,
        DataType::Bf16,
        DataType::Bytes,
    ];

    /// The protocol name, e.g. `FP32`.
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp16 => "FP16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bf16 => "BF16",
            DataType::Bytes => "BYTES",
        }
    }

    /// Parses a protocol name; `None` for anything else.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|dt| dt.as_str() == name)
    }

    /// Size of one element in bytes; `None` for BYTES, whose elements vary.
    pub(crate) fn size(self) -> Option<usize> {
        match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => Some(1),
            DataType::Uint16 | DataType::Int16 | DataType::Fp16 | DataType::Bf16 => Some(2),
            DataType::Uint32 | DataType::Int32 | DataType::Fp32 => Some(4),
            DataType::Uint64 | DataType::Int64 | DataType::Fp64 => Some(8),
            DataType::Bytes => None,
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Number of elements of `shape`, or `None` if the product overflows `usize`.
pub(crate) fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Formats a shape the way messages show it: `[2, 3]`.
pub(crate) fn fmt_shape<T: fmt::Display>(shape: &[T]) -> String {
    let dims: Vec<String> = shape.iter().map(ToString::to_string).collect();
    format!("[{}]", dims.join(", "))
}

/// The elements of a tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// Packed little-endian elements of a fixed-size type (BOOL is one byte, 0 or 1).
    Fixed(Bytes),
    /// The elements of a BYTES tensor.
    Bytes(Vec<Bytes>),
}

impl TensorData {
    /// Number of elements this data holds for `datatype`.
    pub(crate) fn len(&self, datatype: DataType) -> usize {
        match self {
            TensorData::Fixed(b) => datatype.size().map_or(0, |s| b.len() / s),
            TensorData::Bytes(v) => v.len(),
        }
    }

    /// Total payload size in bytes.
    pub(crate) fn byte_len(&self) -> usize {
        match self {
            TensorData::Fixed(b) => b.len(),
            TensorData::Bytes(v) => v.iter().map(Bytes::len).sum(),
        }
    }
}

/// A named tensor with a concrete shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<usize>,
    pub data: TensorData,
}

impl Tensor {
    /// Rows along the first dimension (1 for a scalar).
    pub(crate) fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// Checks that `data` holds exactly the elements `shape` and `datatype` call for.
    pub fn check_consistent(&self) -> Result<(), String> {
        let expected = element_count(&self.shape).ok_or_else(|| {
            format!(
                "input '{}': shape {} overflows the element count",
                self.name,
                fmt_shape(&self.shape)
            )
        })?;
        let matches_type = matches!(
            (&self.data, self.datatype),
            (TensorData::Bytes(_), DataType::Bytes)
        ) || matches!(&self.data, TensorData::Fixed(_))
            && self.datatype != DataType::Bytes;
        if !matches_type {
            return Err(format!(
                "input '{}': data does not match datatype {}",
                self.name, self.datatype
            ));
        }
        if let TensorData::Fixed(b) = &self.data {
            let size = self.datatype.size().unwrap_or(1);
            if b.len() % size != 0 {
                return Err(format!(
                    "input '{}': expected a multiple of {size} bytes for {}, got {} bytes",
                    self.name,
                    self.datatype,
                    b.len()
                ));
            }
        }
        let got = self.data.len(self.datatype);
        if got != expected {
            return Err(format!(
                "input '{}': shape {} needs {expected} elements, got {got}",
                self.name,
                fmt_shape(&self.shape)
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datatype_names_round_trip() {
        for dt in DataType::ALL {
            assert_eq!(DataType::parse(dt.as_str()), Some(dt));
        }
        assert_eq!(DataType::parse("FLOAT"), None);
        assert_eq!(DataType::parse("fp32"), None);
    }

    #[test]
    fn element_count_is_checked() {
        assert_eq!(element_count(&[]), Some(1));
        assert_eq!(element_count(&[2, 3]), Some(6));
        assert_eq!(element_count(&[usize::MAX, 2]), None);
    }

    #[test]
    fn inconsistent_tensor_is_reported() {
        let t = Tensor {
            name: "x".into(),
            datatype: DataType::Fp32,
            shape: vec![2, 2],
            data: TensorData::Fixed(Bytes::from(vec![0u8; 12])),
        };
        let err = t.check_consistent().unwrap_err();
        assert_eq!(err, "input 'x': shape [2, 2] needs 4 elements, got 3");
    }
}
