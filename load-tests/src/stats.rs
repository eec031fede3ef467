//! Per-run accounting: request counts, error kinds, and an HDR histogram of
//! successful-request latencies (microseconds), turned into a serializable
//! [`RunResult`]. Invariant once a run has drained: `sent == ok + errors`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use anyhow::Result;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// Non-2xx HTTP status.
    Http(u16),
    /// Non-OK gRPC status.
    Grpc(tonic::Code),
    /// Could not connect / connection reset.
    Connect,
    /// The request exceeded the per-request timeout.
    Timeout,
    /// A 2xx response whose body could not be decoded.
    Decode,
    /// Anything else (I/O mid-body, task panic, ...).
    Other,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Http(code) => write!(f, "http_{code}"),
            Self::Grpc(code) => write!(f, "grpc_{}", format!("{code:?}").to_lowercase()),
            Self::Connect => f.write_str("connect"),
            Self::Timeout => f.write_str("timeout"),
            Self::Decode => f.write_str("decode"),
            Self::Other => f.write_str("other"),
        }
    }
}

/// Outcome of one request.
pub type Outcome = std::result::Result<(), ErrorKind>;

/// Latency percentiles of successful requests, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Minimum.
    pub min: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Maximum.
    pub max: u64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Standard deviation.
    pub stdev: f64,
}

/// Load mode of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Closed loop: a fixed number of requests outstanding.
    Concurrency,
    /// Open loop: requests issued at a fixed rate.
    Rate,
}

/// The result of one run (one step of a sweep).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// Closed (`concurrency`) or open (`rate`) loop.
    pub mode: Mode,
    /// `rest-json`, `rest-binary` or `grpc`.
    pub protocol: String,
    /// Model name.
    pub model: String,
    /// Model version, if one was requested.
    pub model_version: Option<String>,
    /// Rows (batch entries) carried by each request.
    pub rows_per_request: u64,
    /// Outstanding requests (closed loop).
    pub concurrency: Option<u64>,
    /// Target request rate in req/s (open loop).
    pub rate: Option<f64>,
    /// Measured wall time in seconds (measurement start to last completion).
    pub duration_s: f64,
    /// Requests issued during measurement.
    pub sent: u64,
    /// Requests that succeeded.
    pub ok: u64,
    /// Failed requests by kind (`http_503`, `grpc_unavailable`, `connect`,
    /// `timeout`, `decode`, `other`).
    pub errors: BTreeMap<String, u64>,
    /// Sum of `errors`.
    pub error_count: u64,
    /// Successful requests per second.
    pub throughput_rps: f64,
    /// Successful rows per second (`throughput_rps * rows_per_request`).
    pub throughput_rows_per_s: f64,
    /// Latency of successful requests (open loop: from the intended send time).
    pub latency_us: LatencySummary,
    /// With `--server-pid`: the server process's CPU time (user + system)
    /// over the measured step divided by the requests completed in it, in
    /// microseconds (10 ms tick resolution over the whole step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_cpu_us_per_request: Option<f64>,
}

/// Mutable accumulator for one run.
#[derive(Debug, Clone)]
pub struct Stats {
    hist: Histogram<u64>,
    sent: u64,
    ok: u64,
    errors: BTreeMap<String, u64>,
    error_count: u64,
}

impl Stats {
    /// An empty accumulator (latencies tracked from 1 µs to 1 h, 3 digits).
    pub fn new() -> Result<Self> {
        Ok(Self {
            hist: Histogram::new_with_bounds(1, 3_600_000_000, 3)?,
            sent: 0,
            ok: 0,
            errors: BTreeMap::new(),
            error_count: 0,
        })
    }

    /// Counts one issued request.
    pub fn record_sent(&mut self) {
        self.sent += 1;
    }

    /// Records the outcome of a completed request.
    pub fn record(&mut self, outcome: &Outcome, latency: Duration) {
        match outcome {
            Ok(()) => {
                self.ok += 1;
                let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                self.hist.saturating_record(us.max(1));
            }
            Err(kind) => {
                *self.errors.entry(kind.to_string()).or_default() += 1;
                self.error_count += 1;
            }
        }
    }

    /// Requests issued so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Successful requests so far.
    pub fn ok(&self) -> u64 {
        self.ok
    }

    /// Failed requests so far.
    pub fn error_count(&self) -> u64 {
        self.error_count
    }

    /// Issued but not yet completed.
    pub fn in_flight(&self) -> u64 {
        self.sent.saturating_sub(self.ok + self.error_count)
    }

    /// Latency percentiles so far.
    pub fn latency(&self) -> LatencySummary {
        if self.hist.is_empty() {
            return LatencySummary::default();
        }
        let h = &self.hist;
        LatencySummary {
            min: h.min(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
            stdev: h.stdev(),
        }
    }

    /// Errors by kind so far.
    pub fn errors(&self) -> &BTreeMap<String, u64> {
        &self.errors
    }
}

/// What a run was, for labelling its [`RunResult`].
#[derive(Debug, Clone)]
pub struct RunLabel {
    /// Closed or open loop.
    pub mode: Mode,
    /// Protocol name.
    pub protocol: String,
    /// Model name.
    pub model: String,
    /// Model version.
    pub model_version: Option<String>,
    /// Rows per request.
    pub rows_per_request: u64,
    /// Concurrency (closed loop).
    pub concurrency: Option<u64>,
    /// Target rate (open loop).
    pub rate: Option<f64>,
}

impl RunResult {
    /// Builds the result of a drained run measured over `elapsed`.
    pub fn new(label: RunLabel, stats: &Stats, elapsed: Duration) -> Self {
        let secs = elapsed.as_secs_f64();
        #[allow(clippy::cast_precision_loss)]
        let rps = if secs > 0.0 {
            stats.ok as f64 / secs
        } else {
            0.0
        };
        #[allow(clippy::cast_precision_loss)]
        let rows = rps * label.rows_per_request as f64;
        Self {
            mode: label.mode,
            protocol: label.protocol,
            model: label.model,
            model_version: label.model_version,
            rows_per_request: label.rows_per_request,
            concurrency: label.concurrency,
            rate: label.rate,
            duration_s: secs,
            sent: stats.sent,
            ok: stats.ok,
            errors: stats.errors.clone(),
            error_count: stats.error_count,
            throughput_rps: rps,
            throughput_rows_per_s: rows,
            latency_us: stats.latency(),
            server_cpu_us_per_request: None,
        }
    }

    /// Records the server's CPU time over the step as a per-request figure.
    pub fn set_server_cpu(&mut self, cpu: Option<Duration>) {
        let done = self.ok + self.error_count;
        #[allow(clippy::cast_precision_loss)]
        let per = cpu
            .filter(|_| done > 0)
            .map(|c| c.as_secs_f64() * 1e6 / done as f64);
        self.server_cpu_us_per_request = per;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_ordered() {
        let mut s = Stats::new().unwrap();
        for i in 1..=10_000u64 {
            s.record_sent();
            // Skewed distribution with a long tail.
            s.record(&Ok(()), Duration::from_micros(i * i / 100 + 50));
        }
        let l = s.latency();
        assert!(l.min <= l.p50 && l.p50 <= l.p90 && l.p90 <= l.p99);
        assert!(l.p99 <= l.p999 && l.p999 <= l.max);
        assert!(l.mean >= l.min as f64 && l.mean <= l.max as f64);
        assert!(l.p50 < l.p99, "{l:?}");
        // 3 significant digits: p50 of i^2/100+50 at i=5000 is 250050.
        assert!(
            (l.p50 as f64 - 250_050.0).abs() / 250_050.0 < 0.002,
            "{l:?}"
        );
    }

    #[test]
    fn counts_add_up() {
        let mut s = Stats::new().unwrap();
        let outcomes = [
            Ok(()),
            Err(ErrorKind::Http(503)),
            Ok(()),
            Err(ErrorKind::Grpc(tonic::Code::Unavailable)),
            Err(ErrorKind::Timeout),
            Err(ErrorKind::Http(503)),
            Err(ErrorKind::Connect),
        ];
        for o in &outcomes {
            s.record_sent();
            s.record(o, Duration::from_millis(1));
        }
        s.record_sent();
        assert_eq!(s.in_flight(), 1);
        s.record(&Err(ErrorKind::Decode), Duration::ZERO);
        assert_eq!(s.in_flight(), 0);
        let label = RunLabel {
            mode: Mode::Concurrency,
            protocol: "grpc".into(),
            model: "m".into(),
            model_version: None,
            rows_per_request: 4,
            concurrency: Some(2),
            rate: None,
        };
        let r = RunResult::new(label, &s, Duration::from_secs(2));
        assert_eq!(r.sent, r.ok + r.errors.values().sum::<u64>());
        assert_eq!(r.error_count, 6);
        assert_eq!(r.errors["http_503"], 2);
        assert_eq!(r.errors["grpc_unavailable"], 1);
        assert_eq!(r.throughput_rps, 1.0);
        assert_eq!(r.throughput_rows_per_s, 4.0);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["mode"], "concurrency");
        assert_eq!(serde_json::from_value::<RunResult>(json).unwrap(), r);
    }
}
