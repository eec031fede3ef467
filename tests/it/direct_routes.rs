//! The two inference routes are matched in front of the router
//! (`src/http/app.rs`); a path the matcher leaves alone (a trailing slash, a
//! percent-encoded segment) goes through the router to the same handler.
//! Every answer, good or bad, must be the same either way: status, body and
//! the headers a client reads.

use crate::harness::{TestServer, test_repo};
use serde_json::json;

/// What a client sees of one answer.
#[derive(Debug, PartialEq)]
struct Answer {
    status: u16,
    content_type: Option<String>,
    header_length: Option<String>,
    body: Vec<u8>,
}

async fn send(s: &TestServer, path: &str, headers: Headers<'_>, body: &[u8]) -> Answer {
    let mut request = s.client.post(s.url(path)).body(body.to_vec());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let r = request.send().await.unwrap();
    let header = |name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    Answer {
        status: r.status().as_u16(),
        content_type: header("content-type"),
        header_length: header("inference-header-content-length"),
        body: r.bytes().await.unwrap().to_vec(),
    }
}

/// Headers to send with a request.
type Headers<'a> = &'a [(&'a str, &'a str)];

/// A binary request: the JSON header, then the raw tensor bytes.
fn binary(header: &serde_json::Value, data: &[u8]) -> (Vec<u8>, String) {
    let head = serde_json::to_vec(header).unwrap();
    let length = head.len().to_string();
    let mut body = head;
    body.extend_from_slice(data);
    (body, length)
}

#[tokio::test]
async fn inference_answers_the_same_with_and_without_the_router() {
    let s = TestServer::start_with(&test_repo(), |c| {
        c.http.max_body_bytes = 4096;
    })
    .await;
    let json_type = [("content-type", "application/json")];
    let iris = json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
        "data": [5.1, 3.5, 1.4, 0.2]}]});
    let floats: Vec<u8> = [5.1f32, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let (bin, bin_length) = binary(
        &json!({"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32",
            "parameters": {"binary_data_size": 32}}],
            "outputs": [{"name": "label", "parameters": {"binary_data": true}}]}),
        &floats,
    );
    let (short, short_length) = binary(
        &json!({"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32",
            "parameters": {"binary_data_size": 32}}]}),
        &floats[..16],
    );
    let bin_headers = [
        ("content-type", "application/octet-stream"),
        ("inference-header-content-length", bin_length.as_str()),
    ];
    let short_headers = [
        ("content-type", "application/octet-stream"),
        ("inference-header-content-length", short_length.as_str()),
    ];
    let too_long = [
        ("content-type", "application/octet-stream"),
        ("inference-header-content-length", "100000"),
    ];
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let oversize = vec![b' '; 8192];
    let cases: Vec<(&str, Headers<'_>, Vec<u8>)> = vec![
        ("JSON", &json_type, serde_json::to_vec(&iris).unwrap()),
        ("binary", &bin_headers, bin.clone()),
        ("binary, short data", &short_headers, short),
        ("header length past the body", &too_long, bin),
        ("bad JSON", &json_type, b"{\"inputs\": [".to_vec()),
        ("empty body", &json_type, Vec::new()),
        (
            "wrong datatype",
            &json_type,
            serde_json::to_vec(&json!({"inputs": [{"name": "input", "shape": [1, 4],
                "datatype": "INT64", "data": [1, 2, 3, 4]}]}))
            .unwrap(),
        ),
        (
            "wrong shape",
            &json_type,
            serde_json::to_vec(&json!({"inputs": [{"name": "input", "shape": [1, 3],
                "datatype": "FP32", "data": [1.0, 2.0, 3.0]}]}))
            .unwrap(),
        ),
        ("too deep", &json_type, deep.into_bytes()),
        ("over the body limit", &json_type, oversize),
    ];
    let paths = [
        (
            "/v2/models/iris/infer",
            ["/v2/models/iris/infer/", "/v2/models/%69ris/infer"],
        ),
        (
            "/v2/models/iris/versions/1/infer",
            [
                "/v2/models/iris/versions/1/infer/",
                "/v2/models/ir%69s/versions/1/infer",
            ],
        ),
        (
            "/v2/models/iris/versions/7/infer",
            [
                "/v2/models/iris/versions/7/infer/",
                "/v2/models/iri%73/versions/7/infer",
            ],
        ),
        (
            "/v2/models/nope/infer",
            ["/v2/models/nope/infer/", "/v2/models/n%6Fpe/infer"],
        ),
    ];
    let mut statuses = Vec::new();
    for (direct, routed) in paths {
        for (what, headers, body) in &cases {
            let expected = send(&s, direct, headers, body).await;
            for path in routed {
                let got = send(&s, path, headers, body).await;
                assert_eq!(
                    got, expected,
                    "{what}: {path} through the router against {direct}"
                );
            }
            statuses.push(expected.status);
        }
    }
    // The cases cover answers and refusals of several kinds.
    for status in [200, 400, 404, 413] {
        assert!(statuses.contains(&status), "no {status} in {statuses:?}");
    }
    s.stop().await;
}
