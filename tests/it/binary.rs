//! REST binary tensor data extension: raw requests as tritonclient.http sends
//! them, every dtype against ONNX Runtime, mixed JSON/binary, and every
//! malformed body.

use crate::grpc::{model_for, sample};
use crate::harness::{TestServer, data_json, raw_run, test_repo};
use bytes::Bytes;
use serde_json::{Value, json};
use sluice::tensor::encode_raw;
use sluice::tensor::{DataType, Tensor};

/// A binary request: the JSON header, then the raw inputs.
pub fn binary_body(header: &Value, blobs: &[Bytes]) -> (Vec<u8>, usize) {
    let mut body = serde_json::to_vec(header).unwrap();
    let len = body.len();
    for b in blobs {
        body.extend_from_slice(b);
    }
    (body, len)
}

/// The header of a binary request for `inputs`, with outputs as given.
pub fn binary_header(inputs: &[Tensor], outputs: Option<Value>) -> (Value, Vec<Bytes>) {
    let blobs: Vec<Bytes> = inputs.iter().map(|t| encode_raw(&t.data)).collect();
    let mut header = json!({
        "inputs": inputs.iter().zip(&blobs).map(|(t, b)| json!({
            "name": t.name, "datatype": t.datatype.as_str(), "shape": t.shape,
            "parameters": {"binary_data_size": b.len()},
        })).collect::<Vec<_>>(),
    });
    if let Some(o) = outputs {
        header["outputs"] = o;
    }
    (header, blobs)
}

pub struct BinaryReply {
    pub status: u16,
    pub content_type: String,
    pub header: Value,
    /// Binary outputs by name.
    pub outputs: Vec<(String, Bytes)>,
}

pub async fn post_binary(
    s: &TestServer,
    path: &str,
    body: Vec<u8>,
    header_len: Option<usize>,
) -> BinaryReply {
    let mut req = s
        .client
        .post(s.url(path))
        .header("content-type", "application/octet-stream")
        .body(body);
    if let Some(n) = header_len {
        req = req.header("Inference-Header-Content-Length", n.to_string());
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let json_len: Option<usize> = r
        .headers()
        .get("inference-header-content-length")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let bytes = r.bytes().await.unwrap();
    let json_len = json_len.unwrap_or(bytes.len());
    let header: Value = serde_json::from_slice(&bytes[..json_len]).unwrap();
    let mut outputs = Vec::new();
    let mut at = json_len;
    for out in header["outputs"].as_array().into_iter().flatten() {
        if let Some(size) = out["parameters"]["binary_data_size"].as_u64() {
            let size = size as usize;
            outputs.push((
                out["name"].as_str().unwrap().to_string(),
                bytes.slice(at..at + size),
            ));
            at += size;
        }
    }
    assert_eq!(at, bytes.len(), "binary outputs add up to the body");
    BinaryReply {
        status,
        content_type,
        header,
        outputs,
    }
}

#[tokio::test]
async fn every_dtype_binary_in_and_out_matches_onnxruntime() {
    let s = TestServer::start(&test_repo()).await;
    for dt in DataType::ALL {
        let model = model_for(dt);
        let input = sample(dt);
        let expected = raw_run(
            &test_repo().join(&model).join("1/model.onnx"),
            std::slice::from_ref(&input),
        );
        let (mut header, blobs) = binary_header(std::slice::from_ref(&input), None);
        header["parameters"] = json!({"binary_data_output": true});
        let (body, n) = binary_body(&header, &blobs);
        let r = post_binary(&s, &format!("/v2/models/{model}/infer"), body, Some(n)).await;
        assert_eq!(r.status, 200, "{model}: {}", r.header);
        assert_eq!(r.content_type, "application/octet-stream");
        assert_eq!(r.outputs.len(), 2, "{model}");
        for (i, (name, bytes)) in r.outputs.iter().enumerate() {
            assert_eq!(name, &format!("OUTPUT{i}"));
            assert_eq!(bytes, &encode_raw(&expected[i].data), "{model} {name}");
            assert!(r.header["outputs"][i].get("data").is_none());
            assert_eq!(r.header["outputs"][i]["shape"], json!([2, 3]));
        }
    }
}

#[tokio::test]
async fn json_and_binary_mix_per_input_and_per_output() {
    let s = TestServer::start(&test_repo()).await;
    let input = sample(DataType::Fp16);
    let expected = raw_run(
        &test_repo().join("dtype_fp16/1/model.onnx"),
        std::slice::from_ref(&input),
    );

    // Binary input, one binary output and one JSON output.
    let (header, blobs) = binary_header(
        std::slice::from_ref(&input),
        Some(
            json!([{"name": "OUTPUT0", "parameters": {"binary_data": true}}, {"name": "OUTPUT1", "parameters": {"binary_data": false}}]),
        ),
    );
    let (body, n) = binary_body(&header, &blobs);
    let r = post_binary(&s, "/v2/models/dtype_fp16/infer", body, Some(n)).await;
    assert_eq!(r.status, 200, "{}", r.header);
    assert_eq!(
        r.outputs,
        [("OUTPUT0".to_string(), encode_raw(&expected[0].data))]
    );
    assert_eq!(r.header["outputs"][1]["data"], data_json(&expected[1]));

    // binary_data_output for all, overridden by one output's binary_data = false.
    let (mut header, blobs) = binary_header(
        std::slice::from_ref(&input),
        Some(
            json!([{"name": "OUTPUT0"}, {"name": "OUTPUT1", "parameters": {"binary_data": false}}]),
        ),
    );
    header["parameters"] = json!({"binary_data_output": true});
    let (body, n) = binary_body(&header, &blobs);
    let r = post_binary(&s, "/v2/models/dtype_fp16/infer", body, Some(n)).await;
    assert_eq!(r.outputs.len(), 1);
    assert_eq!(r.outputs[0].0, "OUTPUT0");

    // Binary input, no binary output asked: plain JSON comes back.
    let (header, blobs) = binary_header(std::slice::from_ref(&input), None);
    let (body, n) = binary_body(&header, &blobs);
    let r = post_binary(&s, "/v2/models/dtype_fp16/infer", body, Some(n)).await;
    assert_eq!(r.status, 200);
    assert!(
        r.content_type.starts_with("application/json"),
        "{}",
        r.content_type
    );
    assert_eq!(r.header["outputs"][0]["data"], data_json(&expected[0]));

    // JSON input, binary output (no request header needed).
    let body = json!({"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1, 2], "data": ["ab", "ü"]}],
        "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": true}}]});
    let r = post_binary(
        &s,
        "/v2/models/dtype_string/infer",
        serde_json::to_vec(&body).unwrap(),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.header);
    assert_eq!(
        &r.outputs[0].1[..],
        b"\x04\0\0\0abab\x04\0\0\0\xc3\xbc\xc3\xbc"
    );

    // Two inputs' worth of binary and JSON in one request: iris JSON + dynamic2 are single-input,
    // so mix across one input being binary with an id and versioned path.
    let iris = Tensor {
        name: "input".into(),
        datatype: DataType::Fp32,
        shape: vec![1, 4],
        data: sluice::tensor::TensorData::Fixed(Bytes::from(
            [5.1f32, 3.5, 1.4, 0.2].map(f32::to_le_bytes).concat(),
        )),
    };
    let (mut header, blobs) = binary_header(&[iris], None);
    header["id"] = json!("bin-1");
    header["parameters"] = json!({"binary_data_output": true});
    let (body, n) = binary_body(&header, &blobs);
    let r = post_binary(&s, "/v2/models/iris/versions/1/infer", body, Some(n)).await;
    assert_eq!(r.header["id"], "bin-1");
    assert_eq!(
        r.outputs[0],
        (
            "label".to_string(),
            Bytes::from(0i64.to_le_bytes().to_vec())
        )
    );
}

#[tokio::test]
async fn malformed_binary_requests_are_400_naming_the_input() {
    let s = TestServer::start(&test_repo()).await;
    let input = sample(DataType::Fp32);
    let path = "/v2/models/dtype_fp32/infer";
    let err = |r: &BinaryReply| r.header["error"].as_str().unwrap_or_default().to_string();

    // binary_data_size does not match shape × dtype size.
    let (mut header, blobs) = binary_header(std::slice::from_ref(&input), None);
    header["inputs"][0]["parameters"]["binary_data_size"] = json!(20);
    let (body, n) = binary_body(&header, &[blobs[0].slice(..20)]);
    let r = post_binary(&s, path, body, Some(n)).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        err(&r),
        "input 'INPUT0': binary_data_size is 20 but shape [2, 3] of FP32 needs 24 bytes"
    );

    // Sizes must add up to the body exactly: extra bytes, or too few.
    let (header, blobs) = binary_header(std::slice::from_ref(&input), None);
    let (mut body, n) = binary_body(&header, &blobs);
    body.extend_from_slice(b"junk");
    let r = post_binary(&s, path, body, Some(n)).await;
    assert_eq!(r.status, 400);
    assert!(err(&r).contains("add up to 24"), "{}", err(&r));
    let (body, n) = binary_body(&header, &[blobs[0].slice(..10)]);
    let r = post_binary(&s, path, body, Some(n)).await;
    assert_eq!(r.status, 400);
    assert!(
        err(&r).contains("input 'INPUT0': binary_data_size 24 runs past the end"),
        "{}",
        err(&r)
    );

    // The header length must be a number within the body.
    let (body, _) = binary_body(&header, &blobs);
    let len = body.len();
    let r = post_binary(&s, path, body.clone(), Some(len + 1)).await;
    assert_eq!(r.status, 400);
    assert!(
        err(&r).contains("Inference-Header-Content-Length"),
        "{}",
        err(&r)
    );
    let r = s
        .client
        .post(s.url(path))
        .header("Inference-Header-Content-Length", "ten")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Binary data without the header: the body is all JSON, so the sizes cannot add up.
    let (body, _) = binary_body(&header, &blobs);
    let r = s.post_raw(path, body).await;
    assert_eq!(r.0, 400);

    // Both data and binary_data_size.
    let (mut header, blobs) = binary_header(std::slice::from_ref(&input), None);
    header["inputs"][0]["data"] = json!([1, 2, 3, 4, 5, 6]);
    let (body, n) = binary_body(&header, &blobs);
    let r = post_binary(&s, path, body, Some(n)).await;
    assert_eq!(r.status, 400);
    assert!(err(&r).contains("both 'data' and parameter 'binary_data_size'"));

    // Malformed BYTES length prefixes.
    let bytes_input = sample(DataType::Bytes);
    let (header, blobs) = binary_header(std::slice::from_ref(&bytes_input), None);
    let mut broken = blobs[0].to_vec();
    broken[0] = 200; // first element claims 200 bytes
    let (body, n) = binary_body(&header, &[Bytes::from(broken)]);
    let r = post_binary(&s, "/v2/models/dtype_string/infer", body, Some(n)).await;
    assert_eq!(r.status, 400);
    assert!(
        err(&r).starts_with("input 'INPUT0': BYTES element 0 declares 200 bytes"),
        "{}",
        err(&r)
    );
    let mut header2 = header.clone();
    header2["inputs"][0]["shape"] = json!([2, 2]);
    let (body, n) = binary_body(&header2, &blobs);
    let r = post_binary(&s, "/v2/models/dtype_string/infer", body, Some(n)).await;
    assert_eq!(r.status, 400);
    assert!(
        err(&r).contains("more than the 4 BYTES elements"),
        "{}",
        err(&r)
    );

    // Non-UTF-8 BYTES for an ONNX string input is refused by validation.
    let raw = Bytes::from_static(b"\x01\0\0\0\xff");
    let header = json!({"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1, 1], "parameters": {"binary_data_size": 5}}]});
    let (body, n) = binary_body(&header, &[raw]);
    let r = post_binary(&s, "/v2/models/dtype_string/infer", body, Some(n)).await;
    assert_eq!(r.status, 400);
}
