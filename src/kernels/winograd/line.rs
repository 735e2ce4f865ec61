//! 1x7, 7x1, 1x3 and 3x1 stride-1 convolutions (Inception-v3's factorised layers: a third of
//! its product time on im2col) by 1-D Winograd: each run of `m` outputs along a line (a row
//! for a 1 x r kernel, a column for r x 1) comes from its `n = m + r - 1` inputs `d` as
//! `A^T [(G g) .* (B^T d)]`, `n` multiplications per input channel instead of `m r`.
//! F(2, 7) takes the points of F(4x4, 5x5) (0, +-1, +-2, +-1/2, infinity: 8 products for 14,
//! and that tile's factored `B^T`), F(4, 3) those of F(4x4, 3x3) (0, +-1, +-2, infinity: 6 for
//! 12, its hand-written transforms). Summed over the input channels the `n` positions are `n`
//! matrix products, `M_xi (co x tiles) = U_xi (co x C) . V_xi (C x tiles)`, on the BLAS path.
//!
//! The layout follows the 2-D path ([`super::Wino`]): the input copied once into zero-padded
//! planes, eight channels interleaved to a pixel, padded along the line to whole tiles; then
//! blocks of tiles (of all the call's images) transformed, multiplied and transformed back
//! with bias and ReLU straight into the output. The transforms run on eight channels (input)
//! and eight tiles (output) a vector.

use super::super::SendPtr;
use super::{
    block_tiles, lanes, min_channels, padded_planes, toom_cook, winograd_enabled, xi_stride,
    Hand43, Lanes, Mat45, Mats, Xform, L, MIN_TILES, P,
};

/// F(2, 7)'s points but infinity (those of F(4x4, 5x5)).
const P7: [f64; 7] = [0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5];

/// Outputs per tile for a kernel of length `r`, and the finite points; `None` for a length
/// the path does not compute.
fn tile(r: usize) -> Option<(usize, &'static [f64])> {
    match r {
        3 => Some((4, &P)),
        7 => Some((2, &P7)),
        _ => None,
    }
}

/// The Toom-Cook matrices of the tile for a kernel of length `r` (3 or 7).
pub(crate) fn mats(r: usize) -> Mats {
    let (m, p) = tile(r).expect("a kernel length of 3 or 7");
    toom_cook(m, r, p)
}

/// F(2, 7): `B^T` of F(4x4, 5x5) (the same points), and its own `A^T` (2 x 8).
pub(crate) struct Line27;

impl Xform<8, 2> for Line27 {
    #[inline(always)]
    fn bt(z: &[Lanes; 8]) -> [Lanes; 8] {
        Mat45::bt(z)
    }
    #[inline(always)]
    fn at(z: &[Lanes; 8]) -> [Lanes; 2] {
        let mut o = [[0f32; L]; 2];
        for l in 0..L {
            let [z0, z1, z2, z3, z4, z5, z6, z7] = std::array::from_fn(|i| z[i][l]);
            o[0][l] = ((z0 + (z1 + z2)) + (z3 + z4)) + (z5 + z6);
            o[1][l] = (((z1 - z2) + 2.0 * (z3 - z4)) + 0.5 * (z5 - z6)) + z7;
        }
        o
    }
}

/// The kernel length and direction (`true`: a column, r x 1) of a convolution the path can
/// compute: 1 x r or r x 1 at stride 1, `r` 3 or 7, no padding across the line.
pub(crate) fn kernel(
    kh: usize,
    kw: usize,
    stride: usize,
    pad: [usize; 4],
) -> Option<(usize, bool)> {
    if stride != 1 {
        return None;
    }
    match (kh, kw) {
        (1, r) if tile(r).is_some() && pad[0] == 0 && pad[1] == 0 => Some((r, false)),
        (r, 1) if tile(r).is_some() && pad[2] == 0 && pad[3] == 0 => Some((r, true)),
        _ => None,
    }
}

/// Whether a convolution the path can compute ([`kernel`]) takes it: with the Winograd path on,
/// channels enough on both sides and tiles enough in the call, as the 2-D path decides.
pub(crate) fn eligible(
    c: usize,
    co: usize,
    (kh, kw, stride, pad): (usize, usize, usize, [usize; 4]),
    [n, ho, wo]: [usize; 3],
) -> bool {
    let Some((r, vertical)) = kernel(kh, kw, stride, pad) else {
        return false;
    };
    let m = tile(r).map_or(1, |t| t.0);
    let (along, across) = if vertical { (ho, wo) } else { (wo, ho) };
    winograd_enabled()
        && c.min(co) >= min_channels(1, 3)
        && n * across * along.div_ceil(m) >= MIN_TILES
}

/// `U` `(n, co, c)` of OIHW weights `(co, c, 1, r)` or `(co, c, r, 1)` (the same floats):
/// `U[xi][o][i] = (G g_oi)[xi]`, in f64.
pub(crate) fn weights(w: &[f32], co: usize, c: usize, r: usize) -> Vec<f32> {
    let g = mats(r).g;
    let n = g.len() / r;
    let mut u = vec![0f32; n * co * c];
    for o in 0..co {
        for i in 0..c {
            let k = &w[(o * c + i) * r..(o * c + i + 1) * r];
            for xi in 0..n {
                let v: f64 = (0..r).map(|j| g[xi * r + j] * k[j] as f64).sum();
                u[(xi * co + o) * c + i] = v as f32;
            }
        }
    }
    u
}

/// Sizes of one convolution on the path.
pub(crate) struct Line {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub co: usize,
    pub ho: usize,
    pub wo: usize,
    /// Kernel length, and whether the lines are columns (an r x 1 kernel).
    pub r: usize,
    pub vertical: bool,
    /// Zero padding before the line's first input (above a column, left of a row).
    pub before: usize,
    pub relu: bool,
}

impl Line {
    /// `out` `(n, co, ho, wo)` of `x` `(n, c, h, w)`, with `u` from [`weights`]; every element
    /// of `out` is written (each output belongs to one tile), so it may come uninitialised.
    pub(crate) fn run(
        &self,
        x: &[f32],
        u: &super::Transformed,
        bias: &[f32],
        out: &mut [std::mem::MaybeUninit<f32>],
    ) {
        let (c, co, ho, wo, h, w) = (self.c, self.co, self.ho, self.wo, self.h, self.w);
        assert!(out.len() >= self.n * co * ho * wo && x.len() >= self.n * c * h * w);
        let (m, _) = tile(self.r).expect("a kernel length of 3 or 7");
        let pn = m + self.r - 1;
        assert!(u.len() >= pn * co * c && bias.len() >= co);
        // Along the line and across it (the same in the input and the output).
        let (along, across) = if self.vertical { (ho, wo) } else { (wo, ho) };
        let per_line = along.div_ceil(m);
        let padded = (per_line - 1) * m + pn;
        let (hp, wp, top, left) = if self.vertical {
            (padded, w, self.before, 0)
        } else {
            (h, padded, 0, self.before)
        };
        // Input (ch, y, x) at (ch / L, y + top, x + left, ch % L) of zero-padded planes.
        let cb = c.div_ceil(L);
        let plane8 = hp * wp * L;
        let xp = padded_planes(x, [self.n, c, h, w], [hp, wp, top, left]);
        let per_img = across * per_line;
        let tiles = self.n * per_img;
        // Tile t: its image, its line and its first output along the line.
        let origin = |t: usize| {
            let r = t % per_img;
            (t / per_img, r / per_line, (r % per_line) * m)
        };
        // Elements of a patch along the line: a pixel apart in a row, a row apart in a column.
        let step = if self.vertical { wp } else { 1 };
        let threads = super::super::threads();
        let tb = block_tiles(c, pn, tiles, threads);
        let dst = SendPtr(out.as_mut_ptr().cast::<f32>());
        let c8 = cb * L;
        let (nv, nm) = (pn * xi_stride(c8 * tb), pn * xi_stride(co * tb));
        let run = |buf: &mut [f32], t0: usize, nt_valid: usize, across: bool| {
            let (v, mm) = buf.split_at_mut(nv);
            let nt = nt_valid.div_ceil(L) * L;
            // Lanes past the last tile repeat it (computed, never written out).
            let bases: Vec<usize> = (0..nt)
                .map(|i| {
                    let (img, line, a) = origin(t0 + i.min(nt_valid - 1));
                    let (y, x) = if self.vertical { (a, line) } else { (line, a) };
                    img * cb * plane8 + (y * wp + x) * L
                })
                .collect();
            transform_input(pn, &xp, &bases, cb, plane8, step, v);
            super::position_products(pn, [co, nt, c, c8], u, v, mm, across);
            // Each tile's first output in the first output plane, and its outputs on the map.
            let dest: Vec<(usize, usize)> = (0..nt_valid)
                .map(|i| {
                    let (img, line, a) = origin(t0 + i);
                    let first = if self.vertical {
                        a * wo + line
                    } else {
                        line * wo + a
                    };
                    (img * co * ho * wo + first, m.min(along - a))
                })
                .collect();
            let ob = LineOut {
                m: mm,
                co,
                nt,
                bias,
                relu: self.relu,
                dest: &dest,
                plane: ho * wo,
                step: if self.vertical { wo } else { 1 },
                out: dst.get(),
            };
            // SAFETY: each output belongs to one tile and each tile to one block, so the
            // blocks write disjoint elements of `out`, which holds (n, co, ho, wo).
            unsafe { transform_output(pn, &ob) };
        };
        super::in_blocks(tiles, tb, threads, nv + nm, run);
    }
}

/// `V` of one block: for each tile (`bases`: its patch's first pixel in the interleaved
/// input) and block of eight channels (`plane8` apart), `B^T d` of the patch's `N` pixels
/// (`step` pixels apart) into `v[xi][t][ch]` (a tile's channels contiguous).
#[inline(always)]
fn input_of<const N: usize, const M: usize, X: Xform<N, M>>(
    xp: &[f32],
    bases: &[usize],
    cb: usize,
    plane8: usize,
    step: usize,
    v: &mut [f32],
) {
    let c8 = cb * L;
    let xs = xi_stride(bases.len() * c8);
    for (t, &base) in bases.iter().enumerate() {
        for k in 0..cb {
            let b0 = base + k * plane8;
            let mut d = [[0f32; L]; N];
            for (s, ds) in d.iter_mut().enumerate() {
                *ds = lanes(xp, b0 + s * step * L);
            }
            for (xi, lv) in X::bt(&d).iter().enumerate() {
                let at = xi * xs + t * c8 + k * L;
                v[at..at + L].copy_from_slice(lv);
            }
        }
    }
}

/// [`input_of`] for the tile of `pn` inputs.
fn transform_input(
    pn: usize,
    xp: &[f32],
    bases: &[usize],
    cb: usize,
    plane8: usize,
    step: usize,
    v: &mut [f32],
) {
    match pn {
        8 => input_for::<8, 2, Line27>(xp, bases, cb, plane8, step, v),
        _ => input_for::<6, 4, Hand43>(xp, bases, cb, plane8, step, v),
    }
}

/// [`input_of`] for `X`, compiled for AVX2 where the CPU has it.
fn input_for<const N: usize, const M: usize, X: Xform<N, M>>(
    xp: &[f32],
    bases: &[usize],
    cb: usize,
    plane8: usize,
    step: usize,
    v: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if super::avx2_on() {
        #[target_feature(enable = "avx2")]
        unsafe fn avx2<const N: usize, const M: usize, X: Xform<N, M>>(
            xp: &[f32],
            bases: &[usize],
            cb: usize,
            plane8: usize,
            step: usize,
            v: &mut [f32],
        ) {
            input_of::<N, M, X>(xp, bases, cb, plane8, step, v)
        }
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { avx2::<N, M, X>(xp, bases, cb, plane8, step, v) };
    }
    input_of::<N, M, X>(xp, bases, cb, plane8, step, v)
}

/// One block's output transform: the `n` products `m` (`M_xi`: `co x nt`, [`xi_stride`]
/// apart), the bias and ReLU, and where each tile's outputs go (`dest`: its first output's
/// offset in the first output plane and how many of its outputs lie on the map, `step` floats
/// apart; planes `plane` floats apart).
struct LineOut<'a> {
    m: &'a [f32],
    co: usize,
    nt: usize,
    bias: &'a [f32],
    relu: bool,
    dest: &'a [(usize, usize)],
    plane: usize,
    step: usize,
    out: *mut f32,
}

/// `A^T M + bias`, ReLU, eight tiles a vector, into the output planes.
///
/// # Safety
/// `ob.out` must be valid for writes of every output `ob.dest` names, in each plane.
#[inline(always)]
unsafe fn output_of<const N: usize, const M: usize, X: Xform<N, M>>(ob: &LineOut) {
    let (co, nt) = (ob.co, ob.nt);
    let xs = xi_stride(co * nt);
    for (o, &bias) in ob.bias.iter().enumerate().take(co) {
        for (k, group) in ob.dest.chunks(L).enumerate() {
            let mut z = [[0f32; L]; N];
            for (xi, zr) in z.iter_mut().enumerate() {
                *zr = lanes(ob.m, xi * xs + o * nt + k * L);
            }
            let mut y = X::at(&z);
            for lanes in y.iter_mut() {
                for v in lanes.iter_mut() {
                    *v += bias;
                    // As the 2-D path's: -0 and NaN give +0.
                    if ob.relu && (v.is_nan() || *v <= 0.0) {
                        *v = 0.0;
                    }
                }
            }
            for (l, &(at, count)) in group.iter().enumerate() {
                let first = ob.out.add(o * ob.plane + at);
                for (i, yi) in y.iter().enumerate().take(count) {
                    *first.add(i * ob.step) = yi[l];
                }
            }
        }
    }
}

/// [`output_of`] for the tile of `pn` inputs, compiled for AVX2 where the CPU has it.
///
/// # Safety
/// As [`output_of`].
unsafe fn transform_output(pn: usize, ob: &LineOut) {
    assert!(
        ob.m.len() >= pn * xi_stride(ob.co * ob.nt)
            && ob.bias.len() >= ob.co
            && ob.dest.len() <= ob.nt
            && ob.nt.is_multiple_of(L)
    );
    match pn {
        8 => output_for::<8, 2, Line27>(ob),
        _ => output_for::<6, 4, Hand43>(ob),
    }
}

/// [`output_of`] for `X`, compiled for AVX2 where the CPU has it.
///
/// # Safety
/// As [`output_of`].
unsafe fn output_for<const N: usize, const M: usize, X: Xform<N, M>>(ob: &LineOut) {
    #[cfg(target_arch = "x86_64")]
    if super::avx2_on() {
        #[target_feature(enable = "avx2")]
        unsafe fn avx2<const N: usize, const M: usize, X: Xform<N, M>>(ob: &LineOut) {
            output_of::<N, M, X>(ob)
        }
        return avx2::<N, M, X>(ob);
    }
    output_of::<N, M, X>(ob)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// F(2, 7)'s transforms are its points' Toom-Cook matrices, F(4, 3)'s those of F(4x4, 3x3);
    /// and each computes a correlation exactly in f64 (`A^T [(G g) .* (B^T d)]` against the
    /// direct sums).
    #[test]
    fn line_transforms_are_the_points_matrices() {
        let (bt, at) = super::super::tests::columns::<8, 2, Line27>();
        let m = mats(7);
        assert_eq!((bt, at), (m.bt.clone(), m.at.clone()));
        let (bt, at) = super::super::tests::columns::<6, 4, Hand43>();
        let m3 = mats(3);
        assert_eq!((bt, at), (m3.bt.clone(), m3.at.clone()));
        for (r, mt) in [(7, &m), (3, &m3)] {
            let n = mt.bt.len().isqrt();
            let mo = n + 1 - r;
            let g: Vec<f64> = (0..r).map(|i| (i as f64 * 0.37).sin()).collect();
            let d: Vec<f64> = (0..n).map(|i| (i as f64 * 1.3).cos() + 0.2).collect();
            let gg: Vec<f64> = (0..n)
                .map(|a| (0..r).map(|k| mt.g[a * r + k] * g[k]).sum())
                .collect();
            let bd: Vec<f64> = (0..n)
                .map(|a| (0..n).map(|k| mt.bt[a * n + k] * d[k]).sum())
                .collect();
            for i in 0..mo {
                let y: f64 = (0..n).map(|a| mt.at[i * n + a] * gg[a] * bd[a]).sum();
                let want: f64 = (0..r).map(|k| g[k] * d[i + k]).sum();
                assert!(
                    (y - want).abs() < 1e-12,
                    "F({mo}, {r}) output {i}: {y} vs {want}"
                );
            }
        }
    }
}
