//! The board (`lqae-eval board`): every run under a results folder, its headline metrics
//! with 95% intervals by suite, model (tokenizer) and LLM, a link to the run's page, and the
//! regression verdict against the suite's baseline where one exists; as HTML and Markdown.
//!
//! Rows are (run, what it scored): a linear probe's representations, a reconstruction run's
//! models, a few-shot run's model (per point of a sweep), a throughput run's kernels. The
//! headline of a few-shot row is top-1 per N-way pooled over the table's columns (every
//! episode of that way); the cells are on the run's page.

use super::results::{self, ResultFile, Verdict};
use super::stats::Metric;
use crate::error::{Error, Result};
use crate::util::html::esc;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One row of the board.
#[derive(Debug, Clone)]
pub struct BoardRow {
    pub suite: String,
    pub kind: String,
    pub run_id: String,
    pub created_unix: u64,
    /// The model or representation scored (with its tokenizer where one is named).
    pub model: String,
    pub llm: String,
    /// Headline name -> metric.
    pub metrics: Vec<(String, Metric)>,
    /// Against the baseline: `same`, `improved (n)`, `slower, other machine (n)`,
    /// `REGRESSION (n)`, `MISSING (n)`, `BASELINE STALE (n)`, or empty without a baseline.
    pub verdict: String,
    /// The run's page (or its `result.json`).
    pub link: PathBuf,
}

/// A run folder without a result.
#[derive(Debug, Clone)]
pub struct Incomplete {
    pub dir: PathBuf,
    pub why: String,
}

pub struct Board {
    pub rows: Vec<BoardRow>,
    pub incomplete: Vec<Incomplete>,
    pub baselines: Option<PathBuf>,
}

/// A suite's baseline: its newest result, with its samples and per-image values if any.
type Baseline = (
    ResultFile,
    Option<Vec<results::Sample>>,
    Option<Vec<results::ImageScore>>,
);

/// What the verdicts of `rows` (the comparison's rows of one board row) add up to.
fn verdict_of(rows: &[&results::Comparison]) -> String {
    let count = |v: Verdict| rows.iter().filter(|r| r.verdict == v).count();
    let (reg, miss, imp, stale, elsewhere) = (
        count(Verdict::Regression),
        count(Verdict::Missing),
        count(Verdict::Improved),
        count(Verdict::Stale),
        count(Verdict::SlowerElsewhere),
    );
    if reg > 0 {
        format!("REGRESSION ({reg})")
    } else if miss > 0 {
        format!("MISSING ({miss})")
    } else if stale > 0 {
        format!("BASELINE STALE ({stale})")
    } else if elsewhere > 0 {
        format!("slower, other machine ({elsewhere})")
    } else if imp > 0 {
        format!("improved ({imp})")
    } else if rows.is_empty() {
        String::new()
    } else {
        "same".into()
    }
}

/// Read every run under `dir` (leaving out `baselines`, which holds the baselines each suite
/// is compared with: `baselines/<suite>/`, the newest result there).
pub fn collect(dir: &Path, baselines: Option<&Path>) -> Result<Board> {
    if !dir.is_dir() {
        return Err(Error::file(
            dir,
            "is not a folder of results (run a suite first, or name the folder `--results` wrote)",
        ));
    }
    let baselines = baselines.filter(|b| b.is_dir());
    let (found, interrupted) = results::find_runs(dir, baselines);
    let mut rows = Vec::new();
    let mut incomplete: Vec<Incomplete> = interrupted
        .into_iter()
        .map(|d| {
            let why = crate::util::untrusted::read_bounded(
                &d.join(results::PARTIAL_FILE),
                1 << 20,
                "partial.json",
            )
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["stopped"].as_str().map(|t| t.chars().take(500).collect()))
            .unwrap_or_else(|| "interrupted (no result.json)".into());
            Incomplete { dir: d, why }
        })
        .collect();
    let mut base_cache: BTreeMap<(String, String), Option<Baseline>> = BTreeMap::new();
    for file in found {
        let (r, samples) = match results::read_result(&file) {
            Ok(x) => x,
            Err(e) => {
                incomplete.push(Incomplete {
                    dir: file.parent().unwrap_or(&file).to_path_buf(),
                    why: format!("unreadable: {e}"),
                });
                continue;
            }
        };
        let values = results::read_per_image(&file).ok().flatten();
        // Speeds are compared with a baseline from the same machine kind where there is one.
        let machine = if super::kinds::machine_dependent(&r.kind) {
            r.extra["machine"].to_string()
        } else {
            String::new()
        };
        let base = base_cache
            .entry((r.suite.clone(), machine))
            .or_insert_with(|| {
                // The suite name comes from a result file: the path rule, like every name.
                let b = crate::util::untrusted::join_under(baselines?, &r.suite).ok()?;
                let b = super::runner::baseline_run(&b, &r);
                let (br, bs) = results::read_result(&b).ok()?;
                let bv = results::read_per_image(&b).ok().flatten();
                Some((br, bs, bv))
            })
            .as_ref();
        let cmp = base.map(|(br, bs, bv)| {
            super::kinds::compare(
                br,
                bs.as_deref(),
                bv.as_deref(),
                &r,
                samples.as_deref(),
                values.as_deref(),
            )
        });
        let dir_of = file.parent().unwrap_or(Path::new(".")).to_path_buf();
        let page = dir_of.join("index.html");
        let link = if page.is_file() { page } else { file.clone() };
        let llm = r.extra["llm_model"]
            .as_str()
            .map(|m| match r.extra["server"].as_str() {
                Some(s) if !s.is_empty() && s != m => format!("{m} ({s})"),
                _ => m.to_string(),
            })
            .unwrap_or_else(|| "-".into());
        for e in super::kinds::board_rows(&r) {
            let verdict = match (&e.gate, &cmp) {
                (Some(gate), _) => gate.clone(),
                (None, Some(c)) => verdict_of(
                    &c.iter()
                        .filter(|x| e.covers.contains(&x.metric))
                        .collect::<Vec<_>>(),
                ),
                (None, None) => String::new(),
            };
            rows.push(BoardRow {
                suite: r.suite.clone(),
                kind: r.kind.clone(),
                run_id: r.run_id.clone(),
                created_unix: r.created_unix,
                model: e.model,
                llm: llm.clone(),
                metrics: e.metrics,
                verdict,
                link: link.clone(),
            });
        }
    }
    rows.sort_by(|a, b| {
        (
            a.kind.as_str(),
            a.suite.as_str(),
            std::cmp::Reverse(a.created_unix),
            a.model.as_str(),
        )
            .cmp(&(
                b.kind.as_str(),
                b.suite.as_str(),
                std::cmp::Reverse(b.created_unix),
                b.model.as_str(),
            ))
    });
    Ok(Board {
        rows,
        incomplete,
        baselines: baselines.map(Path::to_path_buf),
    })
}

/// `target` relative to the folder `from` (both made absolute), for links in the board.
pub fn relative(target: &Path, from: &Path) -> String {
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (t, f) = (abs(target), abs(from));
    let tc: Vec<_> = t.components().collect();
    let fc: Vec<_> = f.components().collect();
    let common = tc.iter().zip(&fc).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = std::iter::repeat_n("..".to_string(), fc.len() - common).collect();
    parts.extend(
        tc[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("/")
}

fn fmt_metric(name: &str, m: &Metric) -> (String, String) {
    let pct = name.contains("top") || name == "balanced";
    let (v, lo, hi) = if pct {
        (100.0 * m.value, 100.0 * m.ci95[0], 100.0 * m.ci95[1])
    } else {
        (m.value, m.ci95[0], m.ci95[1])
    };
    let d = if pct || v.abs() >= 100.0 {
        1
    } else if v.abs() >= 10.0 {
        2
    } else {
        4
    };
    (
        format!("{v:.d$}"),
        format!("[{lo:.d$}, {hi:.d$}] n={}", m.n, d = d),
    )
}

/// Rows of one kind, and the headline columns they use (in first-seen order).
fn by_kind(b: &Board) -> Vec<(String, Vec<&BoardRow>, Vec<String>)> {
    let mut out: Vec<(String, Vec<&BoardRow>, Vec<String>)> = Vec::new();
    for r in &b.rows {
        let i = match out.iter().position(|x| x.0 == r.kind) {
            Some(i) => i,
            None => {
                out.push((r.kind.clone(), Vec::new(), Vec::new()));
                out.len() - 1
            }
        };
        out[i].1.push(r);
        for (n, _) in &r.metrics {
            if !out[i].2.contains(n) {
                out[i].2.push(n.clone());
            }
        }
    }
    out
}

fn date(unix: u64) -> String {
    // Days since the epoch to a civil date (Howard Hinnant's algorithm).
    let z = (unix / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    let s = unix % 86_400;
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}", s / 3600, (s / 60) % 60)
}

/// The board as Markdown; links relative to `out_dir`.
pub fn markdown(b: &Board, out_dir: &Path) -> String {
    let mut s = String::from("# Results board\n\n");
    s.push_str(&match &b.baselines {
        Some(p) => format!("Verdicts against the newest run under `{}/<suite>/` (the regression report's rule: worse by more than the tolerance and significant).\n\n", p.display()),
        None => "No baselines folder: no verdicts.\n\n".into(),
    });
    for (kind, rows, cols) in by_kind(b) {
        s.push_str(&format!("## {kind}\n\n| suite | model | LLM | {} | vs baseline | run |\n|---|---|---|{}---|---|\n", cols.join(" | "), "---|".repeat(cols.len())));
        for r in rows {
            let cells: Vec<String> = cols
                .iter()
                .map(|c| match r.metrics.iter().find(|(n, _)| n == c) {
                    Some((n, m)) => {
                        let (v, ci) = fmt_metric(n, m);
                        format!("{v} {ci}")
                    }
                    None => "-".into(),
                })
                .collect();
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | [{}]({}) {} |\n",
                r.suite,
                r.model,
                r.llm,
                cells.join(" | "),
                if r.verdict.is_empty() {
                    "-"
                } else {
                    &r.verdict
                },
                r.run_id,
                relative(&r.link, out_dir),
                date(r.created_unix)
            ));
        }
        s.push('\n');
    }
    if !b.incomplete.is_empty() {
        s.push_str("## Incomplete runs\n\n| folder | why |\n|---|---|\n");
        for i in &b.incomplete {
            s.push_str(&format!(
                "| {} | {} |\n",
                relative(&i.dir, out_dir),
                i.why.replace('\n', " ")
            ));
        }
    }
    s
}

/// The board as one static HTML page; links relative to `out_dir`.
pub fn html(b: &Board, out_dir: &Path) -> String {
    let mut h = String::from("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>Results board</title>\n<style>\n\
body{font-family:'DejaVu Sans',Arial,sans-serif;margin:24px;color:#111;background:#fff}\n\
table{border-collapse:collapse;margin:8px 0 20px}th,td{border:1px solid #bbb;padding:4px 8px;text-align:right;vertical-align:top}\n\
th{background:#e8eef7}td.l,th.l{text-align:left}.ci{color:#555;font-size:85%}.meta{color:#444}\n\
td.v-judge{background:#eeeeee;color:#555;font-style:italic}td.v-same{background:#eef7ee}td.v-improved{background:#d8f0d8}td.v-regression{background:#f8d0d0;font-weight:bold}td.v-missing{background:#fde7c8}\n\
</style>\n</head>\n<body>\n<h1>Results board</h1>\n");
    h.push_str(&match &b.baselines {
        Some(p) => format!("<p class=\"meta\">Verdicts against the newest run under <code>{}/&lt;suite&gt;/</code>: a regression is worse by more than the suite's tolerance and significant (McNemar on paired episodes or images, else a z-test), as <code>lqae-eval report</code> decides. Intervals are 95%.</p>\n", esc(&p.display().to_string())),
        None => "<p class=\"meta\">No baselines folder: no verdicts. Intervals are 95%.</p>\n".into(),
    });
    for (kind, rows, cols) in by_kind(b) {
        h.push_str(&format!("<h2>{}</h2>\n<table class=\"board\" data-kind=\"{0}\">\n<tr><th class=\"l\">suite</th><th class=\"l\">model</th><th class=\"l\">LLM</th>", esc(&kind)));
        for c in &cols {
            h.push_str(&format!("<th>{}</th>", esc(c)));
        }
        h.push_str("<th>vs baseline</th><th class=\"l\">run</th></tr>\n");
        for r in rows {
            h.push_str(&format!(
                "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td>",
                esc(&r.suite),
                esc(&r.model),
                esc(&r.llm)
            ));
            for c in &cols {
                match r.metrics.iter().find(|(n, _)| n == c) {
                    Some((n, m)) => {
                        let (v, ci) = fmt_metric(n, m);
                        h.push_str(&format!(
                            "<td>{v}<br><span class=\"ci\">{}</span></td>",
                            esc(&ci)
                        ));
                    }
                    None => h.push_str("<td>-</td>"),
                }
            }
            let class = r
                .verdict
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_lowercase();
            h.push_str(&format!(
                "<td class=\"v-{class}\">{}</td><td class=\"l\"><a href=\"{}\">{}</a><br><span class=\"ci\">{}</span></td></tr>\n",
                if r.verdict.is_empty() { "-".into() } else { esc(&r.verdict) },
                esc(&relative(&r.link, out_dir)),
                esc(&r.run_id),
                date(r.created_unix)
            ));
        }
        h.push_str("</table>\n");
    }
    if !b.incomplete.is_empty() {
        h.push_str("<h2>Incomplete runs</h2>\n<table id=\"incomplete\">\n<tr><th class=\"l\">folder</th><th class=\"l\">why</th></tr>\n");
        for i in &b.incomplete {
            h.push_str(&format!(
                "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>\n",
                esc(&relative(&i.dir, out_dir)),
                esc(&i.why)
            ));
        }
        h.push_str("</table>\n");
    }
    h.push_str("</body>\n</html>\n");
    h
}

/// Write `out` (HTML) and its Markdown twin (`out` with `.md`), atomically; both paths.
pub fn write(
    dir: &Path,
    baselines: Option<&Path>,
    out: &Path,
) -> Result<(Board, PathBuf, PathBuf)> {
    let b = collect(dir, baselines)?;
    let out_dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    std::fs::create_dir_all(&out_dir).map_err(|e| Error::file(&out_dir, e.to_string()))?;
    let md = out.with_extension("md");
    crate::util::fsx::write_atomic(out, html(&b, &out_dir).as_bytes())?;
    crate::util::fsx::write_atomic(&md, markdown(&b, &out_dir).as_bytes())?;
    Ok((b, out.to_path_buf(), md))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_civil_dates() {
        // Golden values from `date -u -d @T "+%Y-%m-%d %H:%M"` (GNU coreutils).
        for (t, want) in [
            (0, "1970-01-01 00:00"),
            (951_782_400, "2000-02-29 00:00"),
            (1_796_000_000, "2026-11-30 00:53"),
            (4_102_444_799, "2099-12-31 23:59"),
        ] {
            assert_eq!(date(t), want, "{t}");
        }
    }

    #[test]
    fn links_are_relative_to_the_board_folder() {
        let d = tempfile::tempdir().unwrap();
        let run = d.path().join("results/s/r1");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join("index.html"), "x").unwrap();
        let site = d.path().join("site");
        std::fs::create_dir_all(&site).unwrap();
        assert_eq!(
            relative(&run.join("index.html"), &site),
            "../results/s/r1/index.html"
        );
        assert_eq!(
            relative(&run.join("index.html"), &d.path().join("results")),
            "s/r1/index.html"
        );
    }
}
