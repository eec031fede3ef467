//! Requests held open at a point the test knows, so that what happens
//! beside them is ordered by that point and not by a guess at how long a
//! model runs.
//!
//! - [`HeldRequest`]: a REST request the server has admitted (it holds its
//!   in-flight permit and its share of the body budget) and whose body has
//!   not been sent.
//! - [`RawCall`]: a gRPC call on its own HTTP/2 connection whose message
//!   arrives in pieces the test chooses.

use super::wait::PATIENCE;
use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// A REST POST whose head has been sent with `Expect: 100-continue` and
/// whose body has not.
///
/// hyper answers `100 Continue` when the handler first reads the body. The
/// guard runs before the handler: it authenticates, takes an in-flight
/// permit, reserves the `Content-Length` from the body budget and starts the
/// request timeout. So once `100 Continue` has arrived (and nothing else is
/// in flight to be refused in its place), the request holds its permit and
/// its bytes until [`HeldRequest::finish`] sends the body.
pub struct HeldRequest {
    stream: TcpStream,
    body: Vec<u8>,
    /// What arrived after `100 Continue` (normally nothing).
    read: Vec<u8>,
}

impl HeldRequest {
    pub async fn admitted(addr: SocketAddr, path: &str, body: impl Into<Vec<u8>>) -> Self {
        let body = body.into();
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nexpect: 100-continue\r\nconnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut read = Vec::new();
        let continued = tokio::time::timeout(PATIENCE, async {
            let mut buf = [0u8; 1024];
            while !read.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed before 100 Continue");
                read.extend_from_slice(&buf[..n]);
            }
        })
        .await;
        assert!(continued.is_ok(), "no 100 Continue within {PATIENCE:?}");
        let end = read.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let interim = String::from_utf8_lossy(&read[..end]).to_string();
        assert!(
            interim.starts_with("HTTP/1.1 100"),
            "the server answered before reading the body: {}",
            String::from_utf8_lossy(&read)
        );
        read.drain(..end);
        Self { stream, body, read }
    }

    /// Sends the body and returns the answer.
    pub async fn finish(mut self) -> RawResponse {
        let body = std::mem::take(&mut self.body);
        self.stream.write_all(&body).await.unwrap();
        self.answer().await
    }

    /// Waits for the answer without sending the body.
    pub async fn answer(mut self) -> RawResponse {
        let read = tokio::time::timeout(PATIENCE, self.stream.read_to_end(&mut self.read)).await;
        assert!(read.is_ok(), "no answer within {PATIENCE:?}");
        RawResponse::parse(&self.read)
    }
}

/// An HTTP/1.1 answer read to the end of the connection.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// The head, header names in lower case as hyper sends them.
    pub head: String,
    pub body: String,
}

impl RawResponse {
    fn parse(bytes: &[u8]) -> Self {
        let text = String::from_utf8_lossy(bytes);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP answer: {text}"));
        Self {
            status,
            head: head.to_string(),
            body: body.to_string(),
        }
    }

    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_default()
    }
}

type Frames = mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>;
type Body =
    StreamBody<tokio_stream::wrappers::ReceiverStream<Result<Frame<Bytes>, std::io::Error>>>;

/// A gRPC call to `inference.GRPCInferenceService/<method>` on a fresh
/// HTTP/2 connection; its message is sent by [`RawCall::send`] and ends
/// with [`RawCall::end`] (or never).
pub struct RawCall {
    frames: Option<Frames>,
    /// Kept so that the connection lives as long as the call.
    _sender: http2::SendRequest<Body>,
    response: tokio::task::JoinHandle<hyper::Result<hyper::Response<hyper::body::Incoming>>>,
}

impl RawCall {
    pub async fn start(addr: SocketAddr, method: &str) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let (frames, rx) = mpsc::channel(16);
        let request = hyper::Request::post(format!(
            "http://{addr}/inference.GRPCInferenceService/{method}"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .unwrap();
        let response = tokio::spawn(sender.send_request(request));
        Self {
            frames: Some(frames),
            _sender: sender,
            response,
        }
    }

    /// Sends `bytes` of the message body.
    pub async fn send(&mut self, bytes: Bytes) {
        let frames = self.frames.as_ref().expect("the body has ended");
        frames.send(Ok(Frame::data(bytes))).await.unwrap();
    }

    /// Ends the message body (END_STREAM).
    pub fn end(&mut self) {
        self.frames = None;
    }

    /// Waits for the answer's head and returns its headers: the status of a
    /// trailers-only answer (every refusal) is there.
    pub async fn headers(self) -> hyper::HeaderMap {
        let response = tokio::time::timeout(PATIENCE, self.response)
            .await
            .unwrap_or_else(|_| panic!("no answer within {PATIENCE:?}"))
            .unwrap()
            .unwrap();
        // The body stays open while `frames` lives: the answer came anyway.
        drop(self.frames);
        response.headers().clone()
    }
}
