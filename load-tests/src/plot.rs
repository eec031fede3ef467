//! A minimal latency-vs-throughput PNG chart (p50 / p90 / p99 against
//! achieved req/s, one point per run), rasterized by hand with a built-in
//! 5x7 pixel font so it needs no system fonts or image libraries beyond `png`.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use anyhow::{Context, Result};

use crate::stats::RunResult;

const W: usize = 960;
const H: usize = 600;
const LEFT: usize = 90;
const RIGHT: usize = 150;
const TOP: usize = 50;
const BOTTOM: usize = 70;
type Rgb = [u8; 3];
const BLACK: Rgb = [0, 0, 0];
const GRID: Rgb = [225, 225, 225];
const SERIES: [(&str, Rgb); 3] = [
    ("P50", [31, 119, 180]),
    ("P90", [44, 160, 44]),
    ("P99", [214, 39, 40]),
];

struct Canvas {
    px: Vec<u8>,
    w: usize,
    h: usize,
}

impl Canvas {
    fn new() -> Self {
        Self::sized(W, H)
    }

    fn sized(w: usize, h: usize) -> Self {
        Self {
            px: vec![255; w * h * 3],
            w,
            h,
        }
    }

    fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if let (Ok(x), Ok(y)) = (usize::try_from(x), usize::try_from(y))
            && x < self.w
            && y < self.h
        {
            let i = (y * self.w + x) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    fn rect(&mut self, x: i64, y: i64, w: i64, h: i64, c: Rgb) {
        for dy in 0..h {
            for dx in 0..w {
                self.set(x + dx, y + dy, c);
            }
        }
    }

    /// Bresenham line, `thick` pixels wide.
    fn line(&mut self, (mut x0, mut y0): (i64, i64), (x1, y1): (i64, i64), thick: i64, c: Rgb) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let mut err = dx + dy;
        loop {
            self.rect(x0 - thick / 2, y0 - thick / 2, thick, thick, c);
            if x0 == x1 && y0 == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x0 += sx;
            }
            if e2 <= dx {
                err += dx;
                y0 += sy;
            }
        }
    }

    /// Draws `text` (upper-cased) with its top-left corner at (x, y).
    fn text(&mut self, x: i64, y: i64, text: &str, scale: i64, c: Rgb) {
        for (i, ch) in text.chars().enumerate() {
            let rows = glyph(ch.to_ascii_uppercase());
            let ox = x + i64::try_from(i).unwrap_or(0) * 6 * scale;
            for (ry, bits) in rows.iter().enumerate() {
                for rx in 0..5 {
                    if bits & (0x10 >> rx) != 0 {
                        let ry = i64::try_from(ry).unwrap_or(0);
                        self.rect(ox + rx * scale, y + ry * scale, scale, scale, c);
                    }
                }
            }
        }
    }
}

fn text_width(text: &str, scale: i64) -> i64 {
    i64::try_from(text.chars().count()).unwrap_or(0) * 6 * scale
}

/// 5x7 glyphs, one byte per row, bit 4 = leftmost column.
fn glyph(c: char) -> [u8; 7] {
    match c {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        ',' => [0, 0, 0, 0, 0x0C, 0x04, 0x08],
        ':' => [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        '_' => [0, 0, 0, 0, 0, 0, 0x1F],
        '=' => [0, 0, 0x1F, 0, 0x1F, 0, 0],
        '/' => [0x01, 0x01, 0x02, 0x04, 0x08, 0x10, 0x10],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        _ => [0; 7],
    }
}

/// A "nice" tick step (1, 2 or 5 x 10^k) giving about five ticks up to `max`.
fn tick_step(max: f64) -> f64 {
    let raw = (max / 5.0).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn fmt_tick(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The label of one sweep point: its concurrency (`C=8`) or rate (`R=200`).
fn load_label(r: &RunResult) -> String {
    match (r.concurrency, r.rate) {
        (Some(c), _) => format!("C={c}"),
        (None, Some(rate)) => format!("R={}", fmt_tick(rate)),
        (None, None) => String::new(),
    }
}

/// Each run's throughput, p50/p90/p99 in ms and label, in the order the
/// loads ran.
fn sweep_points(results: &[RunResult]) -> Vec<(f64, [f64; 3], String)> {
    results
        .iter()
        .map(|r| {
            let l = &r.latency_us;
            #[allow(clippy::cast_precision_loss)]
            let ms = [l.p50 as f64 / 1e3, l.p90 as f64 / 1e3, l.p99 as f64 / 1e3];
            (r.throughput_rps, ms, load_label(r))
        })
        .collect()
}

/// Renders the chart for `results` into `path`. Points are joined in the
/// order the loads ran (past saturation, throughput can fall as load grows,
/// so sorting by throughput would draw a different curve), and each is
/// labelled with its concurrency or rate.
pub fn write_png(path: &Path, results: &[RunResult], title: &str) -> Result<()> {
    let pts = sweep_points(results);

    let xmax_raw = pts.iter().map(|p| p.0).fold(0.0, f64::max).max(1.0) * 1.05;
    let ymax_raw = pts.iter().map(|p| p.1[2]).fold(0.0, f64::max).max(0.001) * 1.1;
    let (xstep, ystep) = (tick_step(xmax_raw), tick_step(ymax_raw));
    let (xmax, ymax) = (
        (xmax_raw / xstep).ceil() * xstep,
        (ymax_raw / ystep).ceil() * ystep,
    );
    let (pw, ph) = ((W - LEFT - RIGHT) as f64, (H - TOP - BOTTOM) as f64);
    #[allow(clippy::cast_possible_truncation)]
    let to_px = |x: f64, y: f64| -> (i64, i64) {
        (
            (LEFT as f64 + x / xmax * pw).round() as i64,
            ((TOP as f64 + ph) - y / ymax * ph).round() as i64,
        )
    };
    let mut c = Canvas::new();
    let (l, t) = (LEFT as i64, TOP as i64);
    let (r, b) = ((W - RIGHT) as i64, (H - BOTTOM) as i64);
    // Grid, ticks and tick labels.
    let mut v = 0.0;
    while v <= xmax + xstep * 1e-9 {
        let (x, _) = to_px(v, 0.0);
        c.line((x, t), (x, b), 1, GRID);
        let s = fmt_tick(v);
        c.text(x - text_width(&s, 1) / 2, b + 8, &s, 1, BLACK);
        v += xstep;
    }
    let mut v = 0.0;
    while v <= ymax + ystep * 1e-9 {
        let (_, y) = to_px(0.0, v);
        c.line((l, y), (r, y), 1, GRID);
        let s = fmt_tick(v);
        c.text(l - 8 - text_width(&s, 1), y - 3, &s, 1, BLACK);
        v += ystep;
    }
    c.line((l, t), (l, b), 2, BLACK);
    c.line((l, b), (r, b), 2, BLACK);
    // Series.
    for (k, (name, color)) in SERIES.iter().enumerate() {
        let mut prev = None;
        for (x, ys, label) in &pts {
            let p = to_px(*x, ys[k]);
            if k == SERIES.len() - 1 {
                c.text(p.0 + 6, p.1 - 12, label, 1, BLACK);
            }
            if let Some(q) = prev {
                c.line(q, p, 2, *color);
            }
            c.rect(p.0 - 3, p.1 - 3, 7, 7, *color);
            prev = Some(p);
        }
        let ly = t + 10 + i64::try_from(k).unwrap_or(0) * 22;
        c.rect(r + 20, ly, 24, 6, *color);
        c.text(r + 52, ly - 4, name, 2, BLACK);
    }
    c.text(l, 10, title, 2, BLACK);
    let xl = "THROUGHPUT (REQ/S)";
    c.text(l + (r - l - text_width(xl, 2)) / 2, b + 32, xl, 2, BLACK);
    c.text(l - 60, t - 16, "LATENCY (MS)", 1, BLACK);
    encode(path, &c)
}

fn encode(path: &Path, c: &Canvas) -> Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    #[allow(clippy::cast_possible_truncation)]
    let mut enc = png::Encoder::new(BufWriter::new(file), c.w as u32, c.h as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().context("writing PNG header")?;
    writer.write_image_data(&c.px).context("writing PNG data")?;
    writer.finish().context("finishing PNG")?;
    Ok(())
}

/// One line of a time-series panel.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// RGB colour.
    pub color: [u8; 3],
    /// (x, y) points in x order.
    pub points: Vec<(f64, f64)>,
    /// Draw as a staircase (a value held until the next point), for counts.
    pub step: bool,
}

/// One panel of a stacked time-series chart; panels share the x axis.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Text above the panel (the y quantity).
    pub label: String,
    /// Lines, drawn in order.
    pub series: Vec<Series>,
}

/// Renders `panels` stacked vertically over a shared x axis into `path`.
pub fn write_timeseries_png(
    path: &Path,
    title: &str,
    x_label: &str,
    panels: &[Panel],
) -> Result<()> {
    const PW: usize = 1000;
    const PANEL_H: usize = 170;
    const GAP: usize = 46;
    let (left, right, top, bottom) = (80_i64, 230_i64, 84_i64, 60_i64);
    let n = i64::try_from(panels.len()).unwrap_or(1).max(1);
    let ph = i64::try_from(PANEL_H).unwrap_or(170);
    let gap = i64::try_from(GAP).unwrap_or(46);
    let height = top + n * ph + (n - 1) * gap + bottom;
    let mut c = Canvas::sized(PW, usize::try_from(height).unwrap_or(H));
    let r = i64::try_from(PW).unwrap_or(1000) - right;
    let all = || {
        panels
            .iter()
            .flat_map(|p| p.series.iter())
            .flat_map(|s| s.points.iter())
    };
    let xmax_raw = all().map(|p| p.0).fold(0.0, f64::max).max(1.0);
    let xstep = tick_step(xmax_raw);
    let xmax = (xmax_raw / xstep).ceil() * xstep;
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
    let to_x = |x: f64| left + (x / xmax * (r - left) as f64).round() as i64;
    c.text(left, 14, title, 2, BLACK);
    for (k, panel) in panels.iter().enumerate() {
        let t = top + i64::try_from(k).unwrap_or(0) * (ph + gap);
        let b = t + ph;
        let points = panel.series.iter().flat_map(|s| s.points.iter());
        let ymax_raw = points.map(|p| p.1).fold(0.0, f64::max).max(1.0) * 1.1;
        let ystep = tick_step(ymax_raw);
        let ymax = (ymax_raw / ystep).ceil() * ystep;
        #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
        let to_y = |y: f64| b - (y / ymax * ph as f64).round() as i64;
        let mut v = 0.0;
        while v <= xmax + xstep * 1e-9 {
            let x = to_x(v);
            c.line((x, t), (x, b), 1, GRID);
            if k + 1 == panels.len() {
                let s = fmt_tick(v);
                c.text(x - text_width(&s, 1) / 2, b + 8, &s, 1, BLACK);
            }
            v += xstep;
        }
        let mut v = 0.0;
        while v <= ymax + ystep * 1e-9 {
            let y = to_y(v);
            c.line((left, y), (r, y), 1, GRID);
            let s = fmt_tick(v);
            c.text(left - 8 - text_width(&s, 1), y - 3, &s, 1, BLACK);
            v += ystep;
        }
        c.line((left, t), (left, b), 2, BLACK);
        c.line((left, b), (r, b), 2, BLACK);
        c.text(left, t - 18, &panel.label, 2, BLACK);
        for (j, s) in panel.series.iter().enumerate() {
            let mut prev: Option<(i64, i64)> = None;
            for &(x, y) in &s.points {
                let p = (to_x(x), to_y(y));
                if let Some(q) = prev {
                    if s.step {
                        c.line(q, (p.0, q.1), 2, s.color);
                        c.line((p.0, q.1), p, 2, s.color);
                    } else {
                        c.line(q, p, 2, s.color);
                    }
                }
                prev = Some(p);
            }
            let ly = t + 6 + i64::try_from(j).unwrap_or(0) * 20;
            c.rect(r + 14, ly, 22, 5, s.color);
            c.text(r + 42, ly - 4, &s.name, 1, BLACK);
        }
    }
    let b = top + n * ph + (n - 1) * gap;
    c.text(
        left + (r - left - text_width(x_label, 2)) / 2,
        b + 28,
        x_label,
        2,
        BLACK,
    );
    encode(path, &c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{LatencySummary, Mode};

    #[test]
    fn ticks_are_nice() {
        assert_eq!(tick_step(10.0), 2.0);
        assert_eq!(tick_step(1234.0), 500.0);
        assert_eq!(tick_step(0.9), 0.2);
        assert_eq!(fmt_tick(2.50), "2.5");
        assert_eq!(fmt_tick(1000.0), "1000");
    }

    #[test]
    fn writes_a_png() {
        let mk = |rps: f64, p50: u64| RunResult {
            mode: Mode::Concurrency,
            protocol: "grpc".into(),
            model: "m".into(),
            model_version: None,
            rows_per_request: 1,
            concurrency: Some(1),
            rate: None,
            duration_s: 1.0,
            sent: 1,
            ok: 1,
            errors: Default::default(),
            error_count: 0,
            throughput_rps: rps,
            throughput_rows_per_s: rps,
            latency_us: LatencySummary {
                p50,
                p90: p50 * 2,
                p99: p50 * 3,
                ..Default::default()
            },
            server_cpu_us_per_request: None,
        };
        // Past saturation throughput falls as load grows: the points keep
        // the load order, each labelled with its concurrency.
        let mut saturated = mk(700.0, 20_000);
        saturated.concurrency = Some(64);
        let points = sweep_points(&[mk(100.0, 900), mk(800.0, 1500), saturated.clone()]);
        let xs: Vec<f64> = points.iter().map(|p| p.0).collect();
        assert_eq!(xs, [100.0, 800.0, 700.0]);
        assert_eq!(points[2].2, "C=64");
        let mut paced = saturated;
        (paced.concurrency, paced.rate) = (None, Some(250.0));
        assert_eq!(load_label(&paced), "R=250");
        let path = std::env::temp_dir().join(format!("sluice-load-{}.png", std::process::id()));
        write_png(
            &path,
            &[mk(100.0, 900), mk(800.0, 1500), mk(1500.0, 9000)],
            "test",
        )
        .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn writes_a_timeseries_png() {
        let series = |name: &str, step| Series {
            name: name.into(),
            color: [200, 0, 0],
            points: vec![(0.0, 1.0), (5.0, 3.0), (9.0, 2.0)],
            step,
        };
        let panels = [
            Panel {
                label: "a".into(),
                series: vec![series("x", false)],
            },
            Panel {
                label: "b".into(),
                series: vec![series("y", true)],
            },
        ];
        let path = std::env::temp_dir().join(format!("sluice-ts-{}.png", std::process::id()));
        write_timeseries_png(&path, "t", "time (s)", &panels).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let _ = std::fs::remove_file(path);
    }
}
