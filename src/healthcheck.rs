//! `sluice healthcheck`: one GET against a health URL, for container
//! HEALTHCHECKs and exec probes. Success is a 2xx answer within the time
//! limit; anything else is an error that says what happened (connection
//! refused, the TLS failure, or the status and body).

use std::time::Duration;

/// How long the whole probe may take.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);

/// Probes `url` (`http://` or `https://`, whose certificate is not checked,
/// as the kubelet's HTTPS probes do not check it) with a GET. `Ok` on a 2xx
/// answer within [`TIMEOUT`]; otherwise why not, in one line.
pub async fn probe(url: &str) -> Result<(), String> {
    let uri = url
        .parse::<hyper::Uri>()
        .map_err(|e| format!("'{url}' is not a URL: {e}"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        other => {
            return Err(format!(
                "'{url}': the scheme must be http or https, got {}",
                other.unwrap_or("none")
            ));
        }
    };
    let host = uri
        .host()
        .ok_or_else(|| format!("'{url}' has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let probe = async {
        let stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
        if !https {
            return get(stream, &host, &path).await;
        }
        let name = rustls_pki_types::ServerName::try_from(host.clone())
            .map_err(|e| format!("'{host}' is not a TLS server name: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(crate::net::tls::probe_client_config())
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS handshake with {host}:{port} failed: {e}"))?;
        get(tls, &host, &path).await
    };
    match tokio::time::timeout(TIMEOUT, probe).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "no answer from {url} within {} s",
            TIMEOUT.as_secs()
        )),
    }
}

/// Sends the GET and reads the answer: `Ok` on 2xx, else the status and
/// the start of the body.
async fn get<IO>(io: IO, host: &str, path: &str) -> Result<(), String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::BodyExt as _;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    tokio::spawn(conn);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, host)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("the request failed: {e}"))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body[..body.len().min(512)])
        .trim()
        .to_string();
    Err(if text.is_empty() {
        format!("status {status}")
    } else {
        format!("status {status}: {text}")
    })
}
