//! One regression report over every suite of a baselines folder, for a CI: the Markdown of
//! each suite's report, one verdict (and exit code) over all of them, JUnit XML (one test case
//! per metric, what GitHub Actions, GitLab, Jenkins and Buildkite display) and a job summary
//! (regressions first, then the board's headline table).

use super::board;
use super::results::{self, Comparison, Verdict};
use super::runner::{self, Report};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// One suite's comparison, or why it could not be compared.
pub struct SuiteReport {
    pub suite: String,
    pub baseline: PathBuf,
    pub current: PathBuf,
    pub outcome: std::result::Result<Report, String>,
}

impl SuiteReport {
    /// Metrics whose verdict fails the gate (`Missing` unless allowed).
    pub fn failing(&self, allow_missing: bool) -> Vec<&Comparison> {
        match &self.outcome {
            Ok(report) => report
                .rows
                .iter()
                .filter(|r| {
                    matches!(r.verdict, Verdict::Regression | Verdict::Stale)
                        || (r.verdict == Verdict::Missing && !allow_missing)
                })
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// Every suite with a run under `baselines` (a folder per suite), compared with the newest run
/// of the same suite under `current`. A suite without a current run is an error of that suite.
pub fn report_all(baselines: &Path, current: &Path) -> Result<Vec<SuiteReport>> {
    let (found, _) = results::find_runs(baselines, None);
    let mut suites: Vec<String> = found
        .iter()
        .filter_map(|f| f.strip_prefix(baselines).ok())
        .filter_map(|rel| rel.components().next())
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    suites.sort();
    suites.dedup();
    if suites.is_empty() {
        return Err(Error::file(
            baselines,
            "holds no baseline runs (`<suite>/<run>/result.json`); nothing to compare",
        ));
    }
    Ok(suites
        .into_iter()
        .map(|suite| {
            let (b, c) = (baselines.join(&suite), current.join(&suite));
            let outcome = if c.is_dir() {
                runner::report(&b, &c).map_err(|e| e.to_string())
            } else {
                Err(format!(
                    "no run of suite `{suite}` under {} (the baseline has one)",
                    current.display()
                ))
            };
            SuiteReport {
                suite,
                baseline: b,
                current: c,
                outcome,
            }
        })
        .collect())
}

/// One suite given as two result files or folders.
pub fn report_one(baseline: &Path, current: &Path) -> SuiteReport {
    let outcome = runner::report(baseline, current).map_err(|e| e.to_string());
    let suite = match &outcome {
        Ok(r) => r.suite.clone(),
        Err(_) => "report".into(),
    };
    SuiteReport {
        suite,
        baseline: baseline.to_path_buf(),
        current: current.to_path_buf(),
        outcome,
    }
}

/// The combined Markdown: a line per suite, then each suite's report (or its error).
pub fn markdown(reports: &[SuiteReport], allow_missing: bool) -> String {
    let mut s = String::from("# Regression report\n\n| suite | verdict |\n|---|---|\n");
    for r in reports {
        s.push_str(&format!(
            "| {} | {} |\n",
            r.suite,
            verdict_line(r, allow_missing)
        ));
    }
    for r in reports {
        s.push_str(&format!("\n## {}\n\n", r.suite));
        match &r.outcome {
            Ok(report) => s.push_str(&report.markdown),
            Err(e) => s.push_str(&format!("**error**: {e}\n")),
        }
    }
    s
}

fn verdict_line(r: &SuiteReport, allow_missing: bool) -> String {
    match &r.outcome {
        Err(_) => "ERROR".into(),
        Ok(Report { rows, .. }) => {
            let count = |v: Verdict| rows.iter().filter(|x| x.verdict == v).count();
            let (reg, miss) = (count(Verdict::Regression), count(Verdict::Missing));
            match (reg, miss, count(Verdict::Stale)) {
                (0, 0, 0) => format!("pass ({} metrics)", rows.len()),
                (0, m, 0) if allow_missing => format!("pass ({m} missing, allowed)"),
                (r, m, 0) => format!("FAIL ({r} regressed, {m} missing)"),
                (r, m, s) => format!(
                    "FAIL ({r} regressed, {m} missing, {s} with a stale baseline: rebuild it)"
                ),
            }
        }
    }
}

/// Whether every failure is a missing metric (no regression, stale baseline or suite error):
/// the case `--allow-missing` is for.
pub fn only_missing(reports: &[SuiteReport]) -> bool {
    reports.iter().all(|r| {
        r.outcome.is_ok()
            && r.failing(false)
                .iter()
                .all(|c| c.verdict == Verdict::Missing)
    })
}

/// Every failure: `suite: metric (why)`, or `suite: error`.
pub fn failures(reports: &[SuiteReport], allow_missing: bool) -> Vec<String> {
    let mut out = Vec::new();
    for r in reports {
        match &r.outcome {
            Err(e) => out.push(format!("{}: {e}", r.suite)),
            Ok(_) => out.extend(
                r.failing(allow_missing)
                    .into_iter()
                    .map(|c| format!("{}: {} ({})", r.suite, c.metric, c.verdict.as_str())),
            ),
        }
    }
    out
}

/// JUnit XML: a `<testsuite>` per suite, a `<testcase>` per metric, `<failure>` for a
/// regression (or a missing metric, unless allowed), `<error>` for a suite that could not be
/// compared.
pub fn junit(reports: &[SuiteReport], allow_missing: bool) -> String {
    let mut body = String::new();
    let (mut tests, mut fails, mut errors) = (0, 0, 0);
    for r in reports {
        let name = xml(&r.suite);
        match &r.outcome {
            Err(e) => {
                tests += 1;
                errors += 1;
                body.push_str(&format!(
                    "  <testsuite name=\"{name}\" tests=\"1\" failures=\"0\" errors=\"1\">\n    <testcase classname=\"{name}\" name=\"result\">\n      <error type=\"not-compared\" message=\"{}\"/>\n    </testcase>\n  </testsuite>\n",
                    xml(e)
                ));
            }
            Ok(Report { rows, .. }) => {
                let failing = r.failing(allow_missing);
                tests += rows.len();
                fails += failing.len();
                body.push_str(&format!(
                    "  <testsuite name=\"{name}\" tests=\"{}\" failures=\"{}\" errors=\"0\">\n",
                    rows.len(),
                    failing.len()
                ));
                for c in rows {
                    let line = format!(
                        "{}: baseline {:.4}, current {:.4}, change {:+.4} [{:+.4}, {:+.4}]{}",
                        c.verdict.as_str(),
                        c.baseline,
                        c.current,
                        c.change,
                        c.ci95[0],
                        c.ci95[1],
                        c.p_value.map(|p| format!(", p {p:.3}")).unwrap_or_default()
                    );
                    body.push_str(&format!(
                        "    <testcase classname=\"{name}\" name=\"{}\">",
                        xml(&c.metric)
                    ));
                    if failing.iter().any(|f| std::ptr::eq(*f, c)) {
                        body.push_str(&format!(
                            "\n      <failure type=\"{}\" message=\"{}\"/>\n    ",
                            c.verdict.as_str(),
                            xml(&line)
                        ));
                    } else {
                        body.push_str(&format!("<system-out>{}</system-out>", xml(&line)));
                    }
                    body.push_str("</testcase>\n");
                }
                body.push_str("  </testsuite>\n");
            }
        }
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"lqae regression report\" tests=\"{tests}\" failures=\"{fails}\" errors=\"{errors}\">\n{body}</testsuites>\n"
    )
}

/// Text as XML character data or an attribute value: the five entities escaped, and the
/// characters XML 1.0 cannot hold at all (most control characters; names come from result
/// files others wrote) replaced by U+FFFD.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(ch),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// A job summary: the verdict, the failures first (a table), then the board's headline table
/// of the current runs against the baselines. Links are relative to `out_dir`.
pub fn summary(
    reports: &[SuiteReport],
    allow_missing: bool,
    current: &Path,
    baselines: Option<&Path>,
    out_dir: &Path,
) -> Result<String> {
    let fails = failures(reports, allow_missing);
    let mut s = format!(
        "# lqae regression report: {}\n\n",
        if fails.is_empty() {
            format!("{} suites pass", reports.len())
        } else {
            format!("{} failure(s) in {} suites", fails.len(), reports.len())
        }
    );
    if !fails.is_empty() {
        s.push_str("| suite | metric | baseline | current | change [95%] | p | verdict |\n|---|---|---|---|---|---|---|\n");
        for r in reports {
            match &r.outcome {
                Err(e) => s.push_str(&format!(
                    "| {} | - | - | - | - | - | ERROR: {} |\n",
                    r.suite,
                    e.replace('|', "\\|").replace('\n', " ")
                )),
                Ok(_) => {
                    for c in r.failing(allow_missing) {
                        s.push_str(&format!(
                            "| {} | {} | {:.4} | {:.4} | {:+.4} [{:+.4}, {:+.4}] | {} | {} |\n",
                            r.suite,
                            c.metric,
                            c.baseline,
                            c.current,
                            c.change,
                            c.ci95[0],
                            c.ci95[1],
                            c.p_value.map(|p| format!("{p:.3}")).unwrap_or("-".into()),
                            c.verdict.as_str()
                        ));
                    }
                }
            }
        }
        s.push('\n');
    }
    let b = board::collect(current, baselines)?;
    s.push_str(&board::markdown(&b, out_dir));
    Ok(s)
}
