//! `sluice-plot-hpa`: draws the real HPA controller's run that `make
//! test-cluster` records (`tests/cluster/run.py --record` writes
//! `docs/hpa-real.csv`, one row a second) as a stacked time-series PNG.
//!
//! ```text
//! sluice-plot-hpa [CSV] [PNG]     # defaults: docs/hpa-real.csv docs/hpa-real.png
//! ```

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use sluice_load::plot::{Panel, Series, write_timeseries_png};

/// The CSV's columns this plot reads, by header name.
const COLUMNS: [&str; 8] = [
    "t",
    "clients",
    "metric",
    "target",
    "current_replicas",
    "desired_replicas",
    "ready_replicas",
    "failed",
];

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let csv = PathBuf::from(args.next().unwrap_or_else(|| "docs/hpa-real.csv".into()));
    let png = PathBuf::from(args.next().unwrap_or_else(|| "docs/hpa-real.png".into()));
    let text =
        std::fs::read_to_string(&csv).with_context(|| format!("reading {}", csv.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().context("empty CSV")?.split(',').collect();
    let index: HashMap<&str, usize> = header.iter().enumerate().map(|(i, h)| (*h, i)).collect();
    for column in COLUMNS {
        if !index.contains_key(column) {
            bail!(
                "{}: no column {column:?} (header: {header:?})",
                csv.display()
            );
        }
    }
    // Each row as the columns above; an empty metric (not read yet) is skipped in its line.
    let mut rows: Vec<HashMap<&str, Option<f64>>> = Vec::new();
    for (n, line) in lines.enumerate() {
        let fields: Vec<&str> = line.split(',').collect();
        let mut row = HashMap::new();
        for column in COLUMNS {
            let field = fields.get(index[column]).copied().unwrap_or("");
            let value = if field.is_empty() {
                None
            } else {
                Some(field.parse::<f64>().with_context(|| {
                    format!("{} line {}: {column} = {field:?}", csv.display(), n + 2)
                })?)
            };
            row.insert(column, value);
        }
        rows.push(row);
    }
    let series = |name: &str, color: [u8; 3], step: bool, column: &str| Series {
        name: name.into(),
        color,
        points: rows
            .iter()
            .filter_map(|r| Some((r["t"]?, r[column]?)))
            .collect(),
        step,
    };
    let target = rows.iter().find_map(|r| r["target"]).unwrap_or(0.0);
    let (blue, red, green, orange, grey) = (
        [31, 119, 180],
        [214, 39, 40],
        [44, 160, 44],
        [255, 127, 14],
        [120, 120, 120],
    );
    let panels = [
        Panel {
            label: "load: closed-loop clients (each holds one request for 1 s)".into(),
            series: vec![series("clients", blue, true, "clients")],
        },
        Panel {
            label: "HPA metric: sluice_inflight_requests per pod (adapter query, avg over 1m)"
                .into(),
            series: vec![
                series("current (HPA status)", orange, false, "metric"),
                series(&format!("target {target}"), grey, false, "target"),
            ],
        },
        Panel {
            label: "replicas".into(),
            series: vec![
                series("desired (HPA)", red, true, "desired_replicas"),
                series("current (HPA)", blue, true, "current_replicas"),
                series("ready (Deployment)", green, true, "ready_replicas"),
            ],
        },
        Panel {
            label: "failed requests (cumulative)".into(),
            series: vec![series("failed", red, true, "failed")],
        },
    ];
    write_timeseries_png(
        &png,
        "The real HPA controller on sluice_inflight_requests (make test-cluster)",
        "seconds since the load started",
        &panels,
    )?;
    println!("wrote {}", png.display());
    Ok(())
}
