//! Triton's HTTP binary tensor data extension.
//!
//! A request body is a JSON header followed by the raw little-endian bytes of
//! each input, in input order; the header length travels in the
//! `Inference-Header-Content-Length` HTTP header and every input carries
//! `"parameters": {"binary_data_size": N}`. Outputs are requested in binary
//! with `"parameters": {"binary_data": true}`. A response with the same HTTP
//! header is split the same way; outputs with `binary_data_size` take their
//! bytes from the tail, in output order.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::tensor::{DataType, InputTensor, TensorData, decode_bytes_elements, element_count};

/// The HTTP header carrying the JSON header length.
pub const HEADER_LENGTH: &str = "Inference-Header-Content-Length";

/// An encoded binary-extension request body.
#[derive(Debug, Clone)]
pub struct BinaryBody {
    /// JSON header followed by the raw tensor bytes.
    pub body: Bytes,
    /// Length of the JSON header (value of [`HEADER_LENGTH`]).
    pub header_len: usize,
}

/// Encodes an inference request with binary inputs. Outputs in `outputs` are
/// requested as binary; when `outputs` is empty, all outputs are requested in
/// binary with the request-level `binary_data_output` parameter.
pub fn encode_request(inputs: &[InputTensor], outputs: &[String]) -> Result<BinaryBody> {
    let raws: Vec<Vec<u8>> = inputs.iter().map(|t| t.data.to_raw()).collect();
    let json_inputs: Vec<Value> = inputs
        .iter()
        .zip(&raws)
        .map(|(t, raw)| {
            json!({
                "name": t.name,
                "shape": t.shape,
                "datatype": t.datatype().as_str(),
                "parameters": {"binary_data_size": raw.len()},
            })
        })
        .collect();
    let mut header = Map::new();
    header.insert("inputs".into(), Value::Array(json_inputs));
    if outputs.is_empty() {
        header.insert("parameters".into(), json!({"binary_data_output": true}));
    } else {
        let outs: Vec<Value> = outputs
            .iter()
            .map(|name| json!({"name": name, "parameters": {"binary_data": true}}))
            .collect();
        header.insert("outputs".into(), Value::Array(outs));
    }
    let header = serde_json::to_vec(&Value::Object(header)).context("encoding JSON header")?;
    let header_len = header.len();
    let mut body = header;
    body.reserve(raws.iter().map(Vec::len).sum());
    for raw in &raws {
        body.extend_from_slice(raw);
    }
    Ok(BinaryBody {
        body: Bytes::from(body),
        header_len,
    })
}

/// Payload of a decoded tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// Inline JSON `data` (non-binary tensor).
    Json(Value),
    /// Raw bytes taken from the binary section.
    Binary(Bytes),
}

/// One tensor decoded from a (binary or JSON) body.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedTensor {
    /// Tensor name.
    pub name: String,
    /// Datatype name as sent.
    pub datatype: String,
    /// Shape as sent.
    pub shape: Vec<i64>,
    /// Contents.
    pub payload: Payload,
}

impl DecodedTensor {
    /// Decodes the payload into typed contents.
    pub fn data(&self) -> Result<TensorData> {
        let dtype = DataType::parse(&self.datatype)?;
        match &self.payload {
            Payload::Json(v) => TensorData::from_json(dtype, v),
            Payload::Binary(raw) => TensorData::from_raw(dtype, raw),
        }
    }
}

#[derive(Deserialize)]
struct WireTensor {
    name: String,
    datatype: String,
    #[serde(default)]
    shape: Vec<i64>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(default)]
    data: Option<Value>,
}

/// Splits `body` into its JSON header and binary tail and decodes the tensor
/// list under `key` (`"outputs"` for responses, `"inputs"` for requests).
/// `header_len` is the parsed [`HEADER_LENGTH`] value; `None` means the whole
/// body is JSON. Binary sizes are checked against datatype and shape, and the
/// binary tail must be consumed exactly.
pub fn decode_body(
    body: &Bytes,
    header_len: Option<usize>,
    key: &str,
) -> Result<Vec<DecodedTensor>> {
    let header_len = header_len.unwrap_or(body.len());
    if header_len > body.len() {
        bail!(
            "{HEADER_LENGTH} {header_len} exceeds body length {}",
            body.len()
        );
    }
    let mut header: Map<String, Value> =
        serde_json::from_slice(&body[..header_len]).context("parsing JSON header")?;
    let tensors = match header.remove(key) {
        Some(v) => serde_json::from_value::<Vec<WireTensor>>(v)
            .with_context(|| format!("parsing {key:?}"))?,
        None => Vec::new(),
    };
    let mut offset = header_len;
    let mut out = Vec::with_capacity(tensors.len());
    for t in tensors {
        let size = t
            .parameters
            .as_ref()
            .and_then(|p| p.get("binary_data_size"));
        let payload = match size {
            Some(size) => {
                let size = size
                    .as_u64()
                    .and_then(|s| usize::try_from(s).ok())
                    .with_context(|| format!("bad binary_data_size {size} for {:?}", t.name))?;
                let end = offset
                    .checked_add(size)
                    .filter(|&end| end <= body.len())
                    .with_context(|| format!("binary data of {:?} overruns the body", t.name))?;
                let raw = body.slice(offset..end);
                offset = end;
                check_binary_size(&t, &raw)?;
                Payload::Binary(raw)
            }
            None => Payload::Json(t.data.unwrap_or(Value::Null)),
        };
        out.push(DecodedTensor {
            name: t.name,
            datatype: t.datatype,
            shape: t.shape,
            payload,
        });
    }
    if offset != body.len() {
        bail!(
            "{} trailing byte(s) after the last binary tensor",
            body.len() - offset
        );
    }
    Ok(out)
}

fn check_binary_size(t: &WireTensor, raw: &[u8]) -> Result<()> {
    let dtype = DataType::parse(&t.datatype)?;
    let count = element_count(&t.shape)?;
    match dtype.element_size() {
        Some(size) if count.checked_mul(size) != Some(raw.len()) => bail!(
            "{:?}: {} byte(s) for {count} {} element(s)",
            t.name,
            raw.len(),
            dtype.as_str()
        ),
        Some(_) => Ok(()),
        None => {
            let n = decode_bytes_elements(raw)?.len();
            if n != count {
                bail!("{:?}: {n} BYTES element(s), shape says {count}", t.name);
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> Vec<InputTensor> {
        vec![
            InputTensor {
                name: "x".into(),
                shape: vec![2, 2],
                data: TensorData::F32(vec![1.0, 2.5, -3.0, 4.0]),
            },
            InputTensor {
                name: "s".into(),
                shape: vec![2],
                data: TensorData::Bytes(vec![b"hi".to_vec(), b"there!".to_vec()]),
            },
            InputTensor {
                name: "b".into(),
                shape: vec![1],
                data: TensorData::Bool(vec![true]),
            },
        ]
    }

    #[test]
    fn request_layout_is_header_then_raw_inputs_in_order() {
        let enc = encode_request(&inputs(), &["y".into()]).unwrap();
        let header: Value = serde_json::from_slice(&enc.body[..enc.header_len]).unwrap();
        assert_eq!(header["inputs"][0]["parameters"]["binary_data_size"], 16);
        assert_eq!(
            header["inputs"][1]["parameters"]["binary_data_size"],
            4 + 2 + 4 + 6
        );
        assert_eq!(header["inputs"][2]["parameters"]["binary_data_size"], 1);
        assert!(header["inputs"][0].get("data").is_none());
        assert_eq!(header["outputs"][0]["parameters"]["binary_data"], true);
        let tail = &enc.body[enc.header_len..];
        assert_eq!(&tail[..4], &1.0f32.to_le_bytes());
        assert_eq!(&tail[16..22], b"\x02\0\0\0hi");
        assert_eq!(tail.len(), 16 + 16 + 1);
    }

    #[test]
    fn request_round_trips_through_decoder() {
        let ins = inputs();
        let enc = encode_request(&ins, &[]).unwrap();
        let header: Value = serde_json::from_slice(&enc.body[..enc.header_len]).unwrap();
        assert_eq!(header["parameters"]["binary_data_output"], true);
        let decoded = decode_body(&enc.body, Some(enc.header_len), "inputs").unwrap();
        assert_eq!(decoded.len(), 3);
        for (d, i) in decoded.iter().zip(&ins) {
            assert_eq!(d.name, i.name);
            assert_eq!(d.shape, i.shape);
            assert_eq!(d.data().unwrap(), i.data);
        }
    }

    #[test]
    fn response_mixing_json_and_binary_outputs() {
        let header = br#"{"model_name":"m","outputs":[
            {"name":"j","datatype":"INT64","shape":[2],"data":[7,8]},
            {"name":"p","datatype":"FP32","shape":[1,2],"parameters":{"binary_data_size":8}},
            {"name":"s","datatype":"BYTES","shape":[1],"parameters":{"binary_data_size":7}}]}"#;
        let mut body = header.to_vec();
        body.extend_from_slice(&0.5f32.to_le_bytes());
        body.extend_from_slice(&2.0f32.to_le_bytes());
        body.extend_from_slice(b"\x03\0\0\0abc");
        let body = Bytes::from(body);
        let out = decode_body(&body, Some(header.len()), "outputs").unwrap();
        assert_eq!(out[0].data().unwrap(), TensorData::I64(vec![7, 8]));
        assert_eq!(out[1].data().unwrap(), TensorData::F32(vec![0.5, 2.0]));
        assert_eq!(
            out[2].data().unwrap(),
            TensorData::Bytes(vec![b"abc".to_vec()])
        );
    }

    #[test]
    fn malformed_responses_are_rejected() {
        let header = br#"{"outputs":[{"name":"p","datatype":"FP32","shape":[2],"parameters":{"binary_data_size":8}}]}"#;
        let mk = |tail: &[u8]| {
            let mut b = header.to_vec();
            b.extend_from_slice(tail);
            Bytes::from(b)
        };
        assert!(decode_body(&mk(&[0; 4]), Some(header.len()), "outputs").is_err());
        assert!(decode_body(&mk(&[0; 12]), Some(header.len()), "outputs").is_err());
        assert!(decode_body(&mk(&[0; 8]), Some(header.len() + 100), "outputs").is_err());
        assert!(decode_body(&mk(&[0; 8]), Some(header.len()), "outputs").is_ok());
        let json_only = Bytes::from_static(
            br#"{"outputs":[{"name":"o","datatype":"FP32","shape":[1],"data":[1.5]}]}"#,
        );
        let out = decode_body(&json_only, None, "outputs").unwrap();
        assert_eq!(out[0].data().unwrap(), TensorData::F32(vec![1.5]));
    }
}
