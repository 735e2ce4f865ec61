//! Result files and regression reports.
//!
//! A run writes `results/<suite>/<run-id>/result.json` and `samples.jsonl`. Schema
//! `lqae-result/1` (see README): the resolved suite, seeds, crate version, git commit, device,
//! wall time, the sha256 of checkpoints and data, the hash of all per-sample inputs, and each
//! metric with its standard error and 95% interval. `samples.jsonl` has one record per scored
//! example and representation, so two runs can be compared example by example.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const SCHEMA: &str = "lqae-result/1";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Metric {
    pub value: f64,
    pub se: f64,
    pub ci95: [f64; 2],
    pub n: usize,
    /// Absolute drop allowed before a report calls it a regression.
    pub tolerance: f64,
    /// True when larger is better.
    pub higher_is_better: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Sample {
    /// Representation scored (`lqae`, `pixels`, ...).
    pub rep: String,
    pub index: usize,
    pub input_sha256: String,
    pub label: u32,
    pub pred: u32,
    pub correct: bool,
    pub top5: bool,
}

/// Per-image values of continuous metrics (`per_image.jsonl`, one record per representation
/// and image), for paired tests between runs that scored the same images.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageScore {
    pub rep: String,
    pub index: usize,
    pub input_sha256: String,
    /// Metric name (as in `<rep>/<metric>`) -> this image's value.
    pub values: BTreeMap<String, f64>,
}

pub const PER_IMAGE_FILE: &str = "per_image.jsonl";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResultFile {
    pub schema: String,
    pub suite: String,
    pub kind: String,
    pub run_id: String,
    pub created_unix: u64,
    pub config: serde_json::Value,
    pub seeds: BTreeMap<String, u64>,
    pub crate_version: String,
    pub git_commit: String,
    pub device: String,
    pub wall_time_s: f64,
    /// Name -> sha256 of checkpoints and data files.
    pub inputs_sha256: BTreeMap<String, String>,
    /// sha256 over the ordered per-sample input hashes.
    pub samples_sha256: String,
    pub metrics: BTreeMap<String, Metric>,
    pub extra: serde_json::Value,
}

/// What a suite run measured, before the identity and provenance are filled in.
pub struct Measured {
    pub seeds: BTreeMap<String, u64>,
    pub inputs_sha256: BTreeMap<String, String>,
    pub samples_sha256: String,
    pub metrics: BTreeMap<String, Metric>,
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl ResultFile {
    /// The result of a run of `suite` that started at `t0` and ends now: schema, run id
    /// (`<unix s>-<ns>-<samples hash>`), resolved configuration, crate version, git commit,
    /// device and wall time filled in.
    pub fn finish(
        suite: &crate::suites::Suite,
        device: &candle_core::Device,
        t0: std::time::Instant,
        m: Measured,
    ) -> Result<Self> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Ok(ResultFile {
            schema: SCHEMA.into(),
            suite: suite.name.clone(),
            kind: suite.kind.clone(),
            run_id: format!(
                "{}-{:09}-{}",
                now.as_secs(),
                now.subsec_nanos(),
                &m.samples_sha256[..8.min(m.samples_sha256.len())]
            ),
            created_unix: now.as_secs(),
            config: serde_json::to_value(&suite.resolved).map_err(|e| Error::Msg(e.to_string()))?,
            seeds: m.seeds,
            crate_version: env!("CARGO_PKG_VERSION").into(),
            git_commit: git_commit(),
            device: crate::device::device_name(device),
            wall_time_s: t0.elapsed().as_secs_f64(),
            inputs_sha256: m.inputs_sha256,
            samples_sha256: m.samples_sha256,
            metrics: m.metrics,
            extra: serde_json::Value::Object(m.extra),
        })
    }
}

/// Wilson score interval and the normal standard error of a proportion `k / n`.
pub fn proportion(k: usize, n: usize, tolerance: f64) -> Metric {
    let nf = n.max(1) as f64;
    let p = k as f64 / nf;
    let z = 1.959964;
    let denom = 1.0 + z * z / nf;
    let centre = (p + z * z / (2.0 * nf)) / denom;
    let half = z * (p * (1.0 - p) / nf + z * z / (4.0 * nf * nf)).sqrt() / denom;
    Metric {
        value: p,
        se: (p * (1.0 - p) / nf).sqrt(),
        ci95: [centre - half, centre + half],
        n,
        tolerance,
        higher_is_better: true,
    }
}

/// Mean of per-image values with its standard error and a Student-t 95% interval
/// (`mean +- t(0.975, n-1) * sd / sqrt(n)`, sample standard deviation).
pub fn mean_t_interval(values: &[f64], tolerance: f64, higher_is_better: bool) -> Metric {
    let n = values.len();
    let nf = n.max(1) as f64;
    let mean = values.iter().sum::<f64>() / nf;
    let var = if n > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (nf - 1.0)
    } else {
        0.0
    };
    let se = (var / nf).sqrt();
    let half = if n > 1 {
        student_t_quantile(0.975, nf - 1.0) * se
    } else {
        0.0
    };
    Metric {
        value: mean,
        se,
        ci95: [mean - half, mean + half],
        n,
        tolerance,
        higher_is_better,
    }
}

/// ln Gamma (Lanczos, g = 7, 9 terms; |relative error| < 1e-13 for x > 0).
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + 7.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Regularised incomplete beta I_x(a, b) (continued fraction, modified Lentz).
fn incomplete_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    if x > (a + 1.0) / (a + b + 2.0) {
        return 1.0 - incomplete_beta(1.0 - x, b, a);
    }
    let front =
        (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp() / a;
    let tiny = 1e-300;
    let (mut c, mut d) = (1.0, 1.0 - (a + b) * x / (a + 1.0));
    if d.abs() < tiny {
        d = tiny;
    }
    d = 1.0 / d;
    let mut f = d;
    for m in 1..500 {
        let m = m as f64;
        for num in [
            m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0)),
        ] {
            d = 1.0 + num * d;
            if d.abs() < tiny {
                d = tiny;
            }
            c = 1.0 + num / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            f *= c * d;
        }
        if (c * d - 1.0).abs() < 1e-15 {
            break;
        }
    }
    front * f
}

/// Two-sided p-value of a Student-t statistic with `df` degrees of freedom.
pub fn student_t_two_sided_p(t: f64, df: f64) -> f64 {
    if !t.is_finite() {
        return 0.0;
    }
    incomplete_beta(df / (df + t * t), df / 2.0, 0.5).clamp(0.0, 1.0)
}

/// The `p` quantile (p > 0.5) of Student's t with `df` degrees of freedom (bisection).
pub fn student_t_quantile(p: f64, df: f64) -> f64 {
    let target = 2.0 * (1.0 - p); // two-sided tail
    let (mut lo, mut hi) = (0.0f64, 1e3f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if student_t_two_sided_p(mid, df) > target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Paired t-test on per-image differences `current - baseline` of one metric: two-sided p,
/// or None when fewer than two images pair up or every difference is the same.
pub fn paired_t_p(pairs: &[(f64, f64)]) -> Option<f64> {
    let n = pairs.len();
    if n < 2 {
        return None;
    }
    let d: Vec<f64> = pairs.iter().map(|(b, c)| c - b).collect();
    let mean = d.iter().sum::<f64>() / n as f64;
    let var = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0);
    if var <= 0.0 {
        return (mean == 0.0).then_some(1.0).or(Some(0.0));
    }
    let t = mean / (var / n as f64).sqrt();
    Some(student_t_two_sided_p(t, n as f64 - 1.0))
}

/// Write per-image metric values next to a run's `result.json` (atomically).
pub fn write_per_image(dir: &Path, scores: &[ImageScore]) -> Result<()> {
    let mut lines = String::new();
    for s in scores {
        lines.push_str(&serde_json::to_string(s).map_err(|e| Error::Msg(e.to_string()))?);
        lines.push('\n');
    }
    crate::assets::write_atomic(&dir.join(PER_IMAGE_FILE), lines.as_bytes())
}

/// The per-image values beside a result file (or beside the newest `result.json` under a
/// folder), if the run wrote any.
pub fn read_per_image(path: &Path) -> Result<Option<Vec<ImageScore>>> {
    let file = if path.is_dir() {
        let mut found = Vec::new();
        collect(path, &mut found);
        found.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        match found.pop() {
            Some(f) => f,
            None => return Ok(None),
        }
    } else {
        path.to_path_buf()
    };
    let p = file.with_file_name(PER_IMAGE_FILE);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(_) => return Ok(None),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| Error::file(&p, e.to_string())))
        .collect::<Result<Vec<ImageScore>>>()
        .map(Some)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The commit of the working tree, or "unknown" outside a git checkout.
pub fn git_commit() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    std::process::Command::new("git")
        .args(["-C", dir, "rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Write `result.json` and `samples.jsonl` into a new run folder (atomically, each file).
pub fn write_run(root: &Path, result: &ResultFile, samples: &[Sample]) -> Result<PathBuf> {
    let dir = root.join(&result.suite).join(&result.run_id);
    std::fs::create_dir_all(&dir).map_err(|e| Error::file(&dir, e.to_string()))?;
    let mut lines = String::new();
    for s in samples {
        lines.push_str(&serde_json::to_string(s).map_err(|e| Error::Msg(e.to_string()))?);
        lines.push('\n');
    }
    crate::assets::write_atomic(&dir.join("samples.jsonl"), lines.as_bytes())?;
    let json = serde_json::to_vec_pretty(result).map_err(|e| Error::Msg(e.to_string()))?;
    crate::assets::write_atomic(&dir.join("result.json"), &json)?;
    Ok(dir)
}

/// A result file, or the newest `result.json` under a folder.
pub fn read_result(path: &Path) -> Result<(ResultFile, Option<Vec<Sample>>)> {
    let file = if path.is_dir() {
        let mut found = Vec::new();
        collect(path, &mut found);
        found.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        found
            .pop()
            .ok_or_else(|| Error::file(path, "holds no result.json"))?
    } else {
        path.to_path_buf()
    };
    let r: ResultFile = serde_json::from_slice(
        &std::fs::read(&file).map_err(|e| Error::file(&file, e.to_string()))?,
    )
    .map_err(|e| Error::file(&file, format!("not a {SCHEMA} result: {e}")))?;
    if r.schema != SCHEMA {
        return Err(Error::file(
            &file,
            format!("schema `{}`, this build reads `{SCHEMA}`", r.schema),
        ));
    }
    let samples_path = file.with_file_name("samples.jsonl");
    let samples = match std::fs::read_to_string(&samples_path) {
        Ok(t) => Some(
            t.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| {
                    serde_json::from_str(l).map_err(|e| Error::file(&samples_path, e.to_string()))
                })
                .collect::<Result<Vec<Sample>>>()?,
        ),
        Err(_) => None,
    };
    Ok((r, samples))
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                collect(&p, out);
            } else if p.file_name().is_some_and(|n| n == "result.json") {
                out.push(p);
            }
        }
    }
}

/// Exact two-sided McNemar test on discordant pairs `b` (only baseline right) and `c`
/// (only current right): the binomial probability of a split at least this uneven.
pub fn mcnemar_p(b: usize, c: usize) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    let k = b.min(c);
    // P(X <= k) for X ~ Bin(n, 1/2), in log space.
    let ln_half_n = n as f64 * 0.5f64.ln();
    let mut ln_c = 0.0f64; // ln C(n, 0)
    let mut tail = 0.0;
    for i in 0..=k {
        if i > 0 {
            ln_c += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        tail += (ln_c + ln_half_n).exp();
    }
    (2.0 * tail).min(1.0)
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub metric: String,
    pub baseline: f64,
    pub current: f64,
    pub change: f64,
    pub ci95: [f64; 2],
    pub p_value: Option<f64>,
    pub verdict: &'static str,
}

/// Compare two results metric by metric. A metric regresses when it is worse by more than its
/// tolerance *and* the difference is significant (p < 0.05): McNemar on the per-sample records
/// when both runs scored the same examples, else a two-proportion z-test.
pub fn compare(
    base: &ResultFile,
    base_s: Option<&[Sample]>,
    cur: &ResultFile,
    cur_s: Option<&[Sample]>,
) -> Vec<Row> {
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
) -> Vec<Row> {
    let mut rows = Vec::new();
    for (name, b) in &base.metrics {
        let Some(c) = cur.metrics.get(name) else {
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
            "REGRESSION"
        } else if -worse > b.tolerance && significant {
            "improved"
        } else {
            "same"
        };
        rows.push(Row {
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
    let (mut only_b, mut only_c, mut n) = (0, 0, 0);
    for s in cs.iter().filter(|s| s.rep == rep) {
        if let (Some(vc), Some(&vb)) = (pick(s), base.get(&key(s))) {
            n += 1;
            match (vb, vc) {
                (true, false) => only_b += 1,
                (false, true) => only_c += 1,
                _ => {}
            }
        }
    }
    (n > 0).then(|| mcnemar_p(only_b, only_c))
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

fn normal_sf(z: f64) -> f64 {
    // Abramowitz-Stegun 7.1.26 erfc approximation (|error| < 1.5e-7).
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.3275911 * x);
    let poly = t
        * (0.254829592
            + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    0.5 * poly * (-x * x).exp()
}

/// The Markdown table of a comparison.
pub fn markdown(rows: &[Row], base: &str, cur: &str) -> String {
    let mut s = format!("Baseline: `{base}`\nCurrent: `{cur}`\n\n| metric | baseline | current | change | current 95% CI | p | verdict |\n|---|---|---|---|---|---|---|\n");
    for r in rows {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_and_mcnemar_match_textbook_values() {
        let m = proportion(80, 100, 0.0);
        assert!((m.value - 0.8).abs() < 1e-12 && (m.se - 0.04).abs() < 1e-12);
        // Wilson 95% for 80/100: [0.7112, 0.8666].
        assert!(
            (m.ci95[0] - 0.7112).abs() < 1e-3 && (m.ci95[1] - 0.8666).abs() < 1e-3,
            "{:?}",
            m.ci95
        );
        // Exact McNemar: b=1, c=9 -> 2 * P(X<=1 | n=10) = 2 * 11/1024.
        assert!((mcnemar_p(1, 9) - 22.0 / 1024.0).abs() < 1e-12);
        assert_eq!(mcnemar_p(5, 5), 1.0);
        assert!((normal_sf(1.959964) - 0.025).abs() < 1e-6);
    }

    #[test]
    fn student_t_matches_tables() {
        // t(0.975) for df 1, 10, 999 (tables / scipy.stats.t.ppf).
        for (df, want) in [(1.0, 12.706205), (10.0, 2.228139), (999.0, 1.962341)] {
            let q = student_t_quantile(0.975, df);
            assert!((q - want).abs() < 1e-4, "df {df}: {q} vs {want}");
        }
        // scipy: 2 * t.sf(2.5, 7) = 0.040992
        assert!((student_t_two_sided_p(2.5, 7.0) - 0.040992).abs() < 1e-5);
        let m = mean_t_interval(&[1.0, 2.0, 3.0, 4.0], 0.1, true);
        // mean 2.5, sd 1.290994, se 0.645497, t(0.975, 3) = 3.182446
        assert!((m.value - 2.5).abs() < 1e-12 && (m.se - 0.645497).abs() < 1e-6);
        assert!((m.ci95[0] - (2.5 - 3.182446 * 0.645497)).abs() < 1e-4);
        // Paired: a constant shift is certain, no change is p = 1.
        assert_eq!(paired_t_p(&[(1.0, 1.5), (2.0, 2.5)]), Some(0.0));
        assert_eq!(paired_t_p(&[(1.0, 1.0), (2.0, 2.0)]), Some(1.0));
        // differences 0.1, 0.3, -0.1, 0.2: mean 0.125, sd 0.170783, t = 1.463850, df 3
        let p = paired_t_p(&[(0.0, 0.1), (0.0, 0.3), (0.0, -0.1), (0.0, 0.2)]).unwrap();
        assert!((p - 0.239443).abs() < 1e-4, "{p}");
    }
}
