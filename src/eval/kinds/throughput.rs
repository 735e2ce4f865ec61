//! The `throughput` suite kind: times the kernels of `crate::bench` (quick sizes) and reports
//! their medians as metrics like every other suite, so `lqae-eval report` tracks them.
//!
//! Raw rates (`<kernel>/per_s`) depend on how busy the machine is (the same 2-core box has
//! given sgemm rates from about 80 to about 290 GFLOP/s), so their tolerance is wide, and they
//! are gated only against a baseline from the same machine kind: across kinds they move 4x.
//! The regression signal is in the rates normalised by sgemm's: `<kernel>/sgemm_share`
//! (achieved FLOP rate over the sgemm rate) for the matrix-multiply-bound kernels and
//! `<kernel>/per_sgemm_gflop` (items per second per sgemm GFLOP/s) for the others, each call
//! paired with one sgemm call right after it (an sgemm timed once, before the kernels, made a
//! share swing 2.6x between two runs on a busy host). sgemm itself is held by
//! `sgemm/<n>/peak_share`, its FLOP rate over the cores' FMA peak (`crate::bench::peak`),
//! paired the same way. A slowdown of our code moves them; a slower or busier machine does not.

use crate::bench::{median, Kernel};
use crate::error::{Error, Result};
use crate::eval::results::Measured;
use crate::eval::stats::{median_metric, rate_metric};
use crate::eval::suite_kind::{Ctx, Outcome, SuiteKind};
use crate::util::fsx::sha256_hex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

fn d_true() -> bool {
    true
}
fn d_budget() -> f64 {
    1.0
}
fn d_min_reps() -> usize {
    3
}
fn d_max_reps() -> usize {
    50
}
fn d_rel_raw() -> f64 {
    0.75
}
fn d_rel_norm() -> f64 {
    0.6
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThroughputSettings {
    /// Kernels whose name contains one of these; empty: every kernel.
    #[serde(default)]
    pub kernels: Vec<String>,
    /// Smaller batches for the per-image kernels (what CI runs).
    #[serde(default = "d_true")]
    pub quick: bool,
    /// Seconds of timed calls per kernel (after one untimed call), within the rep limits.
    #[serde(default = "d_budget")]
    pub budget_s: f64,
    #[serde(default = "d_min_reps")]
    pub min_reps: usize,
    #[serde(default = "d_max_reps")]
    pub max_reps: usize,
}

impl Default for ThroughputSettings {
    fn default() -> Self {
        Self {
            kernels: Vec::new(),
            quick: true,
            budget_s: d_budget(),
            min_reps: d_min_reps(),
            max_reps: d_max_reps(),
        }
    }
}

/// Relative drops the report tolerates (a fraction of the baseline value).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThroughputTolerance {
    /// For the raw rates (`per_s`), which follow the machine's load.
    #[serde(default = "d_rel_raw")]
    pub raw: f64,
    /// For the rates normalised by the same run's sgemm rate.
    #[serde(default = "d_rel_norm")]
    pub normalised: f64,
}

impl Default for ThroughputTolerance {
    fn default() -> Self {
        Self {
            raw: d_rel_raw(),
            normalised: d_rel_norm(),
        }
    }
}

/// A `throughput` suite.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThroughputSpec {
    #[serde(default)]
    pub throughput: ThroughputSettings,
    #[serde(default)]
    pub tolerance: ThroughputTolerance,
}

pub struct Throughput;

impl SuiteKind for Throughput {
    const NAME: &'static str = "throughput";
    const MACHINE_DEPENDENT: bool = true;
    const HEADLINE: &'static [&'static str] = &["per_s"];
    type Spec = ThroughputSpec;
    type Checked = ThroughputSpec;
    fn check(spec: ThroughputSpec) -> std::result::Result<ThroughputSpec, Vec<String>> {
        let problems = spec.problems();
        super::checked(spec, problems)
    }
    fn run(spec: &ThroughputSpec, cx: &Ctx) -> Result<Outcome> {
        run(spec, cx)
    }
    /// The raw rates; the shares of the same run's sgemm rate and FMA peak are gated anywhere.
    fn machine_bound(metric: &str) -> bool {
        metric.ends_with("/per_s")
    }
}

impl ThroughputSpec {
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let t = &self.throughput;
        if !(t.budget_s > 0.0 && t.budget_s.is_finite()) {
            out.push("`throughput.budget_s`: must be a positive number of seconds".into());
        }
        if t.min_reps == 0 || t.max_reps < t.min_reps {
            out.push("`throughput.min_reps`/`max_reps`: need 1 <= min_reps <= max_reps".into());
        }
        for (k, v) in [
            ("raw", self.tolerance.raw),
            ("normalised", self.tolerance.normalised),
        ] {
            if !(0.0..=1.0).contains(&v) {
                out.push(format!(
                    "`tolerance.{k}`: a fraction of the baseline in [0, 1], not {v}"
                ));
            }
        }
        out
    }
}

/// FMA chain rounds per thread for one reading of the peak (about 40 ms at 3 GHz).
const PEAK_ITERS: u64 = 20_000_000;

/// Calls of `k`, each followed by one reading of a yardstick (`yard`, a rate: sgemm's FLOP/s,
/// or the FMA peak's for sgemm itself), after one untimed call, until `budget_s` seconds
/// (both counted) have passed, within the rep limits: the call times and the readings. A busy
/// moment slows a call and the reading right after it, so their ratio holds still where a
/// yardstick timed once, before or after, would swing with it.
fn paired(
    k: &mut Kernel,
    mut yard: impl FnMut() -> Result<f64>,
    s: &ThroughputSettings,
) -> Result<(Vec<f64>, Vec<f64>)> {
    k.call()?;
    let start = std::time::Instant::now();
    let (mut times, mut rates) = (Vec::new(), Vec::new());
    while times.len() < s.min_reps
        || (times.len() < s.max_reps && start.elapsed().as_secs_f64() < s.budget_s)
    {
        let t = std::time::Instant::now();
        k.call()?;
        times.push(t.elapsed().as_secs_f64());
        rates.push(yard()?);
    }
    Ok((times, rates))
}

/// sgemm's call times, each call paired with a reading of the cores' FMA peak (FLOP/s) where
/// the CPU has an FMA vector path; elsewhere timed alone, with no readings.
fn time_sgemm(
    sgemm: &mut Kernel,
    device: &candle_core::Device,
    s: &ThroughputSettings,
) -> Result<(Vec<f64>, Vec<f64>)> {
    if device.is_cpu() && crate::bench::peak::fma_path() != "none" {
        return paired(
            sgemm,
            || {
                let p = crate::bench::peak::fma_peak(PEAK_ITERS, 1);
                Ok(p.expect("the FMA path was found") * 1e9)
            },
            s,
        );
    }
    Ok((
        sgemm.time_for(s.budget_s, s.min_reps, s.max_reps)?,
        Vec::new(),
    ))
}

/// Time the kernels (sgemm always: it is the yardstick of the normalised rates), each paired
/// call by call with its yardstick.
fn run(spec: &ThroughputSpec, cx: &Ctx) -> Result<Outcome> {
    let (device, s) = (cx.device, &spec.throughput);
    let mut kernels: Vec<Kernel> = crate::bench::selected(device, s.quick, &s.kernels)?;
    if kernels.is_empty() {
        return Err(Error::setting(
            "throughput.kernels",
            format!("no kernel name contains any of {:?}", s.kernels),
        ));
    }
    let is_sgemm = |k: &Kernel| matches!(k.id, crate::bench::KernelId::Sgemm { .. });
    let mut sgemm = match kernels.iter().position(is_sgemm) {
        Some(i) => kernels.remove(i),
        None => crate::bench::sgemm(device)?,
    };
    let sgemm_flop = sgemm.flop.expect("sgemm counts its FLOPs");
    let (sgemm_times, peaks) = time_sgemm(&mut sgemm, device, s)?;
    let peak = !peaks.is_empty();
    let line = |k: &Kernel, t: &[f64]| {
        cx.progress.line(&format!(
            "{:<32} median {:>9.3} ms over {} calls",
            k.name,
            median(t) * 1e3,
            t.len()
        ))
    };
    line(&sgemm, &sgemm_times);
    let sgemm_flops = sgemm_flop / median(&sgemm_times);
    let mut metrics = BTreeMap::new();
    let mut table = Vec::new();
    // A kernel's raw rate, its rate over the yardstick read after each call (`norm`: the
    // metric's name and what one call does per unit of the yardstick), and its table row.
    let mut record = |k: &Kernel, t: &[f64], yard: &[f64], norm: Option<(&str, f64)>| {
        metrics.insert(
            format!("{}/per_s", k.name),
            rate_metric(t, k.items, spec.tolerance.raw),
        );
        if let Some((name, per_call)) = norm {
            let ratios: Vec<f64> = t.iter().zip(yard).map(|(t, y)| per_call / t / y).collect();
            metrics.insert(
                format!("{}/{name}", k.name),
                median_metric(&ratios, spec.tolerance.normalised),
            );
        }
        let yard_gflops: Vec<f64> = yard.iter().map(|y| y / 1e9).collect();
        table.push(serde_json::json!({
            "kernel": k.name,
            "what": k.what,
            "unit": k.unit,
            "items_per_call": k.items,
            "flop_per_call": k.flop,
            "median_s": median(t),
            "calls": t.len(),
            "times_s": t,
            "gflops": k.flop.map(|f| f / median(t) / 1e9),
            "yardstick_gflops": yard_gflops,
        }));
    };
    record(
        &sgemm,
        &sgemm_times,
        &peaks,
        peak.then_some(("peak_share", sgemm_flop)),
    );
    for k in kernels.iter_mut() {
        let (t, yard) = paired(
            k,
            || {
                let t = std::time::Instant::now();
                sgemm.call()?;
                Ok(sgemm_flop / t.elapsed().as_secs_f64())
            },
            s,
        )?;
        line(k, &t);
        // Per call: the kernel's FLOP rate over the sgemm rate read right after it, or its
        // items per second per sgemm GFLOP/s.
        let norm = match k.flop {
            Some(f) => ("sgemm_share", f),
            None => ("per_sgemm_gflop", k.items * 1e9),
        };
        record(k, &t, &yard, Some(norm));
    }
    let mut extra = serde_json::Map::new();
    extra.insert("kernels".into(), table.into());
    extra.insert("sgemm_gflops".into(), (sgemm_flops / 1e9).into());
    extra.insert(
        "fma_peak".into(),
        serde_json::json!({
            "gflops": peak.then(|| median(&peaks) / 1e9),
            "vectors": crate::bench::peak::fma_path(),
        }),
    );
    extra.insert("machine".into(), crate::kernels::machine());
    extra.insert(
        "note".into(),
        "per_s: items per second (tokens, images; flop for sgemm), gated only against a baseline from the same machine kind. sgemm_share: FLOP rate over the sgemm rate of the sgemm call right after it. per_sgemm_gflop: items per second per sgemm GFLOP/s, the same way. peak_share (sgemm): its FLOP rate over the cores' FMA peak read right after each call. yardstick_gflops: those readings. Medians over calls.".into(),
    );
    let names: Vec<String> = std::iter::once(&sgemm)
        .chain(&kernels)
        .map(|k| k.name.clone())
        .collect();
    Ok(Outcome::new(Measured {
        seeds: BTreeMap::new(),
        inputs_sha256: BTreeMap::new(),
        samples_sha256: sha256_hex(names.join("\n").as_bytes()),
        metrics,
        extra,
    }))
}
