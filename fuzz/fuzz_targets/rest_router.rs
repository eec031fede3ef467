//! The whole REST API end to end: an arbitrary method, path, headers and
//! body go through the REST app `sluice serve` runs (edge policy with auth
//! on, every route, the inference routes matched in front of the router, the
//! real handlers and models of tests/models), called without a socket
//! (`sluice::fuzzing::Harness`).
//!
//! Properties: no panic; the status is in the documented error table
//! (a 500 is a crash); an error answers `{"error": "<message>"}`; and after
//! the input the repository is restored and a known-good request succeeds.
//!
//! Input: six control bytes, then a request in HTTP/1 text form:
//!
//! ```text
//! [flags][route][fill 1][fill 2][suffix][encode mask]METHOD /path\n
//! name: value\n
//! \n
//! body
//! ```
//!
//! flags: bit 0 takes the path from a route of `sluice::http::paths()`
//! (`route` picks it; `{model}`-like segments are filled from the
//! repository's model names and odd names by `fill 1`, `{version}` by
//! `fill 2`, v1's `{model_action}` gets a `suffix` such as `:predict`),
//! else the request line's path is used; bit 1 appends a `/`; bit 2
//! percent-encodes the characters whose index bit is set in `encode mask`;
//! bit 3 sends the body chunked (no `content-length`); bits 4-5 set
//! `authorization` (0: the admin token, 1: the infer-only token, 2: none,
//! 3: as in the headers); bit 6 keeps the request line's query string on a
//! route's path; bit 7 marks the request HTTP/2. fuzz/make_seeds.py writes
//! seeds from the integration tests' requests with flags 0.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Version, header};
use libfuzzer_sys::fuzz_target;

const VERSIONS: &[&str] = &[
    "1",
    "2",
    "0",
    "-1",
    "01",
    "18446744073709551615",
    "18446744073709551616",
    "abc",
    "",
    "1.0",
    " 1",
    "%31",
];

const ODD_NAMES: &[&str] = &[
    "",
    "nope",
    "iris:predict",
    "..",
    ".hidden",
    "a.b",
    "a%2Fb",
    "%00",
    "\u{e9}",
    "iris/versions/1",
    " ",
    "iris%20",
    "stats",
    "CON",
];

const SUFFIXES: &[&str] = &[
    ":predict",
    ":explain",
    "",
    ":",
    ":predict:predict",
    "predict",
    ":PREDICT",
    ":predict/",
    "::predict",
    ":predict%20",
];

fn pick<'a>(items: &'a [&'a str], byte: u8) -> &'a str {
    items[usize::from(byte) % items.len()]
}

fn model_fill(byte: u8) -> String {
    let models = common::harness().models();
    let i = usize::from(byte);
    match models.get(i % (models.len() + ODD_NAMES.len())) {
        Some(m) => m.clone(),
        None => {
            let odd = pick(ODD_NAMES, byte);
            if odd == "CON" {
                "x".repeat(300) // longer than a valid model name
            } else {
                odd.to_string()
            }
        }
    }
}

/// A route of the real table with its `{...}` segments filled.
fn route_path(route: u8, fill1: u8, fill2: u8, suffix: u8) -> String {
    let paths = sluice::http::paths();
    let (template, _) = paths[usize::from(route) % paths.len()];
    template
        .split('/')
        .map(|segment| match segment {
            "{model}" => model_fill(fill1),
            "{version}" => pick(VERSIONS, fill2).to_string(),
            "{model_action}" => model_fill(fill1) + pick(SUFFIXES, suffix),
            s if s.starts_with('{') => model_fill(fill2),
            s => s.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn percent_encode(path: &str, mask: u8) -> String {
    let mut out = String::with_capacity(path.len() * 3);
    for (i, c) in path.chars().enumerate() {
        if i > 0 && c != '/' && mask & (1 << (i % 8)) != 0 {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Builds the request the bytes describe; `None` for one hyper would refuse
/// before routing (no valid method or URI).
fn build(data: &[u8]) -> Option<Request<Bytes>> {
    let (&[flags, route, fill1, fill2, suffix, mask], text) = data.split_first_chunk::<6>()?;
    let (line, rest) = match text.iter().position(|&b| b == b'\n') {
        Some(i) => (&text[..i], &text[i + 1..]),
        None => (text, &[][..]),
    };
    let line = std::str::from_utf8(line).ok()?;
    let (method, literal) = line.split_once(' ').unwrap_or((line, "/"));
    let method = Method::from_bytes(method.as_bytes()).ok()?;
    let (literal_path, query) = match literal.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (literal, None),
    };
    let mut path = if flags & 1 != 0 {
        route_path(route, fill1, fill2, suffix)
    } else {
        literal_path.to_string()
    };
    if flags & 2 != 0 {
        path.push('/');
    }
    if flags & 4 != 0 {
        path = percent_encode(&path, mask);
    }
    if let Some(q) = query
        && (flags & 1 == 0 || flags & 64 != 0)
    {
        path = format!("{path}?{q}");
    }
    let mut request = Request::builder()
        .method(method)
        .uri(path.as_str())
        .body(Bytes::new())
        .ok()?;
    let http2 = flags & 128 != 0;
    if http2 {
        *request.version_mut() = Version::HTTP_2;
    }

    // Header lines up to an empty line; the rest is the body.
    let mut body: &[u8] = &[];
    let mut remaining = rest;
    while !remaining.is_empty() {
        let (line, next) = match remaining.iter().position(|&b| b == b'\n') {
            Some(i) => (&remaining[..i], &remaining[i + 1..]),
            None => (remaining, &[][..]),
        };
        remaining = next;
        if line.is_empty() {
            body = remaining;
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = HeaderName::from_bytes(line[..colon].trim_ascii());
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii());
        // hyper refuses a request with a malformed header; skip just that one.
        if let (Ok(name), Ok(value)) = (name, value) {
            request.headers_mut().append(name, value);
        }
    }

    // Framing as hyper presents it: the length header matches the body.
    let headers = request.headers_mut();
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::TRANSFER_ENCODING);
    if http2 {
        headers.remove(header::CONNECTION); // not allowed in HTTP/2
    }
    if flags & 8 != 0 && !http2 {
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
    } else if !body.is_empty() || flags & 8 == 0 {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    let bearer = |token: &str| HeaderValue::from_str(&format!("Bearer {token}")).ok();
    let authorization = match (flags >> 4) & 3 {
        0 => bearer(common::ADMIN_TOKEN),
        1 => bearer(common::INFER_TOKEN),
        2 => None,
        _ => headers.get(header::AUTHORIZATION).cloned(),
    };
    headers.remove(header::AUTHORIZATION);
    if let Some(value) = authorization {
        headers.insert(header::AUTHORIZATION, value);
    }
    *request.body_mut() = Bytes::copy_from_slice(body);
    Some(request)
}

fn check(request: &Request<Bytes>, response: &sluice::fuzzing::RestResponse) {
    let status = response.status.as_u16();
    let body = String::from_utf8_lossy(&response.body);
    assert!(
        common::documented_rest_status(status),
        "status {status} is not in the documented table: {} {} -> {body}",
        request.method(),
        request.uri()
    );
    if response.status.is_success() || request.method() == Method::HEAD {
        return;
    }
    // Errors are {"error": "<message>"}; a model that is not ready answers
    // {"name": ..., "ready": false}.
    let json: serde_json::Value = match serde_json::from_slice(&response.body) {
        Ok(v) => v,
        Err(e) => panic!(
            "status {status} with a body that is not JSON ({e}): {} {} -> {body:?}",
            request.method(),
            request.uri()
        ),
    };
    let error = json.get("error").and_then(|e| e.as_str());
    let not_ready = json.get("ready") == Some(&serde_json::Value::Bool(false));
    assert!(
        error.is_some_and(|e| !e.is_empty()) || (status == 503 && not_ready),
        "status {status} without an error message: {} {} -> {body}",
        request.method(),
        request.uri()
    );
    if status == 401 {
        assert!(
            response.headers.contains_key(header::WWW_AUTHENTICATE),
            "401 without WWW-Authenticate"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let harness = common::harness();
    let Some(request) = build(data) else {
        return;
    };
    common::trace(format_args!(
        "request: {} {} {:?} {:?} body {} bytes",
        request.method(),
        request.uri(),
        request.version(),
        request.headers(),
        request.body().len()
    ));
    let response = harness.rest(request.clone());
    common::trace(format_args!(
        "response: {} {:?}",
        response.status,
        String::from_utf8_lossy(&response.body)
    ));
    check(&request, &response);
    common::after_input();
});
