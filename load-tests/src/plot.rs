//! PNG charts of load runs, drawn with `plotters`: latency (p50 / p90 / p99)
//! against achieved throughput for a sweep (`--plot`), and stacked
//! time-series panels over a shared x axis (`sluice-plot-hpa`).
//!
//! Charts are drawn into an RGB buffer and encoded with `png`; text uses the
//! Noto Sans face embedded at compile time (`notosans`, registered with
//! plotters' `ab_glyph` backend), so no system fonts or font libraries are
//! needed. That backend (plotters 0.3.7) advances each glyph without its side
//! bearing, so letter spacing is slightly uneven; the text stays legible.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, register_font};

use crate::stats::RunResult;

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// The family name the embedded font is registered under.
const FONT: &str = "sans-serif";
const GRID: RGBColor = RGBColor(225, 225, 225);
const SERIES: [(&str, RGBColor); 3] = [
    ("p50", RGBColor(31, 119, 180)),
    ("p90", RGBColor(44, 160, 44)),
    ("p99", RGBColor(214, 39, 40)),
];

/// Registers the embedded font with plotters once per process; every text
/// style names [`FONT`].
fn register_fonts() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        register_font(FONT, FontStyle::Normal, notosans::REGULAR_TTF).is_ok()
            && register_font(FONT, FontStyle::Bold, notosans::BOLD_TTF).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(anyhow!("the embedded Noto Sans font did not parse"))
    }
}

/// Draws a `width` x `height` chart with `draw` on a white background and
/// writes it to `path` as an 8-bit RGB PNG.
fn render(
    path: &Path,
    (width, height): (u32, u32),
    draw: impl FnOnce(&Area<'_>) -> Result<()>,
) -> Result<()> {
    register_fonts()?;
    let len = usize::try_from(u64::from(width) * u64::from(height) * 3)?;
    let mut px = vec![255; len];
    {
        let root = BitMapBackend::with_buffer(&mut px, (width, height)).into_drawing_area();
        draw(&root)?;
        root.present()?;
    }
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut enc = png::Encoder::new(BufWriter::new(file), width, height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().context("writing PNG header")?;
    writer.write_image_data(&px).context("writing PNG data")?;
    writer.finish().context("finishing PNG")?;
    Ok(())
}

/// A legend outside the plot: a short line and the name of each entry,
/// one under the other from (x, y) in `area`'s pixels.
fn legend(area: &Area<'_>, (x, y): (i32, i32), entries: &[(&str, RGBColor)]) -> Result<()> {
    for (k, (name, color)) in (0..).zip(entries) {
        let ly = y + k * 20;
        area.draw(&PathElement::new(
            vec![(x, ly), (x + 24, ly)],
            color.stroke_width(3),
        ))?;
        let style = TextStyle::from((FONT, 15).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        // +3: plotters' ab_glyph layout centres text a few pixels above the anchor.
        area.draw(&Text::new((*name).to_string(), (x + 32, ly + 3), style))?;
    }
    Ok(())
}

/// A tick or rate value without trailing zeros (`2.5`, `1000`).
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
    let xmax = pts.iter().map(|p| p.0).fold(0.0, f64::max).max(1.0) * 1.05;
    let ymax = pts.iter().map(|p| p.1[2]).fold(0.0, f64::max).max(0.001) * 1.1;
    render(path, (960, 600), |root| {
        // The plot on the left, the legend in a column on the right.
        let (plot, side) = root.split_horizontally(820);
        let mut chart = ChartBuilder::on(&plot)
            .caption(title, (FONT, 24).into_font().style(FontStyle::Bold))
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..xmax, 0.0..ymax)?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .bold_line_style(GRID)
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 17))
            .x_desc("throughput (req/s)")
            .y_desc("latency (ms)")
            .x_label_formatter(&|v| fmt_tick(*v))
            .y_label_formatter(&|v| fmt_tick(*v))
            .draw()?;
        for (k, (_, color)) in SERIES.iter().enumerate() {
            let line = pts.iter().map(|(x, ys, _)| (*x, ys[k]));
            chart.draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))?;
            chart.draw_series(line.map(|p| Circle::new(p, 4, color.filled())))?;
        }
        // Each point's load, next to its p99 (the top line).
        chart.draw_series(pts.iter().map(|(x, ys, label)| {
            EmptyElement::at((*x, ys[2]))
                + Text::new(label.clone(), (6, -18), (FONT, 13).into_font())
        }))?;
        legend(&side, (10, 70), &SERIES)?;
        Ok(())
    })
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
/// Every panel has its own y range (from 0) and its legend to its right; only
/// the bottom panel labels the x axis.
pub fn write_timeseries_png(
    path: &Path,
    title: &str,
    x_label: &str,
    panels: &[Panel],
) -> Result<()> {
    const WIDTH: u32 = 1000;
    const TITLE_H: u32 = 50;
    const PANEL_H: u32 = 210;
    const X_AXIS_H: u32 = 40;
    let n = u32::try_from(panels.len().max(1))?;
    let height = TITLE_H + n * PANEL_H + X_AXIS_H;
    let xmax = panels
        .iter()
        .flat_map(|p| p.series.iter())
        .flat_map(|s| s.points.iter())
        .map(|p| p.0)
        .fold(0.0, f64::max)
        .max(1.0);
    render(path, (WIDTH, height), |root| {
        let (head, body) = root.split_vertically(TITLE_H);
        let centred = Pos::new(HPos::Center, VPos::Center);
        let style = TextStyle::from((FONT, 22).into_font().style(FontStyle::Bold)).pos(centred);
        head.draw_text(title, &style, (i32::try_from(WIDTH / 2)?, 24))?;
        let breaks: Vec<u32> = (1..n).map(|k| k * PANEL_H).collect();
        let areas = body.split_by_breakpoints::<u32, u32, _, _>([], breaks);
        for (k, (panel, area)) in panels.iter().zip(&areas).enumerate() {
            let last = k + 1 == panels.len();
            let (plot, side) = area.split_horizontally(WIDTH - 230);
            let ymax = panel
                .series
                .iter()
                .flat_map(|s| s.points.iter())
                .map(|p| p.1)
                .fold(0.0, f64::max)
                .max(1.0)
                * 1.1;
            let mut chart = ChartBuilder::on(&plot)
                .caption(&panel.label, (FONT, 16))
                .margin_left(10)
                .margin_right(16)
                .margin_top(4)
                .margin_bottom(if last { 0 } else { 6 })
                // Every plot gets the same height: the bottom one's area is X_AXIS_H taller.
                .x_label_area_size(if last { 14 + X_AXIS_H } else { 8 })
                .y_label_area_size(60)
                .build_cartesian_2d(0.0..xmax, 0.0..ymax)?;
            let mut mesh = chart.configure_mesh();
            mesh.light_line_style(WHITE)
                .bold_line_style(GRID)
                .label_style((FONT, 13))
                .axis_desc_style((FONT, 17))
                .y_label_formatter(&|v| fmt_tick(*v))
                .y_labels(5);
            if last {
                mesh.x_desc(x_label).x_label_formatter(&|v| fmt_tick(*v));
            } else {
                mesh.x_label_formatter(&|_| String::new());
            }
            mesh.draw()?;
            for s in &panel.series {
                let [r, g, b] = s.color;
                let points = if s.step {
                    staircase(&s.points)
                } else {
                    s.points.clone()
                };
                chart.draw_series(LineSeries::new(points, RGBColor(r, g, b).stroke_width(2)))?;
            }
            let entries: Vec<(&str, RGBColor)> = panel
                .series
                .iter()
                .map(|s| {
                    (
                        s.name.as_str(),
                        RGBColor(s.color[0], s.color[1], s.color[2]),
                    )
                })
                .collect();
            legend(&side, (8, 40), &entries)?;
        }
        Ok(())
    })
}

/// The points of a step line: each value is held until the next point's x.
fn staircase(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(points.len() * 2);
    for (k, &(x, y)) in points.iter().enumerate() {
        if let Some(&(_, prev_y)) = k.checked_sub(1).and_then(|j| points.get(j)) {
            out.push((x, prev_y));
        }
        out.push((x, y));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{LatencySummary, Mode};

    /// Decodes the PNG at `path` (and removes it): its size and RGB pixels.
    fn decode(path: &Path) -> ((u32, u32), Vec<[u8; 3]>) {
        let file = File::open(path).unwrap();
        let mut reader = png::Decoder::new(std::io::BufReader::new(file))
            .read_info()
            .unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(
            (info.color_type, info.bit_depth),
            (png::ColorType::Rgb, png::BitDepth::Eight)
        );
        let _ = std::fs::remove_file(path);
        let px = buf[..info.buffer_size()]
            .chunks_exact(3)
            .map(|p| [p[0], p[1], p[2]])
            .collect();
        ((info.width, info.height), px)
    }

    /// How many pixels have exactly `color`.
    fn count(px: &[[u8; 3]], color: [u8; 3]) -> usize {
        px.iter().filter(|p| **p == color).count()
    }

    /// How many pixels are dark (text, axes), in rows `rows` of an image `width` wide.
    fn dark(px: &[[u8; 3]], width: u32, rows: std::ops::Range<u32>) -> usize {
        let w = width as usize;
        px[rows.start as usize * w..rows.end as usize * w]
            .iter()
            .filter(|p| p.iter().all(|c| *c < 100))
            .count()
    }

    #[test]
    fn ticks_drop_trailing_zeros() {
        assert_eq!(fmt_tick(2.50), "2.5");
        assert_eq!(fmt_tick(1000.0), "1000");
        assert_eq!(fmt_tick(0.125), "0.125");
    }

    #[test]
    fn steps_hold_each_value_until_the_next_point() {
        assert_eq!(
            staircase(&[(0.0, 1.0), (5.0, 3.0), (9.0, 2.0)]),
            [(0.0, 1.0), (5.0, 1.0), (5.0, 3.0), (9.0, 3.0), (9.0, 2.0)]
        );
        assert!(staircase(&[]).is_empty());
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
            "test sweep",
        )
        .unwrap();
        let ((w, h), px) = decode(&path);
        assert_eq!((w, h), (960, 600));
        // Each series is drawn in its colour, and the title's text in the top rows.
        for (name, RGBColor(r, g, b)) in SERIES {
            assert!(count(&px, [r, g, b]) > 100, "{name} is not drawn");
        }
        assert!(dark(&px, w, 0..40) > 50, "no title");
    }

    #[test]
    fn writes_a_timeseries_png() {
        let series = |name: &str, color, step| Series {
            name: name.into(),
            color,
            points: vec![(0.0, 1.0), (5.0, 3.0), (9.0, 2.0)],
            step,
        };
        let panels = [
            Panel {
                label: "a".into(),
                series: vec![series("x", [200, 0, 0], false)],
            },
            Panel {
                label: "b".into(),
                series: vec![series("y", [0, 0, 200], true)],
            },
        ];
        let path = std::env::temp_dir().join(format!("sluice-ts-{}.png", std::process::id()));
        write_timeseries_png(&path, "a title", "time (s)", &panels).unwrap();
        let ((w, h), px) = decode(&path);
        // One panel height each, plus the title and the x axis.
        assert_eq!((w, h), (1000, 50 + 2 * 210 + 40));
        assert!(count(&px, [200, 0, 0]) > 100, "series x is not drawn");
        assert!(count(&px, [0, 0, 200]) > 100, "series y is not drawn");
        assert!(dark(&px, w, 0..40) > 30, "no title");
        assert!(dark(&px, w, h - 30..h) > 30, "no x axis label");
    }
}
