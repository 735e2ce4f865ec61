//! How a few-shot result reads outside its run: the board's rows (per judge and point of a
//! sweep: the tokens' top-1 per N-way pooled over the columns, beside the no-LLM reference and
//! the judge's ceiling and floor, the oracle and random rows) and `report`'s notes. A judge
//! whose oracle row is below the gate in a cell cannot read tokens there; the board then shows
//! that instead of a verdict, which would otherwise be read as a statement about the tokenizer.

use super::calibration::Calibration;
use super::summary::{GATE, UNREADABLE};
use super::table::split_key;
use crate::eval::results::ResultFile;
use crate::eval::stats::Metric;
use crate::eval::stats::{paired_mde, proportion};
use crate::eval::suite_kind::BoardEntry;
use serde_json::Value;
use std::collections::BTreeMap;

/// `(name, metric prefix)` of each judge of a result (one unnamed judge in results of one).
fn judges(r: &ResultFile) -> Vec<(String, String)> {
    match r.extra["judges"].as_array() {
        Some(js) if !js.is_empty() => js
            .iter()
            .map(|j| {
                (
                    j["name"].as_str().unwrap_or("").to_string(),
                    j["prefix"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect(),
        _ => vec![(
            r.extra["llm_model"].as_str().unwrap_or("").to_string(),
            String::new(),
        )],
    }
}

/// A metric name (without a judge prefix) as `(row, way, cell, measure)`: `row` is the prefix
/// before the `N-way` part (a point of a sweep, a calibration row, or empty).
fn parse(name: &str) -> Option<(String, usize, String, String)> {
    let (cell, measure) = name.rsplit_once('/')?;
    let (row, way, col) = split_key(cell)?;
    Some((
        row.to_string(),
        way,
        format!("{way}-way/{col}"),
        measure.to_string(),
    ))
}

/// Pooled over the columns: `(correct, n)` per N-way of the metrics of `row` and `measure`.
fn pooled(
    ms: &BTreeMap<String, (String, usize, String, String, Metric)>,
    row: &str,
    measure: &str,
) -> BTreeMap<usize, (usize, usize)> {
    let mut out = BTreeMap::new();
    for (r, way, _, m, metric) in ms.values() {
        if r == row && m == measure {
            let e = out.entry(*way).or_insert((0, 0));
            e.0 += (metric.value * metric.n as f64).round() as usize;
            e.1 += metric.n;
        }
    }
    out
}

/// The board's rows of a few-shot result.
pub fn board_rows(r: &ResultFile) -> Vec<BoardEntry> {
    let model_name = r.config["model"].as_str().unwrap_or("");
    let tokenizer = r.extra["tokens_file"]["tokenizer"]
        .as_str()
        .map(|t| format!(" + tokens file ({t})"))
        .unwrap_or_default();
    let several = r.extra["judges"].as_array().is_some_and(|j| !j.is_empty());
    let tol = r.metrics.values().next().map_or(0.05, |m| m.tolerance);
    // Judge-independent metrics (the reference) and each judge's, parsed.
    let parsed = |prefix: &str| -> BTreeMap<String, (String, usize, String, String, Metric)> {
        r.metrics
            .iter()
            .filter_map(|(n, m)| {
                let rest = if prefix.is_empty() {
                    (!n.starts_with("judge-")).then_some(n.as_str())?
                } else {
                    n.strip_prefix(prefix)?
                };
                let (row, way, cell, measure) = parse(rest)?;
                Some((n.clone(), (row, way, cell, measure, m.clone())))
            })
            .collect()
    };
    let reference = parsed("");
    let mut out = Vec::new();
    for (judge, prefix) in judges(r) {
        let ms = parsed(&prefix);
        let mut points: Vec<String> = ms
            .values()
            .filter(|x| x.3 == "top1" && !x.0.starts_with("calibration-"))
            .map(|x| x.0.clone())
            .collect();
        points.sort();
        points.dedup();
        let unreadable: Vec<String> = r.extra["calibration"]["judges"][&judge]["unreadable"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let calibrated = r.extra["calibration"]["judges"][&judge]["calibrated"]
            .as_bool()
            .unwrap_or(false);
        for point in points {
            let mut metrics = Vec::new();
            let mut add = |label: &str, p: BTreeMap<usize, (usize, usize)>| {
                for (w, (k, n)) in p {
                    metrics.push((format!("{w}-way {label}"), proportion(k, n, tol)));
                }
            };
            add("top-1", pooled(&ms, &point, "top1"));
            add(
                "nearest support",
                pooled(&reference, &point, "nearest_support"),
            );
            for c in [Calibration::Oracle, Calibration::Random] {
                add(&c.name(), pooled(&ms, &c.row_name(&point), "top1"));
            }
            // By N-way (numerically), the measures in the order added.
            metrics.sort_by_key(|(n, _)| {
                n.split('-')
                    .next()
                    .and_then(|w| w.parse::<usize>().ok())
                    .unwrap_or(0)
            });
            let covers = ms
                .iter()
                .filter(|(_, x)| x.0 == point && x.3 == "top1")
                .map(|(n, _)| n.clone())
                .chain(
                    reference
                        .iter()
                        .filter(|(_, x)| x.0 == point && x.3 == "nearest_support")
                        .map(|(n, _)| n.clone()),
                )
                .collect();
            let here: Vec<&String> = unreadable
                .iter()
                .filter(|c| parse(&format!("{c}/top1")).is_some_and(|x| x.0 == point))
                .collect();
            let gate = if !here.is_empty() {
                Some(format!("{UNREADABLE} ({} cells)", here.len()))
            } else if !calibrated {
                Some("judge not calibrated (no oracle row)".to_string())
            } else {
                None
            };
            let mut model = format!("{model_name}{tokenizer}");
            if !point.is_empty() {
                model.push_str(&format!(" @ {point}"));
            }
            if several {
                model.push_str(&format!(" · judge {judge}"));
            }
            out.push(BoardEntry {
                model,
                metrics,
                covers,
                gate,
            });
        }
    }
    out
}

/// `report`'s notes on a few-shot result: per judge, whether it reads the tokens (the gate),
/// its floor and ceiling, and what the episodes per cell can detect.
pub fn report_notes(r: &ResultFile) -> Vec<String> {
    let mut out = Vec::new();
    let cal = &r.extra["calibration"]["judges"];
    let Some(judges) = cal.as_object() else {
        return vec!["uncalibrated: a result from before the judge's calibration; its accuracy cannot be told from a judge that cannot read".into()];
    };
    for (judge, c) in judges {
        let cells = c["cells"].as_object().cloned().unwrap_or_default();
        let pct = |v: &Value| {
            v.as_f64()
                .map_or("-".into(), |x| format!("{:.0}%", 100.0 * x))
        };
        let range = |row: &str| {
            let v: Vec<f64> = cells
                .values()
                .filter_map(|x| x[row]["top1"].as_f64())
                .collect();
            match (
                v.iter().cloned().reduce(f64::min),
                v.iter().cloned().reduce(f64::max),
            ) {
                (Some(a), Some(b)) => format!("{}-{}", pct(&a.into()), pct(&b.into())),
                _ => "-".into(),
            }
        };
        let unreadable: Vec<&str> = c["unreadable"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !c["calibrated"].as_bool().unwrap_or(false) {
            out.push(format!("judge {judge}: not calibrated (no oracle row): its accuracy cannot be told from a judge that cannot read"));
        } else if !unreadable.is_empty() {
            out.push(format!(
                "judge {judge}: **{}** in {} of {} cells (oracle below {:.0}%: {}); its accuracy there says nothing about the tokenizer",
                UNREADABLE.to_uppercase(),
                unreadable.len(),
                cells.len(),
                100.0 * GATE,
                unreadable.join(", ")
            ));
        } else {
            out.push(format!(
                "judge {judge} reads the tokens: oracle {} (the ceiling), random words {} (the floor), over {} cells",
                range("oracle"),
                range("random"),
                cells.len()
            ));
        }
    }
    // What the episode count can detect (tokens against a chance-level row, paired).
    let mut seen = BTreeMap::new();
    for (name, m) in &r.metrics {
        if let Some((_, way, _, measure)) = parse(name) {
            if measure == "top1" {
                seen.insert((way, m.n), ());
            }
        }
    }
    for (way, n) in seen.into_keys() {
        let chance = 1.0 / way as f64;
        out.push(match paired_mde(n, chance, 0.05, 0.8) {
            Some(d) => format!("{way}-way cells of {n} episodes detect a paired gain of {:.1} points over a chance-level row with 80% power (exact McNemar, alpha 0.05)", 100.0 * d),
            None => format!("{way}-way cells of {n} episodes cannot detect even a perfect row against a chance-level one with 80% power (exact McNemar, alpha 0.05)"),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_parse_into_row_way_cell_and_measure() {
        assert_eq!(
            parse("calibration-oracle/per_image-8/5-way/induction-yes/shots-1/repeats-0/top1"),
            Some((
                "calibration-oracle/per_image-8".into(),
                5,
                "5-way/induction-yes/shots-1/repeats-0".into(),
                "top1".into()
            ))
        );
        assert_eq!(
            parse("2-way/induction-no/shots-1/repeats-0/nearest_support").map(|x| x.0),
            Some(String::new())
        );
        assert_eq!(parse("lqae/top1"), None);
    }
}
