//! The few-shot plots (plotters, bitmap backend, DejaVu Sans from the `dejavu` crate: no system
//! fonts): a sweep's top-1 against tokens per image, and the judges' calibration curves.

use super::sweep::split_cell;
use super::table::{column_order, column_title};
use crate::error::{Error, Result};
use serde_json::Value;
use std::collections::BTreeMap;

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

/// The plot (PNG bytes) of top-1 against tokens per image: one panel per N-way, one line per
/// column (and per `select` when that is swept too), 95% intervals as error bars, chance
/// dashed. `None` when `per_image` is not swept (nothing to put on the axis).
pub fn sweep_png(sw: &Value, title: &str) -> Result<Option<Vec<u8>>> {
    use plotters::prelude::*;
    if !sw["swept"]["per_image"].as_bool().unwrap_or(false) {
        return Ok(None);
    }
    register_font()?;
    let points = sw["points"].as_array().cloned().unwrap_or_default();
    let mut xs: Vec<usize> = points
        .iter()
        .filter_map(|p| p["per_image"].as_u64().map(|n| n as usize))
        .filter(|&n| n > 0)
        .collect();
    xs.sort();
    xs.dedup();
    // Lines: (way, select, column) -> [(x index, top1, lo, hi)].
    type Line = Vec<(f64, f64, f64, f64)>;
    let mut lines: BTreeMap<(usize, String, String), Line> = BTreeMap::new();
    let select_swept = sw["swept"]["select"].as_bool().unwrap_or(false);
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
            let pct = |x: &Value| 100.0 * x.as_f64().unwrap_or(0.0);
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
    // Every line's (select, column) in the paper's column order: its colour and legend entry,
    // the same in every panel.
    let mut series: Vec<(String, String)> =
        lines.keys().map(|k| (k.1.clone(), k.2.clone())).collect();
    series.sort_by_key(|(sel, col)| (sel.clone(), column_order(col)));
    series.dedup();
    let series_name = |sel: &str, col: &str| {
        if sel.is_empty() {
            column_title(col)
        } else {
            format!("{sel}: {}", column_title(col))
        }
    };
    let (pw, h) = (620u32, 500u32);
    let w = pw * ways.len().max(1) as u32;
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let root = root
            .titled(
                &format!("{title}: few-shot top-1 against tokens per image"),
                ("sans-serif", 20),
            )
            .map_err(plot_err)?;
        let (charts, strip) = root.split_vertically(h - 40 - 30);
        let panels = charts.split_evenly((1, ways.len().max(1)));
        let n_lines = series.len().max(1);
        for (panel, &way) in panels.iter().zip(&ways) {
            let x_range = -0.5f64..(xs.len() as f64 - 0.5);
            let mut chart = ChartBuilder::on(panel)
                .caption(format!("{way}-way"), ("sans-serif", 18))
                .margin(14)
                .x_label_area_size(44)
                .y_label_area_size(52)
                .build_cartesian_2d(x_range.clone(), 0f64..100f64)
                .map_err(plot_err)?;
            let labels = xs.clone();
            chart
                .configure_mesh()
                .x_labels(xs.len())
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
            for ((_, sel, col), pts) in lines.iter().filter(|(k, _)| k.0 == way) {
                let li = series
                    .iter()
                    .position(|x| x.0 == *sel && x.1 == *col)
                    .unwrap_or(0);
                let color = Palette99::pick(li).to_rgba();
                // Lines side by side at each x so their bars do not hide each other.
                let dx = 0.05 * (li as f64 - (n_lines as f64 - 1.0) / 2.0);
                let mut pts = pts.clone();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                chart
                    .draw_series(LineSeries::new(
                        pts.iter().map(|p| (p.0 + dx, p.1)),
                        color.stroke_width(2),
                    ))
                    .map_err(plot_err)?;
                chart
                    .draw_series(pts.iter().map(|p| {
                        ErrorBar::new_vertical(p.0 + dx, p.2, p.1, p.3, color.stroke_width(1), 8)
                    }))
                    .map_err(plot_err)?;
                chart
                    .draw_series(
                        pts.iter()
                            .map(|p| Circle::new((p.0 + dx, p.1), 4, color.filled())),
                    )
                    .map_err(plot_err)?;
            }
        }
        // The legend, one row under the panels: each line, then chance (dashed, per panel).
        let font: TextStyle = ("sans-serif", 14).into();
        let mut x = 60i32;
        let y = 14i32;
        let mut entry = |label: String, color: RGBAColor, dashed: bool| -> Result<()> {
            if dashed {
                for k in 0..3 {
                    strip
                        .draw(&PathElement::new(
                            vec![(x + 10 * k, y), (x + 10 * k + 6, y)],
                            color.stroke_width(1),
                        ))
                        .map_err(plot_err)?;
                }
            } else {
                strip
                    .draw(&PathElement::new(
                        vec![(x, y), (x + 26, y)],
                        color.stroke_width(3),
                    ))
                    .map_err(plot_err)?;
            }
            let (tw, _) = strip.estimate_text_size(&label, &font).map_err(plot_err)?;
            strip
                .draw(&Text::new(label, (x + 32, y - 8), font.clone()))
                .map_err(plot_err)?;
            x += 32 + tw as i32 + 28;
            Ok(())
        };
        for (li, (sel, col)) in series.iter().enumerate() {
            entry(series_name(sel, col), Palette99::pick(li).to_rgba(), false)?;
        }
        entry("chance (1/N)".into(), BLACK.to_rgba(), true)?;
        root.present().map_err(plot_err)?;
    }
    encode_png(w, h, buf).map(Some)
}

/// The judges' calibration curves (PNG bytes): one panel per cell (and point of a sweep), top-1
/// against the share of an image's words that are its class word (random 0, noisy-p at p,
/// oracle 1), one line per judge with 95% bars, the no-LLM nearest-support reference dashed
/// grey, each judge's accuracy on the suite's tokens as a dotted level in its colour, chance
/// dashed black. `None` with fewer than two calibration rows (no curve to draw).
pub fn calibration_png(calibration: &Value, title: &str) -> Result<Option<Vec<u8>>> {
    use plotters::prelude::*;
    let judges: Vec<(String, Value)> = calibration["judges"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let rows: Vec<(String, f64)> = calibration["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str())
        .filter_map(|r| {
            super::calibration::Calibration::parse(r).map(|c| (r.to_string(), c.signal()))
        })
        .collect();
    if rows.len() < 2 || judges.is_empty() {
        return Ok(None);
    }
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
        let (pre, rest) = match c.find("-way/") {
            Some(i) => {
                let start = c[..i].rfind('/').map_or(0, |k| k + 1);
                (c[..start].to_string(), &c[start..])
            }
            None => (String::new(), c.as_str()),
        };
        let (w, col) = split_cell(rest);
        (pre, w, column_order(col))
    });
    cells.dedup();
    register_font()?;
    let cols = cells.len().min(4).max(1);
    let grid_rows = cells.len().div_ceil(cols).max(1);
    let (pw, ph) = (460u32, 380u32);
    let (w, h) = (pw * cols as u32, ph * grid_rows as u32 + 70);
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let root = root
            .titled(
                &format!("{title}: judge top-1 against the share of class words"),
                ("sans-serif", 20),
            )
            .map_err(plot_err)?;
        let (charts, strip) = root.split_vertically(ph * grid_rows as u32);
        let panels = charts.split_evenly((grid_rows, cols));
        let pct = |v: &Value| 100.0 * v.as_f64().unwrap_or(f64::NAN);
        for (panel, cell) in panels.iter().zip(&cells) {
            let ways = judges
                .iter()
                .find_map(|(_, j)| j["cells"][cell]["ways"].as_f64())
                .unwrap_or(2.0);
            let mut chart = ChartBuilder::on(panel)
                .caption(cell_title(cell), ("sans-serif", 15))
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
            let line = |y: f64| vec![(-0.05, y), (1.05, y)];
            chart
                .draw_series(DashedLineSeries::new(
                    line(100.0 / ways),
                    6,
                    4,
                    BLACK.stroke_width(1),
                ))
                .map_err(plot_err)?;
            // The reference does not depend on the judge: the first judge's record has it.
            let first = &judges[0].1["cells"][cell];
            let mut refs: Vec<(f64, f64)> = rows
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
            for (k, (_, j)) in judges.iter().enumerate() {
                let c = &j["cells"][cell];
                let color = Palette99::pick(k).to_rgba();
                let mut pts: Vec<(f64, f64, f64, f64)> = rows
                    .iter()
                    .filter(|(r, _)| !c[r].is_null())
                    .map(|(r, x)| {
                        (
                            *x,
                            pct(&c[r]["top1"]),
                            pct(&c[r]["ci95"][0]),
                            pct(&c[r]["ci95"][1]),
                        )
                    })
                    .collect();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                let dx = 0.012 * (k as f64 - (judges.len() as f64 - 1.0) / 2.0);
                chart
                    .draw_series(LineSeries::new(
                        pts.iter().map(|p| (p.0 + dx, p.1)),
                        color.stroke_width(2),
                    ))
                    .map_err(plot_err)?;
                chart
                    .draw_series(pts.iter().map(|p| {
                        ErrorBar::new_vertical(p.0 + dx, p.2, p.1, p.3, color.stroke_width(1), 6)
                    }))
                    .map_err(plot_err)?;
                chart
                    .draw_series(
                        pts.iter()
                            .map(|p| Circle::new((p.0 + dx, p.1), 3, color.filled())),
                    )
                    .map_err(plot_err)?;
                if let Some(t) = c["tokens"]["top1"].as_f64() {
                    chart
                        .draw_series(DashedLineSeries::new(
                            line(100.0 * t),
                            2,
                            3,
                            color.stroke_width(2),
                        ))
                        .map_err(plot_err)?;
                }
            }
        }
        let font: TextStyle = ("sans-serif", 14).into();
        let mut x = 40i32;
        let y = 20i32;
        let mut entry = |label: String, color: RGBAColor, dash: Option<(i32, i32)>| -> Result<()> {
            match dash {
                None => strip
                    .draw(&PathElement::new(
                        vec![(x, y), (x + 26, y)],
                        color.stroke_width(3),
                    ))
                    .map_err(plot_err)?,
                Some((on, off)) => {
                    let mut k = 0;
                    while k < 26 {
                        strip
                            .draw(&PathElement::new(
                                vec![(x + k, y), (x + (k + on).min(26), y)],
                                color.stroke_width(2),
                            ))
                            .map_err(plot_err)?;
                        k += on + off;
                    }
                }
            }
            let (tw, _) = strip.estimate_text_size(&label, &font).map_err(plot_err)?;
            strip
                .draw(&Text::new(label, (x + 32, y - 8), font.clone()))
                .map_err(plot_err)?;
            x += 32 + tw as i32 + 24;
            Ok(())
        };
        for (k, (name, _)) in judges.iter().enumerate() {
            entry(format!("judge {name}"), Palette99::pick(k).to_rgba(), None)?;
        }
        entry(
            "suite's tokens (level per judge)".into(),
            Palette99::pick(0).to_rgba(),
            Some((2, 3)),
        )?;
        entry(
            "nearest support, no LLM".into(),
            RGBColor(120, 120, 120).to_rgba(),
            Some((8, 5)),
        )?;
        entry("chance".into(), BLACK.to_rgba(), Some((6, 4)))?;
        root.present().map_err(plot_err)?;
    }
    encode_png(w, h, buf).map(Some)
}

/// `[point/]N-way/column` as a panel title.
fn cell_title(cell: &str) -> String {
    match cell.find("-way/") {
        Some(i) => {
            let start = cell[..i].rfind('/').map_or(0, |k| k + 1);
            let (w, col) = split_cell(&cell[start..]);
            let pre = cell[..start].trim_end_matches('/');
            let pre = if pre.is_empty() {
                String::new()
            } else {
                format!("{pre}: ")
            };
            format!("{pre}{w}-way, {}", column_title(col))
        }
        None => cell.to_string(),
    }
}

fn encode_png(w: u32, h: u32, buf: Vec<u8>) -> Result<Vec<u8>> {
    let img = image::RgbImage::from_raw(w, h, buf)
        .ok_or_else(|| Error::Msg("plot: buffer size".into()))?;
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| Error::Msg(format!("cannot encode a plot: {e}")))?;
    Ok(png)
}
