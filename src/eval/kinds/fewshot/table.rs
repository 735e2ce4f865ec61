//! The paper's few-shot table.

use crate::eval::results::Metric;
use std::collections::BTreeMap;

/// The paper's layout: one row per N-way, one column per (induction, shots, repeats), each
/// cell `accuracy % [95% interval]`, and the chance level.
pub fn table_markdown(
    cells: &BTreeMap<String, (usize, usize, usize)>,
    metrics: &BTreeMap<String, Metric>,
) -> String {
    let mut ways: Vec<usize> = cells.values().map(|c| c.2).collect();
    ways.sort();
    ways.dedup();
    let mut cols: Vec<String> = cells
        .keys()
        .filter_map(|c| c.split_once('/').map(|x| x.1.to_string()))
        .collect();
    // Paper order: no induction first, then the inner-shot columns by shots, then the
    // repeat columns by repeats.
    let parse = |c: &str| -> (bool, usize, usize) {
        let p: Vec<&str> = c.split('/').collect();
        let num = |s: &str| {
            s.rsplit('-')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        (
            p.first() == Some(&"induction-yes"),
            num(p.get(1).unwrap_or(&"")),
            num(p.get(2).unwrap_or(&"")),
        )
    };
    cols.sort_by_key(|c| {
        let (ind, shots, rep) = parse(c);
        (ind, rep > 0, shots, rep)
    });
    cols.dedup();
    let head = |c: &str| {
        let (ind, s, r) = parse(c);
        format!(
            "{}, {s} shot{}{}",
            if ind { "induction" } else { "no induction" },
            if s == 1 { "" } else { "s" },
            if r > 0 {
                format!(", {r} repeat{}", if r == 1 { "" } else { "s" })
            } else {
                String::new()
            }
        )
    };
    let mut s = format!(
        "| | {} | chance |\n|---|{}---|\n",
        cols.iter().map(|c| head(c)).collect::<Vec<_>>().join(" | "),
        "---|".repeat(cols.len())
    );
    for w in ways {
        s.push_str(&format!("| {w}-way |"));
        for c in &cols {
            match metrics.get(&format!("{w}-way/{c}/top1")) {
                Some(m) => s.push_str(&format!(
                    " {:.1} [{:.1}, {:.1}] (n={}) |",
                    100.0 * m.value,
                    100.0 * m.ci95[0],
                    100.0 * m.ci95[1],
                    m.n
                )),
                None => s.push_str(" - |"),
            }
        }
        s.push_str(&format!(" {:.1} |\n", 100.0 / w as f64));
    }
    s
}
