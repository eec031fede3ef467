//! Tensors on the wire, shared by every protocol adapter: datatype names,
//! checked shapes, and the raw layout (packed little-endian, or BYTES as
//! 4-byte length-prefixed elements) of the binary extension and of gRPC's
//! `raw_input_contents` / `raw_output_contents`.

use super::{DataType, TensorData, element_count, fmt_shape};
use crate::error::{Error, Result};
use bytes::{BufMut, Bytes, BytesMut};

/// Checks a wire shape: no negative dims, no overflow, within `max_elements`.
/// Returns the shape and its element count before anything is allocated.
pub fn check_shape(name: &str, shape: &[i64], max_elements: usize) -> Result<(Vec<usize>, usize)> {
    let dims: Vec<usize> = shape
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<_, _>>()
        .map_err(|_| {
            Error::invalid(format!(
                "input '{name}': shape {} has a negative dimension; every dimension must be ≥ 0",
                fmt_shape(shape)
            ))
        })?;
    let count = element_count(&dims).ok_or_else(|| {
        Error::invalid(format!(
            "input '{name}': shape {} overflows the element count",
            fmt_shape(shape)
        ))
    })?;
    if count > max_elements {
        return Err(Error::TooLarge(format!(
            "input '{name}': shape {} has {count} elements, more than the limit of {max_elements} (--max-tensor-elements)",
            fmt_shape(shape)
        )));
    }
    Ok((dims, count))
}

/// Parses a datatype name, naming the input on failure.
pub fn parse_datatype(name: &str, datatype: &str) -> Result<DataType> {
    DataType::parse(datatype).ok_or_else(|| {
        let known: Vec<&str> = DataType::ALL.iter().map(|d| d.as_str()).collect();
        Error::invalid(format!(
            "input '{name}': unknown datatype '{datatype}'; expected one of {}",
            known.join(", ")
        ))
    })
}

/// Decodes one raw tensor (packed little-endian, or length-prefixed BYTES).
/// `raw` must hold exactly the elements `shape` declares.
pub fn decode_raw(
    name: &str,
    datatype: DataType,
    shape: &[usize],
    raw: Bytes,
) -> Result<TensorData> {
    let count = element_count(shape).ok_or_else(|| {
        Error::invalid(format!(
            "input '{name}': shape {} overflows the element count",
            fmt_shape(shape)
        ))
    })?;
    let Some(size) = datatype.size() else {
        return decode_bytes_elements(name, count, raw).map(TensorData::Bytes);
    };
    let expected = count.checked_mul(size).ok_or_else(|| {
        Error::invalid(format!(
            "input '{name}': shape {} is too large",
            fmt_shape(shape)
        ))
    })?;
    if raw.len() != expected {
        return Err(Error::invalid(format!(
            "input '{name}': shape {} of {datatype} needs {expected} bytes, got {}",
            fmt_shape(shape),
            raw.len()
        )));
    }
    Ok(TensorData::Fixed(raw))
}

/// Splits length-prefixed BYTES elements; each element is a slice of `raw`.
fn decode_bytes_elements(name: &str, count: usize, raw: Bytes) -> Result<Vec<Bytes>> {
    // Every element costs at least its 4-byte prefix: bound the allocation.
    let mut elements = Vec::with_capacity(count.min(raw.len() / 4));
    let mut at = 0usize;
    while at < raw.len() {
        let Some(prefix) = raw.get(at..at + 4) else {
            return Err(Error::invalid(format!(
                "input '{name}': BYTES element {} has a truncated 4-byte length prefix ({} bytes left)",
                elements.len(),
                raw.len() - at
            )));
        };
        let mut len = [0u8; 4];
        len.copy_from_slice(prefix);
        let len = u32::from_le_bytes(len) as usize;
        let start = at + 4;
        if len > raw.len() - start {
            return Err(Error::invalid(format!(
                "input '{name}': BYTES element {} declares {len} bytes but only {} remain",
                elements.len(),
                raw.len() - start
            )));
        }
        if elements.len() == count {
            return Err(Error::invalid(format!(
                "input '{name}': data has more than the {count} BYTES elements its shape declares"
            )));
        }
        elements.push(raw.slice(start..start + len));
        at = start + len;
    }
    if elements.len() != count {
        return Err(Error::invalid(format!(
            "input '{name}': shape needs {count} BYTES elements, got {}",
            elements.len()
        )));
    }
    Ok(elements)
}

/// Encodes one output raw: fixed-size data as is (no copy), BYTES
/// length-prefixed.
pub fn encode_raw(data: &TensorData) -> Bytes {
    match data {
        TensorData::Fixed(b) => b.clone(),
        TensorData::Bytes(elements) => {
            let total: usize = elements.iter().map(|e| e.len() + 4).sum();
            let mut out = BytesMut::with_capacity(total);
            for e in elements {
                out.put_u32_le(u32::try_from(e.len()).unwrap_or(u32::MAX));
                out.put_slice(e);
            }
            out.freeze()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_elements_round_trip() {
        let data = TensorData::Bytes(vec![Bytes::from_static(b"ab"), Bytes::new()]);
        let raw = encode_raw(&data);
        assert_eq!(&raw[..], b"\x02\0\0\0ab\0\0\0\0");
        let back = decode_raw("x", DataType::Bytes, &[2], raw).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn malformed_bytes_prefixes_are_named() {
        let err = |raw: &'static [u8], n: usize| {
            decode_raw("x", DataType::Bytes, &[n], Bytes::from_static(raw))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(b"\x05\0\0\0ab", 1),
            "input 'x': BYTES element 0 declares 5 bytes but only 2 remain"
        );
        assert_eq!(
            err(b"\x01\0\0\0a\x01\0", 2),
            "input 'x': BYTES element 1 has a truncated 4-byte length prefix (2 bytes left)"
        );
        assert_eq!(
            err(b"\x01\0\0\0a", 2),
            "input 'x': shape needs 2 BYTES elements, got 1"
        );
        assert!(err(b"\x01\0\0\0a\x01\0\0\0b", 1).contains("more than the 1"));
    }

    #[test]
    fn fixed_sizes_are_checked() {
        let err = decode_raw("x", DataType::Fp32, &[2], Bytes::from_static(&[0; 7]))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "input 'x': shape [2] of FP32 needs 8 bytes, got 7");
    }
}
