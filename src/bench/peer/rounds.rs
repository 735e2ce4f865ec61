//! Side-by-side rounds: every kernel timed on our side and the peer's, alternating, `rounds`
//! times, so that a busy moment of the machine hits both; medians, ratios and each side's
//! share of its own sgemm rate.

use super::Peer;
use crate::bench::{median, Kernel, KernelId};
use crate::error::Result;
use serde::Serialize;

/// One kernel's figures from a side-by-side run.
#[derive(Debug, Clone, Serialize)]
pub struct KernelFigures {
    pub kernel: String,
    pub what: String,
    pub unit: String,
    pub items: f64,
    pub flop: Option<f64>,
    /// Median over rounds of each round's median, seconds per call.
    pub ours_s: f64,
    pub peer_s: Option<f64>,
    /// `search-cdist/..` on the peer, for the search kernels.
    pub peer_cdist_s: Option<f64>,
    /// Median over rounds of ours/theirs time ratios (below 1: we are faster).
    pub ratio: Option<f64>,
    pub ratio_range: Option<[f64; 2]>,
    /// With a BLAS loaded: our kernel on the gemm crate instead, timed in the same rounds, and
    /// that time over the peer's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ours_gemm_crate_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gemm_crate_ratio: Option<f64>,
    pub ours_gflops: Option<f64>,
    pub peer_gflops: Option<f64>,
    /// Our GFLOP/s over our sgemm rate; the peer's over torch's sgemm rate.
    pub ours_sgemm_share: Option<f64>,
    pub peer_sgemm_share: Option<f64>,
    pub rounds: usize,
}

/// Time every kernel on both sides, `rounds` times, alternating.
pub fn side_by_side(
    kernels: &mut [Kernel],
    mut peer: Option<&mut Peer>,
    rounds: usize,
    budget_s: f64,
    progress: bool,
) -> Result<Vec<KernelFigures>> {
    let mut ours: Vec<Vec<f64>> = vec![Vec::new(); kernels.len()];
    let mut ours_gemm: Vec<Vec<f64>> = vec![Vec::new(); kernels.len()];
    let mut theirs: Vec<Vec<f64>> = vec![Vec::new(); kernels.len()];
    let mut cdist: Vec<Vec<f64>> = vec![Vec::new(); kernels.len()];
    // With a BLAS loaded, our kernels are also timed on the gemm crate, in the same rounds.
    let both =
        crate::kernels::blas::active().is_some() && kernels.iter().all(|k| k.device.is_cpu());
    for r in 0..rounds {
        for (i, k) in kernels.iter_mut().enumerate() {
            let t = median(&k.time_for(budget_s, 1, 50)?);
            ours[i].push(t);
            let mut line = format!(
                "round {}/{rounds} {:<28} ours {:>9.3} ms",
                r + 1,
                k.name,
                t * 1e3
            );
            if let Some(report) = crate::kernels::blas::profile_report() {
                eprintln!("{} (round {}):\n{report}", k.name, r + 1);
            }
            if both {
                crate::kernels::blas::set_enabled(false);
                let g = k.time_for(budget_s, 1, 50);
                let report = crate::kernels::blas::profile_report();
                crate::kernels::blas::set_enabled(true);
                let g = median(&g?);
                if let Some(report) = report {
                    eprintln!("{} (round {}):\n{report}", k.name, r + 1);
                }
                ours_gemm[i].push(g);
                line.push_str(&format!("  gemm crate {:>9.3} ms", g * 1e3));
            }
            if let Some(p) = peer.as_deref_mut() {
                if k.id.peer_has() {
                    let pt = median(&p.time(&k.name, budget_s, 1, 50)?);
                    theirs[i].push(pt);
                    line.push_str(&format!("  peer {:>9.3} ms", pt * 1e3));
                    if let Some(name) = k.id.peer_cdist() {
                        let ct = median(&p.time(&name, budget_s, 1, 50)?);
                        cdist[i].push(ct);
                        line.push_str(&format!("  peer cdist {:>9.3} ms", ct * 1e3));
                    }
                }
            }
            if progress {
                eprintln!("{line}");
            }
        }
    }
    let sgemm_i = kernels
        .iter()
        .position(|k| matches!(k.id, KernelId::Sgemm { .. }));
    let rate = |times: &[f64], k: &Kernel| {
        k.flop
            .filter(|_| !times.is_empty())
            .map(|f| f / median(times) / 1e9)
    };
    let our_sgemm = sgemm_i.and_then(|i| rate(&ours[i], &kernels[i]));
    let peer_sgemm = sgemm_i.and_then(|i| rate(&theirs[i], &kernels[i]));
    let mut rows = Vec::new();
    for (i, k) in kernels.iter().enumerate() {
        let ratios: Vec<f64> = ours[i].iter().zip(&theirs[i]).map(|(a, b)| a / b).collect();
        let g_ratios: Vec<f64> = ours_gemm[i]
            .iter()
            .zip(&theirs[i])
            .map(|(a, b)| a / b)
            .collect();
        let og = rate(&ours[i], k);
        let pg = rate(&theirs[i], k);
        rows.push(KernelFigures {
            kernel: k.name.clone(),
            what: k.what.clone(),
            unit: k.unit.into(),
            items: k.items,
            flop: k.flop,
            ours_s: median(&ours[i]),
            peer_s: (!theirs[i].is_empty()).then(|| median(&theirs[i])),
            peer_cdist_s: (!cdist[i].is_empty()).then(|| median(&cdist[i])),
            ratio: (!ratios.is_empty()).then(|| median(&ratios)),
            ratio_range: (!ratios.is_empty()).then(|| {
                [
                    ratios.iter().cloned().fold(f64::INFINITY, f64::min),
                    ratios.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
                ]
            }),
            ours_gemm_crate_s: (!ours_gemm[i].is_empty()).then(|| median(&ours_gemm[i])),
            gemm_crate_ratio: (!g_ratios.is_empty()).then(|| median(&g_ratios)),
            ours_gflops: og,
            peer_gflops: pg,
            ours_sgemm_share: og.zip(our_sgemm).map(|(a, s)| a / s),
            peer_sgemm_share: pg.zip(peer_sgemm).map(|(a, s)| a / s),
            rounds,
        });
    }
    Ok(rows)
}

fn ms(s: Option<f64>) -> String {
    s.map(|s| format!("{:.2}", s * 1e3))
        .unwrap_or_else(|| "-".into())
}

fn pct(x: Option<f64>) -> String {
    x.map(|x| format!("{:.0}%", 100.0 * x))
        .unwrap_or_else(|| "-".into())
}

/// The Markdown table of a side-by-side run.
pub fn markdown(rows: &[KernelFigures]) -> String {
    let mut s = String::from(
        "| kernel | ours ms | PyTorch ms | ours/PyTorch (range) | ours GFLOP/s | share of our sgemm | PyTorch GFLOP/s | PyTorch share of its sgemm | PyTorch cdist ms | ours on the gemm crate ms (/PyTorch) |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let ratio = match (r.ratio, r.ratio_range) {
            (Some(x), Some([lo, hi])) => format!("{x:.2} ({lo:.2}-{hi:.2})"),
            _ => "-".into(),
        };
        let g = |x: Option<f64>| x.map(|x| format!("{x:.0}")).unwrap_or_else(|| "-".into());
        let on_gemm = match (r.ours_gemm_crate_s, r.gemm_crate_ratio) {
            (Some(t), Some(x)) => format!("{} ({x:.2})", ms(Some(t))),
            (Some(t), None) => ms(Some(t)),
            _ => "-".into(),
        };
        s.push_str(&format!(
            "| {} | {} | {} | {ratio} | {} | {} | {} | {} | {} | {on_gemm} |\n",
            r.kernel,
            ms(Some(r.ours_s)),
            ms(r.peer_s),
            g(r.ours_gflops),
            pct(r.ours_sgemm_share),
            g(r.peer_gflops),
            pct(r.peer_sgemm_share),
            ms(r.peer_cdist_s),
        ));
    }
    s
}
