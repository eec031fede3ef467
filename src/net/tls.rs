//! TLS for the HTTP and gRPC listeners (rustls, ring provider), with the
//! certificate, key and client CA re-read when their files change.
//!
//! The server polls the files ([`TlsConfigs::reload`]); each handshake takes
//! the config current at that moment, so connections already open keep the
//! certificate they were made with and new ones get the new one. A reload
//! that fails (a half-written key, a mismatched pair) is logged and leaves the
//! previous config serving: a bad rotation never takes the server down.
//!
//! With a client CA, every client must present a certificate that chains to
//! it (mutual TLS); the handshake fails otherwise.

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::config::Kind;

/// Where the PEM files are.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA bundle that client certificates must chain to; `None` = no mTLS.
    pub client_ca: Option<PathBuf>,
}

/// The live server configs, one per protocol (they differ only in ALPN).
#[derive(Debug, Clone)]
pub struct TlsConfigs {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    files: TlsFiles,
    http: ArcSwap<ServerConfig>,
    grpc: ArcSwap<ServerConfig>,
    /// Hash of the files' contents last loaded.
    loaded: Mutex<u64>,
}

impl TlsConfigs {
    /// Loads the files; an error names the file and what is wrong with it.
    pub fn load(files: TlsFiles) -> anyhow::Result<Self> {
        let (contents, hash) = read_all(&files)?;
        let (http, grpc) = build(&files, &contents)?;
        Ok(Self {
            inner: Arc::new(Inner {
                files,
                http: ArcSwap::from_pointee(http),
                grpc: ArcSwap::from_pointee(grpc),
                loaded: Mutex::new(hash),
            }),
        })
    }

    /// The config for new handshakes on a `kind` listener.
    pub(crate) fn current(&self, kind: Kind) -> Arc<ServerConfig> {
        match kind {
            Kind::Http => self.inner.http.load_full(),
            Kind::Grpc => self.inner.grpc.load_full(),
        }
    }

    /// Re-reads the files; swaps the configs when their content changed and
    /// still makes a valid config. `Ok(true)` when it swapped.
    pub(crate) fn reload(&self) -> anyhow::Result<bool> {
        let (contents, hash) = read_all(&self.inner.files)?;
        let mut loaded = self
            .inner
            .loaded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *loaded == hash {
            return Ok(false);
        }
        let (http, grpc) = build(&self.inner.files, &contents)?;
        self.inner.http.store(Arc::new(http));
        self.inner.grpc.store(Arc::new(grpc));
        *loaded = hash;
        Ok(true)
    }
}

struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

fn read_all(files: &TlsFiles) -> anyhow::Result<(Contents, u64)> {
    let read = |path: &PathBuf, what: &str| {
        std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read the TLS {what} {}: {e}", path.display()))
    };
    let contents = Contents {
        cert: read(&files.cert, "certificate")?,
        key: read(&files.key, "key")?,
        client_ca: match &files.client_ca {
            Some(p) => Some(read(p, "client CA")?),
            None => None,
        },
    };
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&contents.cert);
    hasher.update(&[0]);
    hasher.update(&contents.key);
    hasher.update(&[0]);
    hasher.update(contents.client_ca.as_deref().unwrap_or_default());
    Ok((contents, hasher.digest()))
}

fn build(files: &TlsFiles, c: &Contents) -> anyhow::Result<(ServerConfig, ServerConfig)> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&c.cert)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            anyhow::anyhow!(
                "TLS certificate {}: not valid PEM: {e}",
                files.cert.display()
            )
        })?;
    if certs.is_empty() {
        anyhow::bail!(
            "TLS certificate {}: no CERTIFICATE block found",
            files.cert.display()
        );
    }
    let key = PrivateKeyDer::from_pem_slice(&c.key).map_err(|e| {
        anyhow::anyhow!(
            "TLS key {}: no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}",
            files.key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("TLS: {e}"))?;
    let builder = match (&files.client_ca, &c.client_ca) {
        (Some(path), Some(pem)) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| {
                    anyhow::anyhow!("TLS client CA {}: not valid PEM: {e}", path.display())
                })?;
                roots.add(cert).map_err(|e| {
                    anyhow::anyhow!(
                        "TLS client CA {}: unusable certificate: {e}",
                        path.display()
                    )
                })?;
            }
            if roots.is_empty() {
                anyhow::bail!(
                    "TLS client CA {}: no CERTIFICATE block found",
                    path.display()
                );
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| anyhow::anyhow!("TLS client CA {}: {e}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let base = builder.with_single_cert(certs, key).map_err(|e| {
        anyhow::anyhow!(
            "TLS certificate {} and key {} do not make a usable pair: {e}",
            files.cert.display(),
            files.key.display()
        )
    })?;
    let mut http = base.clone();
    http.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut grpc = base;
    grpc.alpn_protocols = vec![b"h2".to_vec()];
    Ok((http, grpc))
}

/// A client config for `sluice healthcheck` against an `https://` URL: it
/// accepts any server certificate, as the kubelet's HTTPS probes do. The
/// probe asks a server on the same host whether it is up; it sends no
/// secret and trusts nothing it reads except the status code. Handshake
/// signatures are still checked.
pub(crate) fn probe_client_config() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AnyServerCertificate(provider.clone()));
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth()
        });
    match config {
        Ok(config) => Arc::new(config),
        // The ring provider supports the default versions; unreachable in practice.
        Err(_) => Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        ),
    }
}

#[derive(Debug)]
struct AnyServerCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
