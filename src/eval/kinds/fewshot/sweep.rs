//! Sweeps over `tokens.per_image` and `tokens.select`: every point runs over the same
//! episodes, so two points differ only in the tokens written; the summary gives each point's
//! top-1 per cell with its 95% interval, McNemar tests between consecutive points (paired by
//! episode), and a plot of top-1 against tokens per image (plotters, one panel per N-way, one
//! line per column of the table, chance dashed).

use super::spec::Point;
use super::table::{column_order, column_title, split_key};
use crate::eval::stats::Metric;
use crate::eval::stats::{discordant, mcnemar_p};
use serde_json::{json, Value};
use std::collections::BTreeMap;

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
            // Discordant episodes: right only at `a`, right only at `b`.
            let (only_a, only_b) = discordant(
                a.correct
                    .iter()
                    .zip(&b.correct)
                    .zip(&a.cell_of)
                    .filter(|(_, c)| *c == cell)
                    .map(|((x, y), _)| (*x, *y)),
            );
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

/// The cell's way and column (`induction-yes/shots-1/repeats-0`).
pub(super) fn split_cell(cell: &str) -> (usize, &str) {
    split_key(cell).map_or((0, ""), |(_, w, c)| (w, c))
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
        let png = super::super::plot::sweep_png(&sw, "test").unwrap().unwrap();
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
        assert!(super::super::plot::sweep_png(&sw2, "t").unwrap().is_none());
    }
}
