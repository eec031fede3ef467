//! hyper answers an HTTP/1 request it cannot parse by itself, before any
//! service sees it: 400 for a malformed request line or header, 414 for a
//! URI that is too long, 431 for a head over the read buffer
//! (`--max-header-bytes`) or over 100 headers, each with an empty body. Every
//! other error of ours is `{"error": "..."}`, so [`JsonParseErrors`] wraps the
//! connection and writes that body in place of those replies.
//!
//! It recognises hyper's reply by its exact form: one write that is a whole
//! head (ending in a blank line, with no body) starting with the status line,
//! `connection: close` and `content-length: 0`, made while no request is in
//! progress on the connection (every response of the application, body
//! included, is written while its request counts as busy; see
//! [`crate::net::Activity`]). The application never sends a 4xx without a
//! JSON body, so nothing it writes can match. The connection closes after the
//! reply either way, as hyper intended.

use bytes::Bytes;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The heads hyper writes for parse errors (hyper 1.x, `proto/h1/role.rs`),
/// up to the `date` header that follows.
const HYPER_REPLIES: [(&[u8], u16); 3] = [
    (
        b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n",
        400,
    ),
    (
        b"HTTP/1.1 414 URI Too Long\r\nconnection: close\r\ncontent-length: 0\r\n",
        414,
    ),
    (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\n",
        431,
    ),
];

/// Our reply for hyper's `status`.
fn reply(status: u16, max_header_bytes: usize) -> Bytes {
    let (line, error) = match status {
        431 => (
            "431 Request Header Fields Too Large",
            format!(
                "the request head (request line and headers) is over the server's limit of {max_header_bytes} bytes or 100 headers (--max-header-bytes)"
            ),
        ),
        414 => (
            "414 URI Too Long",
            "the request URI is longer than the server accepts".to_string(),
        ),
        _ => (
            "400 Bad Request",
            "the request is not valid HTTP/1.1: a malformed request line or header".to_string(),
        ),
    };
    let body = serde_json::json!({ "error": error }).to_string();
    Bytes::from(format!(
        "HTTP/1.1 {line}\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    ))
}

/// An HTTP/1 connection whose parse-error replies carry a JSON body.
pub(crate) struct JsonParseErrors<T> {
    inner: T,
    max_header_bytes: usize,
    activity: std::sync::Arc<crate::net::Activity>,
    /// Our reply still to write, and how much of hyper's write it stands for.
    pending: Option<(Bytes, usize)>,
}

impl<T> JsonParseErrors<T> {
    pub fn new(
        inner: T,
        max_header_bytes: usize,
        activity: std::sync::Arc<crate::net::Activity>,
    ) -> Self {
        Self {
            inner,
            max_header_bytes,
            activity,
            pending: None,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonParseErrors<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> JsonParseErrors<T> {
    /// Writes what is left of our reply; `Ready(n)` once all of it is out,
    /// with `n` the length of hyper's write it replaced.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        while let Some((rest, stands_for)) = &mut self.pending {
            if rest.is_empty() {
                let n = *stands_for;
                self.pending = None;
                return Poll::Ready(Ok(n));
            }
            match Pin::new(&mut self.inner).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    let _ = rest.split_to(n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(0))
    }

    /// Starts a replacement when `head` (the start of a write) is one of
    /// hyper's parse-error replies.
    fn recognise(&mut self, head: &[u8], len: usize) -> bool {
        if head.len() != len || head.len() > 512 || !head.ends_with(b"\r\n\r\n") {
            return false;
        }
        let Some((_, status)) = HYPER_REPLIES.iter().find(|(h, _)| head.starts_with(h)) else {
            return false;
        };
        if self.activity.is_busy() {
            return false;
        }
        self.pending = Some((reply(*status, self.max_header_bytes), len));
        true
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonParseErrors<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.is_none() && !this.recognise(buf, buf.len()) {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        this.poll_pending(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.is_none() {
            // hyper encodes a head into one buffer, so it is the first slice.
            let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
            let len = bufs.iter().map(|b| b.len()).sum();
            if !this.recognise(first, len) {
                return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
            }
        }
        this.poll_pending(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn written(writes: &[&[u8]]) -> String {
        written_on(writes, crate::net::Activity::idle()).await
    }

    async fn written_on(
        writes: &[&[u8]],
        activity: std::sync::Arc<crate::net::Activity>,
    ) -> String {
        let (a, mut b) = tokio::io::duplex(16);
        let mut io = JsonParseErrors::new(a, 8192, activity);
        let writer = async move {
            for w in writes {
                io.write_all(w).await.unwrap();
            }
            io.shutdown().await.unwrap();
        };
        let mut out = Vec::new();
        let (_, read) = tokio::join!(writer, b.read_to_end(&mut out));
        read.unwrap();
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn hypers_empty_replies_get_a_json_error() {
        let hyper = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Mon, 30 Nov 2026 06:01:50 GMT\r\n\r\n";
        let out = written(&[hyper]).await;
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(v["error"].as_str().unwrap().contains("--max-header-bytes"));
        let out = written(&[
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
        ])
        .await;
        assert!(out.starts_with("HTTP/1.1 400 ") && out.contains("not valid HTTP/1.1"));
    }

    #[tokio::test]
    async fn every_other_write_passes_untouched() {
        let app = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 13\r\n\r\n{\"error\":\"x\"}";
        assert_eq!(written(&[app]).await.as_bytes(), app);
        let ok: &[&[u8]] = &[b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n", b"{}"];
        assert_eq!(
            written(ok).await,
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"
        );
        // A response body that happens to hold hyper's head: written while
        // its request is busy, or not a whole head on its own, it passes.
        let head = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        let activity = crate::net::Activity::idle();
        let busy = activity.begin();
        assert_eq!(written_on(&[head], activity.clone()).await.as_bytes(), head);
        drop(busy);
        let mut longer = head.to_vec();
        longer.extend_from_slice(b"more");
        assert_eq!(written(&[&longer]).await.as_bytes(), &longer[..]);
    }
}
