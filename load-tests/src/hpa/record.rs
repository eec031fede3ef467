//! What `sluice-hpa-sim` records: one [`Row`] per HPA sync, written as CSV
//! and drawn as a stacked time-series PNG, plus the parsing helpers it needs.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::plot::{self, Panel, Series};

/// One CSV row: the state at a sync.
#[derive(Debug, Clone)]
pub struct Row {
    /// Wall seconds since the load started.
    pub t: f64,
    /// Offered load: closed-loop clients.
    pub clients: usize,
    /// Successful requests per second since the previous row.
    pub throughput: f64,
    /// 99th percentile latency of those requests, ms.
    pub p99_ms: f64,
    /// Failed requests since the previous row.
    pub errors: u64,
    /// (replica id, HPA metric value; `None` when unready or missing).
    pub pods: Vec<(usize, Option<f64>)>,
    /// The replica calculator's answer, before behavior.
    pub raw: Option<usize>,
    /// The controller's decision.
    pub desired: usize,
    /// Replicas (not terminating) at the sync.
    pub current: usize,
    /// Of those, ready.
    pub ready: usize,
}

impl Row {
    /// One progress line on stderr.
    pub fn print(&self) {
        let pods: Vec<String> = self
            .pods
            .iter()
            .map(|(id, v)| v.map_or(format!("{id}:-"), |v| format!("{id}:{v:.1}")))
            .collect();
        eprintln!(
            "t={:6.1}s clients={:3} ok/s={:6.0} p99={:6.1}ms err={} replicas={} ready={} \
             desired={} in-flight [{}]",
            self.t,
            self.clients,
            self.throughput,
            self.p99_ms,
            self.errors,
            self.current,
            self.ready,
            self.desired,
            pods.join(" ")
        );
    }
}

/// Parses `SECONDSxCLIENTS,...` load steps.
pub fn parse_profile(s: &str) -> Result<Vec<(Duration, usize)>> {
    s.split(',')
        .map(|step| {
            let (secs, clients) = step
                .trim()
                .split_once('x')
                .with_context(|| format!("profile step {step:?}: expected SECONDSxCLIENTS"))?;
            Ok((Duration::from_secs(secs.parse()?), clients.parse()?))
        })
        .collect()
}

/// `sluice_inflight_requests` summed over the series of one exposition.
pub fn inflight(text: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with("sluice_inflight_requests{") || l.starts_with("sluice_inflight_requests ")
        })
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// Writes one line per row, with a header.
pub fn write_csv(path: &Path, rows: &[Row]) -> Result<()> {
    let mut out = String::from(
        "t_s,clients,throughput_rps,p99_ms,errors,inflight_avg,inflight_sum,pod_inflight,raw_desired,desired,current,ready\n",
    );
    for r in rows {
        let values: Vec<f64> = r.pods.iter().filter_map(|p| p.1).collect();
        let sum: f64 = values.iter().sum();
        #[allow(clippy::cast_precision_loss)]
        let avg = if values.is_empty() {
            0.0
        } else {
            sum / values.len() as f64
        };
        let pods: Vec<String> = r
            .pods
            .iter()
            .map(|(id, v)| v.map_or(format!("{id}=-"), |v| format!("{id}={v:.2}")))
            .collect();
        let raw = r.raw.map_or(String::new(), |v| v.to_string());
        out.push_str(&format!(
            "{:.2},{},{:.1},{:.2},{},{avg:.2},{sum:.2},{},{raw},{},{},{}\n",
            r.t,
            r.clients,
            r.throughput,
            r.p99_ms,
            r.errors,
            pods.join(" "),
            r.desired,
            r.current,
            r.ready
        ));
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

/// Draws load, throughput, p99, the per-pod metric against `target`, and replicas.
pub fn write_png(path: &Path, rows: &[Row], target: f64) -> Result<()> {
    let series = |name: &str, color: [u8; 3], step: bool, f: &dyn Fn(&Row) -> f64| Series {
        name: name.into(),
        color,
        points: rows.iter().map(|r| (r.t, f(r))).collect(),
        step,
    };
    let (blue, red, green, orange, grey) = (
        [31, 119, 180],
        [214, 39, 40],
        [44, 160, 44],
        [255, 127, 14],
        [120, 120, 120],
    );
    let values = |r: &Row| r.pods.iter().filter_map(|p| p.1).collect::<Vec<f64>>();
    #[allow(clippy::cast_precision_loss)]
    let avg = move |r: &Row| {
        let v = values(r);
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    #[allow(clippy::cast_precision_loss)]
    let panels = [
        Panel {
            label: "load: clients (closed loop) and total in-flight".into(),
            series: vec![
                series("clients", blue, true, &|r| r.clients as f64),
                series("sum in-flight", orange, false, &|r| {
                    r.pods.iter().filter_map(|p| p.1).sum()
                }),
            ],
        },
        Panel {
            label: "throughput (req/s)".into(),
            series: vec![
                series("ok req/s", green, false, &|r| r.throughput),
                series("errors/s", red, false, &|r| r.errors as f64),
            ],
        },
        Panel {
            label: "p99 latency (ms)".into(),
            series: vec![series("p99", red, false, &|r| r.p99_ms)],
        },
        Panel {
            label: "hpa metric: in-flight per pod".into(),
            series: vec![
                series("pod average", orange, false, &avg),
                series(&format!("target {target}"), grey, false, &|_| target),
            ],
        },
        Panel {
            label: "replicas".into(),
            series: vec![
                series("desired", red, true, &|r| r.desired as f64),
                series("current", blue, true, &|r| r.current as f64),
                series("ready", green, true, &|r| r.ready as f64),
            ],
        },
    ];
    plot::write_timeseries_png(
        path,
        "hpa simulation: sluice replicas on dense",
        "time (s, 1 s = 15 s of cluster time)",
        &panels,
    )
}

/// Prints the outcome: requests, peak replicas, when scaling happened.
pub fn summarize(rows: &[Row], ok: u64, errors: u64, bad_exits: usize, started: usize) {
    let peak = rows.iter().map(|r| r.current).max().unwrap_or(0);
    let first_up = rows
        .windows(2)
        .find(|w| w[1].current > w[0].current)
        .map(|w| w[1].t);
    let at_peak = rows.iter().find(|r| r.current == peak).map(|r| r.t);
    let first_down = rows
        .windows(2)
        .find(|w| w[1].current < w[0].current)
        .map(|w| w[1].t);
    let back = rows
        .iter()
        .rposition(|r| r.current > rows.last().map_or(0, |l| l.current))
        .and_then(|i| rows.get(i + 1))
        .map(|r| r.t);
    eprintln!(
        "summary: {ok} ok, {errors} failed requests, {started} replicas started, peak {peak} replicas \
         (first scale-up at {first_up:?} s, peak at {at_peak:?} s), first scale-down at {first_down:?} s, \
         back to the final count at {back:?} s, {bad_exits} unclean replica exits"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_profiles_and_expositions() {
        let p = parse_profile("10x1, 5x64").unwrap();
        assert_eq!(
            p,
            vec![(Duration::from_secs(10), 1), (Duration::from_secs(5), 64)]
        );
        assert!(parse_profile("10").is_err());
        let text = "# TYPE sluice_inflight_requests gauge\n\
                    sluice_inflight_requests{model=\"a\",version=\"1\"} 3\n\
                    sluice_inflight_requests{model=\"b\",version=\"1\"} 2\n\
                    sluice_inflight_requests_other 9\n";
        assert_eq!(inflight(text), 5.0);
    }
}
