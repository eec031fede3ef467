//! A deliberately trivial KServe v2 REST endpoint (hidden `--serve-echo`
//! option) for measuring the generator's own overhead: it answers
//! `GET /v2/models/...` with fixed metadata (one `FP32 [-1, 4]` input) and
//! every `POST` with a fixed JSON inference response, without parsing the
//! body. Run it pinned to one core and the generator pinned to another.

use anyhow::{Context, Result, bail};
use bytes::{Buf, BytesMut};
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

/// Serves the echo endpoint on `addr` until the process is killed.
pub async fn serve(addr: &str) -> Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    eprintln!(
        "echo endpoint listening on http://{}",
        listener.local_addr()?
    );
    serve_on(listener).await
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
