//! The prost codec, with a bound on what an inference request may decode to.
//!
//! prost builds the whole message before any of our limits can look at it,
//! and some encodings grow a lot on the way: an empty `InferInputTensor` is 2
//! bytes on the wire and 312 in memory, a packed INT64 zero 1 byte and 8, a
//! `bytes_contents` element 2 bytes and 32. A 64 MiB message of empty inputs
//! would decode to about 10 GiB. So before prost runs on a
//! `ModelInferRequest` (unary or on a stream), [`decoded_size`] walks its wire
//! format without allocating and adds up what decoding will allocate; over
//! either bound the call fails with `RESOURCE_EXHAUSTED`:
//!
//! - `--max-request-tensor-bytes` (256 MiB by default);
//! - [`GROWTH`] times the message's wire size, plus [`GROWTH_FLOOR`]. Budgets
//!   in front of decoding (`--max-inflight-body-bytes`, the message size)
//!   count wire bytes, so this keeps what they admit within a fixed factor
//!   of what they count. The worst legitimate growth is a BYTES tensor of
//!   empty strings (2 bytes each on the wire, a 32-byte `Bytes` decoded).
//!
//! tonic builds codecs with `Default` inside the generated service, so the
//! bound is process-wide: the largest `--max-request-tensor-bytes` of any
//! server in the process (one in production). Every other message type
//! decodes exactly as with `tonic_prost::ProstCodec`.

use super::pb::ModelInferRequest;
use super::pb::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use prost::encoding::{WireType, decode_key, decode_varint};
use std::any::TypeId;
use std::mem::size_of;
use std::sync::atomic::{AtomicUsize, Ordering};
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Most a message may grow on decoding, as a factor of its wire size...
pub(crate) const GROWTH: usize = 16;
/// ... plus this, so that small requests with a few inputs always pass.
pub(crate) const GROWTH_FLOOR: usize = 1 << 20;

/// The largest decoded size of a request; 0 until a server sets it.
static DECODED_LIMIT: AtomicUsize = AtomicUsize::new(0);

/// Raises the process-wide bound to at least `bytes`.
pub(crate) fn allow_decoded_bytes(bytes: usize) {
    DECODED_LIMIT.fetch_max(bytes, Ordering::Relaxed);
}

fn decoded_limit() -> usize {
    match DECODED_LIMIT.load(Ordering::Relaxed) {
        0 => crate::service::Limits::default().max_request_bytes,
        n => n,
    }
}

/// `tonic_prost::ProstCodec`, with [`BoundedDecoder`] for requests.
#[derive(Debug, Clone)]
pub(crate) struct BoundedCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for BoundedCodec<T, U> {
    fn default() -> Self {
        Self(ProstCodec::default())
    }
}

impl<T, U> Codec for BoundedCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = BoundedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        BoundedDecoder(self.0.decoder())
    }
}

/// Checks a `ModelInferRequest`'s decoded size before prost decodes it.
#[derive(Debug)]
pub(crate) struct BoundedDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default + 'static> Decoder for BoundedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        if TypeId::of::<U>() == TypeId::of::<ModelInferRequest>() {
            let message = bytes::Buf::chunk(buf);
            // DecodeBuf is one contiguous buffer; were it not, decode as is.
            if message.len() == bytes::Buf::remaining(buf) {
                if let Some(refused) = check(message) {
                    return Err(refused);
                }
            }
        }
        self.0.decode(buf)
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// The refusal of a `ModelInferRequest` that would decode to too much.
fn check(message: &[u8]) -> Option<Status> {
    let size = decoded_size(message)?;
    let limit = decoded_limit();
    let growth = message
        .len()
        .saturating_mul(GROWTH)
        .saturating_add(GROWTH_FLOOR);
    let over = if size > limit {
        format!("more than the limit of {limit} (--max-request-tensor-bytes)")
    } else if size > growth {
        format!("more than {GROWTH} times its size plus 1 MiB")
    } else {
        return None;
    };
    Some(Status::resource_exhausted(format!(
        "the request message ({} bytes) would take about {size} bytes once decoded, {over}; send large tensors as raw_input_contents",
        message.len()
    )))
}

/// One field's value on the wire.
enum Value<'a> {
    /// A length-delimited payload.
    Bytes(&'a [u8]),
    /// A varint.
    Varint,
    /// A fixed 32- or 64-bit value, or a group (skipped).
    Other,
}

/// Calls `each` with every field of the message in `buf`. `None` when the
/// bytes are not a well-formed message: prost then rejects it too (this walk
/// accepts everything prost does, so a message it cannot size never decodes).
fn fields<'a>(mut buf: &'a [u8], mut each: impl FnMut(u32, Value<'a>) -> Option<()>) -> Option<()> {
    while !buf.is_empty() {
        let (tag, wire) = decode_key(&mut buf).ok()?;
        let value = match wire {
            WireType::LengthDelimited => Value::Bytes(take_len(&mut buf)?),
            WireType::Varint => {
                decode_varint(&mut buf).ok()?;
                Value::Varint
            }
            WireType::ThirtyTwoBit => {
                buf = buf.get(4..)?;
                Value::Other
            }
            WireType::SixtyFourBit => {
                buf = buf.get(8..)?;
                Value::Other
            }
            WireType::StartGroup => {
                skip_group(&mut buf)?;
                Value::Other
            }
            WireType::EndGroup => return None,
        };
        each(tag, value)?;
    }
    Some(())
}

fn take_len<'a>(buf: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::try_from(decode_varint(buf).ok()?).ok()?;
    let value = buf.get(..len)?;
    *buf = buf.get(len..)?;
    Some(value)
}

/// Skips a group (deprecated, but valid wire format that prost skips when
/// the field is unknown). Iterative, so no nesting can exhaust the stack,
/// and with no depth limit of its own: prost's (100) is the stricter one.
fn skip_group(buf: &mut &[u8]) -> Option<()> {
    let mut depth = 1usize;
    while depth > 0 {
        let (_, wire) = decode_key(buf).ok()?;
        match wire {
            WireType::StartGroup => depth += 1,
            WireType::EndGroup => depth -= 1,
            WireType::Varint => {
                decode_varint(buf).ok()?;
            }
            WireType::ThirtyTwoBit => *buf = buf.get(4..)?,
            WireType::SixtyFourBit => *buf = buf.get(8..)?,
            WireType::LengthDelimited => {
                take_len(buf)?;
            }
        }
    }
    Some(())
}

/// Elements in a packed run of varints (each ends with a byte below 0x80).
fn varints(packed: &[u8]) -> usize {
    packed.iter().filter(|&&b| b < 0x80).count()
}

/// A map entry of `parameters`: the key and value structs, the table's
/// spare capacity (about as much again), plus the copied strings.
const MAP_ENTRY: usize = 2 * (size_of::<String>() + size_of::<super::pb::InferParameter>() + 8);

/// An upper bound of the bytes prost allocates to decode the
/// `ModelInferRequest` in `message` (strings copied, tensors in `bytes`
/// fields sliced, repeated fields at their element size), or `None` when the
/// message is malformed.
pub fn decoded_size(message: &[u8]) -> Option<usize> {
    let mut total = size_of::<ModelInferRequest>();
    fields(message, |field, value| {
        total = total.saturating_add(match (field, value) {
            (1..=3, Value::Bytes(b)) => b.len(),
            (4, Value::Bytes(b)) => MAP_ENTRY + b.len(),
            (5, Value::Bytes(b)) => size_of::<InferInputTensor>().saturating_add(input(b)?),
            (6, Value::Bytes(b)) => {
                size_of::<InferRequestedOutputTensor>().saturating_add(output(b)?)
            }
            (7, Value::Bytes(_)) => size_of::<bytes::Bytes>(),
            (1..=7, _) => return None, // a known field with the wrong wire type
            _ => 0,                    // unknown: prost skips it
        });
        Some(())
    })?;
    Some(total)
}

fn input(message: &[u8]) -> Option<usize> {
    let mut total = 0usize;
    fields(message, |field, value| {
        total = total.saturating_add(match (field, value) {
            (1 | 2, Value::Bytes(b)) => b.len(),
            (3, Value::Bytes(b)) => 8 * varints(b),
            (3, Value::Varint) => 8,
            (4, Value::Bytes(b)) => MAP_ENTRY + b.len(),
            (5, Value::Bytes(b)) => contents(b)?,
            (1..=5, _) => return None,
            _ => 0,
        });
        Some(())
    })?;
    Some(total)
}

fn output(message: &[u8]) -> Option<usize> {
    let mut total = 0usize;
    fields(message, |field, value| {
        total = total.saturating_add(match (field, value) {
            (1, Value::Bytes(b)) => b.len(),
            (2, Value::Bytes(b)) => MAP_ENTRY + b.len(),
            (1 | 2, _) => return None,
            _ => 0,
        });
        Some(())
    })?;
    Some(total)
}

/// `InferTensorContents`: packed or unpacked repeated fields.
fn contents(message: &[u8]) -> Option<usize> {
    let mut total = 0usize;
    fields(message, |field, value| {
        // Bytes in memory of one element of each field's type.
        let size = match field {
            1 => 1, // bool
            2 | 4 | 6 => 4,
            3 | 5 | 7 => 8,
            8 => size_of::<bytes::Bytes>(),
            _ => return Some(()),
        };
        total = total.saturating_add(match (field, value) {
            (8, Value::Bytes(_)) => size,
            (8, _) => return None,
            (6 | 7, Value::Bytes(b)) => b.len(), // packed fixed-size: as on the wire
            (_, Value::Bytes(b)) => size * varints(b),
            (_, _) => size,
        });
        Some(())
    })?;
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::pb::{InferParameter, InferTensorContents, infer_parameter};
    use prost::Message;
    use std::collections::HashMap;

    fn tensor(contents: InferTensorContents) -> InferInputTensor {
        InferInputTensor {
            name: "x".into(),
            datatype: "INT64".into(),
            shape: vec![1, 3],
            contents: Some(contents),
            ..Default::default()
        }
    }

    #[test]
    fn ordinary_requests_are_small() {
        let request = ModelInferRequest {
            model_name: "iris".into(),
            inputs: vec![tensor(InferTensorContents {
                fp32_contents: vec![1.0; 1000],
                ..Default::default()
            })],
            raw_input_contents: vec![bytes::Bytes::from(vec![0u8; 1 << 20])],
            ..Default::default()
        };
        let wire = request.encode_to_vec();
        let size = decoded_size(&wire).unwrap_or(usize::MAX);
        assert!(size < 8000, "{size}");
    }

    #[test]
    fn amplifying_encodings_are_counted() {
        // 1 000 empty inputs: 2 000 bytes on the wire.
        let empty = ModelInferRequest {
            inputs: vec![InferInputTensor::default(); 1000],
            ..Default::default()
        };
        let wire = empty.encode_to_vec();
        assert_eq!(wire.len(), 2000);
        let size = decoded_size(&wire).unwrap_or(0);
        assert!(size >= 1000 * size_of::<InferInputTensor>(), "{size}");

        // Packed INT64 zeros: 1 byte each on the wire, 8 decoded.
        let zeros = ModelInferRequest {
            inputs: vec![tensor(InferTensorContents {
                int64_contents: vec![0; 10_000],
                ..Default::default()
            })],
            ..Default::default()
        };
        let size = decoded_size(&zeros.encode_to_vec()).unwrap_or(0);
        assert!(size >= 80_000, "{size}");

        // Empty strings: 2 bytes each on the wire, a `Bytes` decoded.
        let strings = ModelInferRequest {
            inputs: vec![tensor(InferTensorContents {
                bytes_contents: vec![bytes::Bytes::new(); 10_000],
                ..Default::default()
            })],
            ..Default::default()
        };
        let size = decoded_size(&strings.encode_to_vec()).unwrap_or(0);
        assert!(size >= 10_000 * size_of::<bytes::Bytes>(), "{size}");

        // Parameters, on the request and on an input.
        let params: HashMap<String, InferParameter> = (0..100)
            .map(|i| {
                let value = InferParameter {
                    parameter_choice: Some(infer_parameter::ParameterChoice::BoolParam(true)),
                };
                (format!("k{i}"), value)
            })
            .collect();
        let with_params = ModelInferRequest {
            parameters: params.clone(),
            ..Default::default()
        };
        let size = decoded_size(&with_params.encode_to_vec()).unwrap_or(0);
        assert!(size >= 100 * MAP_ENTRY, "{size}");
    }

    #[test]
    fn the_estimate_bounds_what_prost_allocates() {
        // Structs and element arrays decoded, measured, against the estimate.
        let request = ModelInferRequest {
            model_name: "m".repeat(100),
            inputs: vec![
                tensor(InferTensorContents {
                    int64_contents: vec![1; 500],
                    bytes_contents: vec![bytes::Bytes::from_static(b"ab"); 50],
                    ..Default::default()
                });
                20
            ],
            outputs: vec![InferRequestedOutputTensor::default(); 10],
            ..Default::default()
        };
        let decoded = ModelInferRequest::decode(request.encode_to_vec().as_slice());
        let Ok(decoded) = decoded else {
            panic!("does not decode")
        };
        let contents = |t: &InferInputTensor| {
            t.contents.as_ref().map_or(0, |c| {
                c.int64_contents.len() * 8 + c.bytes_contents.len() * size_of::<bytes::Bytes>()
            })
        };
        let allocated = size_of::<ModelInferRequest>()
            + decoded.model_name.len()
            + decoded.inputs.len() * size_of::<InferInputTensor>()
            + decoded
                .inputs
                .iter()
                .map(|t| t.name.len() + t.datatype.len() + t.shape.len() * 8 + contents(t))
                .sum::<usize>()
            + decoded.outputs.len() * size_of::<InferRequestedOutputTensor>();
        let estimate = decoded_size(&request.encode_to_vec()).unwrap_or(0);
        assert!(estimate >= allocated, "{estimate} < {allocated}");
        assert!(estimate < allocated * 2, "{estimate} vs {allocated}");
    }

    #[test]
    fn growth_past_sixteen_times_is_refused_but_legitimate_worst_cases_pass() {
        // 100 000 empty inputs (200 KB): 31 MB decoded, 150x.
        let empty = ModelInferRequest {
            inputs: vec![InferInputTensor::default(); 100_000],
            ..Default::default()
        };
        let refused = check(&empty.encode_to_vec()).map(|s| s.message().to_string());
        assert!(
            refused.as_deref().is_some_and(|m| m.contains("16 times")),
            "{refused:?}"
        );
        // A million empty strings (16x) and INT64 zeros (8x) pass.
        for contents in [
            InferTensorContents {
                bytes_contents: vec![bytes::Bytes::new(); 1_000_000],
                ..Default::default()
            },
            InferTensorContents {
                int64_contents: vec![0; 1_000_000],
                ..Default::default()
            },
        ] {
            let request = ModelInferRequest {
                inputs: vec![tensor(contents)],
                ..Default::default()
            };
            let wire = request.encode_to_vec();
            assert!(check(&wire).is_none(), "{}", wire.len());
        }
    }

    #[test]
    fn malformed_or_hostile_wire_is_left_to_prost_or_counted() {
        // Truncated, a known field with the wrong wire type: prost's to reject.
        assert_eq!(decoded_size(&[0x2a, 0x05, 0x00]), None);
        assert_eq!(decoded_size(&[0x28, 0x01]), None);
        // Unknown fields and groups are skipped; nesting is walked without
        // recursion, so 64 Ki unterminated groups are just malformed.
        assert!(decoded_size(&[0x48, 0x01, 0x53, 0x08, 0x01, 0x54]).is_some());
        let deep: Vec<u8> = std::iter::repeat_n(0x53u8, 1 << 16).collect();
        assert_eq!(decoded_size(&deep), None);
        // Nothing, or an empty message: just the struct.
        assert_eq!(decoded_size(&[]), Some(size_of::<ModelInferRequest>()));
    }
}
