//! A real object store as a child process on 127.0.0.1, and publishing to
//! it with its own SDK.

use super::{PATIENCE, until};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Where `scripts/setup-stores.sh` installed the stores.
#[derive(Debug, Clone)]
pub struct Tools {
    pub python: PathBuf,
    pub moto: PathBuf,
    pub wsgidav: PathBuf,
    pub azurite: PathBuf,
    pub script: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// moto in server mode: the S3 API.
    S3,
    /// Azurite's blob service: the Azure Blob API.
    Azure,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::S3 => "s3",
            Kind::Azure => "azure",
        }
    }

    /// The `--model-repository` URL of `prefix` in bucket (container) `bucket`.
    pub fn url(self, bucket: &str, prefix: &str) -> String {
        match self {
            Kind::S3 => format!("s3://{bucket}/{prefix}"),
            Kind::Azure => format!("az://{bucket}/{prefix}"),
        }
    }

    /// The environment a Sluice needs to reach the store at `endpoint`:
    /// the variables users set (and nothing in a manifest).
    pub fn env(self, endpoint: &str) -> Vec<(&'static str, String)> {
        match self {
            Kind::S3 => vec![
                ("AWS_ACCESS_KEY_ID", "sluice-test".into()),
                ("AWS_SECRET_ACCESS_KEY", "sluice-test-secret".into()),
                ("AWS_REGION", "us-east-1".into()),
                ("AWS_ENDPOINT_URL", endpoint.into()),
                ("AWS_ALLOW_HTTP", "true".into()),
            ],
            Kind::Azure => vec![
                ("AZURE_STORAGE_USE_EMULATOR", "true".into()),
                ("AZURITE_BLOB_STORAGE_URL", endpoint.into()),
            ],
        }
    }
}

/// A store server, killed when dropped.
pub struct StoreServer {
    pub kind: Kind,
    pub addr: SocketAddr,
    tools: Tools,
    child: Child,
    _dir: tempfile::TempDir,
}

impl StoreServer {
    /// Starts the store on a port it picks, and waits until it says where
    /// it listens.
    pub async fn start(kind: Kind, tools: &Tools) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("store.log");
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let mut command = match kind {
            Kind::S3 => {
                let mut c = Command::new(&tools.moto);
                c.args(["-H", "127.0.0.1", "-p", "0"]);
                c
            }
            Kind::Azure => {
                let mut c = Command::new(&tools.azurite);
                c.args(["--blobHost", "127.0.0.1", "--blobPort", "0"])
                    .args(["--inMemoryPersistence", "--skipApiVersionCheck", "--loose"])
                    .arg("--disableTelemetry");
                c
            }
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap();
        let mut child = child;
        let addr = until(
            format!("the {} store to listen", kind.name()),
            PATIENCE,
            || {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if let Ok(Some(exit)) = child.try_wait() {
                    panic!("the {} store exited ({exit}):\n{text}", kind.name());
                }
                async move { listening(&text) }
            },
        )
        .await;
        Self {
            kind,
            addr,
            tools: tools.clone(),
            child,
            _dir: dir,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Runs one `tests/stores/store.py` command against this store.
    pub fn run(&self, args: &[&str]) {
        let output = Command::new(&self.tools.python)
            .arg(&self.tools.script)
            .args([self.kind.name(), &self.endpoint()])
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "store.py {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    pub fn create(&self, bucket: &str) {
        self.run(&["create", bucket]);
    }

    /// Uploads every file under `local` to `prefix`, markers last.
    pub fn upload(&self, bucket: &str, local: &Path, prefix: &str) {
        self.run(&["upload", bucket, &local.to_string_lossy(), prefix]);
    }

    pub fn put(&self, bucket: &str, key: &str, file: &Path) {
        self.run(&["put", bucket, key, &file.to_string_lossy()]);
    }

    /// Deletes every object under `prefix/`.
    pub fn delete(&self, bucket: &str, prefix: &str) {
        self.run(&["delete", bucket, prefix]);
    }
}

impl Drop for StoreServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in a store's "listening" line (moto: `Running on
/// http://127.0.0.1:N`; Azurite: `listens on http://127.0.0.1:N`).
fn listening(log: &str) -> Option<SocketAddr> {
    log.lines()
        .filter(|l| l.contains("Running on http://") || l.contains("listens on http://"))
        .find_map(|l| {
            let at = l.find("http://")? + "http://".len();
            let addr: String = l[at..]
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                .collect();
            addr.parse().ok()
        })
}

#[test]
fn listening_lines_parse() {
    assert_eq!(
        listening(" * Running on http://127.0.0.1:40617\n"),
        Some("127.0.0.1:40617".parse().unwrap())
    );
    assert_eq!(
        listening("Azurite Blob service successfully listens on http://127.0.0.1:37135"),
        Some("127.0.0.1:37135".parse().unwrap())
    );
    assert_eq!(
        listening("Azurite Blob service is starting on 127.0.0.1:0"),
        None
    );
}
