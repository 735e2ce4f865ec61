//! Sweeps over `tokens.per_image` and `tokens.select`: every point runs over the same
//! episodes, so two points differ only in the tokens written; the summary gives each point's
//! top-1 per cell with its 95% interval, McNemar tests between consecutive points (paired by
//! episode), and a plot of top-1 against tokens per image (plotters, one panel per N-way, one
//! line per column of the table, chance dashed).

use super::spec::Point;
use super::table::{column_order, column_title};
use crate::error::{Error, Result};
use crate::eval::results::Metric;
use crate::eval::stats::mcnemar_p;
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub const PLOT_FILE: &str = "sweep.png";

/// One point as scored.
pub struct PointResult {
    pub point: Point,
    /// Mean tokens written per image.
    pub written: f64,
    /// Cell -> (correct, episodes, ways).
    pub cells: BTreeMap<String, (usize, usize, usize)>,
    /// `cell/top1` -> metric.
    pub metrics: BTreeMap<String, Metric>,
    /// Per episode (in the run's episode order): right or wrong, and its cell.
    pub correct: Vec<bool>,
    pub cell_of: Vec<String>,
}

/// The summary (`sweep.json`, `extra.sweep`): the points with their cells, the chance level of
/// each cell, and paired tests between consecutive points.
pub fn summary(points: &[PointResult]) -> Value {
    let per_image_swept = points
        .windows(2)
        .any(|w| w[0].point.per_image != w[1].point.per_image);
    let select_swept = points
        .windows(2)
        .any(|w| w[0].point.select != w[1].point.select);
    let mut chance = serde_json::Map::new();
    let pts: Vec<Value> = points
        .iter()
        .map(|p| {
            let cells: serde_json::Map<String, Value> = p
                .cells
                .iter()
                .map(|(cell, &(k, n, ways))| {
                    chance.insert(cell.clone(), json!(1.0 / ways as f64));
                    let m = &p.metrics[&format!("{cell}/top1")];
                    (
                        cell.clone(),
                        json!({"k": k, "n": n, "ways": ways, "top1": m.value, "ci95": m.ci95}),
                    )
                })
                .collect();
            json!({
                "name": p.point.name,
                "per_image": p.point.per_image,
                "select": p.point.select.name(),
                "written_mean": p.written,
                "cells": cells,
            })
        })
        .collect();
    let mut paired = Vec::new();
    for w in points.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        for cell in a.cells.keys() {
            // Discordant episodes: right only at `a` (b_), right only at `b` (c_).
            let (mut only_a, mut only_b) = (0usize, 0usize);
            for ((ra, rb), c) in a.correct.iter().zip(&b.correct).zip(&a.cell_of) {
                if c == cell {
                    match (ra, rb) {
                        (true, false) => only_a += 1,
                        (false, true) => only_b += 1,
                        _ => {}
                    }
                }
            }
            let va = a.metrics[&format!("{cell}/top1")].value;
            let vb = b
                .metrics
                .get(&format!("{cell}/top1"))
                .map_or(f64::NAN, |m| m.value);
            paired.push(json!({
                "cell": cell, "from": a.point.name, "to": b.point.name,
                "change": vb - va, "only_from": only_a, "only_to": only_b,
                "p_mcnemar": mcnemar_p(only_a, only_b),
            }));
        }
    }
    json!({
        "swept": {"per_image": per_image_swept, "select": select_swept},
        "points": pts,
        "chance": chance,
        "paired": paired,
    })
}

/// The cell's column (`induction-yes/shots-1/repeats-0`) and its way.
fn split_cell(cell: &str) -> (usize, &str) {
    let (way, col) = cell.split_once('/').unwrap_or((cell, ""));
    (way.trim_end_matches("-way").parse().unwrap_or(0), col)
}

/// The summary as Markdown: per N-way, one row per column and one column per point, then the
/// paired tests.
pub fn summary_markdown(sw: &Value) -> String {
    let points = sw["points"].as_array().cloned().unwrap_or_default();
    let mut cells: Vec<String> = points
        .iter()
        .flat_map(|p| {
            p["cells"]
                .as_object()
                .map(|m| m.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
        })
        .collect();
    cells.sort_by_key(|c| {
        let (w, col) = split_cell(c);
        (w, column_order(col))
    });
    cells.dedup();
    let mut ways: Vec<usize> = cells.iter().map(|c| split_cell(c).0).collect();
    ways.dedup();
    let mut s =
        String::from("### Sweep: top-1 (%) [95% interval] at each point, same episodes\n\n");
    for w in ways {
        s.push_str(&format!(
            "| {w}-way | {} | chance |\n|---|{}---|\n",
            points
                .iter()
                .map(|p| format!(
                    "{} ({:.1} written)",
                    p["name"].as_str().unwrap_or("?"),
                    p["written_mean"].as_f64().unwrap_or(0.0)
                ))
                .collect::<Vec<_>>()
                .join(" | "),
            "---|".repeat(points.len())
        ));
        for c in cells.iter().filter(|c| split_cell(c).0 == w) {
            s.push_str(&format!("| {} |", column_title(split_cell(c).1)));
            for p in &points {
                let v = &p["cells"][c];
                if v.is_null() {
                    s.push_str(" - |");
                } else {
                    s.push_str(&format!(
                        " {:.1} [{:.1}, {:.1}] |",
                        100.0 * v["top1"].as_f64().unwrap_or(0.0),
                        100.0 * v["ci95"][0].as_f64().unwrap_or(0.0),
                        100.0 * v["ci95"][1].as_f64().unwrap_or(0.0)
                    ));
                }
            }
            s.push_str(&format!(" {:.1} |\n", 100.0 / w as f64));
        }
        s.push('\n');
    }
    let paired = sw["paired"].as_array().cloned().unwrap_or_default();
    if !paired.is_empty() {
        s.push_str("Consecutive points, paired by episode (exact McNemar test on the episodes right at only one of the two):\n\n| cell | from | to | change (points) | right only at from / to | p |\n|---|---|---|---|---|---|\n");
        for p in paired {
            s.push_str(&format!(
                "| {} | {} | {} | {:+.1} | {} / {} | {:.3} |\n",
                p["cell"].as_str().unwrap_or(""),
                p["from"].as_str().unwrap_or(""),
                p["to"].as_str().unwrap_or(""),
                100.0 * p["change"].as_f64().unwrap_or(f64::NAN),
                p["only_from"],
                p["only_to"],
                p["p_mcnemar"].as_f64().unwrap_or(1.0)
            ));
        }
    }
    s
}

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
    Error::Msg(format!("cannot draw the sweep plot: {e:?}"))
}

/// The plot (PNG bytes) of top-1 against tokens per image: one panel per N-way, one line per
/// column (and per `select` when that is swept too), 95% intervals as error bars, chance
/// dashed. `None` when `per_image` is not swept (nothing to put on the axis).
pub fn plot_png(sw: &Value, title: &str) -> Result<Option<Vec<u8>>> {
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
    let img = image::RgbImage::from_raw(w, h, buf)
        .ok_or_else(|| Error::Msg("sweep plot: buffer size".into()))?;
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| Error::Msg(format!("cannot encode the sweep plot: {e}")))?;
    Ok(Some(png))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::kinds::fewshot::spec::{sweep_points, OneOrList, TokenSettings};
    use crate::eval::stats::proportion;

    /// Two points x two cells, with known answers per episode.
    fn scored() -> Vec<PointResult> {
        let t = TokenSettings {
            per_image: OneOrList::List(vec![4, 16]),
            ..Default::default()
        };
        let points = sweep_points(&t);
        assert_eq!(
            points.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["per_image-4", "per_image-16"]
        );
        let cells = [
            "2-way/induction-no/shots-1/repeats-0",
            "5-way/induction-yes/shots-1/repeats-0",
        ];
        // Episode order: cell 0 (5 episodes), cell 1 (5 episodes).
        let answers = [
            [
                true, false, false, true, false, false, false, true, false, false,
            ],
            [
                true, true, true, true, false, false, true, true, false, false,
            ],
        ];
        points
            .into_iter()
            .zip(answers)
            .map(|(point, right)| {
                let cell_of: Vec<String> = (0..10).map(|i| cells[i / 5].to_string()).collect();
                let mut c = BTreeMap::new();
                for (r, cell) in right.iter().zip(&cell_of) {
                    let ways = if cell.starts_with("2-") { 2 } else { 5 };
                    let e = c.entry(cell.clone()).or_insert((0, 0, ways));
                    e.0 += *r as usize;
                    e.1 += 1;
                }
                let metrics = c
                    .iter()
                    .map(|(k, &(r, n, _))| (format!("{k}/top1"), proportion(r, n, 0.05)))
                    .collect();
                PointResult {
                    point,
                    written: 3.5,
                    cells: c,
                    metrics,
                    correct: right.to_vec(),
                    cell_of,
                }
            })
            .collect()
    }

    #[test]
    fn the_summary_pairs_episodes_and_the_plot_draws() {
        let sw = summary(&scored());
        assert_eq!(sw["swept"]["per_image"], true);
        assert_eq!(sw["swept"]["select"], false);
        let p = &sw["paired"][0];
        // 2-way cell: right at 4 only: none; at 16 only: episodes 1, 2.
        assert_eq!(p["cell"], "2-way/induction-no/shots-1/repeats-0");
        assert_eq!(
            (p["only_from"].as_u64(), p["only_to"].as_u64()),
            (Some(0), Some(2))
        );
        assert!((p["p_mcnemar"].as_f64().unwrap() - 0.5).abs() < 1e-12);
        assert!((p["change"].as_f64().unwrap() - 0.4).abs() < 1e-12);
        let md = summary_markdown(&sw);
        assert!(
            md.contains(
                "| 2-way | per_image-4 (3.5 written) | per_image-16 (3.5 written) | chance |"
            ),
            "{md}"
        );
        assert!(md.contains("| no induction, 1 shot | 40.0 ["), "{md}");
        let png = plot_png(&sw, "test").unwrap().unwrap();
        if let Ok(p) = std::env::var("LQAE_SWEEP_PLOT_OUT") {
            std::fs::write(p, &png).unwrap();
        }
        let img = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (1240, 500));
        let dark = img.pixels().filter(|p| p.0.iter().all(|&c| c < 80)).count();
        assert!(dark > 2000, "{dark}");
        // Not swept over per_image: no plot.
        let mut sw2 = sw.clone();
        sw2["swept"]["per_image"] = false.into();
        assert!(plot_png(&sw2, "t").unwrap().is_none());
    }
}
