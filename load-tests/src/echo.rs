//! Deliberately trivial KServe v2 endpoints for measuring the generator's own
//! overhead and the transport floor a server stands on (hidden
//! `--serve-echo` and `--serve-echo-grpc` options). Run them pinned to one
//! core and the generator pinned to another.
//!
//! - REST (`--serve-echo`): raw TCP, HTTP/1.1 only. It answers
//!   `GET /v2/models/...` with fixed metadata (one `FP32 [-1, 4]` input) and
//!   every `POST` with a fixed JSON inference response, without parsing the
//!   body: the least any HTTP/1.1 server can cost.
//! - gRPC (`--serve-echo-grpc`): HTTP/2 through the `h2` crate (the framing,
//!   flow control and HPACK every gRPC server must do), answering
//!   `ModelMetadata` and every other call with a fixed, pre-encoded message
//!   and `grpc-status: 0`, after reading the request's body without decoding
//!   it: the least a Rust gRPC server built on `h2` can cost. Tonic's routing
//!   and codec and the server's own work are what a real server adds.

use anyhow::{Context, Result, bail};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const METADATA: &str = r#"{"name":"echo","versions":["1"],"platform":"echo","inputs":[{"name":"INPUT0","datatype":"FP32","shape":[-1,4]}],"outputs":[{"name":"OUTPUT0","datatype":"FP32","shape":[-1,1]}]}"#;
const INFER: &str = r#"{"model_name":"echo","model_version":"1","outputs":[{"name":"OUTPUT0","datatype":"FP32","shape":[1,1],"data":[0.0]}]}"#;

fn response(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Binds `addr` and says so on stderr, naming the endpoint `what`.
async fn bind(addr: &str, what: &str) -> Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    eprintln!("{what} listening on http://{}", listener.local_addr()?);
    Ok(listener)
}

/// Serves the echo endpoint on `addr` until the process is killed.
pub async fn serve(addr: &str) -> Result<()> {
    serve_on(bind(addr, "echo endpoint").await?).await
}

/// Serves the echo endpoint on an already-bound listener, forever.
pub async fn serve_on(listener: TcpListener) -> Result<()> {
    loop {
        let (sock, _) = listener.accept().await?;
        sock.set_nodelay(true)?;
        tokio::spawn(async move {
            if let Err(e) = handle(sock).await {
                eprintln!("echo connection: {e:#}");
            }
        });
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Parses (method, content-length) from a request head.
fn parse_head(head: &[u8]) -> Result<(bool, usize)> {
    let head = std::str::from_utf8(head).context("non-UTF-8 request head")?;
    let mut lines = head.split("\r\n");
    let is_get = lines.next().is_some_and(|l| l.starts_with("GET "));
    let mut len = 0;
    for line in lines {
        if let Some((k, v)) = line.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().context("bad Content-Length")?;
        }
    }
    Ok((is_get, len))
}

async fn handle(mut sock: TcpStream) -> Result<()> {
    let (meta, infer) = (response(METADATA), response(INFER));
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        let head_end = loop {
            if let Some(p) = find(&buf, b"\r\n\r\n") {
                break p + 4;
            }
            if buf.len() > 1 << 20 {
                bail!("request head too large");
            }
            if sock.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        };
        let (is_get, len) = parse_head(&buf[..head_end])?;
        while buf.len() < head_end + len {
            if sock.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        }
        buf.advance(head_end + len);
        sock.write_all(if is_get { &meta } else { &infer }).await?;
    }
}

/// A message in gRPC's length-prefixed framing: no compression, then the
/// length as a big-endian `u32`.
fn grpc_frame(message: &impl Message) -> Bytes {
    let body = message.encode_to_vec();
    let mut out = BytesMut::with_capacity(5 + body.len());
    out.put_u8(0);
    out.put_u32(u32::try_from(body.len()).unwrap_or(u32::MAX));
    out.put_slice(&body);
    out.freeze()
}

/// The two fixed answers of the gRPC echo: `ModelMetadata`, and the rest.
#[derive(Clone)]
struct GrpcAnswers {
    metadata: Bytes,
    infer: Bytes,
}

impl GrpcAnswers {
    fn new() -> Self {
        use crate::proto::model_infer_response::InferOutputTensor;
        use crate::proto::model_metadata_response::TensorMetadata;
        use crate::proto::{ModelInferResponse, ModelMetadataResponse};
        let tensor = |name: &str, shape: Vec<i64>| TensorMetadata {
            name: name.into(),
            datatype: "FP32".into(),
            shape,
        };
        let metadata = ModelMetadataResponse {
            name: "echo".into(),
            versions: vec!["1".into()],
            platform: "echo".into(),
            inputs: vec![tensor("INPUT0", vec![-1, 4])],
            outputs: vec![tensor("OUTPUT0", vec![-1, 1])],
        };
        let infer = ModelInferResponse {
            model_name: "echo".into(),
            model_version: "1".into(),
            outputs: vec![InferOutputTensor {
                name: "OUTPUT0".into(),
                datatype: "FP32".into(),
                shape: vec![1, 1],
                ..Default::default()
            }],
            raw_output_contents: vec![Bytes::from_static(&[0; 4])],
            ..Default::default()
        };
        Self {
            metadata: grpc_frame(&metadata),
            infer: grpc_frame(&infer),
        }
    }
}

/// Serves the gRPC echo endpoint on `addr` until the process is killed.
pub async fn serve_grpc(addr: &str) -> Result<()> {
    serve_grpc_on(bind(addr, "gRPC echo endpoint").await?).await
}

/// Serves the gRPC echo endpoint on an already-bound listener, forever.
pub async fn serve_grpc_on(listener: TcpListener) -> Result<()> {
    let answers = GrpcAnswers::new();
    loop {
        let (sock, _) = listener.accept().await?;
        sock.set_nodelay(true)?;
        let answers = answers.clone();
        tokio::spawn(async move {
            if let Err(e) = handle_h2(sock, answers).await {
                eprintln!("gRPC echo connection: {e:#}");
            }
        });
    }
}

/// One HTTP/2 connection: each stream (call) is answered by its own task,
/// as hyper does, so the connection keeps being driven while a call's body
/// is read.
async fn handle_h2(sock: TcpStream, answers: GrpcAnswers) -> Result<()> {
    let mut conn = h2::server::handshake(sock)
        .await
        .context("HTTP/2 handshake")?;
    while let Some(accepted) = conn.accept().await {
        let (request, respond) = accepted.context("accepting a stream")?;
        let message = if request.uri().path().ends_with("/ModelMetadata") {
            answers.metadata.clone()
        } else {
            answers.infer.clone()
        };
        tokio::spawn(async move {
            if let Err(e) = answer_call(request, respond, message).await {
                eprintln!("gRPC echo call: {e:#}");
            }
        });
    }
    Ok(())
}

/// Reads a call's body to its end (giving its flow-control credit back),
/// then sends `message` and the OK trailers.
async fn answer_call(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    message: Bytes,
) -> Result<()> {
    let mut body = request.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.context("reading the request body")?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let head = http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(())
        .context("building the response head")?;
    let mut send = respond
        .send_response(head, false)
        .context("sending the response head")?;
    send.send_data(message, false)
        .context("sending the message")?;
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    send.send_trailers(trailers)
        .context("sending the trailers")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_parsing() {
        let (get, len) =
            parse_head(b"POST /v2/models/echo/infer HTTP/1.1\r\ncontent-length: 12\r\n\r\n")
                .unwrap();
        assert!(!get);
        assert_eq!(len, 12);
        assert!(
            parse_head(b"GET /v2/models/echo HTTP/1.1\r\n\r\n")
                .unwrap()
                .0
        );
        assert!(serde_json::from_str::<serde_json::Value>(METADATA).is_ok());
        assert!(serde_json::from_str::<serde_json::Value>(INFER).is_ok());
    }
}

#[cfg(test)]
mod grpc_tests {
    use super::*;
    use crate::client::grpc_client;
    use crate::proto::{ModelInferRequest, ModelMetadataRequest};

    /// A stock tonic client gets the fixed answers, over several calls on
    /// one connection.
    #[tokio::test]
    async fn tonic_client_gets_the_fixed_answers() -> Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(serve_grpc_on(listener));
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        let mut client = grpc_client(channel);
        let meta = client
            .model_metadata(ModelMetadataRequest {
                name: "echo".into(),
                version: String::new(),
            })
            .await?
            .into_inner();
        assert_eq!(meta.inputs.len(), 1);
        assert_eq!(
            meta.inputs.first().map(|t| t.shape.clone()),
            Some(vec![-1, 4])
        );
        for _ in 0..3 {
            let request = ModelInferRequest {
                model_name: "echo".into(),
                raw_input_contents: vec![Bytes::from(vec![0u8; 16 * 1024])],
                ..Default::default()
            };
            let response = client.model_infer(request).await?.into_inner();
            assert_eq!(response.model_name, "echo");
            assert_eq!(response.outputs.len(), response.raw_output_contents.len());
        }
        server.abort();
        Ok(())
    }
}
