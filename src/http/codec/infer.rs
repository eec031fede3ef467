//! The one REST decoder of v2 inference requests (JSON, or JSON plus raw
//! tensors with the binary extension) and the encoder of their responses.
//! Stateless: what a request may hold comes in as arguments.

use super::binary::{HEADER_LENGTH, binary_size, header_length};
use super::json::{self, DataJson, RequestJson};
use crate::error::{Error, Result};
use crate::service::{InferRequest, InferResponse};
use crate::tensor::{
    RunOutput, Tensor, check_shape, decode_raw, encode_raw, fmt_shape, parse_datatype,
};
use axum::Json;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Value, json};

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
    decode(model, version, headers, body, max_elements)
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
    decode(model, version, headers, body, max_elements).map(|(request, _)| request)
}

fn decode(
    model: String,
    version: Option<u64>,
    headers: &HeaderMap,
    body: Bytes,
    max_elements: usize,
) -> Result<(InferRequest, OutputFormat)> {
    let header_len = header_length(headers, body.len())?.unwrap_or(body.len());
    // header_length() bounds the header by the body; `get` keeps that local.
    let head = body.get(..header_len).unwrap_or_default();
    let parsed: RequestJson<'_> = serde_json::from_slice(head)
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
/// header followed by the binary outputs.
pub fn encode_response(response: &InferResponse, format: &OutputFormat) -> Response {
    let mut blobs: Vec<Bytes> = Vec::new();
    let outputs: Vec<Value> = response
        .outputs
        .iter()
        .map(|(name, out)| output_json(name, out, format.binary(name), &mut blobs))
        .collect();
    let mut head = json!({
        "model_name": response.model,
        "model_version": response.version.to_string(),
        "outputs": outputs,
    });
    if let Some(id) = &response.id {
        super::set(&mut head, "id", Value::String(id.clone()));
    }
    if blobs.is_empty() {
        return Json(head).into_response();
    }
    let head = serde_json::to_vec(&head).unwrap_or_default();
    let total = head.len() + blobs.iter().map(Bytes::len).sum::<usize>();
    let mut body = BytesMut::with_capacity(total);
    body.put_slice(&head);
    for blob in &blobs {
        body.put_slice(blob);
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (
                header::HeaderName::from_static(HEADER_LENGTH),
                HeaderValue::from(head.len()),
            ),
        ],
        body.freeze(),
    )
        .into_response()
}

fn output_json(name: &str, out: &RunOutput, binary: bool, blobs: &mut Vec<Bytes>) -> Value {
    let mut v = json!({
        "name": name,
        "datatype": out.datatype.as_str(),
        "shape": out.shape,
    });
    if binary {
        let blob = encode_raw(&out.data);
        super::set(
            &mut v,
            "parameters",
            json!({"binary_data_size": blob.len()}),
        );
        blobs.push(blob);
    } else {
        super::set(
            &mut v,
            "data",
            serde_json::to_value(DataJson {
                datatype: out.datatype,
                data: &out.data,
            })
            .unwrap_or(Value::Null),
        );
    }
    v
}
