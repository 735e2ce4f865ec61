//! The Winograd transforms in AVX2 intrinsics: the generic forms' operations in the same
//! order, so the same bits (the kernels' tests check).

use super::{Dest, OutBlock, L, XI};
use std::arch::x86_64::*;

type V = __m256;

#[inline(always)]
unsafe fn k(x: f32) -> V {
    _mm256_set1_ps(x)
}

/// [`super::bt`].
#[inline(always)]
unsafe fn bt(z: [V; 6]) -> [V; 6] {
    let [z0, z1, z2, z3, z4, z5] = z;
    let (add, sub, mul) = (_mm256_add_ps, _mm256_sub_ps, _mm256_mul_ps);
    [
        add(sub(mul(k(4.0), z0), mul(k(5.0), z2)), z4),
        add(add(mul(k(-4.0), add(z1, z2)), z3), z4),
        add(sub(mul(k(4.0), sub(z1, z2)), z3), z4),
        add(sub(mul(k(2.0), sub(z3, z1)), z2), z4),
        add(sub(mul(k(2.0), sub(z1, z3)), z2), z4),
        add(sub(mul(k(4.0), z1), mul(k(5.0), z3)), z5),
    ]
}

/// [`super::at`].
#[inline(always)]
unsafe fn at(z: [V; 6]) -> [V; 4] {
    let [z0, z1, z2, z3, z4, z5] = z;
    let (add, sub, mul) = (_mm256_add_ps, _mm256_sub_ps, _mm256_mul_ps);
    let (s12, d12, s34, d34) = (add(z1, z2), sub(z1, z2), add(z3, z4), sub(z3, z4));
    [
        add(add(z0, s12), s34),
        add(d12, mul(k(2.0), d34)),
        add(s12, mul(k(4.0), s34)),
        add(add(d12, mul(k(8.0), d34)), z5),
    ]
}

/// [`super::at2`].
#[inline(always)]
unsafe fn at2(z: [V; 6]) -> [V; 2] {
    let [z0, z1, z2, z3, z4, z5] = z;
    let (add, sub, mul) = (_mm256_add_ps, _mm256_sub_ps, _mm256_mul_ps);
    [
        add(add(z0, add(z1, z2)), add(z3, z4)),
        add(add(sub(z1, z2), mul(k(2.0), sub(z3, z4))), z5),
    ]
}

/// [`super::transform_input_of`] for 6x6 patches.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn transform_input(
    xp: &[f32],
    bases: &[usize],
    cb: usize,
    plane8: usize,
    wp: usize,
    v: &mut [f32],
) {
    let (nt, c8) = (bases.len(), cb * L);
    let last = (cb.max(1) - 1) * plane8 + (5 * wp + 5) * L + L;
    let xs = super::xi_stride(nt * c8);
    assert!(bases.iter().all(|&b| b + last <= xp.len()) && v.len() >= XI * xs);
    let (x, vp) = (xp.as_ptr(), v.as_mut_ptr());
    for (t, &base) in bases.iter().enumerate() {
        for kb in 0..cb {
            let b0 = x.add(base + kb * plane8);
            let mut tq = [[_mm256_setzero_ps(); 6]; 6];
            for (q, tqq) in tq.iter_mut().enumerate() {
                let ld = |r: usize| _mm256_loadu_ps(b0.add((r * wp + q) * L));
                *tqq = bt([ld(0), ld(1), ld(2), ld(3), ld(4), ld(5)]);
            }
            #[allow(clippy::needless_range_loop)]
            for a in 0..6 {
                let vb = bt([tq[0][a], tq[1][a], tq[2][a], tq[3][a], tq[4][a], tq[5][a]]);
                for (b, &lanes) in vb.iter().enumerate() {
                    _mm256_storeu_ps(vp.add((a * 6 + b) * xs + t * c8 + kb * L), lanes);
                }
            }
        }
    }
}

/// The 6x6 -> `M`x`M` output transform of lanes `k * L..` of output channel `o`, bias
/// and ReLU applied: `M` rows of `M` vectors.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_rows<const M: usize>(
    at: impl Fn([V; 6]) -> [V; M],
    m: *const f32,
    co: usize,
    nt: usize,
    o: usize,
    kl: usize,
    bias: f32,
    relu: bool,
) -> [[V; M]; M] {
    let xs = super::xi_stride(co * nt);
    let ld = |r: usize, q: usize| _mm256_loadu_ps(m.add((r * 6 + q) * xs + o * nt + kl));
    let mut cols = [[_mm256_setzero_ps(); M]; 6];
    for (q, c) in cols.iter_mut().enumerate() {
        *c = at([ld(0, q), ld(1, q), ld(2, q), ld(3, q), ld(4, q), ld(5, q)]);
    }
    let mut rows = [[_mm256_setzero_ps(); M]; M];
    for (a, row) in rows.iter_mut().enumerate() {
        *row = at([
            cols[0][a], cols[1][a], cols[2][a], cols[3][a], cols[4][a], cols[5][a],
        ]);
        for v in row.iter_mut() {
            *v = _mm256_add_ps(*v, k(bias));
            if relu {
                *v = _mm256_max_ps(*v, _mm256_setzero_ps());
            }
        }
    }
    rows
}

/// `cols` floats of a tile's row from `src` to `row`.
#[inline(always)]
unsafe fn put<const M: usize>(src: *const f32, d: &Dest, row: *mut f32) {
    if d.cols == M {
        std::ptr::copy_nonoverlapping(src, row, M);
    } else {
        std::ptr::copy_nonoverlapping(src, row, d.cols);
    }
}

/// The output transform of `M`x`M` tiles: each output row of a group of `L` tiles
/// transposed by `spill` into a buffer where lane `l`'s row starts at `slot(l)`, then
/// copied to the tile's place.
#[inline(always)]
unsafe fn output_rows<const M: usize>(
    at: impl Fn([V; 6]) -> [V; M],
    spill: impl Fn(&[V; M], *mut f32),
    slot: impl Fn(usize) -> usize,
    ob: &OutBlock,
) {
    let mut buf = [0f32; 4 * L];
    for (o, &bias) in ob.bias.iter().enumerate().take(ob.co) {
        for (kg, group) in ob.dest.chunks(L).enumerate() {
            let m = ob.m.as_ptr();
            let rows = tile_rows::<M>(&at, m, ob.co, ob.nt, o, kg * L, bias, ob.relu);
            for (a, r) in rows.iter().enumerate() {
                let b = buf.as_mut_ptr();
                spill(r, b);
                for (l, d) in group.iter().enumerate() {
                    if a < d.rows {
                        put::<M>(b.add(slot(l)), d, ob.row(o, d, a));
                    }
                }
            }
        }
    }
}

/// [`super::transform_output_of`] for 4x4 tiles.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn transform_output4(ob: &OutBlock) {
    // 4 x 8 -> 8 x 4: lane l's row at 8 l (l < 4) or 8 (l - 4) + 4.
    let spill = |r: &[V; 4], b: *mut f32| {
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        _mm256_storeu_ps(b, _mm256_shuffle_ps::<0x44>(t0, t2));
        _mm256_storeu_ps(b.add(8), _mm256_shuffle_ps::<0xEE>(t0, t2));
        _mm256_storeu_ps(b.add(16), _mm256_shuffle_ps::<0x44>(t1, t3));
        _mm256_storeu_ps(b.add(24), _mm256_shuffle_ps::<0xEE>(t1, t3));
    };
    let slot = |l: usize| if l < 4 { 8 * l } else { 8 * (l - 4) + 4 };
    output_rows::<4>(|z| at(z), spill, slot, ob)
}

/// [`super::transform_output_of`] for 2x2 tiles.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn transform_output2(ob: &OutBlock) {
    // 2 x 8 -> 8 x 2: pairs of lanes 0, 1, 4, 5, 2, 3, 6, 7.
    let spill = |r: &[V; 2], b: *mut f32| {
        _mm256_storeu_ps(b, _mm256_unpacklo_ps(r[0], r[1]));
        _mm256_storeu_ps(b.add(8), _mm256_unpackhi_ps(r[0], r[1]));
    };
    let slot = |l: usize| 2 * ((l & 1) + 2 * ((l >> 2) & 1) + 4 * ((l >> 1) & 1));
    output_rows::<2>(|z| at2(z), spill, slot, ob)
}
