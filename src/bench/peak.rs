//! The cores' fused multiply-add peak, measured: the yardstick of the sgemm rate itself.
//!
//! Every other rate of the `throughput` suite is normalised by the same run's sgemm rate, so a
//! slower sgemm would pass unseen; sgemm's own share of the FMA peak does not move with a busy
//! host or another CPU (both scale the peak too), and drops when the product leaves its
//! vector path. The chains use the widest vectors the CPU has: AVX-512 where present (Zen 4
//! runs it double-pumped, at the AVX2 rate, which is then the peak too), else AVX2 with FMA.
//! The chains are written in assembly, so that an unoptimised (test) build measures the same
//! peak as a release build: in Rust, a debug build kept the accumulators in memory and read a
//! peak 20x too low. They multiply and add zeros (never a denormal, at full rate).

use rayon::prelude::*;

/// Independent accumulator chains: more than the FMA latency times the issue width (4 x 2 on
/// Zen 3, Ice Lake and Sapphire Rapids), so the units never wait for a result.
const CHAINS: usize = 12;

/// GFLOP/s (a multiply-add counted as two) of `iters` rounds of twelve independent FMA chains
/// on the calling thread, in the widest vectors the CPU has; `None` without an FMA vector path
/// (not x86-64, or no AVX2 and FMA).
pub fn fma_chains(iters: u64) -> Option<f64> {
    match fma_path() {
        // SAFETY: the CPU has AVX-512F (fma_path checked).
        #[cfg(target_arch = "x86_64")]
        "avx512" => Some(unsafe { chains_avx512(iters) }),
        // SAFETY: the CPU has AVX2 and FMA (fma_path checked).
        #[cfg(target_arch = "x86_64")]
        "avx2" => Some(unsafe { chains_avx2(iters) }),
        _ => None,
    }
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
    let t = std::time::Instant::now();
    // SAFETY: registers only (declared clobbered); the caller checked the CPU's features.
    std::arch::asm!(
        "vxorps ymm0, ymm0, ymm0",
        "vxorps ymm1, ymm1, ymm1",
        "vxorps ymm2, ymm2, ymm2",
        "vxorps ymm3, ymm3, ymm3",
        "vxorps ymm4, ymm4, ymm4",
        "vxorps ymm5, ymm5, ymm5",
        "vxorps ymm6, ymm6, ymm6",
        "vxorps ymm7, ymm7, ymm7",
        "vxorps ymm8, ymm8, ymm8",
        "vxorps ymm9, ymm9, ymm9",
        "vxorps ymm10, ymm10, ymm10",
        "vxorps ymm11, ymm11, ymm11",
        "vxorps ymm12, ymm12, ymm12",
        "vxorps ymm13, ymm13, ymm13",
        "2:",
        "vfmadd231ps ymm0, ymm12, ymm13",
        "vfmadd231ps ymm1, ymm12, ymm13",
        "vfmadd231ps ymm2, ymm12, ymm13",
        "vfmadd231ps ymm3, ymm12, ymm13",
        "vfmadd231ps ymm4, ymm12, ymm13",
        "vfmadd231ps ymm5, ymm12, ymm13",
        "vfmadd231ps ymm6, ymm12, ymm13",
        "vfmadd231ps ymm7, ymm12, ymm13",
        "vfmadd231ps ymm8, ymm12, ymm13",
        "vfmadd231ps ymm9, ymm12, ymm13",
        "vfmadd231ps ymm10, ymm12, ymm13",
        "vfmadd231ps ymm11, ymm12, ymm13",
        "dec {n}",
        "jnz 2b",
        n = inout(reg) iters.max(1) => _,
        out("ymm0") _,
        out("ymm1") _,
        out("ymm2") _,
        out("ymm3") _,
        out("ymm4") _,
        out("ymm5") _,
        out("ymm6") _,
        out("ymm7") _,
        out("ymm8") _,
        out("ymm9") _,
        out("ymm10") _,
        out("ymm11") _,
        out("ymm12") _,
        out("ymm13") _,
        options(nostack, nomem),
    );
    (iters.max(1) * CHAINS as u64 * 16) as f64 / t.elapsed().as_secs_f64() / 1e9
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn chains_avx512(iters: u64) -> f64 {
    let t = std::time::Instant::now();
    // SAFETY: registers only (declared clobbered); the caller checked the CPU's features.
    std::arch::asm!(
        "vpxord zmm0, zmm0, zmm0",
        "vpxord zmm1, zmm1, zmm1",
        "vpxord zmm2, zmm2, zmm2",
        "vpxord zmm3, zmm3, zmm3",
        "vpxord zmm4, zmm4, zmm4",
        "vpxord zmm5, zmm5, zmm5",
        "vpxord zmm6, zmm6, zmm6",
        "vpxord zmm7, zmm7, zmm7",
        "vpxord zmm8, zmm8, zmm8",
        "vpxord zmm9, zmm9, zmm9",
        "vpxord zmm10, zmm10, zmm10",
        "vpxord zmm11, zmm11, zmm11",
        "vpxord zmm12, zmm12, zmm12",
        "vpxord zmm13, zmm13, zmm13",
        "2:",
        "vfmadd231ps zmm0, zmm12, zmm13",
        "vfmadd231ps zmm1, zmm12, zmm13",
        "vfmadd231ps zmm2, zmm12, zmm13",
        "vfmadd231ps zmm3, zmm12, zmm13",
        "vfmadd231ps zmm4, zmm12, zmm13",
        "vfmadd231ps zmm5, zmm12, zmm13",
        "vfmadd231ps zmm6, zmm12, zmm13",
        "vfmadd231ps zmm7, zmm12, zmm13",
        "vfmadd231ps zmm8, zmm12, zmm13",
        "vfmadd231ps zmm9, zmm12, zmm13",
        "vfmadd231ps zmm10, zmm12, zmm13",
        "vfmadd231ps zmm11, zmm12, zmm13",
        "dec {n}",
        "jnz 2b",
        n = inout(reg) iters.max(1) => _,
        out("zmm0") _,
        out("zmm1") _,
        out("zmm2") _,
        out("zmm3") _,
        out("zmm4") _,
        out("zmm5") _,
        out("zmm6") _,
        out("zmm7") _,
        out("zmm8") _,
        out("zmm9") _,
        out("zmm10") _,
        out("zmm11") _,
        out("zmm12") _,
        out("zmm13") _,
        options(nostack, nomem),
    );
    (iters.max(1) * CHAINS as u64 * 32) as f64 / t.elapsed().as_secs_f64() / 1e9
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
