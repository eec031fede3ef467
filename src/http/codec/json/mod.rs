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
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use std::fmt;

mod encode;
pub use encode::DataJson;
#[cfg(test)]
mod tests;

/// A v2 inference request body (or the JSON header of a binary one).
#[derive(Debug, Deserialize)]
pub struct RequestJson<'a> {
    #[serde(default)]
    pub(crate) id: Option<String>,
    #[serde(default)]
    pub parameters: Option<Parameters>,
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
    pub parameters: Option<Parameters>,
    #[serde(default, borrow)]
    pub data: Option<&'a RawValue>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct OutputRequestJson {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) parameters: Option<Parameters>,
}

/// The parameter keys the server reads from a request, an input or an
/// output.
const KNOWN_PARAMETERS: [&str; 6] = [
    "binary_data",
    "binary_data_output",
    "binary_data_size",
    "classification",
    "priority",
    "timeout",
];

/// A `parameters` object: the values of the keys the server reads (the last
/// one where a key repeats, as a JSON map keeps it). Other keys are parsed
/// as JSON and skipped, so a request pays no allocation for them.
#[derive(Debug, Default)]
pub struct Parameters(Vec<(&'static str, Value)>);

impl Parameters {
    /// The value of `key`, if sent.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().rev().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

impl<'de> Deserialize<'de> for Parameters {
    fn deserialize<D: de::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_map(ParametersVisitor)
    }
}

struct ParametersVisitor;

impl<'de> Visitor<'de> for ParametersVisitor {
    type Value = Parameters;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map")
    }

    fn visit_map<A: de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Parameters, A::Error> {
        let mut known = Vec::new();
        while let Some(key) = map.next_key::<KnownKey>()? {
            match key.0 {
                Some(key) => known.push((key, map.next_value::<Value>()?)),
                None => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(Parameters(known))
    }
}

/// A parameter key: one of [`KNOWN_PARAMETERS`], or `None` for any other
/// (read without a copy).
struct KnownKey(Option<&'static str>);

impl<'de> Deserialize<'de> for KnownKey {
    fn deserialize<D: de::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = KnownKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a parameter name")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> std::result::Result<KnownKey, E> {
                Ok(KnownKey(
                    KNOWN_PARAMETERS.iter().copied().find(|k| *k == key),
                ))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
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
pub fn param_u64(params: Option<&Parameters>, key: &str) -> Result<Option<u64>> {
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
pub fn param_bool(params: Option<&Parameters>, key: &str) -> Result<Option<bool>> {
    match params.and_then(|p| p.get(key)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(Error::invalid(format!(
            "parameter '{key}' must be true or false, got {v}"
        ))),
    }
}
