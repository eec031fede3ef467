//! Hardening at the edge: bearer tokens on REST and gRPC, TLS (with reload
//! and mutual TLS), and the limits on everything a client controls. Real
//! servers on port 0, real clients (reqwest, tonic, hyper over rustls, raw
//! TCP for what no well-behaved client would send).

use crate::harness::grpc::{client, raw_request};
use crate::harness::models::slow_repo;
use crate::harness::{TestServer, test_repo};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use serde_json::json;
use sluice::grpc::pb;
use sluice::tensor::{DataType, Tensor, TensorData};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;

const INFER: &str = "infer-token-for-tests-0001";
const ADMIN: &str = "admin-token-for-tests-0001";

const IRIS: &str =
    r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}"#;

fn with_tokens(c: &mut sluice::ServerConfig) {
    c.auth.infer_tokens = vec![INFER.parse().unwrap()];
    c.auth.admin_tokens = vec![ADMIN.parse().unwrap()];
}

async fn post(s: &TestServer, path: &str, token: Option<&str>, body: &str) -> reqwest::Response {
    let mut r = s.client.post(s.url(path)).body(body.to_string());
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap()
}

async fn error_of(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let v: serde_json::Value = r.json().await.unwrap();
    (status, v["error"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn rest_tokens_and_scopes() {
    let s = TestServer::start_with(&test_repo(), with_tokens).await;
    // Health and metrics stay open.
    assert_eq!(s.get("/v2/health/ready").await.0, 200);
    assert_eq!(s.get("/metrics").await.0, 200);

    let r = post(&s, "/v2/models/iris/infer", None, IRIS).await;
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer realm=\"sluice\"",
        "401 names the scheme"
    );
    let (status, error) = error_of(r).await;
    assert_eq!(status, 401);
    assert!(error.contains("authentication required"), "{error}");
    for bad in ["not-a-token-at-all-000", "", INFER.trim_end_matches('1')] {
        let (status, error) =
            error_of(post(&s, "/v2/models/iris/infer", Some(bad), IRIS).await).await;
        assert_eq!(status, 401, "{bad}");
        // No detail about which tokens exist.
        assert!(
            !error.contains(INFER) && !error.contains(bad) || bad.is_empty(),
            "{error}"
        );
    }
    assert_eq!(
        post(&s, "/v2/models/iris/infer", Some(INFER), IRIS)
            .await
            .status(),
        200
    );
    assert_eq!(
        post(&s, "/v2/models/iris/infer", Some(ADMIN), IRIS)
            .await
            .status(),
        200
    );
    let r = s
        .client
        .get(s.url("/v2/models/iris"))
        .bearer_auth(INFER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "metadata needs infer");

    // The repository API needs admin.
    let (status, error) = error_of(post(&s, "/v2/repository/index", Some(INFER), "{}").await).await;
    assert_eq!(status, 403);
    assert!(error.contains("'admin' scope"), "{error}");
    assert_eq!(
        post(&s, "/v2/repository/index", Some(ADMIN), "{}")
            .await
            .status(),
        200
    );
    assert_eq!(
        post(&s, "/v2/repository/index", None, "{}").await.status(),
        401
    );
    eprintln!("security: rest auth: 12 requests, 0 unexpected");
}

#[tokio::test]
async fn protected_health_and_metrics_need_a_token() {
    let repo = test_repo();
    let s = TestServer::spawn(&repo, |c| {
        with_tokens(c);
        c.auth.protect_health = true;
        c.auth.protect_metrics = true;
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = s
            .client
            .get(s.url("/v2/health/ready"))
            .bearer_auth(INFER)
            .send()
            .await;
        if r.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.get("/v2/health/live").await.0, 401);
    assert_eq!(s.get("/metrics").await.0, 401);
    let r = s
        .client
        .get(s.url("/metrics"))
        .bearer_auth(INFER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut c = client(s.grpc).await;
    let e = c.server_ready(pb::ServerReadyRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
}

fn with_bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

fn iris_request() -> pb::ModelInferRequest {
    let x: Vec<u8> = [5.1f32, 3.5, 1.4, 0.2]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    raw_request(
        "iris",
        &[Tensor {
            name: "input".into(),
            datatype: DataType::Fp32,
            shape: vec![1, 4],
            data: TensorData::Fixed(Bytes::from(x)),
        }],
    )
}

#[tokio::test]
async fn grpc_tokens_and_scopes() {
    let s = TestServer::start_with(&test_repo(), with_tokens).await;
    let mut c = client(s.grpc).await;
    // Health is open, inference is not.
    assert!(
        c.server_live(pb::ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    let e = c.model_infer(iris_request()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    let e = c
        .model_infer(with_bearer(iris_request(), "wrong-token-000000000"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    c.model_infer(with_bearer(iris_request(), INFER))
        .await
        .unwrap();
    let index = pb::RepositoryIndexRequest::default();
    let e = c
        .repository_index(with_bearer(index.clone(), INFER))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    c.repository_index(with_bearer(index, ADMIN)).await.unwrap();
    // A stream needs the token too.
    let e = c
        .model_stream_infer(futures::stream::iter(vec![iris_request()]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
}

// === TLS ===

/// A throwaway CA that issues server and client certificates.
struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Self {
            dir: tempfile::tempdir().unwrap(),
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for localhost / 127.0.0.1, as (cert PEM, key PEM).
    fn leaf(&self, cn: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        // Write then rename, as a secret mount swaps files.
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }

    fn client_config(&self, identity: Option<(&str, &str)>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).unwrap())
            .unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        Arc::new(match identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
                )
                .unwrap(),
        })
    }
}

/// One HTTPS GET; returns the status and the server's leaf certificate.
async fn https_get(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<(u16, Vec<u8>), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").unwrap();
    let stream = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(tls).connect(name, tcp),
    )
    .await
    .map_err(|_| "handshake timed out".to_string())?
    .map_err(|e| e.to_string())?;
    let leaf = stream.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let request = hyper::Request::get(path)
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    Ok((status, leaf))
}

async fn https_ready(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(
        https_get(addr, tls.clone(), "/v2/health/ready").await,
        Ok((200, _))
    ) {
        assert!(Instant::now() < deadline, "TLS server not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn grpc_tls(
    addr: SocketAddr,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<crate::harness::grpc::Client, tonic::transport::Error> {
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(pb::grpc_inference_service_client::GrpcInferenceServiceClient::new(channel))
}

#[tokio::test]
async fn tls_serves_both_protocols_and_reloads_the_certificate() {
    let pki = Pki::new("sluice test ca");
    let (cert, key) = pki.leaf("first");
    let (cert_path, key_path) = (pki.write("tls.crt", &cert), pki.write("tls.key", &key));
    let s = TestServer::spawn(&test_repo(), |c| {
        c.tls = Some(sluice::net::tls::TlsFiles {
            cert: cert_path.clone(),
            key: key_path.clone(),
            client_ca: None,
        });
        c.secrets_reload = Duration::from_millis(50);
    })
    .await;
    let tls = pki.client_config(None);
    https_ready(s.http, tls.clone()).await;
    // `sluice healthcheck` probes an https:// URL (as the kubelet does, without
    // checking the certificate); plain http:// against a TLS port fails.
    let port = s.http.port();
    assert!(sluice::healthcheck(&format!("https://127.0.0.1:{port}/v2/health/ready")).await);
    assert!(!sluice::healthcheck(&format!("http://127.0.0.1:{port}/v2/health/ready")).await);
    let first_der = CertificateDer::from_pem_slice(cert.as_bytes())
        .unwrap()
        .to_vec();
    let (status, leaf) = https_get(s.http, tls.clone(), "/v2/health/live")
        .await
        .unwrap();
    assert_eq!((status, leaf == first_der), (200, true));

    // gRPC over TLS (ALPN h2), with a stock tonic client.
    let mut c = grpc_tls(s.grpc, &pki.ca_pem, None).await.unwrap();
    c.model_infer(iris_request()).await.unwrap();

    // A plaintext client on the TLS port gets an error, never a hang.
    let plain = tokio::time::timeout(
        Duration::from_secs(10),
        s.client.get(s.url("/v2/health/live")).send(),
    )
    .await
    .expect("a plaintext client must not hang");
    assert!(plain.is_err() || plain.is_ok_and(|r| r.status() != 200));

    // A bad rotation (a key that does not match) is refused; the old pair serves.
    let (other_cert, _) = pki.leaf("mismatched");
    pki.write("tls.crt", &other_cert);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, leaf) = https_get(s.http, tls.clone(), "/v2/health/live")
        .await
        .unwrap();
    assert_eq!(
        leaf, first_der,
        "a mismatched pair must not replace a working one"
    );

    // A good rotation is picked up without a restart.
    let (cert2, key2) = pki.leaf("second");
    pki.write("tls.key", &key2);
    pki.write("tls.crt", &cert2);
    let second_der = CertificateDer::from_pem_slice(cert2.as_bytes())
        .unwrap()
        .to_vec();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, leaf) = https_get(s.http, tls.clone(), "/v2/health/live")
            .await
            .unwrap();
        if leaf == second_der {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rotated certificate was not served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The open gRPC connection keeps working across the rotation.
    c.model_infer(iris_request()).await.unwrap();
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let pki = Pki::new("server ca");
    let clients = Pki::new("client ca");
    let strangers = Pki::new("stranger ca");
    let (cert, key) = pki.leaf("server");
    let s = TestServer::spawn(&test_repo(), |c| {
        c.tls = Some(sluice::net::tls::TlsFiles {
            cert: pki.write("tls.crt", &cert),
            key: pki.write("tls.key", &key),
            client_ca: Some(pki.write("clients.pem", &clients.ca_pem)),
        });
    })
    .await;
    let (client_cert, client_key) = clients.leaf("a client");
    let good = pki.client_config(Some((&client_cert, &client_key)));
    https_ready(s.http, good.clone()).await;

    let (stranger_cert, stranger_key) = strangers.leaf("a stranger");
    for (what, config) in [
        ("no certificate", pki.client_config(None)),
        (
            "a certificate from another CA",
            pki.client_config(Some((&stranger_cert, &stranger_key))),
        ),
    ] {
        assert!(
            https_get(s.http, config, "/v2/health/live").await.is_err(),
            "{what} must be refused"
        );
    }
    let mut c = grpc_tls(s.grpc, &pki.ca_pem, Some((&client_cert, &client_key)))
        .await
        .unwrap();
    c.model_infer(iris_request()).await.unwrap();
    let refused = match grpc_tls(s.grpc, &pki.ca_pem, None).await {
        Err(_) => true,
        Ok(mut c) => c.model_infer(iris_request()).await.is_err(),
    };
    assert!(refused, "gRPC without a client certificate must be refused");
}

#[test]
fn a_bad_certificate_stops_the_server_at_start_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    std::fs::write(&cert, "not a certificate").unwrap();
    std::fs::write(&key, "not a key").unwrap();
    let err = sluice::net::tls::TlsConfigs::load(sluice::net::tls::TlsFiles {
        cert: cert.clone(),
        key,
        client_ca: None,
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("tls.crt") && err.contains("CERTIFICATE"),
        "{err}"
    );
}

// === Limits ===

/// Sends `request` on a fresh connection and reads until the server closes
/// it or `wait` passes; returns what came back.
async fn raw_exchange(addr: SocketAddr, request: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let s = TestServer::start_with(&test_repo(), |c| c.http.max_header_bytes = 8192).await;
    // Too big, too many headers, or not HTTP at all: hyper refuses each
    // before routing; the reply still carries our JSON error.
    let big = format!(
        "GET /v2/health/live HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let many = format!(
        "GET /v2/health/live HTTP/1.1\r\nhost: x\r\n{}\r\n",
        (0..150).map(|i| format!("h{i}: x\r\n")).collect::<String>()
    );
    let cases: [(&[u8], &str, &str); 3] = [
        (
            big.as_bytes(),
            "431",
            "8192 bytes or 100 headers (--max-header-bytes)",
        ),
        (many.as_bytes(), "431", "--max-header-bytes"),
        (
            b"GET /v2 HTTP/1.1\r\nhost: x\r\nno colon here\r\n\r\n",
            "400",
            "not valid HTTP/1.1",
        ),
    ];
    for (request, status, words) in cases {
        let reply = raw_exchange(s.http, request, Duration::from_secs(10)).await;
        assert!(reply.starts_with(&format!("HTTP/1.1 {status} ")), "{reply}");
        let (head, body) = reply.split_once("\r\n\r\n").unwrap_or_default();
        assert!(head.contains("content-type: application/json"), "{head}");
        let error: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        assert!(
            error["error"].as_str().is_some_and(|e| e.contains(words)),
            "{reply}"
        );
    }
    // Under the limit is fine, and a JSON reply declares its length (the
    // connection's bookkeeping wraps every body but keeps its size).
    let request = format!(
        "GET /v2 HTTP/1.1\r\nhost: x\r\nconnection: close\r\nx-big: {}\r\n\r\n",
        "a".repeat(4000)
    );
    let reply = raw_exchange(s.http, request.as_bytes(), Duration::from_secs(10)).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or_default();
    assert!(
        head.contains(&format!("content-length: {}", body.len())) && !head.contains("chunked"),
        "{head}"
    );
}

#[tokio::test]
async fn slow_loris_headers_and_bodies_are_cut_off() {
    let s = TestServer::start_with(&test_repo(), |c| {
        c.http.header_read_timeout = Some(Duration::from_millis(500));
        c.body.read_timeout = Duration::from_millis(500);
        c.net.handshake_timeout = Duration::from_millis(300);
    })
    .await;
    // Connect and send nothing, on either port: closed after the handshake deadline.
    for addr in [s.http, s.grpc] {
        let started = Instant::now();
        let reply = raw_exchange(addr, b"", Duration::from_secs(20)).await;
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(15),
            "{addr}: closed after {took:?}"
        );
        assert!(reply.is_empty() || !reply.contains(" 200 "), "{reply}");
    }
    // Half a request head, then nothing: the server closes the connection.
    let started = Instant::now();
    let reply = raw_exchange(
        s.http,
        b"POST /v2/models/iris/infer HTTP/1.1\r\nhost: x\r\n",
        Duration::from_secs(20),
    )
    .await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "closed after {took:?}: {reply}"
    );
    assert!(!reply.contains(" 200 "), "{reply}");

    // A full head promising 100 bytes, then 10: 408 in our error format.
    let reply = raw_exchange(
        s.http,
        b"POST /v2/models/iris/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"inputs\":",
        Duration::from_secs(20),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("--body-read-timeout-secs"), "{reply}");

    // Everyone else is served meanwhile.
    assert_eq!(
        s.post_raw("/v2/models/iris/infer", IRIS.into()).await.0,
        200
    );
}

#[tokio::test]
async fn json_depth_and_bytes_element_limits() {
    let s = TestServer::start_with(&test_repo(), |c| {
        c.body.max_json_depth = 16;
        c.limits.max_bytes_element = 8;
    })
    .await;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let (status, body) = s.post_raw("/v2/models/iris/infer", deep.into_bytes()).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("nests deeper than 16"),
        "{body}"
    );

    let strings = |s: &str| {
        json!({"inputs": [{"name": "INPUT0", "shape": [2, 3], "datatype": "BYTES",
                           "data": ["a", "b", "c", "d", "e", s]}]})
    };
    let (status, body) = s
        .post_json("/v2/models/dtype_string/infer", &strings("f"))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s
        .post_json("/v2/models/dtype_string/infer", &strings("0123456789"))
        .await;
    assert_eq!(status, 413, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("BYTES element 5 is 10 bytes") && error.contains("--max-bytes-element"),
        "{error}"
    );
}

#[tokio::test]
async fn the_connection_cap_answers_503_and_frees_slots() {
    let s = TestServer::start_with(&test_repo(), |c| c.net.max_connections = 4).await;
    // Open eight idle connections at once; those past the cap get a 503 (the
    // test client may hold a slot too). Wait for all of them together, so a
    // slow accept loop on a busy machine does not count as a held slot.
    let mut streams = Vec::new();
    for _ in 0..8 {
        streams.push(TcpStream::connect(s.http).await.unwrap());
    }
    let replies = futures::future::join_all(streams.iter_mut().map(|stream| async move {
        let mut buf = vec![0u8; 512];
        match tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            _ => None,
        }
    }))
    .await;
    let refused: Vec<&String> = replies.iter().flatten().collect();
    let held: Vec<TcpStream> = streams
        .into_iter()
        .zip(&replies)
        .filter(|(_, r)| r.is_none())
        .map(|(s, _)| s)
        .collect();
    assert!(held.len() <= 4, "{} connections held", held.len());
    assert!(refused.len() >= 4, "{refused:?}");
    let reply = refused[0].clone();
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(reply.to_lowercase().contains("retry-after: 1"), "{reply}");
    assert!(reply.contains("--max-connections"), "{reply}");
    let metrics = raw_exchange(
        s.http,
        b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    // The probe itself may be refused while every slot is held.
    if metrics.starts_with("HTTP/1.1 200") {
        assert!(metrics.contains("sluice_open_connections"), "{metrics}");
    }
    drop(held);
    // Slots come back as connections close.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = raw_exchange(
            s.http,
            b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            Duration::from_secs(5),
        )
        .await;
        if reply.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "slots not freed: {reply}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, metrics) = s.get("/metrics").await;
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(
        metrics.contains(r#"sluice_refused_connections_total{reason="limit"} "#),
        "{metrics}"
    );
}

const SLOW_JSON: &str = r#"{"inputs":[{"name":"x","shape":[1,1],"datatype":"FP32","data":[1.0]}]}"#;

fn slow_grpc() -> pb::ModelInferRequest {
    raw_request(
        "slow",
        &[Tensor {
            name: "x".into(),
            datatype: DataType::Fp32,
            shape: vec![1, 1],
            data: TensorData::Fixed(Bytes::from(1f32.to_le_bytes().to_vec())),
        }],
    )
}

#[tokio::test]
async fn the_inflight_cap_refuses_at_once_with_retry_after() {
    let repo = slow_repo();
    let s = TestServer::start_with(repo.path(), |c| c.max_inflight_requests = 1).await;
    let busy = post(&s, "/v2/models/slow/infer", None, SLOW_JSON);
    let refused = async {
        // Let the first request take the only permit.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let started = Instant::now();
        let r = post(&s, "/v2/models/slow/infer", None, SLOW_JSON).await;
        (r, started.elapsed())
    };
    let (busy, (refused, took)) = tokio::join!(busy, refused);
    assert_eq!(busy.status(), 200);
    assert_eq!(refused.headers()["retry-after"], "1");
    let (status, error) = error_of(refused).await;
    assert_eq!(status, 503);
    assert!(error.contains("--max-inflight-requests"), "{error}");
    assert!(took < Duration::from_secs(2), "refused after {took:?}");
    // Health is never behind the cap.
    let (probe, _) = tokio::join!(
        s.get("/v2/health/ready"),
        post(&s, "/v2/models/slow/infer", None, SLOW_JSON)
    );
    assert_eq!(probe.0, 200);

    // gRPC shares the cap.
    let mut a = client(s.grpc).await;
    let mut b = a.clone();
    let (first, second) = tokio::join!(a.model_infer(slow_grpc()), async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        b.model_infer(slow_grpc()).await
    });
    first.unwrap();
    let e = second.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert_eq!(e.metadata().get("retry-after").unwrap(), "1");
}

#[tokio::test]
async fn the_request_timeout_answers_504_and_deadline_exceeded() {
    let repo = slow_repo();
    let s = TestServer::start_with(repo.path(), |c| {
        c.request_timeout = Some(Duration::from_millis(20));
    })
    .await;
    let (status, error) = error_of(post(&s, "/v2/models/slow/infer", None, SLOW_JSON).await).await;
    assert_eq!(status, 504);
    assert!(error.contains("--request-timeout-secs"), "{error}");
    let mut c = client(s.grpc).await;
    let e = c.model_infer(slow_grpc()).await.unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e}");
    // Fast requests are untouched.
    let s2 = TestServer::start_with(&test_repo(), |c| {
        c.request_timeout = Some(Duration::from_secs(30));
    })
    .await;
    assert_eq!(
        s2.post_raw("/v2/models/iris/infer", IRIS.into()).await.0,
        200
    );
}

#[tokio::test]
async fn log_settings_are_admin_only_and_change_on_both_protocols() {
    let s = TestServer::start_with(&test_repo(), with_tokens).await;
    let get = |token: &'static str| s.client.get(s.url("/v2/logging")).bearer_auth(token).send();
    assert_eq!(get(INFER).await.unwrap().status(), 403);
    let settings: serde_json::Value = get(ADMIN).await.unwrap().json().await.unwrap();
    assert_eq!(settings["log_info"], true);
    assert_eq!(settings["log_verbose_level"], 0);

    let r = post(
        &s,
        "/v2/logging",
        Some(ADMIN),
        r#"{"log_verbose_level": 1}"#,
    )
    .await;
    assert_eq!(r.status(), 200);
    let settings: serde_json::Value = r.json().await.unwrap();
    assert_eq!(settings["log_verbose_level"], 1);
    assert_eq!(settings["log_filter"], "debug,ort=warn");
    let (status, error) =
        error_of(post(&s, "/v2/logging", Some(ADMIN), r#"{"log_info": "yes"}"#).await).await;
    assert_eq!(status, 400);
    assert!(error.contains("'log_info' must be a boolean"), "{error}");

    // gRPC LogSettings, as tritonclient's get/update_log_settings send it.
    use pb::log_settings_request::{SettingValue, setting_value::ParameterChoice};
    let mut c = client(s.grpc).await;
    let e = c
        .log_settings(with_bearer(pb::LogSettingsRequest::default(), INFER))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let change = pb::LogSettingsRequest {
        settings: [(
            "log_verbose_level".to_string(),
            SettingValue {
                parameter_choice: Some(ParameterChoice::Uint32Param(0)),
            },
        )]
        .into(),
    };
    let got = c
        .log_settings(with_bearer(change, ADMIN))
        .await
        .unwrap()
        .into_inner();
    let level = &got.settings["log_verbose_level"];
    assert_eq!(
        level.parameter_choice,
        Some(pb::log_settings_response::setting_value::ParameterChoice::Uint32Param(0))
    );
}

#[tokio::test]
async fn the_body_budget_refuses_big_bodies_but_admits_small_ones() {
    let repo = slow_repo();
    let s = TestServer::start_with(repo.path(), |c| c.max_inflight_body_bytes = 1 << 20).await;
    // A valid slow request padded to 900 KiB: two do not fit in 1 MiB.
    let big = format!("{SLOW_JSON}{}", " ".repeat(900 << 10));
    let first = post(&s, "/v2/models/slow/infer", None, &big);
    let second = async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let refused = post(&s, "/v2/models/slow/infer", None, &big).await;
        // A small body still fits beside the big one.
        let small = post(&s, "/v2/models/slow/infer", None, SLOW_JSON).await;
        (refused, small)
    };
    let (first, (refused, small)) = tokio::join!(first, second);
    assert_eq!(first.status(), 200);
    assert_eq!(small.status(), 200);
    assert_eq!(refused.headers()["retry-after"], "1");
    let (status, error) = error_of(refused).await;
    assert_eq!(status, 503);
    assert!(error.contains("--max-inflight-body-bytes"), "{error}");

    // gRPC messages draw on the same budget: a 900 KiB ModelInfer beside a
    // 900 KiB REST body is refused at once; a small one passes.
    let mut c = client(s.grpc).await;
    let mut padded = slow_grpc();
    padded.id = "x".repeat(900 << 10);
    let first = post(&s, "/v2/models/slow/infer", None, &big);
    let second = async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let refused = c.clone().model_infer(padded).await;
        let small = c.model_infer(slow_grpc()).await;
        (refused, small)
    };
    let (first, (refused, small)) = tokio::join!(first, second);
    assert_eq!(first.status(), 200);
    small.unwrap();
    let e = refused.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(e.message().contains("--max-inflight-body-bytes"), "{e}");
    assert_eq!(e.metadata().get("retry-after").unwrap(), "1");
}

/// A ModelInfer for a model whose queue is full is refused from its first
/// frame: the rest of its (declared 32 MiB) message is never sent, and the
/// answer still comes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_a_grpc_call_before_its_message_is_read() {
    use hyper::client::conn::http2;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use prost::Message;

    let repo = slow_repo();
    let s = TestServer::start(repo.path()).await;
    // Keep slow_q1 (one instance, a queue of one) full.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (s_client, url, stop) = (
            s.client.clone(),
            s.url("/v2/models/slow_q1/infer"),
            stop.clone(),
        );
        load.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = s_client.post(&url).body(SLOW_JSON).send().await;
            }
        }));
    }

    let head = pb::ModelInferRequest {
        model_name: "slow_q1".into(),
        ..Default::default()
    }
    .encode_to_vec();
    let mut refusal = None;
    for _ in 0..50 {
        let stream = TcpStream::connect(s.grpc).await.unwrap();
        let (mut sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<hyper::body::Frame<Bytes>, std::io::Error>>(1);
        // The header declares 32 MiB; only the fields that name the model follow.
        let mut first = vec![0u8];
        first.extend_from_slice(&(32u32 << 20).to_be_bytes());
        first.extend_from_slice(&head);
        tx.send(Ok(hyper::body::Frame::data(Bytes::from(first))))
            .await
            .unwrap();
        let request = hyper::Request::post(format!(
            "http://{}/inference.GRPCInferenceService/ModelInfer",
            s.grpc
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .unwrap();
        match tokio::time::timeout(Duration::from_millis(500), sender.send_request(request)).await {
            Ok(Ok(response)) => {
                let status = response.headers().get("grpc-status").cloned();
                let message = response.headers().get("grpc-message").cloned();
                let retry = response.headers().get("retry-after").cloned();
                refusal = Some((status, message, retry));
                drop(tx);
                break;
            }
            // Admitted (the queue had room): the call waits for a message
            // that never comes. Try again.
            _ => drop(tx),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in load {
        let _ = l.await;
    }
    let (status, message, retry) = refusal.expect("no call was refused while the queue was full");
    assert_eq!(
        status.as_ref().map(|v| v.as_bytes()),
        Some(&b"14"[..]),
        "{message:?}"
    );
    let message = message.map(|m| String::from_utf8_lossy(m.as_bytes()).to_string());
    assert!(
        message.as_deref().is_some_and(|m| m.contains("queue")),
        "{message:?}"
    );
    assert_eq!(retry.as_ref().map(|v| v.as_bytes()), Some(&b"1"[..]));
}

/// Connections with no request in progress close after the idle timeout on
/// HTTP/1, HTTP/2 and gRPC; a connection in use for longer (requests, or an
/// open stream) is not cut, and a gRPC client reconnects by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_close_on_every_protocol() {
    use hyper::client::conn::http2;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    const IDLE: Duration = Duration::from_millis(400);
    let repo = slow_repo();
    // No batching: six requests run one after another (≥ 77 ms each).
    std::fs::write(
        repo.path().join("slow/config.toml"),
        "instances = 1\nmax_batch_size = 0\n",
    )
    .unwrap();
    let s = TestServer::start_with(repo.path(), |c| {
        c.net.idle_timeout = Some(IDLE);
        // Not the keep-alive timer: only the idle timeout may close these.
        c.http.header_read_timeout = Some(Duration::from_secs(60));
    })
    .await;

    // HTTP/2 (h2c) on the REST port: rounds of six slow requests at once
    // (one instance, no batching) use the connection for longer than the
    // timeout and all succeed; then, idle, it closes.
    let stream = TcpStream::connect(s.http).await.unwrap();
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let started = Instant::now();
    while started.elapsed() < IDLE * 2 {
        let calls = (0..6).map(|_| {
            let mut sender = sender.clone();
            let url = format!("http://{}/v2/models/slow/infer", s.http);
            async move {
                let request = hyper::Request::post(url)
                    .header("content-type", "application/json")
                    .body(http_body_util::Full::new(Bytes::from(SLOW_JSON)))
                    .unwrap();
                sender.send_request(request).await.map(|r| r.status())
            }
        });
        for status in futures::future::join_all(calls).await {
            assert_eq!(status.unwrap(), 200);
        }
    }
    let closed = tokio::time::timeout(Duration::from_secs(10), conn).await;
    assert!(closed.is_ok(), "the idle HTTP/2 connection stayed open");

    // HTTP/1 keep-alive and a gRPC connection that never sends a request:
    // the server closes both.
    for addr in [s.http, s.grpc] {
        let first: &[u8] = if addr == s.http {
            b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n"
        } else {
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"
        };
        let started = Instant::now();
        let reply = raw_exchange(addr, first, Duration::from_secs(10)).await;
        let took = started.elapsed();
        assert!(
            took >= IDLE - Duration::from_millis(50) && took < Duration::from_secs(5),
            "{addr}: closed after {took:?}: {reply:?}"
        );
    }

    // An open ModelStreamInfer stream keeps its connection busy: a request
    // sent after twice the timeout is still answered on it.
    let mut c = client(s.grpc).await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut responses = c
        .model_stream_infer(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for round in 0..2 {
        if round > 0 {
            tokio::time::sleep(IDLE * 2).await;
        }
        tx.send(slow_grpc()).await.unwrap();
        let r = responses.message().await.unwrap().unwrap();
        assert!(r.error_message.is_empty(), "{}", r.error_message);
    }
    drop(tx);
    assert!(responses.message().await.unwrap().is_none());

    // A gRPC client whose connection went idle reconnects on its next call.
    c.model_infer(slow_grpc()).await.unwrap();
    tokio::time::sleep(IDLE * 3).await;
    c.model_infer(slow_grpc()).await.unwrap();
}

/// Sends one gRPC message (already framed) on a fresh HTTP/2 connection and
/// returns the status, from the headers of a trailers-only reply or from
/// the trailers.
async fn raw_grpc(addr: SocketAddr, method: &str, framed: Bytes) -> Option<tonic::Status> {
    use hyper::client::conn::http2;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = hyper::Request::post(format!(
        "http://{addr}/inference.GRPCInferenceService/{method}"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(http_body_util::Full::new(framed))
    .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let mut headers = response.headers().clone();
    let collected = response.into_body().collect().await.unwrap();
    if let Some(trailers) = collected.trailers() {
        headers.extend(trailers.clone());
    }
    tonic::Status::from_header_map(&headers)
}

/// prost would build the whole message before any limit looks at it, and
/// an empty input is 2 bytes on the wire but 312 in memory: 4 MiB of them
/// would take ~650 MiB. The codec refuses such a message before decoding,
/// unary and on a stream, and the server serves on.
#[tokio::test]
async fn grpc_messages_that_decode_to_far_more_are_refused_before_decoding() {
    let s = TestServer::start(&test_repo()).await;
    let empty_inputs = 2 << 20;
    let mut framed = Vec::with_capacity(5 + 2 * empty_inputs);
    framed.push(0);
    framed.extend_from_slice(&(2 * empty_inputs as u32).to_be_bytes());
    for _ in 0..empty_inputs {
        framed.extend_from_slice(&[0x2a, 0x00]); // inputs { }
    }
    let framed = Bytes::from(framed);
    for method in ["ModelInfer", "ModelStreamInfer"] {
        let status = raw_grpc(s.grpc, method, framed.clone()).await;
        let Some(status) = status else {
            panic!("{method}: no grpc-status")
        };
        assert_eq!(status.code(), Code::ResourceExhausted, "{method}: {status}");
        assert!(
            status.message().contains("once decoded")
                && status.message().contains("--max-request-tensor-bytes"),
            "{method}: {status}"
        );
    }
    let mut c = client(s.grpc).await;
    c.model_infer(iris_request()).await.unwrap();
}
