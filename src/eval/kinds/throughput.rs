//! The `throughput` suite kind: times the kernels of `crate::bench` (quick sizes) and reports
//! their medians as metrics like every other suite, so `lqae-eval report` tracks them.
//!
//! Raw rates (`<kernel>/per_s`) depend on how busy the machine is (the same 2-core box has
//! given sgemm rates from about 100 to about 290 GFLOP/s on different days), so their
//! tolerance is wide. The regression signal is in the rates normalised by the sgemm rate of
//! the same run: `<kernel>/sgemm_share` (achieved FLOP rate over the sgemm rate) for the
//! matrix-multiply-bound kernels and `<kernel>/per_sgemm_gflop` (items per second per sgemm
//! GFLOP/s) for the others. A slowdown of our code moves them; a slower machine does not.
//! sgemm itself is held by `sgemm/<n>/peak_share`, its FLOP rate over the cores' FMA peak
//! (`crate::bench::peak`), each timed call paired with a reading of the peak. Raw rates are
//! gated only against a baseline from the same machine kind: across kinds they move 4x.

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

/// sgemm's share of the cores' FMA peak (the yardstick's own yardstick), each timed sgemm call
/// paired with a reading of the peak right after it, so that a busy moment lowers both: the
/// per-pair shares and the peak readings (GFLOP/s). `None` without an FMA vector path.
fn peak_share(sgemm: &mut Kernel, s: &ThroughputSettings) -> Result<Option<(Vec<f64>, Vec<f64>)>> {
    let Some(flop) = sgemm.flop else {
        return Ok(None);
    };
    if crate::bench::peak::fma_chains(1).is_none() {
        return Ok(None);
    }
    let start = std::time::Instant::now();
    let (mut shares, mut peaks) = (Vec::new(), Vec::new());
    while shares.len() < s.min_reps
        || (shares.len() < s.max_reps && start.elapsed().as_secs_f64() < s.budget_s)
    {
        let t = std::time::Instant::now();
        sgemm.call()?;
        let dt = t.elapsed().as_secs_f64();
        let Some(p) = crate::bench::peak::fma_peak(PEAK_ITERS, 1) else {
            return Ok(None);
        };
        shares.push(flop / dt / (p * 1e9));
        peaks.push(p);
    }
    Ok(Some((shares, peaks)))
}

/// Time the kernels (sgemm always: it is the yardstick of the normalised rates).
fn run(spec: &ThroughputSpec, cx: &Ctx) -> Result<Outcome> {
    let (device, s) = (cx.device, &spec.throughput);
    let mut kernels: Vec<Kernel> = crate::bench::selected(device, s.quick, &s.kernels)?;
    if kernels.is_empty() {
        return Err(Error::setting(
            "throughput.kernels",
            format!("no kernel name contains any of {:?}", s.kernels),
        ));
    }
    if !kernels
        .iter()
        .any(|k| matches!(k.id, crate::bench::KernelId::Sgemm { .. }))
    {
        kernels.insert(0, crate::bench::sgemm(device)?);
    }
    let mut times = Vec::new();
    for k in kernels.iter_mut() {
        let t = k.time_for(s.budget_s, s.min_reps, s.max_reps)?;
        cx.progress.line(&format!(
            "{:<32} median {:>9.3} ms over {} calls",
            k.name,
            median(&t) * 1e3,
            t.len()
        ));
        times.push(t);
    }
    let si = kernels
        .iter()
        .position(|k| matches!(k.id, crate::bench::KernelId::Sgemm { .. }))
        .expect("sgemm is always timed");
    let sgemm_flops = kernels[si].flop.unwrap_or(0.0) / median(&times[si]);
    let mut metrics = BTreeMap::new();
    let peak = if device.is_cpu() {
        peak_share(&mut kernels[si], s)?
    } else {
        None
    };
    if let Some((shares, _)) = &peak {
        metrics.insert(
            format!("{}/peak_share", kernels[si].name),
            median_metric(shares, spec.tolerance.normalised),
        );
    }
    let mut table = Vec::new();
    for (k, t) in kernels.iter().zip(&times) {
        metrics.insert(
            format!("{}/per_s", k.name),
            rate_metric(t, k.items, spec.tolerance.raw),
        );
        let (norm_name, norm) = match k.flop {
            Some(f) => (
                "sgemm_share",
                rate_metric(t, f / sgemm_flops, spec.tolerance.normalised),
            ),
            None => (
                "per_sgemm_gflop",
                rate_metric(t, k.items / (sgemm_flops / 1e9), spec.tolerance.normalised),
            ),
        };
        if !matches!(k.id, crate::bench::KernelId::Sgemm { .. }) {
            metrics.insert(format!("{}/{norm_name}", k.name), norm);
        }
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
        }));
    }
    let mut extra = serde_json::Map::new();
    extra.insert("kernels".into(), table.into());
    extra.insert("sgemm_gflops".into(), (sgemm_flops / 1e9).into());
    extra.insert(
        "fma_peak".into(),
        serde_json::json!({
            "gflops": peak.as_ref().map(|(_, p)| median(p)),
            "vectors": crate::bench::peak::fma_path(),
        }),
    );
    extra.insert("machine".into(), crate::kernels::machine());
    extra.insert(
        "note".into(),
        "per_s: items per second (tokens, images; flop for sgemm), gated only against a baseline from the same machine kind. sgemm_share: FLOP rate over the same run's sgemm rate. per_sgemm_gflop: items per second per sgemm GFLOP/s. peak_share (sgemm): its FLOP rate over the cores' FMA peak measured in the same run. Medians over calls.".into(),
    );
    let names: Vec<String> = kernels.iter().map(|k| k.name.clone()).collect();
    Ok(Outcome::new(Measured {
        seeds: BTreeMap::new(),
        inputs_sha256: BTreeMap::new(),
        samples_sha256: sha256_hex(names.join("\n").as_bytes()),
        metrics,
        extra,
    }))
}
