//! KServe v2 JSON tensors: decoding `data` (flat or nested) straight into
//! packed bytes, and encoding outputs, without an intermediate `Value` tree.
//!
//! Decoding is strict: a string in numeric data, a fraction or an out-of-range
//! value in integer data, or a number in BOOL data is an error naming the
//! input, the element, what was expected and what arrived. The element count
//! is checked against the shape as elements arrive, so a body can never make
//! the decoder grow past what its shape declared.

use crate::error::{Error, Result};
use crate::tensor::{DataType, Tensor, TensorData, check_shape, fmt_shape, parse_datatype};
use bytes::Bytes;
use half::{bf16, f16};
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::fmt;

/// A v2 inference request body (or the JSON header of a binary one).
#[derive(Debug, Deserialize)]
pub struct RequestJson<'a> {
    #[serde(default)]
    pub(crate) id: Option<String>,
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    #[serde(borrow)]
    pub inputs: Vec<InputJson<'a>>,
    #[serde(default)]
    pub(crate) outputs: Option<Vec<OutputRequestJson>>,
}

#[derive(Debug, Deserialize)]
pub struct InputJson<'a> {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    #[serde(default, borrow)]
    pub data: Option<&'a RawValue>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct OutputRequestJson {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) parameters: Option<Map<String, Value>>,
}

/// Decodes one input's JSON `data` into a tensor.
pub fn decode_input(input: &InputJson<'_>, max_elements: usize) -> Result<Tensor> {
    let name = input.name.as_str();
    let datatype = parse_datatype(name, &input.datatype)?;
    let (shape, count) = check_shape(name, &input.shape, max_elements)?;
    let Some(raw) = input.data else {
        return Err(Error::invalid(format!(
            "input '{name}': no 'data' (and no binary_data_size parameter)"
        )));
    };
    // Reserve for what the data can hold, not for what the shape claims: every
    // element takes at least one byte of JSON, so a tiny body with a huge shape
    // cannot make the server reserve `count` elements up front.
    let reserve = count.min(raw.get().len());
    let mut sink = Sink {
        name,
        datatype,
        expected: count,
        seen: 0,
        fixed: Vec::with_capacity(datatype.size().map_or(0, |s| s * reserve)),
        strings: Vec::new(),
    };
    if !fast_enabled() || numbers_fast(raw.get(), &mut sink).is_none() {
        // Not plain numeric arrays whose every element fits: the serde
        // path below decides, giving today's answer or today's message.
        sink.seen = 0;
        sink.fixed.clear();
        serde_path(raw.get(), &mut sink)?;
    }
    if sink.seen != count {
        return Err(Error::invalid(format!(
            "input '{name}': shape {} needs {count} elements, got {}",
            fmt_shape(&shape),
            sink.seen
        )));
    }
    let data = match datatype {
        DataType::Bytes => TensorData::Bytes(sink.strings),
        _ => TensorData::Fixed(Bytes::from(sink.fixed)),
    };
    Ok(Tensor {
        name: name.to_string(),
        datatype,
        shape,
        data,
    })
}

#[cfg(not(test))]
fn fast_enabled() -> bool {
    true
}

#[cfg(test)]
thread_local! {
    /// Whether [`decode_input`] tries [`numbers_fast`] first: always, except
    /// in the tests that compare it with the serde path alone.
    static FAST: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

#[cfg(test)]
fn fast_enabled() -> bool {
    FAST.with(std::cell::Cell::get)
}

/// Decodes `data` with serde_json's visitor: every datatype, every shape of
/// JSON, and the error messages.
fn serde_path(data: &str, sink: &mut Sink<'_>) -> Result<()> {
    let mut de = serde_json::Deserializer::from_str(data);
    sink.deserialize(&mut de).map_err(|e| {
        let msg = e.to_string();
        // serde_json appends " at line L column C"; our messages stand alone.
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
        Error::InvalidArgument(msg)
    })
}

/// The fast path: numeric data as JSON arrays (flat or nested) of plain
/// numbers, parsed with `fast-float2` (correctly rounded, as serde_json's
/// `float_roundtrip` parser is) straight into `sink`, through the same
/// per-element conversions as the serde path ([`Sink::int`],
/// [`Sink::float`]). Returns `None` at the first thing it does not handle
/// (BOOL or BYTES data, a string, `null`, an object, malformed JSON, an
/// integer beyond 64 bits, `-0`, a float that overflows, an element that
/// does not fit the datatype, too many elements, deep nesting), and the
/// caller reruns the serde path, which answers exactly as before.
fn numbers_fast(data: &str, sink: &mut Sink<'_>) -> Option<()> {
    const MAX_DEPTH: usize = 64;
    if matches!(sink.datatype, DataType::Bool | DataType::Bytes) {
        return None;
    }
    let b = data.as_bytes();
    let ws = |i: &mut usize| {
        while b
            .get(*i)
            .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
        {
            *i += 1;
        }
    };
    let mut i = 0;
    ws(&mut i);
    if b.get(i) != Some(&b'[') {
        return None;
    }
    // What may come next: a value (after `[` or `,`), `]` (after `[` or a
    // value), `,` (after a value).
    let (mut value, mut close, mut comma) = (true, false, false);
    let mut depth = 0usize;
    loop {
        ws(&mut i);
        match *b.get(i)? {
            b'[' if value => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return None;
                }
                i += 1;
                (value, close, comma) = (true, true, false);
            }
            b']' if close => {
                depth -= 1;
                i += 1;
                (value, close, comma) = (false, true, true);
                if depth == 0 {
                    break;
                }
            }
            b',' if comma => {
                i += 1;
                (value, close, comma) = (true, false, false);
            }
            b'-' | b'0'..=b'9' if value => {
                // `data` is a `RawValue`, which serde_json has already
                // checked is JSON, so this is a well-formed JSON number:
                // digits are all an integer has, and a fraction or an
                // exponent makes it a float, as serde_json classes them.
                let rest = b.get(i..)?;
                let sign = usize::from(rest.first() == Some(&b'-'));
                let digits = rest
                    .get(sign..)?
                    .iter()
                    .position(|c| !c.is_ascii_digit())
                    .map_or(rest.len(), |p| p + sign);
                sink.admit::<Defer>().ok()?;
                if matches!(rest.get(digits), Some(b'.' | b'e' | b'E')) {
                    let (v, len): (f64, usize) = fast_float2::parse_partial(rest).ok()?;
                    if !v.is_finite() {
                        return None;
                    }
                    sink.float::<Defer>(v, format_args!("{v}")).ok()?;
                    i += len;
                } else {
                    let token = data.get(i..i + digits)?;
                    // A leading zero is not JSON: not ours to accept.
                    if token.len() > sign + 1 && token.as_bytes().get(sign) == Some(&b'0') {
                        return None;
                    }
                    let v = if sign == 1 {
                        // serde_json reads `-0` as the float -0.0.
                        i128::from(token.parse::<i64>().ok().filter(|&v| v != 0)?)
                    } else {
                        i128::from(token.parse::<u64>().ok()?)
                    };
                    sink.int::<Defer>(v, format_args!("{token}")).ok()?;
                    i += digits;
                }
                (value, close, comma) = (false, true, true);
            }
            _ => return None,
        }
    }
    ws(&mut i);
    (i == b.len()).then_some(())
}

/// The fast path's error: "hand this input to the serde path".
#[derive(Debug)]
struct Defer;

impl fmt::Display for Defer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deferred to the serde path")
    }
}

impl std::error::Error for Defer {}

impl de::Error for Defer {
    fn custom<T: fmt::Display>(_msg: T) -> Self {
        Defer
    }
}

/// Receives elements of one input's data, flattening nested arrays.
struct Sink<'n> {
    name: &'n str,
    datatype: DataType,
    expected: usize,
    seen: usize,
    fixed: Vec<u8>,
    strings: Vec<Bytes>,
}

impl Sink<'_> {
    fn fail<E: de::Error>(&self, what: fmt::Arguments<'_>) -> E {
        E::custom(format!(
            "input '{}': element {} must be {}, got {what}",
            self.name,
            self.seen.saturating_sub(1),
            expectation(self.datatype)
        ))
    }

    fn admit<E: de::Error>(&mut self) -> Result<(), E> {
        if self.seen >= self.expected {
            return Err(E::custom(format!(
                "input '{}': data has more than the {} elements its shape declares",
                self.name, self.expected
            )));
        }
        self.seen += 1;
        Ok(())
    }

    fn int<E: de::Error>(&mut self, v: i128, shown: fmt::Arguments<'_>) -> Result<(), E> {
        macro_rules! put {
            ($t:ty) => {{
                let x = <$t>::try_from(v).map_err(|_| {
                    self.fail::<E>(format_args!("{shown}, out of range for {}", self.datatype))
                })?;
                self.fixed.extend_from_slice(&x.to_le_bytes());
            }};
        }
        match self.datatype {
            DataType::Uint8 => put!(u8),
            DataType::Uint16 => put!(u16),
            DataType::Uint32 => put!(u32),
            DataType::Uint64 => put!(u64),
            DataType::Int8 => put!(i8),
            DataType::Int16 => put!(i16),
            DataType::Int32 => put!(i32),
            DataType::Int64 => put!(i64),
            DataType::Fp16 | DataType::Fp32 | DataType::Fp64 | DataType::Bf16 => {
                return self.float(v as f64, shown);
            }
            DataType::Bool | DataType::Bytes => return Err(self.fail(shown)),
        }
        Ok(())
    }

    fn float<E: de::Error>(&mut self, v: f64, shown: fmt::Arguments<'_>) -> Result<(), E> {
        // Out of range means "rounds to infinity in the datatype": the
        // shortest text of FP32's or BF16's largest value (as the response
        // encoder writes it) reads back a hair above that value as an f64,
        // and must still decode to it.
        let range = |finite: bool| -> Result<(), E> {
            if finite {
                Ok(())
            } else {
                Err(self.fail(format_args!("{shown}, out of range for {}", self.datatype)))
            }
        };
        match self.datatype {
            DataType::Fp16 => {
                let x = f16::from_f64(v);
                range(x.is_finite())?;
                self.fixed.extend_from_slice(&x.to_le_bytes());
            }
            DataType::Bf16 => {
                let x = bf16::from_f64(v);
                range(x.is_finite())?;
                self.fixed.extend_from_slice(&x.to_le_bytes());
            }
            DataType::Fp32 => {
                let x = v as f32;
                range(x.is_finite())?;
                self.fixed.extend_from_slice(&x.to_le_bytes());
            }
            DataType::Fp64 => self.fixed.extend_from_slice(&v.to_le_bytes()),
            DataType::Bool | DataType::Bytes => return Err(self.fail(shown)),
            _ => {
                // Integer data: accept integral values only.
                if v.fract() != 0.0 || !v.is_finite() {
                    return Err(self.fail(format_args!("{shown}, a fraction")));
                }
                return self.int(v as i128, shown);
            }
        }
        Ok(())
    }
}

fn expectation(datatype: DataType) -> String {
    match datatype {
        DataType::Bool => "true or false (BOOL)".to_string(),
        DataType::Bytes => "a string (BYTES)".to_string(),
        DataType::Fp16 | DataType::Fp32 | DataType::Fp64 | DataType::Bf16 => {
            format!("a number ({datatype})")
        }
        _ => format!("an integer ({datatype})"),
    }
}

impl<'de> DeserializeSeed<'de> for &mut Sink<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for &mut Sink<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} elements, flat or nested in arrays", self.datatype)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(&mut *self)?.is_some() {}
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.admit()?;
        if self.datatype != DataType::Bool {
            return Err(self.fail(format_args!("{v}")));
        }
        self.fixed.push(u8::from(v));
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.admit()?;
        self.int(i128::from(v), format_args!("{v}"))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.admit()?;
        self.int(i128::from(v), format_args!("{v}"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.admit()?;
        self.float(v, format_args!("{v}"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.admit()?;
        if self.datatype != DataType::Bytes {
            let shown: String = v.chars().take(32).collect();
            return Err(self.fail(format_args!("the string {shown:?}")));
        }
        self.strings.push(Bytes::copy_from_slice(v.as_bytes()));
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.admit()?;
        Err(self.fail(format_args!("null")))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _map: A) -> Result<(), A::Error> {
        self.admit()?;
        Err(self.fail(format_args!("an object")))
    }
}

/// A JSON parameter as u64 (accepting integral numbers only).
pub fn param_u64(params: Option<&Map<String, Value>>, key: &str) -> Result<Option<u64>> {
    match params.and_then(|p| p.get(key)) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            Error::invalid(format!(
                "parameter '{key}' must be a non-negative integer, got {v}"
            ))
        }),
    }
}

/// A JSON parameter as bool.
pub fn param_bool(params: Option<&Map<String, Value>>, key: &str) -> Result<Option<bool>> {
    match params.and_then(|p| p.get(key)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(Error::invalid(format!(
            "parameter '{key}' must be true or false, got {v}"
        ))),
    }
}

// === encoding ===

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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;

    fn decode(datatype: &str, shape: &[i64], data: &str) -> Result<Tensor> {
        let body = format!(
            r#"{{"inputs":[{{"name":"x","shape":{shape:?},"datatype":"{datatype}","data":{data}}}]}}"#
        );
        let req: RequestJson<'_> =
            serde_json::from_str(&body).map_err(|e| Error::invalid(e.to_string()))?;
        decode_input(&req.inputs[0], 1 << 20)
    }

    fn err(datatype: &str, shape: &[i64], data: &str) -> String {
        decode(datatype, shape, data).unwrap_err().to_string()
    }

    #[test]
    fn flat_and_nested_data_decode_alike() {
        let flat = decode("FP32", &[2, 2], "[1, 2, 3.5, -4]").unwrap();
        let nested = decode("FP32", &[2, 2], "[[1, 2], [3.5, -4]]").unwrap();
        assert_eq!(flat, nested);
        let TensorData::Fixed(b) = flat.data else {
            panic!()
        };
        let v: Vec<f32> = b
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(v, [1.0, 2.0, 3.5, -4.0]);
    }

    #[test]
    fn every_dtype_decodes() {
        for (dt, data) in [
            ("BOOL", "[true, false]"),
            ("UINT8", "[0, 255]"),
            ("UINT16", "[0, 65535]"),
            ("UINT32", "[0, 4294967295]"),
            ("UINT64", "[0, 18446744073709551615]"),
            ("INT8", "[-128, 127]"),
            ("INT16", "[-32768, 32767]"),
            ("INT32", "[-2147483648, 2147483647]"),
            ("INT64", "[-9223372036854775808, 9223372036854775807]"),
            ("FP16", "[1.5, -65504]"),
            ("FP32", "[1e-3, 3]"),
            ("FP64", "[1e300, -2]"),
            ("BF16", "[1.5, -2]"),
            ("BYTES", r#"["a", "βγ"]"#),
        ] {
            let t = decode(dt, &[2], data).unwrap_or_else(|e| panic!("{dt}: {e}"));
            assert_eq!(t.data.len(t.datatype), 2, "{dt}");
        }
    }

    #[test]
    fn wrong_kinds_name_input_element_and_value() {
        assert_eq!(
            err("FP32", &[2], r#"[1, "a"]"#),
            "input 'x': element 1 must be a number (FP32), got the string \"a\""
        );
        assert_eq!(
            err("INT32", &[2], "[1, 1.5]"),
            "input 'x': element 1 must be an integer (INT32), got 1.5, a fraction"
        );
        assert_eq!(
            err("UINT8", &[1], "[256]"),
            "input 'x': element 0 must be an integer (UINT8), got 256, out of range for UINT8"
        );
        assert_eq!(
            err("INT8", &[1], "[-129]"),
            "input 'x': element 0 must be an integer (INT8), got -129, out of range for INT8"
        );
        assert_eq!(
            err("BOOL", &[1], "[1]"),
            "input 'x': element 0 must be true or false (BOOL), got 1"
        );
        assert_eq!(
            err("BYTES", &[1], "[1]"),
            "input 'x': element 0 must be a string (BYTES), got 1"
        );
        assert_eq!(
            err("FP16", &[1], "[70000]"),
            "input 'x': element 0 must be a number (FP16), got 70000, out of range for FP16"
        );
        assert_eq!(
            err("FP32", &[1], "[null]"),
            "input 'x': element 0 must be a number (FP32), got null"
        );
    }

    #[test]
    fn counts_and_shapes_are_checked_before_allocation() {
        assert_eq!(
            err("FP32", &[2, 2], "[1, 2, 3]"),
            "input 'x': shape [2, 2] needs 4 elements, got 3"
        );
        assert_eq!(
            err("FP32", &[1], "[1, 2]"),
            "input 'x': data has more than the 1 elements its shape declares"
        );
        assert!(err("FP32", &[-1, 2], "[]").contains("negative dimension"));
        assert!(err("FP32", &[i64::MAX, i64::MAX], "[]").contains("overflows the element count"));
        assert!(err("FP32", &[1 << 21], "[]").contains("limit of 1048576"));
        assert!(err("FLOAT32", &[1], "[1]").contains("unknown datatype 'FLOAT32'"));
    }

    /// Fuzzing regression (fuzz target `json_request`, round trip): serde_json's
    /// default float parser read this shortest representation one ULP high;
    /// `float_roundtrip` makes FP64 JSON bit-exact, as Python and Rust print it.
    #[test]
    fn fuzz_regression_fp64_parses_exactly() {
        let t = decode("FP64", &[1], "[2.1111111000000014]").unwrap();
        let TensorData::Fixed(b) = t.data else {
            panic!("FP64 is fixed-size")
        };
        assert_eq!(b[..], 2.1111111000000014f64.to_le_bytes());
    }

    /// Fuzzing regression (fuzz target `json_request`, whose
    /// `-malloc_limit_mb=128` reports it as out-of-memory): a 70-byte body
    /// whose shape declares 2^26 FP64 elements made the decoder reserve
    /// 512 MiB before reading `data`. The reservation is now bounded by the data's
    /// length; with a limit that admits the shape (2^40 elements, 8 TiB) the
    /// old code aborted on the allocation, the new one rejects the body.
    #[test]
    fn fuzz_regression_huge_shape_reserves_by_data_not_shape() {
        let input: &[u8] =
            br#"{"inputs":[{"name":"x","shape":[67108864],"datatype":"FP64","data":[]}]}"#;
        let req: RequestJson<'_> = serde_json::from_slice(input).unwrap();
        let err = decode_input(&req.inputs[0], 64 << 20).unwrap_err();
        assert_eq!(
            err.to_string(),
            "input 'x': shape [67108864] needs 67108864 elements, got 0"
        );
        let input: &[u8] =
            br#"{"inputs":[{"name":"x","shape":[1099511627776],"datatype":"FP64","data":[1]}]}"#;
        let req: RequestJson<'_> = serde_json::from_slice(input).unwrap();
        let err = decode_input(&req.inputs[0], usize::MAX).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(
            err.to_string()
                .contains("needs 1099511627776 elements, got 1"),
            "{err}"
        );
    }

    #[test]
    fn encode_round_trips() {
        let t = decode("FP16", &[3], "[1.5, -2, 0.25]").unwrap();
        let json = serde_json::to_string(&DataJson {
            datatype: t.datatype,
            data: &t.data,
        })
        .unwrap();
        assert_eq!(json, "[1.5,-2.0,0.25]");
        let t = decode("BOOL", &[2], "[true, false]").unwrap();
        let json = serde_json::to_string(&DataJson {
            datatype: t.datatype,
            data: &t.data,
        })
        .unwrap();
        assert_eq!(json, "[true,false]");
    }

    /// `decode` with the serde path alone: what every answer was before the
    /// fast path.
    fn decode_serde(datatype: &str, shape: &[i64], data: &str) -> Result<Tensor> {
        FAST.with(|f| f.set(false));
        let r = decode(datatype, shape, data);
        FAST.with(|f| f.set(true));
        r
    }

    const NUMERIC: [&str; 12] = [
        "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32",
        "FP64", "BF16",
    ];

    /// Both paths on the same text: the same tensor, or the same message.
    fn same_as_serde(datatype: &str, n: usize, data: &str) -> Result<(), TestCaseError> {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let fast = decode(datatype, &[n], data).map_err(|e| e.to_string());
        let slow = decode_serde(datatype, &[n], data).map_err(|e| e.to_string());
        prop_assert_eq!(fast, slow, "{} {}", datatype, data);
        Ok(())
    }

    /// One element as a client might write it: numbers in many spellings,
    /// and malformed or non-numeric tokens.
    fn element() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<f64>().prop_map(|v| format!("{v}")),
            any::<f64>().prop_map(|v| format!("{v:e}")),
            any::<f32>().prop_map(|v| format!("{v}")),
            any::<f32>().prop_map(|v| format!("{:?}", f64::from(v))),
            any::<i64>().prop_map(|v| v.to_string()),
            any::<u64>().prop_map(|v| v.to_string()),
            (-300i32..300).prop_map(|v| v.to_string()),
            (-1000i64..1000, 0u32..4, -400i32..400).prop_map(|(m, d, e)| format!("{m}.{d}e{e}")),
            "-?[0-9]{1,3}(\\.[0-9]{0,3})?([eE][+-]?[0-9]{0,3})?",
            "[-+0-9.eE]{1,6}",
            prop::sample::select(vec![
                "-0",
                "-0.0",
                "0.0",
                "0",
                "1e-400",
                "-1e-400",
                "1e400",
                "1E+2",
                "1e-0",
                "1e99999999999999999999",
                "18446744073709551616",
                "-9223372036854775809",
                "NaN",
                "Infinity",
                "-Infinity",
                "null",
                "true",
                "\"1\"",
                "{}",
                "01",
                "1.",
                ".5",
                "+1",
                "0x10",
                "1.5.3",
                "--1",
                "1e",
                "1e+",
                "[1]",
                "[]",
            ])
            .prop_map(str::to_string),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any data text: the fast path answers exactly as the serde path,
        /// malformed and out-of-range numbers included.
        #[test]
        fn fast_path_answers_as_serde(
            dt in prop::sample::select(NUMERIC.to_vec()),
            elements in prop::collection::vec(element(), 0..6),
            nest in any::<bool>(),
            extra in 0usize..2,
        ) {
            let data = if nest && elements.len() >= 2 {
                let (a, b) = elements.split_at(elements.len() / 2);
                format!("[[{}], [{}]]", a.join(","), b.join(" , "))
            } else {
                format!("[{}]", elements.join(", "))
            };
            same_as_serde(dt, elements.len(), &data)?;
            // Shapes that do not match the data: the same count messages.
            same_as_serde(dt, elements.len() + extra + 1, &data)?;
            if !elements.is_empty() {
                same_as_serde(dt, elements.len() - 1, &data)?;
            }
        }

        /// Arbitrary finite floats encode and decode bit for bit.
        #[test]
        fn floats_round_trip_exactly(
            v32 in prop::collection::vec(any::<f32>().prop_filter("finite", |v| v.is_finite()), 1..20),
            v64 in prop::collection::vec(any::<f64>().prop_filter("finite", |v| v.is_finite()), 1..20),
            h in prop::collection::vec(any::<u16>(), 1..20),
        ) {
            let bytes32: Vec<u8> = v32.iter().flat_map(|v| v.to_le_bytes()).collect();
            let bytes64: Vec<u8> = v64.iter().flat_map(|v| v.to_le_bytes()).collect();
            let f16s: Vec<u8> = h.iter().map(|&b| f16::from_bits(b)).filter(|v| v.is_finite())
                .flat_map(|v| v.to_le_bytes()).collect();
            let bf16s: Vec<u8> = h.iter().map(|&b| bf16::from_bits(b)).filter(|v| v.is_finite())
                .flat_map(|v| v.to_le_bytes()).collect();
            for (dt, bytes) in [("FP32", bytes32), ("FP64", bytes64), ("FP16", f16s), ("BF16", bf16s)] {
                round_trip(dt, bytes)?;
            }
        }

        /// Arbitrary integers of every integer datatype round-trip exactly.
        #[test]
        fn integers_round_trip_exactly(raw in prop::collection::vec(any::<u8>(), 0..64)) {
            for dt in ["UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"] {
                let size = parse_datatype("x", dt).unwrap().size().unwrap();
                let whole = raw.len() / size * size;
                round_trip(dt, raw[..whole].to_vec())?;
            }
        }
    }

    /// Packed `bytes` of `dt` → JSON (the response encoder) → both decoders →
    /// the same bytes.
    fn round_trip(dt: &str, bytes: Vec<u8>) -> Result<(), TestCaseError> {
        let datatype = parse_datatype("x", dt).unwrap();
        let n = bytes.len() / datatype.size().unwrap();
        let data = TensorData::Fixed(Bytes::from(bytes));
        let json = serde_json::to_string(&DataJson {
            datatype,
            data: &data,
        })
        .unwrap();
        let n = i64::try_from(n).unwrap();
        let fast = decode(dt, &[n], &json)
            .map_err(|e| TestCaseError::fail(format!("{dt} {json}: {e}")))?;
        prop_assert_eq!(&fast.data, &data, "{} {}", dt, json);
        let slow = decode_serde(dt, &[n], &json).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&slow.data, &data, "{} {}", dt, json);
        Ok(())
    }

    /// Plain numeric arrays take the fast path; anything else defers.
    #[test]
    fn fast_path_takes_plain_numbers_only() {
        let fast = |dt: &str, n: usize, data: &str| {
            let datatype = parse_datatype("x", dt).unwrap();
            let mut sink = Sink {
                name: "x",
                datatype,
                expected: n,
                seen: 0,
                fixed: Vec::new(),
                strings: Vec::new(),
            };
            numbers_fast(data, &mut sink).map(|()| sink.fixed)
        };
        let v = fast("FP32", 4, " [[0.1, -2e3],\n [3, 4.5E-1]] ").unwrap();
        assert_eq!(v.len(), 16);
        assert!(fast("INT64", 2, "[-5, 18]").is_some());
        for (dt, n, data) in [
            ("FP32", 1, "[\"1\"]"),
            ("FP32", 1, "[null]"),
            ("FP32", 1, "1"),
            ("FP32", 1, "[1] x"),
            ("FP32", 1, "[1, 2]"),
            ("INT8", 1, "[300]"),
            ("INT8", 1, "[-0]"),
            ("UINT64", 1, "[18446744073709551616]"),
            ("BOOL", 1, "[1]"),
            ("FP32", 1, "[1e999]"),
        ] {
            assert!(fast(dt, n, data).is_none(), "{dt} {data}");
        }
    }

    /// Malformed numbers: the same 400 messages as before the fast path.
    /// (Most are refused when the request body is parsed, before `data` is
    /// decoded; the rest by the serde path, which the fast path defers to.)
    #[test]
    fn malformed_numbers_keep_their_messages() {
        for (dt, data, msg) in [
            ("FP32", "[01]", "invalid number"),
            ("FP32", "[1.]", "invalid number"),
            ("FP32", "[1e]", "invalid number"),
            ("FP32", "[-]", "invalid number"),
            ("FP32", "[.5]", "expected value"),
            ("FP32", "[+1]", "expected value"),
            ("FP32", "[1e400]", "number out of range"),
            ("FP32", "[NaN]", "expected value"),
            ("FP32", "[1,]", "expected value"),
            (
                "FP32",
                "[3.5e38]",
                "input 'x': element 0 must be a number (FP32), got 350000000000000000000000000000000000000, out of range for FP32",
            ),
            (
                "FP16",
                "[65520]",
                "input 'x': element 0 must be a number (FP16), got 65520, out of range for FP16",
            ),
            (
                "INT8",
                "[1e3]",
                "input 'x': element 0 must be an integer (INT8), got 1000, out of range for INT8",
            ),
            (
                "UINT64",
                "[18446744073709551616]",
                "input 'x': element 0 must be an integer (UINT64), got 18446744073709552000, out of range for UINT64",
            ),
            (
                "INT32",
                "[0.5]",
                "input 'x': element 0 must be an integer (INT32), got 0.5, a fraction",
            ),
        ] {
            let fast = decode(dt, &[1], data).map_err(|e| e.to_string());
            assert_eq!(
                fast,
                decode_serde(dt, &[1], data).map_err(|e| e.to_string()),
                "{data}"
            );
            let got = fast.unwrap_err();
            assert!(got.starts_with(msg), "{data}: {got}");
        }
        // `-0` reads as the float -0.0, which is 0 in integer data.
        assert_eq!(
            decode("UINT8", &[1], "[-0]").unwrap().data,
            decode_serde("UINT8", &[1], "[-0]").unwrap().data
        );
    }
}
