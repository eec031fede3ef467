//! KServe v2 tensor data types and typed tensor contents: random generation,
//! conversion to the JSON `data` representation and to the raw little-endian
//! byte layout used by the binary HTTP extension and gRPC
//! `raw_input_contents` (BYTES elements are 4-byte LE length-prefixed).

use anyhow::{Context, Result, anyhow, bail};
use half::{bf16, f16};
use rand::RngExt;
use rand::rngs::StdRng;
use serde_json::Value;

/// A KServe v2 tensor data type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    /// `BOOL` (one byte per element).
    Bool,
    /// `UINT8`.
    U8,
    /// `UINT16`.
    U16,
    /// `UINT32`.
    U32,
    /// `UINT64`.
    U64,
    /// `INT8`.
    I8,
    /// `INT16`.
    I16,
    /// `INT32`.
    I32,
    /// `INT64`.
    I64,
    /// `FP16`.
    F16,
    /// `FP32`.
    F32,
    /// `FP64`.
    F64,
    /// `BF16`.
    BF16,
    /// `BYTES` (variable-length byte strings).
    Bytes,
}

impl DataType {
    /// Parses a KServe v2 datatype name (`"FP32"`, `"BYTES"`, ...).
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "BOOL" => Self::Bool,
            "UINT8" => Self::U8,
            "UINT16" => Self::U16,
            "UINT32" => Self::U32,
            "UINT64" => Self::U64,
            "INT8" => Self::I8,
            "INT16" => Self::I16,
            "INT32" => Self::I32,
            "INT64" => Self::I64,
            "FP16" => Self::F16,
            "FP32" => Self::F32,
            "FP64" => Self::F64,
            "BF16" => Self::BF16,
            "BYTES" => Self::Bytes,
            other => bail!("unknown KServe v2 datatype {other:?}"),
        })
    }

    /// The KServe v2 datatype name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bool => "BOOL",
            Self::U8 => "UINT8",
            Self::U16 => "UINT16",
            Self::U32 => "UINT32",
            Self::U64 => "UINT64",
            Self::I8 => "INT8",
            Self::I16 => "INT16",
            Self::I32 => "INT32",
            Self::I64 => "INT64",
            Self::F16 => "FP16",
            Self::F32 => "FP32",
            Self::F64 => "FP64",
            Self::BF16 => "BF16",
            Self::Bytes => "BYTES",
        }
    }

    /// Size in bytes of one element, `None` for `BYTES`.
    pub fn element_size(self) -> Option<usize> {
        Some(match self {
            Self::Bool | Self::U8 | Self::I8 => 1,
            Self::U16 | Self::I16 | Self::F16 | Self::BF16 => 2,
            Self::U32 | Self::I32 | Self::F32 => 4,
            Self::U64 | Self::I64 | Self::F64 => 8,
            Self::Bytes => return None,
        })
    }
}

/// Flat, row-major tensor contents of one data type.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// `BOOL` elements.
    Bool(Vec<bool>),
    /// `UINT8` elements.
    U8(Vec<u8>),
    /// `UINT16` elements.
    U16(Vec<u16>),
    /// `UINT32` elements.
    U32(Vec<u32>),
    /// `UINT64` elements.
    U64(Vec<u64>),
    /// `INT8` elements.
    I8(Vec<i8>),
    /// `INT16` elements.
    I16(Vec<i16>),
    /// `INT32` elements.
    I32(Vec<i32>),
    /// `INT64` elements.
    I64(Vec<i64>),
    /// `FP16` elements.
    F16(Vec<f16>),
    /// `FP32` elements.
    F32(Vec<f32>),
    /// `FP64` elements.
    F64(Vec<f64>),
    /// `BF16` elements.
    BF16(Vec<bf16>),
    /// `BYTES` elements.
    Bytes(Vec<Vec<u8>>),
}

/// Applies `$body` to the vector inside every numeric/bool variant.
macro_rules! each_fixed {
    ($data:expr, $v:ident => $body:expr, bytes $b:ident => $bytes_body:expr) => {
        match $data {
            TensorData::Bool($v) => $body,
            TensorData::U8($v) => $body,
            TensorData::U16($v) => $body,
            TensorData::U32($v) => $body,
            TensorData::U64($v) => $body,
            TensorData::I8($v) => $body,
            TensorData::I16($v) => $body,
            TensorData::I32($v) => $body,
            TensorData::I64($v) => $body,
            TensorData::F16($v) => $body,
            TensorData::F32($v) => $body,
            TensorData::F64($v) => $body,
            TensorData::BF16($v) => $body,
            TensorData::Bytes($b) => $bytes_body,
        }
    };
}

impl TensorData {
    /// The data type of these contents.
    pub fn datatype(&self) -> DataType {
        match self {
            Self::Bool(_) => DataType::Bool,
            Self::U8(_) => DataType::U8,
            Self::U16(_) => DataType::U16,
            Self::U32(_) => DataType::U32,
            Self::U64(_) => DataType::U64,
            Self::I8(_) => DataType::I8,
            Self::I16(_) => DataType::I16,
            Self::I32(_) => DataType::I32,
            Self::I64(_) => DataType::I64,
            Self::F16(_) => DataType::F16,
            Self::F32(_) => DataType::F32,
            Self::F64(_) => DataType::F64,
            Self::BF16(_) => DataType::BF16,
            Self::Bytes(_) => DataType::Bytes,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        each_fixed!(self, v => v.len(), bytes b => b.len())
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `n` random elements: integers in `[0, 10)`, floats in `[0, 1)`, and
    /// BYTES as printable ASCII strings of `string_len` characters.
    pub fn random(dtype: DataType, n: usize, string_len: usize, rng: &mut StdRng) -> Self {
        fn ints<T: TryFrom<u8>>(n: usize, rng: &mut StdRng) -> Vec<T> {
            (0..n)
                .filter_map(|_| T::try_from(rng.random_range(0u8..10)).ok())
                .collect()
        }
        match dtype {
            DataType::Bool => Self::Bool((0..n).map(|_| rng.random::<bool>()).collect()),
            DataType::U8 => Self::U8(ints(n, rng)),
            DataType::U16 => Self::U16(ints(n, rng)),
            DataType::U32 => Self::U32(ints(n, rng)),
            DataType::U64 => Self::U64(ints(n, rng)),
            DataType::I8 => Self::I8(ints(n, rng)),
            DataType::I16 => Self::I16(ints(n, rng)),
            DataType::I32 => Self::I32(ints(n, rng)),
            DataType::I64 => Self::I64(ints(n, rng)),
            DataType::F16 => Self::F16((0..n).map(|_| f16::from_f32(rng.random())).collect()),
            DataType::F32 => Self::F32((0..n).map(|_| rng.random::<f32>()).collect()),
            DataType::F64 => Self::F64((0..n).map(|_| rng.random::<f64>()).collect()),
            DataType::BF16 => Self::BF16((0..n).map(|_| bf16::from_f32(rng.random())).collect()),
            DataType::Bytes => Self::Bytes(
                (0..n)
                    .map(|_| {
                        (0..string_len)
                            .map(|_| rng.random_range(b'a'..=b'z'))
                            .collect()
                    })
                    .collect(),
            ),
        }
    }

    /// Raw little-endian bytes (BYTES: each element as u32 LE length + bytes).
    pub fn to_raw(&self) -> Vec<u8> {
        match self {
            Self::Bool(v) => v.iter().map(|&b| u8::from(b)).collect(),
            Self::U8(v) => v.clone(),
            Self::U16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::U32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::U64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::I8(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::I16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::BF16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::Bytes(v) => encode_bytes_elements(v),
        }
    }

    /// Decodes raw little-endian bytes of `dtype` (inverse of [`Self::to_raw`]).
    #[allow(clippy::modulo_one)]
    pub fn from_raw(dtype: DataType, raw: &[u8]) -> Result<Self> {
        macro_rules! fixed {
            ($variant:ident, $t:ty, $n:expr) => {{
                if raw.len() % $n != 0 {
                    bail!(
                        "{} byte(s) is not a multiple of {} for {}",
                        raw.len(),
                        $n,
                        dtype.as_str()
                    );
                }
                let mut out = Vec::with_capacity(raw.len() / $n);
                for chunk in raw.chunks_exact($n) {
                    let mut a = [0u8; $n];
                    a.copy_from_slice(chunk);
                    out.push(<$t>::from_le_bytes(a));
                }
                Self::$variant(out)
            }};
        }
        Ok(match dtype {
            DataType::Bool => Self::Bool(raw.iter().map(|&b| b != 0).collect()),
            DataType::U8 => Self::U8(raw.to_vec()),
            DataType::U16 => fixed!(U16, u16, 2),
            DataType::U32 => fixed!(U32, u32, 4),
            DataType::U64 => fixed!(U64, u64, 8),
            DataType::I8 => fixed!(I8, i8, 1),
            DataType::I16 => fixed!(I16, i16, 2),
            DataType::I32 => fixed!(I32, i32, 4),
            DataType::I64 => fixed!(I64, i64, 8),
            DataType::F16 => fixed!(F16, f16, 2),
            DataType::F32 => fixed!(F32, f32, 4),
            DataType::F64 => fixed!(F64, f64, 8),
            DataType::BF16 => fixed!(BF16, bf16, 2),
            DataType::Bytes => Self::Bytes(decode_bytes_elements(raw)?),
        })
    }

    /// The flat JSON `data` array (BYTES as UTF-8 strings, lossy).
    pub fn to_json(&self) -> Value {
        fn arr<T: Into<Value> + Copy>(v: &[T]) -> Value {
            Value::Array(v.iter().map(|&x| x.into()).collect())
        }
        match self {
            Self::Bool(v) => arr(v),
            Self::U8(v) => arr(v),
            Self::U16(v) => arr(v),
            Self::U32(v) => arr(v),
            Self::U64(v) => arr(v),
            Self::I8(v) => arr(v),
            Self::I16(v) => arr(v),
            Self::I32(v) => arr(v),
            Self::I64(v) => arr(v),
            Self::F16(v) => Value::Array(v.iter().map(|x| f64::from(x.to_f32()).into()).collect()),
            Self::F32(v) => Value::Array(v.iter().map(|&x| f64::from(x).into()).collect()),
            Self::F64(v) => arr(v),
            Self::BF16(v) => Value::Array(v.iter().map(|x| f64::from(x.to_f32()).into()).collect()),
            Self::Bytes(v) => Value::Array(
                v.iter()
                    .map(|b| Value::String(String::from_utf8_lossy(b).into_owned()))
                    .collect(),
            ),
        }
    }

    /// Parses a (possibly nested) JSON `data` array as `dtype`.
    pub fn from_json(dtype: DataType, data: &Value) -> Result<Self> {
        let mut flat = Vec::new();
        flatten(data, &mut flat);
        macro_rules! ints {
            ($variant:ident, $t:ty, $get:ident) => {
                Self::$variant(
                    flat.iter()
                        .map(|v| {
                            v.$get()
                                .and_then(|x| <$t>::try_from(x).ok())
                                .ok_or_else(|| anyhow!("{v} is not a valid {}", dtype.as_str()))
                        })
                        .collect::<Result<_>>()?,
                )
            };
        }
        let floats = || -> Result<Vec<f64>> {
            flat.iter()
                .map(|v| v.as_f64().ok_or_else(|| anyhow!("{v} is not a number")))
                .collect()
        };
        Ok(match dtype {
            DataType::Bool => Self::Bool(
                flat.iter()
                    .map(|v| v.as_bool().ok_or_else(|| anyhow!("{v} is not a bool")))
                    .collect::<Result<_>>()?,
            ),
            DataType::U8 => ints!(U8, u8, as_u64),
            DataType::U16 => ints!(U16, u16, as_u64),
            DataType::U32 => ints!(U32, u32, as_u64),
            DataType::U64 => ints!(U64, u64, as_u64),
            DataType::I8 => ints!(I8, i8, as_i64),
            DataType::I16 => ints!(I16, i16, as_i64),
            DataType::I32 => ints!(I32, i32, as_i64),
            DataType::I64 => ints!(I64, i64, as_i64),
            DataType::F16 => Self::F16(floats()?.into_iter().map(f16::from_f64).collect()),
            #[allow(clippy::cast_possible_truncation)]
            DataType::F32 => Self::F32(floats()?.into_iter().map(|x| x as f32).collect()),
            DataType::F64 => Self::F64(floats()?),
            DataType::BF16 => Self::BF16(floats()?.into_iter().map(bf16::from_f64).collect()),
            DataType::Bytes => Self::Bytes(
                flat.iter()
                    .map(|v| {
                        v.as_str()
                            .map(|s| s.as_bytes().to_vec())
                            .ok_or_else(|| anyhow!("{v} is not a string"))
                    })
                    .collect::<Result<_>>()?,
            ),
        })
    }
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

/// Serializes BYTES elements: each as a 4-byte little-endian length + bytes.
pub fn encode_bytes_elements(elems: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(elems.iter().map(|e| e.len() + 4).sum());
    for e in elems {
        // Elements longer than 4 GiB cannot be represented; truncate the prefix.
        let len = u32::try_from(e.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(e);
    }
    out
}

/// Parses 4-byte little-endian length-prefixed BYTES elements.
pub fn decode_bytes_elements(mut raw: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    while !raw.is_empty() {
        let (len, rest) = raw
            .split_first_chunk::<4>()
            .context("truncated BYTES element length prefix")?;
        let len = usize::try_from(u32::from_le_bytes(*len))?;
        if rest.len() < len {
            bail!(
                "BYTES element of {len} byte(s) overruns buffer of {}",
                rest.len()
            );
        }
        let (elem, rest) = rest.split_at(len);
        out.push(elem.to_vec());
        raw = rest;
    }
    Ok(out)
}

/// One named input tensor of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct InputTensor {
    /// Tensor name.
    pub name: String,
    /// Concrete shape (no -1 dims).
    pub shape: Vec<i64>,
    /// Flat contents; its length matches the product of `shape`.
    pub data: TensorData,
}

impl InputTensor {
    /// The tensor's data type.
    pub fn datatype(&self) -> DataType {
        self.data.datatype()
    }

    /// The KServe v2 JSON object with inline `data`.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "name": self.name,
            "shape": self.shape,
            "datatype": self.datatype().as_str(),
            "data": self.data.to_json(),
        })
    }
}

/// Number of elements of a concrete shape (a scalar `[]` has one).
pub fn element_count(shape: &[i64]) -> Result<usize> {
    shape.iter().try_fold(1usize, |acc, &d| {
        let d = usize::try_from(d).map_err(|_| anyhow!("negative dimension {d} in {shape:?}"))?;
        acc.checked_mul(d)
            .ok_or_else(|| anyhow!("shape {shape:?} overflows"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const ALL: &str =
        "BOOL UINT8 UINT16 UINT32 UINT64 INT8 INT16 INT32 INT64 FP16 FP32 FP64 BF16 BYTES";

    #[test]
    fn every_dtype_round_trips_raw_and_json() {
        let mut rng = StdRng::seed_from_u64(7);
        for name in ALL.split(' ') {
            let dt = DataType::parse(name).unwrap();
            assert_eq!(dt.as_str(), name);
            let data = TensorData::random(dt, 6, 5, &mut rng);
            assert_eq!(data.len(), 6);
            assert_eq!(data.datatype(), dt);
            let raw = data.to_raw();
            if let Some(size) = dt.element_size() {
                assert_eq!(raw.len(), 6 * size, "{dt:?}");
            } else {
                assert_eq!(raw.len(), 6 * (4 + 5));
            }
            assert_eq!(TensorData::from_raw(dt, &raw).unwrap(), data, "{dt:?}");
            assert_eq!(
                TensorData::from_json(dt, &data.to_json()).unwrap(),
                data,
                "{dt:?}"
            );
        }
    }

    #[test]
    fn bytes_elements_are_length_prefixed_le() {
        let raw = encode_bytes_elements(&[b"ab".to_vec(), Vec::new(), b"xyz".to_vec()]);
        assert_eq!(raw, b"\x02\0\0\0ab\0\0\0\0\x03\0\0\0xyz");
        assert_eq!(decode_bytes_elements(&raw).unwrap().len(), 3);
        assert!(decode_bytes_elements(b"\x05\0\0\0ab").is_err());
        assert!(decode_bytes_elements(b"\x05\0").is_err());
    }

    #[test]
    fn json_data_may_be_nested_and_is_type_checked() {
        let v = serde_json::json!([[1, 2], [3, 4]]);
        assert_eq!(
            TensorData::from_json(DataType::I32, &v).unwrap(),
            TensorData::I32(vec![1, 2, 3, 4])
        );
        assert!(TensorData::from_json(DataType::U8, &serde_json::json!([300])).is_err());
        assert!(TensorData::from_json(DataType::Bytes, &serde_json::json!([1])).is_err());
        assert_eq!(element_count(&[2, 3]).unwrap(), 6);
        assert_eq!(element_count(&[]).unwrap(), 1);
        assert!(element_count(&[-1, 3]).is_err());
    }
}
