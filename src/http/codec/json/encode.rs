//! Encoding output tensors as KServe v2 JSON `data` arrays, straight from
//! their packed bytes.

use crate::tensor::{DataType, TensorData};
use half::{bf16, f16};
use serde::ser::SerializeSeq;
use serde::{Serialize, Serializer};

/// Serialises packed tensor data as a flat JSON array; serialising it
/// directly writes the same text as through `serde_json::to_value`.
pub struct DataJson<'a> {
    pub datatype: DataType,
    pub data: &'a TensorData,
}

impl Serialize for DataJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let bytes = match self.data {
            TensorData::Bytes(elements) => {
                let mut seq = serializer.serialize_seq(Some(elements.len()))?;
                for e in elements {
                    seq.serialize_element(&String::from_utf8_lossy(e))?;
                }
                return seq.end();
            }
            TensorData::Fixed(b) => b,
        };
        let size = self.datatype.size().unwrap_or(1);
        let mut seq = serializer.serialize_seq(Some(bytes.len() / size))?;
        macro_rules! each {
            ($t:ty, $n:expr, $conv:expr) => {
                for chunk in bytes.chunks_exact($n) {
                    let mut a = [0u8; $n];
                    a.copy_from_slice(chunk);
                    let v = <$t>::from_le_bytes(a);
                    seq.serialize_element(&$conv(v))?;
                }
            };
        }
        match self.datatype {
            DataType::Bool => {
                for &b in bytes.iter() {
                    seq.serialize_element(&(b != 0))?;
                }
            }
            DataType::Uint8 => each!(u8, 1, |v| v),
            DataType::Uint16 => each!(u16, 2, |v| v),
            DataType::Uint32 => each!(u32, 4, |v| v),
            DataType::Uint64 => each!(u64, 8, |v| v),
            DataType::Int8 => each!(i8, 1, |v| v),
            DataType::Int16 => each!(i16, 2, |v| v),
            DataType::Int32 => each!(i32, 4, |v| v),
            DataType::Int64 => each!(i64, 8, |v| v),
            // Narrow floats go out as the f64 of their value (what a
            // `serde_json::Value` holds, and so what answers always read).
            DataType::Fp16 => each!(f16, 2, |v: f16| finite(v.to_f32()).map(f64::from)),
            DataType::Bf16 => each!(bf16, 2, |v: bf16| finite(v.to_f32()).map(f64::from)),
            DataType::Fp32 => each!(f32, 4, |v: f32| finite(v).map(f64::from)),
            DataType::Fp64 => each!(f64, 8, |v: f64| if v.is_finite() { Some(v) } else { None }),
            DataType::Bytes => {}
        }
        seq.end()
    }
}

/// JSON has no NaN or infinity; they are sent as null (as Triton does).
fn finite(v: f32) -> Option<f32> {
    v.is_finite().then_some(v)
}
