//! The calibration of a judge in a run: per cell (and point of a sweep), its accuracy on the
//! suite's tokens beside the calibration tokenizers' (oracle, noisy, random) and the no-LLM
//! nearest-support reference of each, the paired test of the tokens against random words, and
//! the gate: a judge whose oracle row is below [`GATE`] in a cell cannot read tokens there, so
//! its accuracy on them says nothing about the tokenizer.

use super::calibration::Calibration;
use super::judge::RowScore;
use super::table::{column_order, column_title, split_key};
use super::task::{Row, Source};
use crate::eval::stats::Metric;
use crate::eval::stats::{discordant, mcnemar_p, paired_difference};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The oracle accuracy below which a judge is said not to read the tokens of a cell.
pub const GATE: f64 = 0.9;

/// What the result says of a judge that cannot read.
pub const UNREADABLE: &str = "judge cannot read these tokens";

/// One row's scores in a cell: the judge's top-1 and the reference's.
fn entry(m: &Metric, reference: Option<&Metric>) -> Value {
    json!({
        "top1": m.value, "ci95": m.ci95, "n": m.n,
        "nearest_support": reference.map(|r| r.value),
    })
}

/// The calibration of one judge: `{cells: {<point/>cell: {tokens, oracle, ..., random,
/// tokens_vs_random, reads}}, unreadable: [...], calibrated}`.
pub fn judge_calibration(
    rows: &[Row],
    scores: &[RowScore],
    reference: &[BTreeMap<String, Metric>],
) -> Value {
    let mut cells = serde_json::Map::new();
    let mut unreadable = Vec::new();
    let calibrated = rows
        .iter()
        .any(|r| r.source == Source::Calibration(Calibration::Oracle));
    for (t, tok) in rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.source == Source::Tokens)
    {
        let same_point: Vec<usize> = (0..rows.len())
            .filter(|&k| rows[k].point == tok.point)
            .collect();
        for (cell, &(_, _, ways)) in &scores[t].cells {
            let key = tok.key(cell);
            let mut e = serde_json::Map::new();
            e.insert("ways".into(), ways.into());
            for &k in &same_point {
                let name = match rows[k].source {
                    Source::Tokens => "tokens".to_string(),
                    Source::Calibration(c) => c.name(),
                };
                let m = &scores[k].metrics[&format!("{cell}/top1")];
                let r = reference[k].get(&format!("{cell}/nearest_support"));
                e.insert(name, entry(m, r));
            }
            // Paired by episode: right with the tokens only, right with random words only.
            if let Some(&k) = same_point
                .iter()
                .find(|&&k| rows[k].source == Source::Calibration(Calibration::Random))
            {
                let (only_t, only_r) = discordant(
                    scores[t]
                        .answers
                        .iter()
                        .zip(&scores[k].answers)
                        .filter(|(a, _)| &a.cell == cell)
                        .map(|(a, b)| (a.correct, b.correct)),
                );
                let n = scores[t].cells[cell].1;
                let (d, ci) = paired_difference(only_t, only_r, n);
                e.insert(
                    "tokens_vs_random".into(),
                    json!({"only_tokens": only_t, "only_random": only_r, "n": n, "difference": d, "ci95": ci, "p_mcnemar": mcnemar_p(only_t, only_r)}),
                );
            }
            let oracle = e.get("oracle").and_then(|o| o["top1"].as_f64());
            let reads = oracle.map(|o| o >= GATE);
            if reads == Some(false) {
                unreadable.push(key.clone());
            }
            e.insert("reads".into(), json!(reads));
            cells.insert(key, Value::Object(e));
        }
    }
    json!({"calibrated": calibrated, "cells": cells, "unreadable": unreadable})
}

/// The calibration table of one judge: per cell the judge's top-1 on each row with the
/// nearest-support reference in brackets, the tokens against random words, and the gate.
pub fn markdown(judge: &str, cal: &Value, calibration: &[Calibration]) -> String {
    let Some(cells) = cal["cells"]
        .as_object()
        .filter(|c| !c.is_empty() && !calibration.is_empty())
    else {
        return String::new();
    };
    let names: Vec<String> = std::iter::once("tokens".to_string())
        .chain(calibration.iter().map(|c| c.name()))
        .collect();
    let mut keys: Vec<&String> = cells.keys().collect();
    keys.sort_by_key(|k| {
        let (pre, way, col) = split_key(k).unwrap_or(("", 0, k.as_str()));
        (pre.to_string(), way, column_order(col))
    });
    let mut s = format!(
        "### Calibration of judge {judge}: top-1 % of the judge (of the no-LLM nearest support)\n\n| cell | {} | chance | tokens vs random | judge reads |\n|---|{}---|---|---|\n",
        names.join(" | "),
        "---|".repeat(names.len())
    );
    for k in keys {
        let c = &cells[k];
        let (pre, way, col) = split_key(k).unwrap_or(("", 0, k.as_str()));
        let pre = if pre.is_empty() {
            String::new()
        } else {
            format!("{pre}: ")
        };
        s.push_str(&format!("| {pre}{way}-way, {} |", column_title(col)));
        for n in &names {
            let v = &c[n];
            if v.is_null() {
                s.push_str(" - |");
            } else {
                s.push_str(&format!(
                    " {:.1} ({}) |",
                    100.0 * v["top1"].as_f64().unwrap_or(f64::NAN),
                    v["nearest_support"]
                        .as_f64()
                        .map_or("-".into(), |r| format!("{:.1}", 100.0 * r))
                ));
            }
        }
        let ways = c["ways"].as_f64().unwrap_or(f64::NAN);
        s.push_str(&format!(" {:.1} |", 100.0 / ways));
        let tr = &c["tokens_vs_random"];
        if tr.is_null() {
            s.push_str(" - |");
        } else {
            let pct = |v: &Value| 100.0 * v.as_f64().unwrap_or(f64::NAN);
            s.push_str(&format!(
                " {:+.1} [{:+.1}, {:+.1}] (p {:.3}) |",
                pct(&tr["difference"]),
                pct(&tr["ci95"][0]),
                pct(&tr["ci95"][1]),
                tr["p_mcnemar"].as_f64().unwrap_or(1.0)
            ));
        }
        s.push_str(match c["reads"].as_bool() {
            Some(true) => " yes |\n",
            Some(false) => " **no** |\n",
            None => " (no oracle row) |\n",
        });
    }
    s.push_str(&format!(
        "\nA judge whose oracle row is below {:.0}% in a cell cannot read tokens there: its accuracy on the tokens says nothing about the tokenizer. Tokens vs random: the difference in points with its 95% interval (Agresti-Min, paired) and the exact McNemar test on the episodes right with only one of the two.\n",
        100.0 * GATE
    ));
    s
}

/// Per cell of `episodes`: the smallest paired gain over a chance-level row (random words)
/// that its episode count detects with 80% power (exact McNemar, alpha 0.05, independent
/// errors), as `--dry-run` prints it.
pub fn power_lines(episodes: &[super::episodes::Episode]) -> Vec<String> {
    let mut cells: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for e in episodes {
        cells.entry(e.cell()).or_insert((0, e.ways)).0 += 1;
    }
    cells
        .into_iter()
        .map(|(cell, (n, ways))| {
            let chance = 1.0 / ways as f64;
            match crate::eval::stats::paired_mde(n, chance, 0.05, 0.8) {
                Some(d) => format!("{cell}: {n} episodes detect a paired gain of {:.1} points over a chance-level row ({:.0}%) with 80% power (exact McNemar, alpha 0.05)", 100.0 * d, 100.0 * chance),
                None => format!("{cell}: {n} episodes cannot detect even a perfect row against a chance-level one with 80% power"),
            }
        })
        .collect()
}
