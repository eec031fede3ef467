//! Waiting: a test waits for something it can observe (a status, a metric,
//! a log line, a counter, a file), polled with a deadline that only a hang
//! reaches. A fixed sleep to let something happen is never a wait.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

/// How long a condition may take before the test fails: long enough that
/// only a hang reaches it, even on a loaded 2-core machine.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Between two checks of a condition.
const POLL: Duration = Duration::from_millis(10);

/// Polls `check` until it holds; fails the test after `limit`.
pub async fn eventually<F, Fut>(what: impl Display, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    until(what, limit, || {
        let holds = check();
        async move { holds.await.then_some(()) }
    })
    .await
}

/// Polls `probe` until it gives a value, and returns it; fails the test
/// after `limit`.
pub async fn until<T, F, Fut>(what: impl Display, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}
