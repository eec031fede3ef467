//! The one REST decoder of v2 inference requests (JSON, or JSON plus raw
//! tensors with the binary extension) and the encoder of their responses.
//! Stateless: what a request may hold comes in as arguments.

use super::binary::{HEADER_LENGTH_NAME, binary_size, declared_length};
use super::json::{self, DataJson, RequestJson};
use crate::error::{Error, Result};
use crate::service::{InferRequest, InferResponse};
use crate::tensor::{Tensor, check_shape, decode_raw, encode_raw, fmt_shape, parse_datatype};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;

/// Which outputs leave as binary.
#[derive(Debug, Clone, Default)]
pub struct OutputFormat {
    /// `binary_data_output` of the request: the default for every output.
    all: bool,
    /// Per-output `binary_data`, overriding `all`.
    each: Vec<(String, bool)>,
}

impl OutputFormat {
    fn binary(&self, name: &str) -> bool {
        self.each
            .iter()
            .find(|(n, _)| n == name)
            .map_or(self.all, |(_, b)| *b)
    }
}

/// Decodes a v2 inference request for `model` (`version`): JSON, or binary
/// when `headers` carry `Inference-Header-Content-Length`, with inputs of
/// at most `max_elements` elements. Bad input is an [`Error`], never a panic.
pub fn decode_request(
    model: String,
    version: Option<u64>,
    headers: &HeaderMap,
    body: Bytes,
    max_elements: usize,
) -> Result<(InferRequest, OutputFormat)> {
    decode_request_with(
        model,
        version,
        headers.get(&HEADER_LENGTH_NAME),
        body,
        max_elements,
    )
}

/// [`decode_request`] without the output format: what the fuzz targets in
/// `fuzz/` drive.
pub fn decode_body(
    model: String,
    version: Option<u64>,
    headers: &HeaderMap,
    body: Bytes,
    max_elements: usize,
) -> Result<InferRequest> {
    decode_request(model, version, headers, body, max_elements).map(|(request, _)| request)
}

/// [`decode_request`] given only the `Inference-Header-Content-Length`
/// value, the one header it reads (the handler keeps that, not the map).
pub(crate) fn decode_request_with(
    model: String,
    version: Option<u64>,
    header_length: Option<&HeaderValue>,
    body: Bytes,
    max_elements: usize,
) -> Result<(InferRequest, OutputFormat)> {
    let header_len = declared_length(header_length, body.len())?.unwrap_or(body.len());
    // header_length() bounds the header by the body; `get` keeps that local.
    let head = body.get(..header_len).unwrap_or_default();
    // One UTF-8 check of the whole header, not one per string as
    // `from_slice` makes; a header that fails it is parsed as bytes, so
    // its error names the position as before.
    let parsed: RequestJson<'_> = match std::str::from_utf8(head) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(head),
    }
    .map_err(|e| Error::invalid(format!("malformed inference request JSON: {e}")))?;
    let mut at = header_len;
    let mut inputs = Vec::with_capacity(parsed.inputs.len());
    for input in &parsed.inputs {
        let params = input.parameters.as_ref();
        let Some(size) = binary_size(params, &input.name)? else {
            inputs.push(json::decode_input(input, max_elements)?);
            continue;
        };
        let name = input.name.as_str();
        if input.data.is_some() {
            return Err(Error::invalid(format!(
                "input '{name}': has both 'data' and parameter 'binary_data_size'; send one"
            )));
        }
        let datatype = parse_datatype(name, &input.datatype)?;
        let (shape, count) = check_shape(name, &input.shape, max_elements)?;
        if let Some(elem) = datatype.size() {
            let wanted = count.saturating_mul(elem);
            if size != wanted {
                return Err(Error::invalid(format!(
                    "input '{name}': binary_data_size is {size} but shape {} of {datatype} needs {wanted} bytes",
                    fmt_shape(&shape)
                )));
            }
        }
        let end = at.checked_add(size).filter(|&e| e <= body.len()).ok_or_else(|| {
            Error::invalid(format!(
                "input '{name}': binary_data_size {size} runs past the end of the body ({} bytes of binary data left)",
                body.len() - at
            ))
        })?;
        let data = decode_raw(name, datatype, &shape, body.slice(at..end))?;
        at = end;
        inputs.push(Tensor {
            name: name.to_string(),
            datatype,
            shape,
            data,
        });
    }
    if at != body.len() {
        return Err(Error::invalid(format!(
            "the body has {} bytes after the JSON header and the binary inputs; their binary_data_size values add up to {}",
            body.len() - header_len,
            at - header_len
        )));
    }
    let params = parsed.parameters.as_ref();
    let mut format = OutputFormat {
        all: json::param_bool(params, "binary_data_output")?.unwrap_or(false),
        each: Vec::new(),
    };
    let mut classification = Vec::new();
    let outputs = match parsed.outputs {
        None => None,
        Some(outs) => {
            let mut names = Vec::with_capacity(outs.len());
            for out in outs {
                let params = out.parameters.as_ref();
                if let Some(b) = json::param_bool(params, "binary_data")? {
                    format.each.push((out.name.clone(), b));
                }
                let count = json::param_u64(params, "classification")
                    .map_err(|e| Error::invalid(format!("output '{}': {e}", out.name)))?;
                if let Some(count) = count {
                    classification.push((out.name.clone(), count));
                }
                names.push(out.name);
            }
            Some(names)
        }
    };
    let request = InferRequest {
        model,
        version,
        id: parsed.id,
        inputs,
        outputs,
        classification,
        priority: json::param_u64(params, "priority")?,
        timeout_us: json::param_u64(params, "timeout")?,
    };
    Ok((request, format))
}

// === responses ===

/// Encodes a response: plain JSON when no output is binary, else the JSON
/// header followed by the binary outputs. The JSON is written straight from
/// the response, with the text a `serde_json::Value` tree gave before: keys
/// in sorted order, floats as the f64 of their value, strings escaped as
/// serde_json escapes them. Keys and datatype names are constants written
/// as they are; only the strings a model or request chose are escaped.
pub fn encode_response(response: &InferResponse, format: &OutputFormat) -> Response {
    let mut blobs: Vec<Bytes> = Vec::new();
    for (name, out) in &response.outputs {
        if format.binary(name) {
            blobs.push(encode_raw(&out.data));
        }
    }
    let binary_len: usize = blobs.iter().map(Bytes::len).sum();
    let mut body = Vec::with_capacity(head_estimate(response) + binary_len);
    write_head(&mut body, response, format, &blobs);
    let head_len = body.len();
    let content_type = if blobs.is_empty() {
        HeaderValue::from_static("application/json")
    } else {
        for blob in &blobs {
            body.extend_from_slice(blob);
        }
        HeaderValue::from_static("application/octet-stream")
    };
    let mut r = Response::new(Body::from(body));
    let headers = r.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    if !blobs.is_empty() {
        headers.insert(HEADER_LENGTH_NAME, HeaderValue::from(head_len));
    }
    r
}

/// Room for the JSON head of `response` without its `data` arrays.
fn head_estimate(response: &InferResponse) -> usize {
    let outputs: usize = response
        .outputs
        .iter()
        .map(|(name, out)| 96 + name.len() + 21 * out.shape.len())
        .sum();
    64 + response.model.len() + response.id.as_ref().map_or(0, String::len) + outputs
}

/// Writes the JSON head: `id`, `model_name`, `model_version` (a string)
/// and `outputs`, each output's `data` (JSON) or `parameters` with its
/// `binary_data_size` (binary; `blobs` holds those outputs' bytes in order).
fn write_head(out: &mut Vec<u8>, response: &InferResponse, format: &OutputFormat, blobs: &[Bytes]) {
    out.push(b'{');
    if let Some(id) = &response.id {
        out.extend_from_slice(b"\"id\":");
        write_str(out, id);
        out.push(b',');
    }
    out.extend_from_slice(b"\"model_name\":");
    write_str(out, &response.model);
    out.extend_from_slice(b",\"model_version\":\"");
    out.extend_from_slice(itoa::Buffer::new().format(response.version).as_bytes());
    out.extend_from_slice(b"\",\"outputs\":[");
    let mut blobs = blobs.iter();
    for (i, (name, output)) in response.outputs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'{');
        let binary = format
            .binary(name)
            .then(|| blobs.next().map_or(0, Bytes::len));
        if binary.is_none() {
            out.extend_from_slice(b"\"data\":");
            let data = DataJson {
                datatype: output.datatype,
                data: &output.data,
            };
            // Writing to a Vec cannot fail, and nor can DataJson.
            let _ = serde_json::to_writer(&mut *out, &data);
            out.push(b',');
        }
        out.extend_from_slice(b"\"datatype\":\"");
        out.extend_from_slice(output.datatype.as_str().as_bytes());
        out.extend_from_slice(b"\",\"name\":");
        write_str(out, name);
        if let Some(size) = binary {
            out.extend_from_slice(b",\"parameters\":{\"binary_data_size\":");
            out.extend_from_slice(itoa::Buffer::new().format(size).as_bytes());
            out.push(b'}');
        }
        out.extend_from_slice(b",\"shape\":[");
        for (j, dim) in output.shape.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            out.extend_from_slice(itoa::Buffer::new().format(*dim).as_bytes());
        }
        out.extend_from_slice(b"]}");
    }
    out.extend_from_slice(b"]}");
}

/// A JSON string, escaped as serde_json escapes it.
fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing a string to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::super::binary::HEADER_LENGTH;
    use super::*;
    use crate::tensor::{DataType, RunOutput, TensorData};
    use proptest::prelude::*;
    use serde_json::{Value, json};

    /// The encoder as it was (a `serde_json::Value` tree), kept as the
    /// reference for the text the typed encoder must write.
    fn head_as_value(response: &InferResponse, format: &OutputFormat) -> Vec<u8> {
        let outputs: Vec<Value> = response
            .outputs
            .iter()
            .map(|(name, out)| {
                let mut v =
                    json!({"name": name, "datatype": out.datatype.as_str(), "shape": out.shape});
                let map = v.as_object_mut().unwrap();
                if format.binary(name) {
                    let size = encode_raw(&out.data).len();
                    map.insert("parameters".into(), json!({"binary_data_size": size}));
                } else {
                    let data = DataJson {
                        datatype: out.datatype,
                        data: &out.data,
                    };
                    map.insert("data".into(), serde_json::to_value(data).unwrap());
                }
                v
            })
            .collect();
        let mut head = json!({
            "model_name": response.model,
            "model_version": response.version.to_string(),
            "outputs": outputs,
        });
        if let Some(id) = &response.id {
            head.as_object_mut()
                .unwrap()
                .insert("id".into(), Value::String(id.clone()));
        }
        serde_json::to_vec(&head).unwrap()
    }

    async fn head_now(response: &InferResponse, format: &OutputFormat) -> Vec<u8> {
        let r = encode_response(response, format);
        let len = r
            .headers()
            .get(HEADER_LENGTH)
            .map(|v| v.to_str().unwrap().parse::<usize>().unwrap());
        let body = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        body[..len.unwrap_or(body.len())].to_vec()
    }

    fn fixed(datatype: DataType, shape: Vec<usize>, bytes: Vec<u8>) -> RunOutput {
        RunOutput {
            datatype,
            shape,
            data: TensorData::Fixed(Bytes::from(bytes)),
        }
    }

    /// What the decoder said before it checked UTF-8 once up front: the
    /// message of `serde_json::from_slice`.
    fn slice_error(head: &[u8]) -> Option<String> {
        serde_json::from_slice::<RequestJson<'_>>(head)
            .err()
            .map(|e| format!("malformed inference request JSON: {e}"))
    }

    fn decode_error(head: &[u8]) -> Option<String> {
        let body = Bytes::copy_from_slice(head);
        decode_request_with("m".into(), None, None, body, 1 << 20)
            .err()
            .map(|e| e.to_string())
            .filter(|m| m.starts_with("malformed inference request JSON"))
    }

    #[test]
    fn invalid_utf8_in_the_header_keeps_its_message() {
        let head = b"{\"id\": \"a\xff\", \"inputs\": []}";
        let e = decode_error(head).unwrap();
        assert_eq!(Some(e.clone()), slice_error(head));
        assert!(e.contains("line 1 column"), "{e}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Malformed headers, valid UTF-8 or not, get the message they got
        /// when every string was checked on its own.
        #[test]
        fn header_errors_match_the_byte_parser(
            parts in prop::collection::vec(prop::sample::select(vec![
                "{", "}", "[", "]", ",", ":", "\"inputs\"", "\"id\"", "\"name\"",
                "\"x\"", "\"\\u00e9\"", "\"\\ud800\"", "1", "-0.5e3", "null", "true",
                "\"datatype\"", "\"FP32\"", "\"shape\"", "\"data\"", "\"parameters\"",
                "\u{e9}", "\\", " ",
            ]), 0..24),
            bad in prop::option::of((0usize..64, prop::sample::select(vec![0x80u8, 0xc3, 0xff, 0xed]))),
        ) {
            let mut head = parts.concat().into_bytes();
            if let Some((at, byte)) = bad {
                let at = at.min(head.len());
                head.insert(at, byte);
            }
            prop_assert_eq!(decode_error(&head), slice_error(&head));
        }

        /// The typed encoder writes byte for byte what the `Value` tree wrote,
        /// for every datatype, with and without an id, JSON or binary.
        #[test]
        fn typed_encoder_writes_what_the_value_tree_wrote(
            f32s in prop::collection::vec(any::<u32>(), 0..8),
            f64s in prop::collection::vec(any::<u64>(), 0..8),
            halves in prop::collection::vec(any::<u16>(), 0..8),
            ints in prop::collection::vec(any::<u8>(), 0..16),
            id in prop::option::of("[a-z0-9\"\\\\é]{0,8}"),
            model in "[a-z0-9_\"\\\\é\u{1}]{0,8}",
            name in "[a-z0-9\"\\\\é\n]{1,8}",
            version in any::<u64>(),
            binary in any::<bool>(),
        ) {
            let f32b: Vec<u8> = f32s.iter().flat_map(|b| b.to_le_bytes()).collect();
            let f64b: Vec<u8> = f64s.iter().flat_map(|b| b.to_le_bytes()).collect();
            let hb: Vec<u8> = halves.iter().flat_map(|b| b.to_le_bytes()).collect();
            let mut outputs = vec![
                (name, fixed(DataType::Fp32, vec![f32s.len()], f32b)),
                ("d".to_string(), fixed(DataType::Fp64, vec![1, f64s.len()], f64b)),
                ("h".to_string(), fixed(DataType::Fp16, vec![halves.len()], hb.clone())),
                ("b".to_string(), fixed(DataType::Bf16, vec![halves.len()], hb)),
                ("u8".to_string(), fixed(DataType::Uint8, vec![ints.len()], ints.clone())),
                ("flags".to_string(), fixed(DataType::Bool, vec![ints.len()], ints.iter().map(|v| v & 1).collect())),
                ("s".to_string(), RunOutput {
                    datatype: DataType::Bytes,
                    shape: vec![2],
                    data: TensorData::Bytes(vec![Bytes::from_static(b"setosa"), Bytes::from(ints.clone())]),
                }),
            ];
            let whole = ints.len() / 8 * 8;
            outputs.push(("i64".to_string(), fixed(DataType::Int64, vec![whole / 8], ints[..whole].to_vec())));
            let response = InferResponse { model, version, id, outputs };
            let format = OutputFormat { all: binary, each: vec![("h".into(), !binary)] };
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let now = rt.block_on(head_now(&response, &format));
            let before = head_as_value(&response, &format);
            prop_assert_eq!(String::from_utf8_lossy(&now), String::from_utf8_lossy(&before));
        }
    }
}
