//! The `sluice` binary as a child process, for what only a process shows:
//! signals, exit status, resident memory, threads.
//!
//! The child binds port 0 for HTTP and gRPC and logs JSON to a file; the
//! harness learns its ports from its "listening" lines, so no port is
//! picked in advance (a port found free and then released can be taken by
//! another test before the child binds it).

use super::wait::{PATIENCE, until};
use super::{logs, ort_lib};
use serde_json::Value;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// The binary, for a command of its own (`sluice serve` with flags that make
/// it fail, `sluice healthcheck`).
pub fn command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

/// `sluice serve` over a repository, on 127.0.0.1, with the test ONNX
/// Runtime; [`Sluice::start`] runs it.
pub struct Sluice {
    repo: OsString,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
}

impl Sluice {
    pub fn serve(repo: &Path) -> Self {
        Self::serve_from(repo.as_os_str())
    }

    /// `--model-repository` as given: a directory or a URL.
    pub fn serve_from(repo: impl Into<OsString>) -> Self {
        Self {
            repo: repo.into(),
            args: Vec::new(),
            envs: Vec::new(),
        }
    }

    /// An environment variable of the process (credentials, endpoints).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// More flags (not `--http-port`, `--grpc-port`, `--log` or
    /// `--log-format`, which the harness sets).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// `--shutdown-delay-secs` and `--shutdown-grace-secs`.
    pub fn shutdown(self, delay: Duration, grace: Duration) -> Self {
        self.args(["--shutdown-delay-secs", &delay.as_secs().to_string()])
            .args(["--shutdown-grace-secs", &grace.as_secs().to_string()])
    }

    /// Starts the process and waits until it listens and is ready.
    pub async fn start(self) -> Process {
        logs::capture();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sluice.log");
        let child = command()
            .args(["serve", "--host", "127.0.0.1"])
            .args(["--http-port", "0", "--grpc-port", "0"])
            .args(["--log", "info", "--log-format", "json"])
            .arg("--model-repository")
            .arg(&self.repo)
            .arg("--onnxruntime-lib")
            .arg(ort_lib())
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut process = Process {
            child,
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            grpc: SocketAddr::from(([127, 0, 0, 1], 0)),
            base: String::new(),
            log,
            _dir: dir,
        };
        let listening = |field: &'static str| {
            let process = &process;
            move || async move {
                process.alive();
                process
                    .events()
                    .iter()
                    .find_map(|e| e[field].as_str()?.parse::<SocketAddr>().ok())
            }
        };
        let http = until("the HTTP listener", PATIENCE, listening("http_addr")).await;
        let grpc = until("the gRPC listener", PATIENCE, listening("grpc_addr")).await;
        (process.http, process.grpc) = (http, grpc);
        process.base = format!("http://{}", process.http);
        process.wait_ready().await;
        process
    }
}

/// A running `sluice serve`, killed when dropped if it is still running.
pub struct Process {
    child: Child,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    /// `http://127.0.0.1:<http port>`.
    pub base: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process has logged so far (JSON lines, and any panic).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every JSON log event so far.
    pub fn events(&self) -> Vec<Value> {
        self.log()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Every event logged with `message` (JSON logs put the event's fields
    /// at the top level).
    pub fn logged(&self, message: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["message"] == message)
            .collect()
    }

    /// Fails the test, with the log, if the process has exited.
    fn alive(&self) {
        // `try_wait` needs `&mut`; the pid's /proc entry says the same
        // without reaping.
        let state = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()));
        let zombie = state
            .as_deref()
            .ok()
            .and_then(|s| s.rsplit_once(") "))
            .is_some_and(|(_, rest)| rest.starts_with('Z'));
        assert!(
            state.is_ok() && !zombie,
            "sluice exited early; log:\n{}",
            self.log()
        );
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Polls readiness until 200, failing at once if the process exits.
    pub async fn wait_ready(&self) {
        let probe = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let url = format!("{}/v2/health/ready", self.base);
        until("sluice to be ready", PATIENCE, || async {
            self.alive();
            (status(&probe, &url).await == Some(200)).then_some(())
        })
        .await;
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let pid = self.pid().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success(), "kill -TERM {pid} failed");
    }

    /// Waits for the process to exit by itself; fails after `limit`.
    pub async fn exit(&mut self, limit: Duration) -> ExitStatus {
        let child = &mut self.child;
        let started = Instant::now();
        loop {
            if let Some(exit) = child.try_wait().unwrap() {
                return exit;
            }
            assert!(
                started.elapsed() < limit,
                "still running {limit:?} after it was asked to stop"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The first number of field `key` of `/proc/<pid>/status` (`VmRSS:`,
/// `VmHWM:` in kB; `Threads:`), or `None` once the process is gone.
pub fn proc_status(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The status of a GET, or `None` on a transport error.
pub async fn status(client: &reqwest::Client, url: &str) -> Option<u16> {
    client
        .get(url)
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// What happened to one request, with times relative to the start of the test.
#[derive(Debug)]
pub enum Outcome {
    /// An HTTP answer (any status), sent at `start`, answered at `end`.
    Answered {
        status: u16,
        start: Duration,
        end: Duration,
    },
    /// The connection was refused: the listeners are closed; never admitted.
    Refused { at: Duration },
    /// Any other transport error (reset, closed mid-request, timeout).
    Broken { at: Duration, error: String },
}

impl Outcome {
    /// A transport error at `at`: refused (never admitted) or broken.
    pub fn failed(e: &reqwest::Error, at: Duration) -> Self {
        if e.is_connect() {
            Outcome::Refused { at }
        } else {
            Outcome::Broken {
                at,
                error: format!("{e:?}"),
            }
        }
    }
}

/// Clients that each POST their body until their first transport error, as
/// a load balancer stops sending to an endpoint it cannot reach: the load
/// of the SIGTERM tests.
pub struct ClientsUntilRefused {
    /// Answers received so far, over every client.
    pub answered: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<Vec<Outcome>>>,
}

impl ClientsUntilRefused {
    /// `clients` clients; client `i` sends `body(i)` to `url`, passes every
    /// answer to `check(i, status, json)`, and times its requests from `t0`.
    pub fn start<B, C>(
        clients: usize,
        url: &str,
        timeout: Duration,
        t0: Instant,
        body: B,
        check: C,
    ) -> Self
    where
        B: Fn(usize) -> Value,
        C: Fn(usize, u16, &Value) + Clone + Send + 'static,
    {
        let answered = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|i| {
                let client = reqwest::Client::builder().timeout(timeout).build().unwrap();
                let (url, body, check) = (url.to_string(), body(i).to_string(), check.clone());
                let (answered, stop) = (answered.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut outcomes = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let start = t0.elapsed();
                        let sent = client
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(body.clone())
                            .send()
                            .await;
                        match sent {
                            Ok(r) => {
                                let status = r.status().as_u16();
                                let out: Value = r.json().await.unwrap_or(Value::Null);
                                check(i, status, &out);
                                answered.fetch_add(1, Ordering::Relaxed);
                                outcomes.push(Outcome::Answered {
                                    status,
                                    start,
                                    end: t0.elapsed(),
                                });
                            }
                            Err(e) => {
                                outcomes.push(Outcome::failed(&e, t0.elapsed()));
                                break;
                            }
                        }
                    }
                    outcomes
                })
            })
            .collect();
        Self {
            answered,
            stop,
            tasks,
        }
    }

    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Stops the clients that are still sending and returns every outcome.
    pub async fn outcomes(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        let mut outcomes = Vec::new();
        for task in self.tasks {
            outcomes.extend(task.await.unwrap());
        }
        outcomes
    }
}
