//! The regression report: two results compared metric by metric, with paired tests where
//! both runs scored the same examples.

use super::{ImageScore, ResultFile, Sample};
use crate::eval::stats::{discordant, mcnemar_p, normal_sf, paired_t_p};
use std::collections::BTreeMap;

/// What the report says of one metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Same,
    /// Better beyond its tolerance, significantly, where speeds depend on the machine (the
    /// throughput suite): said, not gated.
    Improved,
    /// Better beyond its tolerance, significantly (the regression rule, mirrored): the baseline
    /// no longer describes this code or these numerics. The gate fails until the baseline is
    /// rebuilt, in the same change, so a stale baseline cannot stand and hide a later drop.
    Stale,
    Regression,
    /// Worse beyond its tolerance, significantly, in a metric that measures the machine itself
    /// (a raw speed) against a baseline from another machine kind: said, not gated.
    SlowerElsewhere,
    /// In the baseline, absent from the current run (a representation or metric was lost):
    /// the gate fails on it unless told to allow it.
    Missing,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Same => "same",
            Verdict::Improved => "improved",
            Verdict::Stale => "BASELINE STALE",
            Verdict::Regression => "REGRESSION",
            Verdict::SlowerElsewhere => "slower, other machine",
            Verdict::Missing => "MISSING",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Verdict {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub metric: String,
    pub baseline: f64,
    pub current: f64,
    pub change: f64,
    pub ci95: [f64; 2],
    pub p_value: Option<f64>,
    pub verdict: Verdict,
}

/// Compare two results metric by metric. A metric regresses when it is worse by more than its
/// tolerance *and* the difference is significant (p < 0.05): McNemar on the per-sample records
/// when both runs scored the same examples, else a two-proportion z-test.
pub fn compare(
    base: &ResultFile,
    base_s: Option<&[Sample]>,
    cur: &ResultFile,
    cur_s: Option<&[Sample]>,
) -> Vec<Comparison> {
    compare_paired(base, base_s, None, cur, cur_s, None)
}

/// As `compare`, and for continuous metrics with per-image values on both sides (same
/// examples), a paired t-test on the per-image differences instead of the unpaired z-test.
pub fn compare_paired(
    base: &ResultFile,
    base_s: Option<&[Sample]>,
    base_v: Option<&[ImageScore]>,
    cur: &ResultFile,
    cur_s: Option<&[Sample]>,
    cur_v: Option<&[ImageScore]>,
) -> Vec<Comparison> {
    let mut rows = Vec::new();
    for (name, b) in &base.metrics {
        let Some(c) = cur.metrics.get(name) else {
            rows.push(Comparison {
                metric: name.clone(),
                baseline: b.value,
                current: f64::NAN,
                change: f64::NAN,
                ci95: [f64::NAN, f64::NAN],
                p_value: None,
                verdict: Verdict::Missing,
            });
            continue;
        };
        let change = c.value - b.value;
        let worse = if b.higher_is_better { -change } else { change };
        let paired = match (base_s, cur_s) {
            (Some(bs), Some(cs)) if base.samples_sha256 == cur.samples_sha256 => {
                paired_p(name, bs, cs)
            }
            _ => None,
        }
        .or_else(|| match (base_v, cur_v) {
            (Some(bv), Some(cv)) if base.samples_sha256 == cur.samples_sha256 => {
                paired_values_p(name, bv, cv)
            }
            _ => None,
        });
        let p = paired.or_else(|| {
            let se = (b.se * b.se + c.se * c.se).sqrt();
            (se > 0.0).then(|| 2.0 * normal_sf((change / se).abs()))
        });
        let significant = p.is_some_and(|p| p < 0.05);
        let verdict = if worse > b.tolerance && significant {
            Verdict::Regression
        } else if -worse > b.tolerance && significant {
            Verdict::Stale
        } else {
            Verdict::Same
        };
        rows.push(Comparison {
            metric: name.clone(),
            baseline: b.value,
            current: c.value,
            change,
            ci95: c.ci95,
            p_value: p,
            verdict,
        });
    }
    rows
}

/// McNemar p for `rep/top1` or `rep/top5` metrics from per-sample records.
fn paired_p(metric: &str, bs: &[Sample], cs: &[Sample]) -> Option<f64> {
    let (rep, m) = metric.rsplit_once('/')?;
    let pick = |s: &Sample| match m {
        "top1" => Some(s.correct),
        "top5" => Some(s.top5),
        _ => None,
    };
    let key = |s: &Sample| (s.index, s.input_sha256.clone());
    let base: BTreeMap<_, bool> = bs
        .iter()
        .filter(|s| s.rep == rep)
        .filter_map(|s| pick(s).map(|v| (key(s), v)))
        .collect();
    let pairs: Vec<(bool, bool)> = cs
        .iter()
        .filter(|s| s.rep == rep)
        .filter_map(|s| Some((*base.get(&key(s))?, pick(s)?)))
        .collect();
    let (only_b, only_c) = discordant(pairs.iter().copied());
    (!pairs.is_empty()).then(|| mcnemar_p(only_b, only_c))
}

/// Paired t-test p for a `rep/metric` from per-image values, matched by index and input hash.
fn paired_values_p(metric: &str, bv: &[ImageScore], cv: &[ImageScore]) -> Option<f64> {
    let (rep, m) = metric.rsplit_once('/')?;
    let key = |s: &ImageScore| (s.index, s.input_sha256.clone());
    let base: BTreeMap<_, f64> = bv
        .iter()
        .filter(|s| s.rep == rep)
        .filter_map(|s| s.values.get(m).map(|&v| (key(s), v)))
        .collect();
    let pairs: Vec<(f64, f64)> = cv
        .iter()
        .filter(|s| s.rep == rep)
        .filter_map(|s| Some((*base.get(&key(s))?, *s.values.get(m)?)))
        .collect();
    paired_t_p(&pairs)
}

/// The Markdown table of a comparison.
pub fn markdown(rows: &[Comparison], base: &str, cur: &str) -> String {
    let mut s = format!("Baseline: `{base}`\nCurrent: `{cur}`\n\n| metric | baseline | current | change | current 95% CI | p | verdict |\n|---|---|---|---|---|---|---|\n");
    for r in rows {
        if r.verdict == Verdict::Missing {
            s.push_str(&format!(
                "| {} | {:.4} | - | - | - | - | {} |\n",
                r.metric, r.baseline, r.verdict
            ));
            continue;
        }
        let p = r
            .p_value
            .map(|p| format!("{p:.3}"))
            .unwrap_or_else(|| "-".into());
        s.push_str(&format!(
            "| {} | {:.4} | {:.4} | {:+.4} | [{:.4}, {:.4}] | {p} | {} |\n",
            r.metric, r.baseline, r.current, r.change, r.ci95[0], r.ci95[1], r.verdict
        ));
    }
    s
}
