//! 3x3 and 5x5 stride-1 convolutions by Winograd's minimal filtering, F(4x4, 3x3) and F(2x2,
//! 5x5) (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016): each 4x4
//! (2x2) block of outputs (a tile) comes from its 6x6 input patch `d` and the filter `g` as
//! `A^T [(G g G^T) .* (B^T d B)] A`, 36 multiplications per tile and input channel instead of
//! 144 (100). Which layers take the path: [`eligible`]. Summed over
//! the input channels, the element-wise products become 36 matrix products, one per position
//! `xi` of the 6x6 transformed tile: `M_xi (c_out x tiles) = U_xi (c_out x C) . V_xi (C x tiles)`,
//! on the BLAS path ([`super::blas::sgemm`]).
//!
//! Steps, for a block of tiles at a time (tiles of all the images of the call, so that deep
//! layers' small maps still make products of a useful width): the input patches transformed
//! (`V`, eight tiles per vector), the 36 products, the output transform with bias and ReLU. The
//! input is first copied once into zero-padded planes whose sides are whole tiles, so that the
//! patches are read without bounds checks. The weights' transform `U = G g G^T` is computed in
//! f64 once per weight tensor ([`winograd_weights`], kept by [`super::Conv2d`]).
//!
//! The points 0, +-1, +-2 give transforms with entries up to 8 (`A`) and 1/24 (`G`): in f32 the
//! result differs from the direct sum by a few units in 1e-6 of the output's scale for the
//! networks' channel counts (the tests bound it against the candle form); the FID and LPIPS
//! goldens against PyTorch and numpy hold at their tolerances.

use super::blas::{sgemm, Par};
use super::simd::BASELINE_ONLY;
use super::SendPtr;
use rayon::prelude::*;

/// Tiles transformed together, one per vector lane.
const L: usize = 8;
/// Positions of a transformed tile.
const XI: usize = 36;

/// The filter transforms' scales: `G`'s row `j` is `S[j] (1, p_j, p_j^2, ...)` at the points
/// `p = 0, 1, -1, 2, -2`, and `(0, ..., 0, 1)` for the point at infinity; with these scales
/// `B^T` is the integer matrix of [`bt`] for both tile sizes.
const S: [f64; 5] = [0.25, -1.0 / 6.0, -1.0 / 6.0, 1.0 / 24.0, 1.0 / 24.0];
const P: [f64; 5] = [0.0, 1.0, -1.0, 2.0, -2.0];

/// `G` (6 x r): the filter transform of F(m x m, r x r), `m + r = 7`.
fn g_matrix(r: usize) -> [[f64; 5]; 6] {
    let mut g = [[0f64; 5]; 6];
    for (j, row) in g.iter_mut().take(5).enumerate() {
        for (k, v) in row.iter_mut().take(r).enumerate() {
            *v = S[j] * P[j].powi(k as i32);
        }
    }
    g[5][r - 1] = 1.0;
    g
}

/// The output tile's side for a square kernel of side `k` at stride 1: F(4x4, 3x3) for 3x3,
/// F(2x2, 5x5) for 5x5 (both 6x6 transformed tiles, the same input transform).
pub(crate) fn tile_side(k: usize) -> Option<usize> {
    match k {
        3 => Some(4),
        5 => Some(2),
        _ => None,
    }
}

/// Whether the Winograd path is on: `LQAE_WINOGRAD=off` turns it off for the whole process
/// (the 3x3 convolutions then run as im2col products: for before/after timings and bisecting).
pub fn winograd_enabled() -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    !*OFF
        .get_or_init(|| std::env::var("LQAE_WINOGRAD").is_ok_and(|v| v.eq_ignore_ascii_case("off")))
}

/// Whether a convolution takes the Winograd path: a 3x3 or 5x5 kernel at stride 1
/// ([`fits`]) with at least [`min_channels`] input and output channels and at least
/// [`MIN_TILES`] output tiles in the call (`n` images of `ho x wo` outputs), with the path on
/// ([`winograd_enabled`]).
pub(crate) fn eligible(
    c: usize,
    co: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    out: [usize; 3],
) -> bool {
    let [n, ho, wo] = out;
    winograd_enabled()
        && fits(kh, kw, stride)
        && c.min(co) >= min_channels()
        && tile_side(kh).is_some_and(|m| n * ho.div_ceil(m) * wo.div_ceil(m) >= MIN_TILES)
}

/// Fewer tiles than this and the 36 products are too narrow: Inception's 8x8 maps (16 tiles
/// for 4 images) and VGG16's 4x4 maps at 64 px ran slower by Winograd than by im2col products
/// grouped across images.
const MIN_TILES: usize = 64;

/// A kernel the Winograd path can compute: 3x3 or 5x5 at stride 1.
pub(crate) fn fits(kh: usize, kw: usize, stride: usize) -> bool {
    kh == kw && tile_side(kh).is_some() && stride == 1
}

/// Fewer channels than this on either side and the 36 products are too thin (k or m of a few
/// dozen) to repay the transforms: Inception's 32-channel stem ran slower by Winograd than by
/// im2col on the AVX-512 AMD machine.
pub fn min_channels() -> usize {
    64
}

/// `U` `(36, co, c)` of OIHW `r x r` weights `(co, c, r, r)`, `r` 3 or 5:
/// `U[xi][o][i] = (G g_oi G^T)[xi]`, computed in f64.
pub fn winograd_weights(w: &[f32], co: usize, c: usize, r: usize) -> Vec<f32> {
    let gm = g_matrix(r);
    let mut u = vec![0f32; XI * co * c];
    for o in 0..co {
        for i in 0..c {
            let g = &w[(o * c + i) * r * r..(o * c + i + 1) * r * r];
            // t = G g (6 x r), then t G^T (6 x 6).
            let mut t = [[0f64; 5]; 6];
            for (a, ta) in t.iter_mut().enumerate() {
                for (k, v) in ta.iter_mut().take(r).enumerate() {
                    *v = (0..r).map(|j| gm[a][j] * g[j * r + k] as f64).sum();
                }
            }
            for (a, ta) in t.iter().enumerate() {
                for (b, gb) in gm.iter().enumerate() {
                    let v: f64 = (0..r).map(|k| ta[k] * gb[k]).sum();
                    u[((a * 6 + b) * co + o) * c + i] = v as f32;
                }
            }
        }
    }
    u
}

/// Sizes of one Winograd convolution.
pub(crate) struct Wino {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub co: usize,
    pub ho: usize,
    pub wo: usize,
    /// Zero padding above and left of the input.
    pub top: usize,
    pub left: usize,
    pub relu: bool,
    /// Output tile side: 4 (3x3 kernels) or 2 (5x5).
    pub m: usize,
}

type Lanes = [f32; L];

/// `B^T z` for six rows of lanes.
#[inline(always)]
fn bt(z: &[Lanes; 6]) -> [Lanes; 6] {
    let mut o = [[0f32; L]; 6];
    for l in 0..L {
        let [z0, z1, z2, z3, z4, z5] = [z[0][l], z[1][l], z[2][l], z[3][l], z[4][l], z[5][l]];
        o[0][l] = 4.0 * z0 - 5.0 * z2 + z4;
        o[1][l] = -4.0 * (z1 + z2) + z3 + z4;
        o[2][l] = 4.0 * (z1 - z2) - z3 + z4;
        o[3][l] = 2.0 * (z3 - z1) - z2 + z4;
        o[4][l] = 2.0 * (z1 - z3) - z2 + z4;
        o[5][l] = 4.0 * z1 - 5.0 * z3 + z5;
    }
    o
}

/// `A^T z` for six rows of lanes.
#[inline(always)]
fn at(z: &[Lanes; 6]) -> [Lanes; 4] {
    let mut o = [[0f32; L]; 4];
    for l in 0..L {
        let [z0, z1, z2, z3, z4, z5] = [z[0][l], z[1][l], z[2][l], z[3][l], z[4][l], z[5][l]];
        let (s12, d12, s34, d34) = (z1 + z2, z1 - z2, z3 + z4, z3 - z4);
        o[0][l] = z0 + s12 + s34;
        o[1][l] = d12 + 2.0 * d34;
        o[2][l] = s12 + 4.0 * s34;
        o[3][l] = d12 + 8.0 * d34 + z5;
    }
    o
}

/// `A^T z` of F(2, 5) for six rows of lanes.
#[inline(always)]
fn at2(z: &[Lanes; 6]) -> [Lanes; 2] {
    let mut o = [[0f32; L]; 2];
    for l in 0..L {
        let [z0, z1, z2, z3, z4, z5] = [z[0][l], z[1][l], z[2][l], z[3][l], z[4][l], z[5][l]];
        o[0][l] = z0 + (z1 + z2) + (z3 + z4);
        o[1][l] = (z1 - z2) + 2.0 * (z3 - z4) + z5;
    }
    o
}

avx2_or_baseline! {
    /// `V` of one block: for each input channel and each group of `L` tiles (`bases`: each
    /// tile's patch origin in the padded input, less the channel's offset), `B^T d B` into
    /// `v[xi][ci][t]` (one row per tile of `bases`).
    fn transform_input(
        xp: &[f32],
        bases: &[usize],
        c: usize,
        plane: usize,
        wp: usize,
        v: &mut [f32],
    ) {
        let ld = bases.len();
        for ci in 0..c {
            for (k, lanes) in bases.chunks_exact(L).enumerate() {
                // Columns q of the patch, transformed down the rows: t[q] = B^T d[., q].
                let mut t = [[[0f32; L]; 6]; 6];
                for (q, tq) in t.iter_mut().enumerate() {
                    let mut col = [[0f32; L]; 6];
                    for (r, cr) in col.iter_mut().enumerate() {
                        for l in 0..L {
                            cr[l] = xp[lanes[l] + ci * plane + r * wp + q];
                        }
                    }
                    *tq = bt(&col);
                }
                // Then along the columns: V[a][.] = B^T (t[.][a]).
                #[allow(clippy::needless_range_loop)]
                for a in 0..6 {
                    let row = [t[0][a], t[1][a], t[2][a], t[3][a], t[4][a], t[5][a]];
                    let vb = bt(&row);
                    for (b, lanes_v) in vb.iter().enumerate() {
                        let idx = ((a * 6 + b) * c + ci) * ld + k * L;
                        v[idx..idx + L].copy_from_slice(lanes_v);
                    }
                }
            }
        }
    }
}

/// The output transform of one block for tiles of side `M`, `at` its `A^T`: `A^T M A + bias`,
/// ReLU, into `y[o][t][M * M]` (each tile's outputs row-major), for `nt` tiles (a multiple
/// of `L`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn transform_output_of<const M: usize>(
    at: impl Fn(&[Lanes; 6]) -> [Lanes; M],
    m: &[f32],
    co: usize,
    nt: usize,
    bias: &[f32],
    relu: bool,
    y: &mut [f32],
) {
    for o in 0..co {
        for k in 0..nt / L {
            let mut s = [[[0f32; L]; 6]; M];
            for q in 0..6 {
                let mut col = [[0f32; L]; 6];
                for (r, cr) in col.iter_mut().enumerate() {
                    let idx = ((r * 6 + q) * co + o) * nt + k * L;
                    cr.copy_from_slice(&m[idx..idx + L]);
                }
                let am = at(&col);
                for (a, s_a) in s.iter_mut().enumerate() {
                    s_a[q] = am[a];
                }
            }
            for (a, s_a) in s.iter().enumerate() {
                let rm = at(s_a);
                for (b, lanes) in rm.iter().enumerate() {
                    for l in 0..L {
                        let mut v = lanes[l] + bias[o];
                        if relu {
                            v = v.max(0.0);
                        }
                        y[(o * nt + k * L + l) * M * M + a * M + b] = v;
                    }
                }
            }
        }
    }
}

avx2_or_baseline! {
    /// [`transform_output_of`] for output tiles of side `side` (4 or 2).
    #[allow(clippy::too_many_arguments)]
    fn transform_output(
        side: usize,
        m: &[f32],
        co: usize,
        nt: usize,
        bias: &[f32],
        relu: bool,
        y: &mut [f32],
    ) {
        if side == 4 {
            transform_output_of::<4>(at, m, co, nt, bias, relu, y)
        } else {
            transform_output_of::<2>(at2, m, co, nt, bias, relu, y)
        }
    }
}

thread_local! {
    /// Each thread's working buffers (`V`, `M` and the output tiles of a block), kept between
    /// calls: every element is written before it is read, so they are not cleared.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `f` on `len` floats of this thread's scratch (a fresh buffer when a caller up the stack
/// holds it: rayon may run another call on a thread that waits for its own tasks).
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut v) => {
            if v.len() < len {
                v.resize(len, 0.0);
            }
            f(&mut v[..len])
        }
        Err(_) => f(&mut vec![0f32; len]),
    })
}

/// Tiles per block: about 128 KiB of one position's `V` (`C x tiles`), between 32 and 512, a
/// multiple of `L`; smaller when that leaves a thread without a block, but not below 64 tiles
/// (narrower products run far below the machine's rate: then the 36 products of one block go
/// to the threads instead).
fn block_tiles(c: usize, tiles: usize, threads: usize) -> usize {
    let target = (32768 / c.max(1)).clamp(32, 512);
    let share = tiles.div_ceil(threads.max(1)).max(64);
    target.min(share).min(tiles).max(1).div_ceil(L) * L
}

impl Wino {
    /// `out` `(n, co, ho, wo)` of `x` `(n, c, h, w)`, with `u` from [`winograd_weights`].
    pub(crate) fn run(&self, x: &[f32], u: &[f32], bias: &[f32], out: &mut [f32]) {
        let (c, co, ho, wo, ms) = (self.c, self.co, self.ho, self.wo, self.m);
        let (th, tw) = (ho.div_ceil(ms), wo.div_ceil(ms));
        let (hp, wp) = ((th - 1) * ms + 6, (tw - 1) * ms + 6);
        let plane = hp * wp;
        // Zero-padded planes whose sides are whole tiles: input (y, x) at (y + top, x + left).
        let mut xp = vec![0f32; self.n * c * plane];
        xp.par_chunks_mut(plane)
            .zip(x.par_chunks(self.h * self.w))
            .for_each(|(p, src)| {
                let cols = self.w.min(wp.saturating_sub(self.left));
                for (y, row) in src.chunks(self.w).enumerate() {
                    let py = y + self.top;
                    if py >= hp {
                        break;
                    }
                    let at = py * wp + self.left;
                    p[at..at + cols].copy_from_slice(&row[..cols]);
                }
            });
        let per_img = th * tw;
        let tiles = self.n * per_img;
        // Tile t: its image and its first output row and column (in the padded input too: a
        // tile's patch starts where its outputs do).
        let origin = |t: usize| {
            let r = t % per_img;
            (t / per_img, (r / tw) * ms, (r % tw) * ms)
        };
        let threads = candle_core::utils::get_num_threads().max(1);
        let tb = block_tiles(c, tiles, threads);
        let blocks = tiles.div_ceil(tb);
        // Enough blocks: each thread takes a run of blocks, its products on one thread.
        // Otherwise the blocks go one by one, their 36 products across the threads.
        let by_block = blocks >= threads;
        let dst = SendPtr(out.as_mut_ptr());
        let (nv, nm) = (XI * c * tb, XI * co * tb);
        let run = |buf: &mut [f32], b: usize| {
            let (v, rest) = buf.split_at_mut(nv);
            let (m, y) = rest.split_at_mut(nm);
            let t0 = b * tb;
            let nt_valid = tb.min(tiles - t0);
            let nt = nt_valid.div_ceil(L) * L;
            // Lanes past the last tile repeat it (computed, never written out).
            let bases: Vec<usize> = (0..nt)
                .map(|i| {
                    let (img, oy, ox) = origin(t0 + i.min(nt_valid - 1));
                    img * c * plane + oy * wp + ox
                })
                .collect();
            transform_input(&xp, &bases, c, plane, wp, v);
            let mp = SendPtr(m.as_mut_ptr());
            let product = |xi: usize| {
                // SAFETY: U_xi is co x c row-major, V_xi is c x nt (row stride nt), M_xi is
                // co x nt (row stride nt); all lie inside their buffers, and each xi writes
                // its own M_xi.
                unsafe {
                    sgemm(
                        co,
                        nt,
                        c,
                        mp.get().add(xi * co * nt),
                        nt,
                        false,
                        u.as_ptr().add(xi * co * c),
                        (c, 1),
                        v.as_ptr().add(xi * c * nt),
                        (nt, 1),
                        0.0,
                        1.0,
                        Par::None,
                    );
                }
            };
            if by_block {
                (0..XI).for_each(product);
            } else {
                (0..XI).into_par_iter().for_each(product);
            }
            transform_output(ms, m, co, nt, bias, self.relu, y);
            for i in 0..nt_valid {
                let (img, oy, ox) = origin(t0 + i);
                let (rows, cols) = (ms.min(ho - oy), ms.min(wo - ox));
                for o in 0..co {
                    let src = &y[(o * nt + i) * ms * ms..(o * nt + i + 1) * ms * ms];
                    let base = ((img * co + o) * ho + oy) * wo + ox;
                    for a in 0..rows {
                        // SAFETY: each output pixel belongs to exactly one tile and each tile
                        // to one block, so the blocks write disjoint elements of `out`, whose
                        // (n, co, ho, wo) bounds the index.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                src.as_ptr().add(a * ms),
                                dst.get().add(base + a * wo),
                                cols,
                            );
                        }
                    }
                }
            }
        };
        let len = nv + nm + co * tb * ms * ms;
        if by_block {
            let per = blocks.div_ceil(threads);
            (0..threads).into_par_iter().for_each(|k| {
                with_scratch(len, |b| {
                    (k * per..((k + 1) * per).min(blocks)).for_each(|i| run(b, i))
                })
            });
        } else {
            with_scratch(len, |b| (0..blocks).for_each(|i| run(b, i)));
        }
    }
}
