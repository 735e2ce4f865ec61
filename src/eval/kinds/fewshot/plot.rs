//! The few-shot plots (plotters, bitmap backend, DejaVu Sans from the `dejavu` crate: no system
//! fonts): a sweep's top-1 against tokens per image, and the judges' calibration curves.

use super::calibration::Calibration;
use super::sweep::split_cell;
use super::table::{column_order, column_title, split_key};
use crate::error::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::Value;
use std::collections::BTreeMap;

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

fn register_font() -> Result<()> {
    static DONE: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        plotters::style::register_font(
            "sans-serif",
            plotters::style::FontStyle::Normal,
            dejavu::sans::regular(),
        )
        .map_err(|_| "the embedded DejaVu Sans font does not parse".to_string())
    })
    .clone()
    .map_err(Error::Msg)
}

fn plot_err<E: std::fmt::Debug>(e: E) -> Error {
    Error::Msg(format!("cannot draw a plot: {e:?}"))
}

/// A `w x h` white canvas with `title`, its chart area (all but a legend strip of `strip_h`
/// pixels at the bottom) drawn by `charts` and its legend by `legend`; the PNG bytes.
fn canvas(
    (w, h): (u32, u32),
    title: &str,
    strip_h: u32,
    charts: impl FnOnce(&Area) -> Result<()>,
    legend: &[Entry],
) -> Result<Vec<u8>> {
    register_font()?;
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let root = root.titled(title, ("sans-serif", 20)).map_err(plot_err)?;
        let (area, strip) = root.split_vertically(h - 40 - strip_h);
        charts(&area)?;
        draw_legend(&strip, legend)?;
        root.present().map_err(plot_err)?;
    }
    let img = image::RgbImage::from_raw(w, h, buf)
        .ok_or_else(|| Error::Msg("plot: buffer size".into()))?;
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| Error::Msg(format!("cannot encode a plot: {e}")))?;
    Ok(png)
}

/// A legend entry: its label, colour, and line (solid of this width, or dashed `(on, off)`).
struct Entry {
    label: String,
    color: RGBAColor,
    width: u32,
    dash: Option<(i32, i32)>,
}

/// The legend, one row: each entry's 26-pixel line, then its label.
fn draw_legend(strip: &Area, entries: &[Entry]) -> Result<()> {
    let font: TextStyle = ("sans-serif", 14).into();
    let (mut x, y) = (60i32, 14i32);
    for e in entries {
        let style = e.color.stroke_width(e.width);
        match e.dash {
            None => strip
                .draw(&PathElement::new(vec![(x, y), (x + 26, y)], style))
                .map_err(plot_err)?,
            Some((on, off)) => {
                let mut k = 0;
                while k < 26 {
                    let seg = vec![(x + k, y), (x + (k + on).min(26), y)];
                    strip
                        .draw(&PathElement::new(seg, style))
                        .map_err(plot_err)?;
                    k += on + off;
                }
            }
        }
        let (tw, _) = strip
            .estimate_text_size(&e.label, &font)
            .map_err(plot_err)?;
        strip
            .draw(&Text::new(e.label.clone(), (x + 32, y - 8), font.clone()))
            .map_err(plot_err)?;
        x += 32 + tw as i32 + 28;
    }
    Ok(())
}

/// `(x, top-1 %, interval low %, high %)` of one plotted point.
type Point4 = (f64, f64, f64, f64);

/// One line with its 95% bars and dots, shifted by `dx` so that lines do not hide each other.
fn draw_line<DB: DrawingBackend>(
    chart: &mut ChartContext<
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    pts: &[Point4],
    dx: f64,
    color: RGBAColor,
    (bar, dot): (u32, u32),
) -> Result<()> {
    let mut pts = pts.to_vec();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    chart
        .draw_series(LineSeries::new(
            pts.iter().map(|p| (p.0 + dx, p.1)),
            color.stroke_width(2),
        ))
        .map_err(plot_err)?;
    chart
        .draw_series(
            pts.iter().map(|p| {
                ErrorBar::new_vertical(p.0 + dx, p.2, p.1, p.3, color.stroke_width(1), bar)
            }),
        )
        .map_err(plot_err)?;
    chart
        .draw_series(
            pts.iter()
                .map(|p| Circle::new((p.0 + dx, p.1), dot, color.filled())),
        )
        .map_err(plot_err)?;
    Ok(())
}

/// A sweep's lines: `(way, select, column)` -> points at x = the index of tokens per image.
struct SweepData {
    xs: Vec<usize>,
    lines: BTreeMap<(usize, String, String), Vec<Point4>>,
    ways: Vec<usize>,
    /// Every line's `(select, column)` in the paper's column order: its colour and legend
    /// entry, the same in every panel.
    series: Vec<(String, String)>,
}

fn sweep_data(sw: &Value) -> SweepData {
    let points = sw["points"].as_array().cloned().unwrap_or_default();
    let mut xs: Vec<usize> = points
        .iter()
        .filter_map(|p| p["per_image"].as_u64().map(|n| n as usize))
        .filter(|&n| n > 0)
        .collect();
    xs.sort();
    xs.dedup();
    let mut lines: BTreeMap<(usize, String, String), Vec<Point4>> = BTreeMap::new();
    let select_swept = sw["swept"]["select"].as_bool().unwrap_or(false);
    let pct = |x: &Value| 100.0 * x.as_f64().unwrap_or(0.0);
    for p in &points {
        let Some(xi) = p["per_image"]
            .as_u64()
            .and_then(|n| xs.iter().position(|&x| x == n as usize))
        else {
            continue;
        };
        let sel = if select_swept {
            p["select"].as_str().unwrap_or("").to_string()
        } else {
            String::new()
        };
        for (cell, v) in p["cells"].as_object().into_iter().flatten() {
            let (w, col) = split_cell(cell);
            lines
                .entry((w, sel.clone(), col.to_string()))
                .or_default()
                .push((
                    xi as f64,
                    pct(&v["top1"]),
                    pct(&v["ci95"][0]),
                    pct(&v["ci95"][1]),
                ));
        }
    }
    let mut ways: Vec<usize> = lines.keys().map(|k| k.0).collect();
    ways.dedup();
    let mut series: Vec<(String, String)> =
        lines.keys().map(|k| (k.1.clone(), k.2.clone())).collect();
    series.sort_by_key(|(sel, col)| (sel.clone(), column_order(col)));
    series.dedup();
    SweepData {
        xs,
        lines,
        ways,
        series,
    }
}

fn draw_sweep_panel(panel: &Area, way: usize, d: &SweepData) -> Result<()> {
    let x_range = -0.5f64..(d.xs.len() as f64 - 0.5);
    let mut chart = ChartBuilder::on(panel)
        .caption(format!("{way}-way"), ("sans-serif", 18))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(52)
        .build_cartesian_2d(x_range.clone(), 0f64..100f64)
        .map_err(plot_err)?;
    let labels = &d.xs;
    chart
        .configure_mesh()
        .x_labels(d.xs.len())
        .y_label_formatter(&|y: &f64| format!("{y:.0}"))
        .light_line_style(RGBColor(238, 238, 238))
        .x_label_formatter(&|x: &f64| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < labels.len() {
                labels[i as usize].to_string()
            } else {
                String::new()
            }
        })
        .x_desc("tokens per image (tokens.per_image)")
        .y_desc("top-1 accuracy (%)")
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .draw()
        .map_err(plot_err)?;
    let chance = 100.0 / way as f64;
    chart
        .draw_series(DashedLineSeries::new(
            vec![(x_range.start, chance), (x_range.end, chance)],
            6,
            4,
            BLACK.stroke_width(1),
        ))
        .map_err(plot_err)?;
    let n_lines = d.series.len().max(1);
    for ((_, sel, col), pts) in d.lines.iter().filter(|(k, _)| k.0 == way) {
        let li = d
            .series
            .iter()
            .position(|x| x.0 == *sel && x.1 == *col)
            .unwrap_or(0);
        let dx = 0.05 * (li as f64 - (n_lines as f64 - 1.0) / 2.0);
        draw_line(&mut chart, pts, dx, Palette99::pick(li).to_rgba(), (8, 4))?;
    }
    Ok(())
}

/// The plot (PNG bytes) of top-1 against tokens per image: one panel per N-way, one line per
/// column (and per `select` when that is swept too), 95% intervals as error bars, chance
/// dashed. `None` when `per_image` is not swept (nothing to put on the axis).
pub fn sweep_png(sw: &Value, title: &str) -> Result<Option<Vec<u8>>> {
    if !sw["swept"]["per_image"].as_bool().unwrap_or(false) {
        return Ok(None);
    }
    let d = sweep_data(sw);
    let (pw, h) = (620u32, 500u32);
    let w = pw * d.ways.len().max(1) as u32;
    let mut legend: Vec<Entry> = d
        .series
        .iter()
        .enumerate()
        .map(|(li, (sel, col))| Entry {
            label: if sel.is_empty() {
                column_title(col)
            } else {
                format!("{sel}: {}", column_title(col))
            },
            color: Palette99::pick(li).to_rgba(),
            width: 3,
            dash: None,
        })
        .collect();
    legend.push(Entry {
        label: "chance (1/N)".into(),
        color: BLACK.to_rgba(),
        width: 1,
        dash: Some((6, 4)),
    });
    let png = canvas(
        (w, h),
        &format!("{title}: few-shot top-1 against tokens per image"),
        30,
        |area| {
            let panels = area.split_evenly((1, d.ways.len().max(1)));
            for (panel, &way) in panels.iter().zip(&d.ways) {
                draw_sweep_panel(panel, way, &d)?;
            }
            Ok(())
        },
        &legend,
    )?;
    Ok(Some(png))
}

/// The calibration records of a run: each judge's, the rows with their share of class words,
/// and every cell (with its point of a sweep) in the paper's order.
struct CalData {
    judges: Vec<(String, Value)>,
    rows: Vec<(String, f64)>,
    cells: Vec<String>,
}

fn calibration_data(calibration: &Value) -> CalData {
    let judges: Vec<(String, Value)> = calibration["judges"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let rows: Vec<(String, f64)> = calibration["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str())
        .filter_map(|r| Calibration::parse(r).map(|c| (r.to_string(), c.signal())))
        .collect();
    let mut cells: Vec<String> = judges
        .iter()
        .flat_map(|(_, j)| {
            j["cells"]
                .as_object()
                .map(|m| m.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
        })
        .collect();
    cells.sort_by_key(|c| {
        let (pre, w, col) = split_key(c).unwrap_or(("", 0, c.as_str()));
        (pre.to_string(), w, column_order(col))
    });
    cells.dedup();
    CalData {
        judges,
        rows,
        cells,
    }
}

fn draw_calibration_panel(panel: &Area, cell: &str, d: &CalData) -> Result<()> {
    let (pre, w, col) = split_key(cell).unwrap_or(("", 0, cell));
    let caption = if pre.is_empty() {
        format!("{w}-way, {}", column_title(col))
    } else {
        format!("{pre}: {w}-way, {}", column_title(col))
    };
    let ways = d
        .judges
        .iter()
        .find_map(|(_, j)| j["cells"][cell]["ways"].as_f64())
        .unwrap_or(2.0);
    let mut chart = ChartBuilder::on(panel)
        .caption(caption, ("sans-serif", 15))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(46)
        .build_cartesian_2d(-0.05f64..1.05f64, 0f64..100f64)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_labels(5)
        .y_label_formatter(&|y: &f64| format!("{y:.0}"))
        .x_label_formatter(&|x: &f64| format!("{x:.2}"))
        .light_line_style(RGBColor(238, 238, 238))
        .x_desc("share of class words (random 0, oracle 1)")
        .y_desc("top-1 (%)")
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 13))
        .draw()
        .map_err(plot_err)?;
    let level = |y: f64| vec![(-0.05, y), (1.05, y)];
    chart
        .draw_series(DashedLineSeries::new(
            level(100.0 / ways),
            6,
            4,
            BLACK.stroke_width(1),
        ))
        .map_err(plot_err)?;
    // The reference does not depend on the judge: the first judge's record has it.
    let first = &d.judges[0].1["cells"][cell];
    let mut refs: Vec<(f64, f64)> = d
        .rows
        .iter()
        .filter_map(|(r, x)| {
            first[r]["nearest_support"]
                .as_f64()
                .map(|v| (*x, 100.0 * v))
        })
        .collect();
    refs.sort_by(|a, b| a.0.total_cmp(&b.0));
    chart
        .draw_series(DashedLineSeries::new(
            refs,
            8,
            5,
            RGBColor(120, 120, 120).stroke_width(2),
        ))
        .map_err(plot_err)?;
    let pct = |v: &Value| 100.0 * v.as_f64().unwrap_or(f64::NAN);
    for (k, (_, j)) in d.judges.iter().enumerate() {
        let c = &j["cells"][cell];
        let color = Palette99::pick(k).to_rgba();
        let pts: Vec<Point4> = d
            .rows
            .iter()
            .filter(|(r, _)| !c[r].is_null())
            .map(|(r, x)| {
                let v = &c[r];
                (*x, pct(&v["top1"]), pct(&v["ci95"][0]), pct(&v["ci95"][1]))
            })
            .collect();
        let dx = 0.012 * (k as f64 - (d.judges.len() as f64 - 1.0) / 2.0);
        draw_line(&mut chart, &pts, dx, color, (6, 3))?;
        if let Some(t) = c["tokens"]["top1"].as_f64() {
            chart
                .draw_series(DashedLineSeries::new(
                    level(100.0 * t),
                    2,
                    3,
                    color.stroke_width(2),
                ))
                .map_err(plot_err)?;
        }
    }
    Ok(())
}

/// The judges' calibration curves (PNG bytes): one panel per cell (and point of a sweep), top-1
/// against the share of an image's words that are its class word (random 0, noisy-p at p,
/// oracle 1), one line per judge with 95% bars, the no-LLM nearest-support reference dashed
/// grey, each judge's accuracy on the suite's tokens as a dotted level in its colour, chance
/// dashed black. `None` with fewer than two calibration rows (no curve to draw).
pub fn calibration_png(calibration: &Value, title: &str) -> Result<Option<Vec<u8>>> {
    let d = calibration_data(calibration);
    if d.rows.len() < 2 || d.judges.is_empty() || d.cells.is_empty() {
        return Ok(None);
    }
    let cols = d.cells.len().clamp(1, 4);
    let grid_rows = d.cells.len().div_ceil(cols);
    let (pw, ph) = (460u32, 380u32);
    let size = (pw * cols as u32, ph * grid_rows as u32 + 70);
    let mut legend: Vec<Entry> = d
        .judges
        .iter()
        .enumerate()
        .map(|(k, (name, _))| Entry {
            label: format!("judge {name}"),
            color: Palette99::pick(k).to_rgba(),
            width: 3,
            dash: None,
        })
        .collect();
    for (label, color, width, dash) in [
        (
            "suite's tokens (level per judge)",
            Palette99::pick(0).to_rgba(),
            2,
            (2, 3),
        ),
        (
            "nearest support, no LLM",
            RGBColor(120, 120, 120).to_rgba(),
            2,
            (8, 5),
        ),
        ("chance", BLACK.to_rgba(), 1, (6, 4)),
    ] {
        legend.push(Entry {
            label: label.into(),
            color,
            width,
            dash: Some(dash),
        });
    }
    let png = canvas(
        size,
        &format!("{title}: judge top-1 against the share of class words"),
        30,
        |area| {
            let panels = area.split_evenly((grid_rows, cols));
            for (panel, cell) in panels.iter().zip(&d.cells) {
                draw_calibration_panel(panel, cell, &d)?;
            }
            Ok(())
        },
        &legend,
    )?;
    Ok(Some(png))
}
