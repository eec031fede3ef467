//! What an operator sees of the `sluice` binary: logs fit for files and log
//! pipelines (no ANSI codes off a terminal, JSON with top-level fields, one
//! start-up line of the non-default settings with secrets redacted), a
//! healthcheck that says why it failed, and rejected TLS handshakes in the
//! log.

use crate::harness::{ort_lib, test_repo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, Command};

/// A `sluice serve` child over `tests/models/iris` on free ports, with its
/// stderr piped (not a terminal), and `extra` flags.
struct Serving {
    child: Child,
    lines: Lines<BufReader<ChildStderr>>,
    seen: Vec<String>,
}

impl Serving {
    fn start(repo: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("serve")
            .arg("--model-repository")
            .arg(repo)
            .args([
                "--host",
                "127.0.0.1",
                "--http-port",
                "0",
                "--grpc-port",
                "0",
            ])
            .args(extra)
            .env("ORT_DYLIB_PATH", ort_lib())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        Self {
            child,
            lines: BufReader::new(stderr).lines(),
            seen: Vec::new(),
        }
    }

    /// Reads log lines until one contains `needle` (60 s at most).
    async fn wait_for(&mut self, needle: &str) -> String {
        let found = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = self.lines.next_line().await.unwrap() {
                self.seen.push(line.clone());
                if line.contains(needle) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => panic!(
                "no log line with {needle:?}; got:\n{}",
                self.seen.join("\n")
            ),
        }
    }

    /// The HTTP address from the `http listening` line.
    async fn http_addr(&mut self) -> String {
        let line = self.wait_for("http listening").await;
        let start = line.find("127.0.0.1:").unwrap();
        line[start..]
            .split(['"', ' ', ','])
            .next()
            .unwrap()
            .to_string()
    }
}

fn iris_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("iris/1");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::copy(
        test_repo().join("iris/1/model.onnx"),
        model.join("model.onnx"),
    )
    .unwrap();
    dir
}

#[tokio::test]
async fn text_logs_off_a_terminal_have_no_ansi_codes_and_summarise_the_settings() {
    let repo = iris_repo();
    let mut s = Serving::start(
        repo.path(),
        &[
            "--auth-infer-token",
            "a-secret-token-0123456789",
            "--max-body-bytes",
            "1048576",
        ],
    );
    let start = s.wait_for("starting").await;
    s.wait_for("model version ready").await;
    s.wait_for("ready").await;
    for line in &s.seen {
        assert!(!line.contains('\u{1b}'), "ANSI escape in {line:?}");
    }
    assert!(start.contains("--max-body-bytes=1048576"), "{start}");
    assert!(start.contains("--auth-infer-token=[redacted]x1"), "{start}");
    assert!(!start.contains("a-secret-token"), "{start}");
    // Defaults are not listed, and fields print as values, not Debug.
    assert!(!start.contains("--max-tensor-elements"), "{start}");
    assert!(s.seen.iter().all(|l| !l.contains("Some(")), "{:?}", s.seen);
    s.child.kill().await.unwrap();
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_top_level_fields() {
    let repo = iris_repo();
    let mut s = Serving::start(repo.path(), &["--log-format", "json"]);
    let line = s.wait_for("model version ready").await;
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["message"], "model version ready", "{event}");
    assert_eq!(event["model"], "iris", "{event}");
    assert_eq!(event["version"], 1, "{event}");
    assert_eq!(event["level"], "INFO", "{event}");
    for line in &s.seen {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
    s.child.kill().await.unwrap();
}

#[tokio::test]
async fn a_bad_log_filter_is_a_start_up_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "serve",
            "--log",
            "info,[",
            "--http-port",
            "0",
            "--grpc-port",
            "0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--log 'info,[' is not a valid filter"),
        "{stderr}"
    );
}

/// Runs `sluice healthcheck --url url`: (exit code, stderr).
fn healthcheck(url: &str) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["healthcheck", "--url", url])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_healthcheck_says_why_it_failed() {
    // Nothing listening.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (code, stderr) = healthcheck(&format!("http://127.0.0.1:{port}/v2/health/ready"));
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("cannot connect to 127.0.0.1") && stderr.contains("refused"),
        "{stderr}"
    );
    let repo = iris_repo();
    let mut s = Serving::start(repo.path(), &[]);
    let addr = s.http_addr().await;
    s.wait_for("ready").await;
    // A 2xx passes; a 404 and HTTPS against plain HTTP say what they met.
    assert_eq!(
        healthcheck(&format!("http://{addr}/v2/health/ready")).0,
        Some(0)
    );
    let (code, stderr) = healthcheck(&format!("http://{addr}/v2/models/nope/ready"));
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("status 404") && stderr.contains("unknown model"),
        "{stderr}"
    );
    let (code, stderr) = healthcheck(&format!("https://{addr}/v2/health/ready"));
    assert_eq!(code, Some(1));
    assert!(stderr.contains("TLS handshake"), "{stderr}");
    s.child.kill().await.unwrap();
}

#[tokio::test]
async fn a_rejected_client_certificate_is_logged_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "test ca");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    for (name, pem) in [
        ("ca.pem", ca_cert.pem()),
        ("tls.crt", leaf.pem()),
        ("tls.key", key.serialize_pem()),
    ] {
        std::fs::write(dir.path().join(name), pem).unwrap();
    }
    let path = |name: &str| dir.path().join(name).display().to_string();
    let repo = iris_repo();
    let (cert, tls_key, client_ca) = (path("tls.crt"), path("tls.key"), path("ca.pem"));
    let mut s = Serving::start(
        repo.path(),
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &tls_key,
            "--tls-client-ca",
            &client_ca,
        ],
    );
    let addr = s.http_addr().await;
    // The healthcheck presents no client certificate: the server refuses it.
    let (code, _) = healthcheck(&format!("https://{addr}/v2/health/ready"));
    assert_eq!(code, Some(1));
    let line = s.wait_for("TLS handshake rejected").await;
    assert!(line.contains("WARN"), "{line}");
    assert!(line.to_lowercase().contains("certificate"), "{line}");
    s.child.kill().await.unwrap();
}
