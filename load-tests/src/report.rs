//! Human-readable result table and the JSON results file (an array of
//! [`RunResult`] objects).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use crate::stats::{Mode, RunResult};

/// Renders the results as a fixed-width table (latencies in microseconds),
/// followed by one line per run that had errors.
pub fn table(results: &[RunResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<11} {:>8} {:>9} {:>9} {:>7} {:>10} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "protocol",
        "load",
        "sent",
        "ok",
        "errors",
        "req/s",
        "rows/s",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max",
        "mean",
    );
    for r in results {
        let load = match r.mode {
            Mode::Concurrency => format!("c={}", r.concurrency.unwrap_or_default()),
            Mode::Rate => format!("r={}", r.rate.unwrap_or_default()),
        };
        let l = &r.latency_us;
        let _ = writeln!(
            out,
            "{:<11} {:>8} {:>9} {:>9} {:>7} {:>10.1} {:>11.1} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9.0}",
            r.protocol,
            load,
            r.sent,
            r.ok,
            r.error_count,
            r.throughput_rps,
            r.throughput_rows_per_s,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            l.mean,
        );
    }
    for r in results.iter().filter(|r| r.error_count > 0) {
        let kinds: Vec<String> = r.errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let load = r.concurrency.map_or_else(
            || format!("r={}", r.rate.unwrap_or_default()),
            |c| format!("c={c}"),
        );
        let _ = writeln!(out, "errors at {load}: {}", kinds.join(" "));
    }
    out
}

/// Writes the results as pretty-printed JSON.
pub fn write_json(path: &Path, results: &[RunResult]) -> Result<()> {
    let text = serde_json::to_string_pretty(results)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::LatencySummary;
    use std::collections::BTreeMap;

    #[test]
    fn table_and_json() {
        let r = RunResult {
            mode: Mode::Rate,
            protocol: "rest-json".into(),
            model: "m".into(),
            model_version: None,
            rows_per_request: 1,
            concurrency: None,
            rate: Some(100.0),
            duration_s: 1.0,
            sent: 100,
            ok: 99,
            errors: BTreeMap::from([("http_503".to_string(), 1)]),
            error_count: 1,
            throughput_rps: 99.0,
            throughput_rows_per_s: 99.0,
            latency_us: LatencySummary {
                p50: 1234,
                ..Default::default()
            },
            server_cpu_us_per_request: None,
        };
        let t = table(std::slice::from_ref(&r));
        assert!(
            t.contains("r=100") && t.contains("1234") && t.contains("http_503=1"),
            "{t}"
        );
        let path = std::env::temp_dir().join(format!("sluice-load-{}.json", std::process::id()));
        write_json(&path, std::slice::from_ref(&r)).unwrap();
        let back: Vec<RunResult> =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back, vec![r]);
        let _ = std::fs::remove_file(path);
    }
}
