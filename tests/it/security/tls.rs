//! TLS on both protocols: certificates reloaded without a restart (a bad
//! rotation refused), mutual TLS, and a bad certificate at start.

use super::iris_request;
use crate::harness::wait::{PATIENCE, eventually};
use crate::harness::{TestServer, logs, test_repo};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use sluice::grpc::pb;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

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
    eventually("the TLS server to be ready", PATIENCE, || async {
        matches!(
            https_get(addr, tls.clone(), "/v2/health/ready").await,
            Ok((200, _))
        )
    })
    .await;
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

    // A bad rotation (a key that does not match) is refused; the old pair
    // serves. The reloader says so in the log, naming the file: wait for it.
    let (other_cert, _) = pki.leaf("mismatched");
    let mark = logs::mark();
    pki.write("tls.crt", &other_cert);
    let cert_file = cert_path.display().to_string();
    logs::wait_for(mark, &["not reloaded", &cert_file], 1, PATIENCE).await;
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
    eventually("the rotated certificate to be served", PATIENCE, || async {
        let (_, leaf) = https_get(s.http, tls.clone(), "/v2/health/live")
            .await
            .unwrap();
        leaf == second_der
    })
    .await;
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
