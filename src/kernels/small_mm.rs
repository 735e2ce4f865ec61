//! The attention's small products (`s x s x dh`, `s x dh x s` per batch row and head, 64 x 64 x
//! 32 in the ViT and the LM) in registers, with the same sums as the gemm crate's: each output
//! `beta * sum_k a_ik b_kj`, the sum a chain of fused multiply-adds in the order of `k` from
//! zero, as the gemm crate's microkernels accumulate for `k <= 512` (one depth block). So the
//! bits are the gemm crate's (a test compares them); a vendor BLAS's products are not touched
//! (`blas::sgemm_small` calls this only on the gemm crate's path).
//!
//! Why: for products this small the gemm crate's fixed costs (dispatch, a packing buffer
//! allocated per call, both operands packed) took about half of each call (37-56 GFLOP/s per
//! thread in `LQAE_BLAS_PROFILE=1 kernel_loop vit-block`, against 80-86 for the block's dense
//! products on the same thread). Here the right operand is read in place when its rows are
//! contiguous, else transposed once into scratch, and the left operand is broadcast from
//! wherever it lies.

/// Whether [`run`] takes a product of these sizes: at most 64 x 64 outputs (the gemm crate's
/// small-size path, beyond which its own blocking pays), more than 256 of them (smaller ones
/// take its horizontal kernels, summed differently), a depth of 3 to 512 (shallower ones take
/// its outer-product path, deeper ones are split in blocks), whole vectors of 8 columns, and
/// AVX2 with FMA on this CPU.
pub(crate) fn fits(m: usize, n: usize, k: usize) -> bool {
    m <= 64 && n <= 64 && m * n > 256 && (3..=512).contains(&k) && n.is_multiple_of(8) && avx2_fma()
}

fn avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `dst (m x n, row stride dst_rs, unit column stride) = beta * lhs (m x k) @ rhs (k x n)`,
/// operands by their (row, column) strides; `dst` is not read.
///
/// # Safety
/// [`fits`] must hold for `m, n, k`, and every pointer with its strides must address valid
/// memory for the given sizes.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn run(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    lhs: *const f32,
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: *const f32,
    (rhs_rs, rhs_cs): (usize, usize),
    beta: f32,
) {
    debug_assert!(fits(m, n, k));
    #[cfg(target_arch = "x86_64")]
    {
        let a = Lhs {
            p: lhs,
            rs: lhs_rs,
            cs: lhs_cs,
        };
        if rhs_cs == 1 {
            avx2::product(m, n, k, dst, dst_rs, a, rhs, rhs_rs, beta);
        } else {
            // The right operand gathered into `k x n` contiguous rows first.
            super::with_scratch(k * n, |bt| {
                let bt = bt.as_mut_ptr();
                if rhs_rs == 1 && k.is_multiple_of(8) {
                    // A transposed row-major matrix (keys, values): 8 x 8 blocks.
                    for j in (0..n).step_by(8) {
                        for kk in (0..k).step_by(8) {
                            avx2::transpose8(
                                rhs.add(j * rhs_cs + kk),
                                rhs_cs,
                                bt.add(kk * n + j),
                                n,
                            );
                        }
                    }
                } else {
                    for j in 0..n {
                        for kk in 0..k {
                            *bt.add(kk * n + j) = *rhs.add(j * rhs_cs + kk * rhs_rs);
                        }
                    }
                }
                avx2::product(m, n, k, dst, dst_rs, a, bt, n, beta);
            });
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (
            m, n, k, dst, dst_rs, lhs, lhs_rs, lhs_cs, rhs, rhs_rs, rhs_cs, beta,
        );
        unreachable!("small_mm::fits is false off x86-64");
    }
}

/// The left operand: element `(i, k)` at `p + i * rs + k * cs`.
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Lhs {
    p: *const f32,
    rs: usize,
    cs: usize,
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::Lhs;
    use std::arch::x86_64::*;

    /// Rows in blocks of 6 and columns in blocks of 16 (12 accumulators, two right-operand
    /// vectors and a broadcast: 15 of the 16 vector registers), the last blocks narrower.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn product(
        m: usize,
        n: usize,
        k: usize,
        dst: *mut f32,
        dst_rs: usize,
        a: Lhs,
        b: *const f32,
        ldb: usize,
        beta: f32,
    ) {
        let mut j = 0;
        while j < n {
            let wide = n - j >= 16;
            let mut i = 0;
            while i < m {
                let rows = (m - i).min(6);
                let a = Lhs {
                    p: a.p.add(i * a.rs),
                    ..a
                };
                let (c, bj) = (dst.add(i * dst_rs + j), b.add(j));
                macro_rules! go {
                    ($($r:literal),*) => {
                        match (rows, wide) {
                            $(($r, true) => block::<$r, 2>(k, a, bj, ldb, c, dst_rs, beta),
                              ($r, false) => block::<$r, 1>(k, a, bj, ldb, c, dst_rs, beta),)*
                            _ => unreachable!(),
                        }
                    };
                }
                go!(1, 2, 3, 4, 5, 6);
                i += rows;
            }
            j += if wide { 16 } else { 8 };
        }
    }

    /// The 8 x 8 block at `src` (row stride `src_rs`) transposed into `dst` (row stride
    /// `dst_rs`).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn transpose8(src: *const f32, src_rs: usize, dst: *mut f32, dst_rs: usize) {
        let r = |i: usize| _mm256_loadu_ps(src.add(i * src_rs));
        let (r0, r1, r2, r3) = (r(0), r(1), r(2), r(3));
        let (r4, r5, r6, r7) = (r(4), r(5), r(6), r(7));
        // Rows interleaved in pairs, then in fours: u0 holds columns 0 and 4 of rows 0-3 (one
        // 128-bit lane each), u1 columns 1 and 5, ...; u4-u7 the same of rows 4-7.
        let (t0, t1) = (_mm256_unpacklo_ps(r0, r1), _mm256_unpackhi_ps(r0, r1));
        let (t2, t3) = (_mm256_unpacklo_ps(r2, r3), _mm256_unpackhi_ps(r2, r3));
        let (t4, t5) = (_mm256_unpacklo_ps(r4, r5), _mm256_unpackhi_ps(r4, r5));
        let (t6, t7) = (_mm256_unpacklo_ps(r6, r7), _mm256_unpackhi_ps(r6, r7));
        let u = [
            _mm256_shuffle_ps::<0x44>(t0, t2),
            _mm256_shuffle_ps::<0xEE>(t0, t2),
            _mm256_shuffle_ps::<0x44>(t1, t3),
            _mm256_shuffle_ps::<0xEE>(t1, t3),
            _mm256_shuffle_ps::<0x44>(t4, t6),
            _mm256_shuffle_ps::<0xEE>(t4, t6),
            _mm256_shuffle_ps::<0x44>(t5, t7),
            _mm256_shuffle_ps::<0xEE>(t5, t7),
        ];
        for c in 0..4 {
            let (x, y) = (u[c], u[c + 4]);
            _mm256_storeu_ps(dst.add(c * dst_rs), _mm256_permute2f128_ps::<0x20>(x, y));
            let hi = _mm256_permute2f128_ps::<0x31>(x, y);
            _mm256_storeu_ps(dst.add((c + 4) * dst_rs), hi);
        }
    }

    /// `R` rows by `8 V` columns: `c = beta * a @ b`, each sum a fused multiply-add chain over
    /// `k` in order from zero (the gemm crate's order).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block<const R: usize, const V: usize>(
        k: usize,
        a: Lhs,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        beta: f32,
    ) {
        let mut acc = [[_mm256_setzero_ps(); V]; R];
        for kk in 0..k {
            let bp = b.add(kk * ldb);
            let mut bv = [_mm256_setzero_ps(); V];
            for (v, x) in bv.iter_mut().enumerate() {
                *x = _mm256_loadu_ps(bp.add(8 * v));
            }
            let ak = a.p.add(kk * a.cs);
            for (r, row) in acc.iter_mut().enumerate() {
                let x = _mm256_set1_ps(*ak.add(r * a.rs));
                for (s, &y) in row.iter_mut().zip(&bv) {
                    *s = _mm256_fmadd_ps(x, y, *s);
                }
            }
        }
        let beta = _mm256_set1_ps(beta);
        for (r, row) in acc.iter().enumerate() {
            for (v, &s) in row.iter().enumerate() {
                _mm256_storeu_ps(c.add(r * ldc + 8 * v), _mm256_mul_ps(beta, s));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::blas::{gemm_crate, Par};

    /// Every layout the attention uses (a packed `qkv` row of stride `3 d`, the `s x s` scores
    /// plain and transposed), at the ViT's and the LM's sizes and at odd ones: the same bits as
    /// the gemm crate's product.
    #[test]
    fn small_products_give_the_gemm_crates_bits() {
        if !avx2_fma() {
            eprintln!("no AVX2 with FMA on this CPU: the gemm crate takes every product here");
            return;
        }
        let mut checked = 0;
        for &(s, dh, heads) in &[
            (64, 32, 6),
            (64, 64, 2),
            (49, 16, 3),
            (17, 24, 2),
            (64, 8, 4),
            (64, 12, 2),
        ] {
            let d = dh * heads;
            let qkv = crate::rng::Rng::new(90 + s as u64).normal_vec(s * 3 * d, 1.0);
            let sq = crate::rng::Rng::new(91 + dh as u64).normal_vec(s * s, 1.0);
            let g = crate::rng::Rng::new(92).normal_vec(s * d, 1.0);
            let h = heads - 1;
            let (q, kk, v) = (h * dh, d + h * dh, 2 * d + h * dh);
            let w3 = 3 * d;
            // (m, n, k, dst row stride, lhs, lhs strides, rhs, rhs strides, beta)
            type Case<'a> = (
                usize,
                usize,
                usize,
                usize,
                &'a [f32],
                (usize, usize),
                &'a [f32],
                (usize, usize),
                f32,
            );
            let cases: [Case; 6] = [
                (s, s, dh, s, &qkv[q..], (w3, 1), &qkv[kk..], (1, w3), 0.17),
                (s, dh, s, d, &sq, (s, 1), &qkv[v..], (w3, 1), 1.0),
                (s, dh, s, w3, &sq, (1, s), &g[h * dh..], (d, 1), 1.0),
                (s, s, dh, s, &g[h * dh..], (d, 1), &qkv[v..], (1, w3), 1.0),
                (s, dh, s, w3, &sq, (s, 1), &qkv[kk..], (w3, 1), 0.17),
                (s, dh, s, w3, &sq, (1, s), &qkv[q..], (w3, 1), 0.17),
            ];
            for (c, &(m, n, k, ldc, a, sa, b, sb, beta)) in cases.iter().enumerate() {
                if !fits(m, n, k) {
                    continue;
                }
                let mut ours = vec![f32::NAN; m * ldc];
                let mut theirs = vec![f32::NAN; m * ldc];
                unsafe {
                    let (a, b) = (a.as_ptr(), b.as_ptr());
                    run(m, n, k, ours.as_mut_ptr(), ldc, a, sa, b, sb, beta);
                    let dst = theirs.as_mut_ptr();
                    gemm_crate(m, n, k, dst, ldc, false, a, sa, b, sb, 0.0, beta, Par::None);
                }
                for i in 0..m {
                    for j in 0..n {
                        let (x, y) = (ours[i * ldc + j], theirs[i * ldc + j]);
                        assert_eq!(
                            x.to_bits(),
                            y.to_bits(),
                            "s {s} dh {dh} case {c} ({m} x {n} x {k}) at ({i}, {j}): {x} against {y}"
                        );
                    }
                    // Columns past n are not written.
                    assert!(ours[i * ldc + n..(i + 1) * ldc].iter().all(|v| v.is_nan()));
                }
                checked += 1;
            }
        }
        assert!(checked >= 20, "only {checked} products fit");
    }
}
