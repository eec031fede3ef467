//! The warnings of the servers in this process, captured so that a test
//! can wait for one (a refused certificate rotation, a failed poll) instead
//! of sleeping while it may happen.
//!
//! One subscriber serves the whole process, so every in-process server's
//! warnings land in one list: a test looks for lines that name something
//! only it has (its temporary folder, its model). `SLUICE_TEST_LOG=<filter>`
//! also prints the servers' logs at that filter, through the test harness's
//! output capture.

use super::wait::until;
use std::io::Write;
use std::sync::{Mutex, Once};
use std::time::Duration;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _, fmt};

/// Every captured event, one formatted line each, in order.
static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Installs the process's subscriber, once (every [`super::TestServer`]
/// calls it before it starts).
pub fn capture() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let captured = fmt::layer()
            .with_ansi(false)
            .with_writer(Capture)
            .with_filter(EnvFilter::new("warn"));
        let printed = std::env::var("SLUICE_TEST_LOG").ok().map(|filter| {
            fmt::layer()
                .with_test_writer()
                .with_filter(EnvFilter::new(filter))
        });
        // Another subscriber may already be set (a test of its own): then
        // nothing is captured, and waits on logs time out with their reason.
        let _ = tracing_subscriber::registry()
            .with(captured)
            .with(printed)
            .try_init();
    });
}

/// A point in the log: only lines after it count.
#[derive(Debug, Clone, Copy)]
pub struct Mark(usize);

pub fn mark() -> Mark {
    Mark(lines().len())
}

/// Lines after `mark` that contain every one of `needles`.
pub fn since(mark: Mark, needles: &[&str]) -> Vec<String> {
    lines()
        .iter()
        .skip(mark.0)
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .cloned()
        .collect()
}

/// Waits until `n` lines after `mark` contain every one of `needles`.
pub async fn wait_for(mark: Mark, needles: &[&str], n: usize, limit: Duration) {
    until(
        format!("{n} log lines with {needles:?}"),
        limit,
        || async move { (since(mark, needles).len() >= n).then_some(()) },
    )
    .await
}

fn lines() -> std::sync::MutexGuard<'static, Vec<String>> {
    LINES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Hands each event a buffer of its own, appended as one line when dropped.
struct Capture;

struct Line(Vec<u8>);

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line(Vec::new())
    }
}

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let line = String::from_utf8_lossy(&self.0).trim_end().to_string();
            lines().push(line);
        }
    }
}
