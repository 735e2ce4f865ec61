//! The paper's few-shot table.

use crate::eval::stats::Metric;
use std::collections::BTreeMap;

/// The paper's layout: one row per N-way, one column per (induction, shots, repeats), each
/// cell `accuracy % [95% interval] (n)` and, when given, the no-LLM nearest-support reference
/// beside it (`reference`: `cell/nearest_support` -> metric), then the chance level.
pub fn table_markdown(
    cells: &BTreeMap<String, (usize, usize, usize)>,
    metrics: &BTreeMap<String, Metric>,
    reference: Option<&BTreeMap<String, Metric>>,
) -> String {
    let mut ways: Vec<usize> = cells.values().map(|c| c.2).collect();
    ways.sort();
    ways.dedup();
    let mut cols: Vec<String> = cells
        .keys()
        .filter_map(|c| c.split_once('/').map(|x| x.1.to_string()))
        .collect();
    cols.sort_by_key(|c| column_order(c));
    cols.dedup();
    let mut s = format!(
        "| | {} | chance |\n|---|{}---|\n",
        cols.iter()
            .map(|c| column_title(c))
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(cols.len())
    );
    for w in ways {
        s.push_str(&format!("| {w}-way |"));
        for c in &cols {
            match metrics.get(&format!("{w}-way/{c}/top1")) {
                Some(m) => s.push_str(&format!(
                    " {:.1} [{:.1}, {:.1}] (n={}){} |",
                    100.0 * m.value,
                    100.0 * m.ci95[0],
                    100.0 * m.ci95[1],
                    m.n,
                    reference
                        .and_then(|r| r.get(&format!("{w}-way/{c}/nearest_support")))
                        .map_or(String::new(), |r| format!(" · NS {:.1}", 100.0 * r.value))
                )),
                None => s.push_str(" - |"),
            }
        }
        s.push_str(&format!(" {:.1} |\n", 100.0 / w as f64));
    }
    s
}

/// A cell key `[prefix/]N-way/column` (`calibration-oracle/per_image-8/5-way/induction-yes/
/// shots-1/repeats-0`) as `(prefix, N, column)`; `None` without an `N-way` part. The one
/// reader of cell keys (tables, the sweep, the plots, the calibration, the board).
pub fn split_key(key: &str) -> Option<(&str, usize, &str)> {
    let mut start = 0;
    for part in key.split('/') {
        if let Some(w) = part.strip_suffix("-way").and_then(|w| w.parse().ok()) {
            let prefix = key[..start].trim_end_matches('/');
            let col = key.get(start + part.len() + 1..).unwrap_or("");
            return Some((prefix, w, col));
        }
        start += part.len() + 1;
    }
    None
}

/// A column name (`induction-yes/shots-3/repeats-0`) as `(induction, shots, repeats)`.
pub fn parse_column(c: &str) -> (bool, usize, usize) {
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
}

/// The paper's column order: no induction first, then the inner-shot columns by shots, then
/// the repeat columns by repeats.
pub fn column_order(c: &str) -> (bool, bool, usize, usize) {
    let (ind, shots, rep) = parse_column(c);
    (ind, rep > 0, shots, rep)
}

/// A column as the table heads it: `induction, 3 shots`, `induction, 1 shot, 1 repeat`.
pub fn column_title(c: &str) -> String {
    let (ind, s, r) = parse_column(c);
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::kinds::fewshot::spec::paper_columns;

    #[test]
    fn the_table_follows_the_papers_column_order() {
        let mut cells = BTreeMap::new();
        let mut metrics = BTreeMap::new();
        for c in paper_columns() {
            let cell = format!("2-way/{}", c.name());
            cells.insert(cell.clone(), (1, 2, 2));
            metrics.insert(
                format!("{cell}/top1"),
                crate::eval::stats::proportion(1, 2, 0.05),
            );
        }
        let t = table_markdown(&cells, &metrics, None);
        let head = t.lines().next().unwrap();
        let want = "| | no induction, 1 shot | induction, 1 shot | induction, 3 shots | induction, 5 shots | induction, 1 shot, 1 repeat | induction, 1 shot, 3 repeats | induction, 1 shot, 5 repeats | chance |";
        assert_eq!(head, want);
        assert!(t.contains("| 2-way | 50.0 ["), "{t}");
        assert!(t.trim_end().ends_with("| 50.0 |"), "{t}");
        assert_eq!(
            split_key("calibration-oracle/per_image-8/5-way/induction-yes/shots-1/repeats-0"),
            Some((
                "calibration-oracle/per_image-8",
                5,
                "induction-yes/shots-1/repeats-0"
            ))
        );
        assert_eq!(
            split_key("2-way/induction-no/shots-1/repeats-0"),
            Some(("", 2, "induction-no/shots-1/repeats-0"))
        );
        assert_eq!(split_key("10-way"), Some(("", 10, "")));
        assert_eq!(split_key("lqae/top1"), None);
    }
}
