//! The cores' fused multiply-add peak, measured: the yardstick of the sgemm rate itself.
//!
//! Every other rate of the `throughput` suite is normalised by the same run's sgemm rate, so a
//! slower sgemm would pass unseen; sgemm's own share of the FMA peak does not move with a busy
//! host or another CPU (both scale the peak too), and drops when the product leaves its
//! vector path. The chains use the widest vectors the CPU has: AVX-512 where present (Zen 4
//! runs it double-pumped, at the AVX2 rate, which is then the peak too), else AVX2 with FMA.

use rayon::prelude::*;

/// Independent accumulator chains: more than the FMA latency times the issue width (4 x 2 on
/// Zen 3, Ice Lake and Sapphire Rapids), so the units never wait for a result.
const CHAINS: usize = 12;

/// GFLOP/s (a multiply-add counted as two) of `iters` rounds of twelve independent FMA chains
/// on the calling thread, in the widest vectors the CPU has; `None` without an FMA vector path
/// (not x86-64, or no AVX2 and FMA).
pub fn fma_chains(iters: u64) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above).
            return Some(unsafe { chains_avx512(iters) });
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            return Some(unsafe { chains_avx2(iters) });
        }
    }
    let _ = iters;
    None
}

/// Which vectors [`fma_chains`] uses here.
pub fn fma_path() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            return "avx512";
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return "avx2";
        }
    }
    "none"
}

/// The machine's FMA peak in GFLOP/s: every rayon thread running the chains at once, their
/// rates summed (sgemm runs on all of them); the best of `rounds` (a peak: a busy moment only
/// lowers it). `None` where [`fma_chains`] is.
pub fn fma_peak(iters: u64, rounds: usize) -> Option<f64> {
    let threads = rayon::current_num_threads();
    (0..rounds.max(1))
        .map(|_| {
            (0..threads)
                .into_par_iter()
                .map(|_| fma_chains(iters))
                .sum::<Option<f64>>()
        })
        .try_fold(0f64, |best, r| r.map(|r| best.max(r)))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn chains_avx2(iters: u64) -> f64 {
    use std::arch::x86_64::*;
    let (a, b) = (_mm256_set1_ps(0.999_9), _mm256_set1_ps(1e-4));
    let mut acc = [_mm256_set1_ps(0.5); CHAINS];
    let t = std::time::Instant::now();
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm256_fmadd_ps(*v, a, b);
        }
    }
    let dt = t.elapsed().as_secs_f64();
    // Every chain's result is used, or the compiler drops the chains nobody reads.
    let mut sum = [0f32; 8];
    for v in acc {
        _mm256_storeu_ps(sum.as_mut_ptr(), v);
        std::hint::black_box(sum);
    }
    (iters * CHAINS as u64 * 16) as f64 / dt / 1e9
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn chains_avx512(iters: u64) -> f64 {
    use std::arch::x86_64::*;
    let (a, b) = (_mm512_set1_ps(0.999_9), _mm512_set1_ps(1e-4));
    let mut acc = [_mm512_set1_ps(0.5); CHAINS];
    let t = std::time::Instant::now();
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm512_fmadd_ps(*v, a, b);
        }
    }
    let dt = t.elapsed().as_secs_f64();
    let mut sum = [0f32; 16];
    for v in acc {
        _mm512_storeu_ps(sum.as_mut_ptr(), v);
        std::hint::black_box(sum);
    }
    (iters * CHAINS as u64 * 32) as f64 / dt / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The peak is a rate a core can reach: positive, and no more than 64 FLOP per cycle per
    /// thread at 6 GHz (two 16-lane FMA units); the all-thread peak is at least one thread's
    /// and at most the threads' count of it (a loose bound: one thread may be unlucky).
    #[test]
    fn fma_peak_is_a_plausible_rate() {
        let Some(one) = fma_chains(2_000_000) else {
            assert_eq!(fma_path(), "none");
            eprintln!("no FMA vector path on this CPU: nothing to measure");
            return;
        };
        assert!(one > 0.0 && one < 64.0 * 6.0, "{one} GFLOP/s on one thread");
        let all = fma_peak(2_000_000, 3).unwrap();
        let threads = rayon::current_num_threads() as f64;
        assert!(
            all < 64.0 * 6.0 * threads,
            "{all} GFLOP/s on {threads} threads"
        );
        assert!(
            all > 0.2 * one,
            "{all} GFLOP/s on all threads against {one} on one"
        );
    }
}
