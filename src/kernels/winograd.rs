//! 3x3 and 5x5 stride-1 convolutions by Winograd's minimal filtering, F(4x4, 3x3) and F(2x2,
//! 5x5) (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016): each 4x4
//! (2x2) block of outputs (a tile) comes from its 6x6 input patch `d` and the filter `g` as
//! `A^T [(G g G^T) .* (B^T d B)] A`, 36 multiplications per tile and input channel instead of
//! 144 (100). Which layers take the path: [`eligible`] (a strided layer as the stride-1
//! convolution of its input's space-to-depth planes, [`s2d_kernel`]). Summed over
//! the input channels, the element-wise products become 36 matrix products, one per position
//! `xi` of the 6x6 transformed tile: `M_xi (c_out x tiles) = U_xi (c_out x C) . V_xi (C x tiles)`,
//! on the BLAS path ([`super::blas::sgemm`]).
//!
//! The input is first copied once into zero-padded planes whose sides are whole tiles, eight
//! channels interleaved to a pixel, so that a patch of eight channels is 36 vector loads
//! without bounds checks. Then, for a block of tiles at a time (tiles of all the images of the
//! call, so that deep layers' small maps still make products of a useful width, and few
//! enough that the block's 36 `V_xi` stay in the L2 cache): the input patches transformed
//! (`V`, eight channels per vector, stored tile by tile), the 36 products, and the output
//! transform with bias and ReLU straight into the output planes (eight tiles per vector,
//! turned into rows of tiles by a small transpose). The transforms have AVX2 copies in
//! intrinsics that do the generic forms' operations in the same order (the same bits). The
//! weights' transform `U = G g G^T` is computed in f64 once per weight tensor
//! ([`winograd_weights`], kept by [`super::Conv2d`]).
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

/// Whether a convolution takes the Winograd path: a kernel it can compute ([`fits`]) with at
/// least [`min_channels`] input and output channels (for a strided convolution, the input
/// channels of its space-to-depth form, `c * stride^2`) and at least [`MIN_TILES`] output
/// tiles in the call (`n` images of `ho x wo` outputs), with the path on
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
        && (c * stride * stride).min(co) >= min_channels(stride)
        && tile_side(s2d_kernel(kh, stride))
            .is_some_and(|m| n * ho.div_ceil(m) * wo.div_ceil(m) >= MIN_TILES)
}

/// Fewer tiles than this and the 36 products are too narrow. With the transforms as they are
/// now, VGG16's 4x4 maps at 64 px (16 tiles for 8 pairs) ran 7-9% faster by Winograd than by
/// im2col products grouped across images, and Inception's 8x8 maps (16 tiles for 4 images)
/// the same within noise; with the older transforms both were slower, and the rule was 64.
const MIN_TILES: usize = 16;

/// A kernel the Winograd path can compute: square, 3x3 or 5x5 at stride 1, or at a larger
/// stride one whose space-to-depth form is 3x3 or 5x5 ([`s2d_kernel`]: AlexNet's 11x11/4 stem
/// is a 3x3 convolution of its input's 48 space-to-depth planes).
pub(crate) fn fits(kh: usize, kw: usize, stride: usize) -> bool {
    kh == kw && stride >= 1 && tile_side(s2d_kernel(kh, stride)).is_some()
}

/// The kernel side of the space-to-depth form of a `k x k` convolution at stride `s`: with the
/// input split into its `s x s` phases (`c s^2` planes), output `(y, x)` reads planes' pixels
/// `y..y + (k - 1) / s` (the taps past `k` in the last block are zero); `k` itself at stride 1.
pub(crate) fn s2d_kernel(k: usize, s: usize) -> usize {
    (k.max(1) - 1) / s.max(1) + 1
}

/// Fewer channels than this on either side (input channels of the space-to-depth form at a
/// stride) and the 36 products are too thin (k or m of a few dozen) to repay the transforms:
/// Inception's 32-channel stem ran slower by Winograd than by im2col on the AVX-512 AMD
/// machine. AlexNet's 11x11/4 stem (48 planes, 64 outputs) ran faster.
pub fn min_channels(stride: usize) -> usize {
    if stride > 1 {
        48
    } else {
        64
    }
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

/// Floats from one position's matrix (`V_xi`, `M_xi`) of a block to the next: the matrix and a
/// cache line more, so that the 36 rows a transform reads or writes at once do not all fall in
/// one set of the L1 cache (the matrices' sizes are multiples of 4 KiB).
fn xi_stride(len: usize) -> usize {
    len + 16
}

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

/// Eight floats of `xp` from `at`.
#[inline(always)]
fn lanes(xp: &[f32], at: usize) -> Lanes {
    xp[at..at + L].try_into().unwrap()
}

/// `V` of one block: for each tile (`bases`: its patch origin in the interleaved padded
/// input, eight channels to a pixel) and each block of eight input channels (`plane8`
/// apart), `B^T d B` into `v[xi][t][ch]` (`cb * L` channels to a tile, a tile's channels
/// contiguous), the eight channels one per lane.
fn transform_input_generic(
    xp: &[f32],
    bases: &[usize],
    cb: usize,
    plane8: usize,
    wp: usize,
    v: &mut [f32],
) {
    let (nt, c8) = (bases.len(), cb * L);
    let xs = xi_stride(nt * c8);
    for (t, &base) in bases.iter().enumerate() {
        for k in 0..cb {
            let b0 = base + k * plane8;
            // Columns q of the patch, transformed down the rows: t[q] = B^T d[., q].
            let tq: [[Lanes; 6]; 6] = std::array::from_fn(|q| {
                bt(&std::array::from_fn(|r| lanes(xp, b0 + (r * wp + q) * L)))
            });
            // Then along the columns: V[a][.] = B^T (t[.][a]).
            #[allow(clippy::needless_range_loop)]
            for a in 0..6 {
                let vb = bt(&std::array::from_fn(|q| tq[q][a]));
                for (b, lanes_v) in vb.iter().enumerate() {
                    let idx = (a * 6 + b) * xs + t * c8 + k * L;
                    v[idx..idx + L].copy_from_slice(lanes_v);
                }
            }
        }
    }
}

/// `V` of one block ([`transform_input_generic`]; with AVX2, the same arithmetic in
/// intrinsics).
fn transform_input(
    xp: &[f32],
    bases: &[usize],
    cb: usize,
    plane8: usize,
    wp: usize,
    v: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if !BASELINE_ONLY.load(std::sync::atomic::Ordering::Relaxed)
        && std::is_x86_feature_detected!("avx2")
    {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { x86::transform_input(xp, bases, cb, plane8, wp, v) };
    }
    transform_input_generic(xp, bases, cb, plane8, wp, v)
}

/// Where a tile's outputs go: the offset of its first output in its image's first output
/// plane, and its rows and columns inside the output (fewer than the tile's side at the
/// bottom and right edges).
#[derive(Clone, Copy)]
struct Dest {
    at: usize,
    rows: usize,
    cols: usize,
}

/// One block's output transform: the 36 products `m` (`M_xi`: `co x nt`, [`xi_stride`]
/// apart), the bias and ReLU, and where the tiles' outputs go: the tiles of `dest` (the first
/// `dest.len()` of the `nt` columns, `nt` a multiple of `L`) in the output planes at `out`,
/// `plane` floats apart, rows `wo` apart.
struct OutBlock<'a> {
    m: &'a [f32],
    co: usize,
    nt: usize,
    bias: &'a [f32],
    relu: bool,
    dest: &'a [Dest],
    plane: usize,
    wo: usize,
    out: *mut f32,
}

impl OutBlock<'_> {
    /// Where row `a` of tile `d`'s outputs in channel `o` starts.
    ///
    /// # Safety
    /// `out` must hold the `co` planes that `dest` names.
    #[inline(always)]
    unsafe fn row(&self, o: usize, d: &Dest, a: usize) -> *mut f32 {
        self.out.add(o * self.plane + d.at + a * self.wo)
    }
}

/// The output transform of one block for tiles of side `M`, `at` its `A^T`: `A^T M A + bias`,
/// ReLU, straight into the output planes.
///
/// # Safety
/// `ob.out` must be valid for writes of every output `ob.dest` names, in each of the planes.
#[inline(always)]
unsafe fn transform_output_of<const M: usize>(
    at: impl Fn(&[Lanes; 6]) -> [Lanes; M],
    ob: &OutBlock,
) {
    let (co, nt) = (ob.co, ob.nt);
    let xs = xi_stride(co * nt);
    for (o, &bias) in ob.bias.iter().enumerate().take(co) {
        for (k, group) in ob.dest.chunks(L).enumerate() {
            let s: [[Lanes; 6]; M] = {
                let cols: [[Lanes; M]; 6] = std::array::from_fn(|q| {
                    at(&std::array::from_fn(|r| {
                        lanes(ob.m, (r * 6 + q) * xs + o * nt + k * L)
                    }))
                });
                std::array::from_fn(|a| std::array::from_fn(|q| cols[q][a]))
            };
            for (a, s_a) in s.iter().enumerate() {
                let mut rm = at(s_a);
                for lanes in rm.iter_mut() {
                    for v in lanes.iter_mut() {
                        *v += bias;
                        // As `_mm256_max_ps(v, 0)`: -0 and NaN give +0.
                        if ob.relu && (v.is_nan() || *v <= 0.0) {
                            *v = 0.0;
                        }
                    }
                }
                for (l, d) in group.iter().enumerate() {
                    if a < d.rows {
                        let row = ob.row(o, d, a);
                        for (b, lanes) in rm.iter().enumerate().take(d.cols) {
                            *row.add(b) = lanes[l];
                        }
                    }
                }
            }
        }
    }
}

/// [`transform_output_of`] for output tiles of side `side` (4 or 2); with AVX2, the same
/// arithmetic in intrinsics.
fn transform_output(side: usize, ob: &OutBlock) {
    assert!(
        ob.m.len() >= XI * xi_stride(ob.co * ob.nt)
            && ob.bias.len() >= ob.co
            && ob.dest.len() <= ob.nt
            && ob.nt.is_multiple_of(L)
    );
    // SAFETY: the caller (`Wino::run`) names in `dest` only outputs inside `out`, and each of
    // them in one block only; `m` holds the 36 products (checked above).
    unsafe {
        #[cfg(target_arch = "x86_64")]
        if !BASELINE_ONLY.load(std::sync::atomic::Ordering::Relaxed)
            && std::is_x86_feature_detected!("avx2")
        {
            return if side == 4 {
                x86::transform_output4(ob)
            } else {
                x86::transform_output2(ob)
            };
        }
        if side == 4 {
            transform_output_of::<4>(at, ob)
        } else {
            transform_output_of::<2>(at2, ob)
        }
    }
}

/// The transforms in AVX2 intrinsics.
#[cfg(target_arch = "x86_64")]
mod x86;

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

/// Tiles per block: about 16 KiB of one position's `V` (`C x tiles`), so that the block's 36
/// (about 600 KiB) stay in the L2 cache between the input transform and the products, at
/// least 32 tiles (narrower products run far below the machine's rate) and at most 512, a
/// multiple of `L`; smaller when that leaves a thread without a block, but not below 32 tiles
/// (then the 36 products of one block go to the threads instead). On the AVX-512 AMD machine,
/// AlexNet at 256 px ran 6-12% slower with 32 or 64 KiB and no faster with 8 KiB.
fn block_tiles(c: usize, tiles: usize, threads: usize) -> usize {
    let target = (4096 / c.max(1)).clamp(32, 512);
    let share = tiles.div_ceil(threads.max(1)).max(32);
    target.min(share).min(tiles).max(1).div_ceil(L) * L
}

impl Wino {
    /// `out` `(n, co, ho, wo)` of `x` `(n, c, h, w)`, with `u` from [`winograd_weights`]; every
    /// element of `out` is written (each output pixel belongs to one tile), so it may come
    /// uninitialised.
    pub(crate) fn run(
        &self,
        x: &[f32],
        u: &[f32],
        bias: &[f32],
        out: &mut [std::mem::MaybeUninit<f32>],
    ) {
        assert!(out.len() >= self.n * self.co * self.ho * self.wo);
        let (c, co, ho, wo, ms) = (self.c, self.co, self.ho, self.wo, self.m);
        let (th, tw) = (ho.div_ceil(ms), wo.div_ceil(ms));
        let (hp, wp) = ((th - 1) * ms + 6, (tw - 1) * ms + 6);
        // Zero-padded planes whose sides are whole tiles, eight channels interleaved to a
        // pixel (the lanes of the input transform): input (ch, y, x) at
        // (ch / L, y + top, x + left, ch % L); channels past `c` are zero.
        let cb = c.div_ceil(L);
        let plane8 = hp * wp * L;
        let (h, w) = (self.h, self.w);
        let (rows, cols) = (
            h.min(hp.saturating_sub(self.top)),
            w.min(wp.saturating_sub(self.left)),
        );
        let xp = super::par_filled(self.n * cb * plane8, plane8, |i, p| {
            let (img, k) = (i / cb, i % cb);
            let chans = L.min(c - k * L);
            let src = &x[(img * c + k * L) * h * w..(img * c + k * L + chans) * h * w];
            interleave(
                src,
                chans,
                h * w,
                w,
                rows,
                cols,
                &mut p[((self.top * wp) + self.left) * L..],
                wp,
            );
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
        let dst = SendPtr(out.as_mut_ptr().cast::<f32>());
        let c8 = cb * L;
        let (nv, nm) = (XI * xi_stride(c8 * tb), XI * xi_stride(co * tb));
        let run = |buf: &mut [f32], b: usize| {
            let (v, m) = buf.split_at_mut(nv);
            let t0 = b * tb;
            let nt_valid = tb.min(tiles - t0);
            let nt = nt_valid.div_ceil(L) * L;
            // Lanes past the last tile repeat it (computed, never written out).
            let bases: Vec<usize> = (0..nt)
                .map(|i| {
                    let (img, oy, ox) = origin(t0 + i.min(nt_valid - 1));
                    img * cb * plane8 + (oy * wp + ox) * L
                })
                .collect();
            transform_input(&xp, &bases, cb, plane8, wp, v);
            let mp = SendPtr(m.as_mut_ptr());
            let product = |xi: usize| {
                // SAFETY: U_xi is co x c row-major; V_xi is c x nt, a tile's channels
                // contiguous (row stride 1, column stride c8); M_xi is co x nt (row stride
                // nt); all lie inside their buffers, and each xi writes its own M_xi.
                unsafe {
                    sgemm(
                        co,
                        nt,
                        c,
                        mp.get().add(xi * xi_stride(co * nt)),
                        nt,
                        false,
                        u.as_ptr().add(xi * co * c),
                        (c, 1),
                        v.as_ptr().add(xi * xi_stride(c8 * nt)),
                        (1, c8),
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
            let dest: Vec<Dest> = (0..nt_valid)
                .map(|i| {
                    let (img, oy, ox) = origin(t0 + i);
                    Dest {
                        at: img * co * ho * wo + oy * wo + ox,
                        rows: ms.min(ho - oy),
                        cols: ms.min(wo - ox),
                    }
                })
                .collect();
            // Each output pixel belongs to exactly one tile and each tile to one block, so
            // the blocks write disjoint elements of `out`, whose (n, co, ho, wo) holds them.
            let ob = OutBlock {
                m,
                co,
                nt,
                bias,
                relu: self.relu,
                dest: &dest,
                plane: ho * wo,
                wo,
                out: dst.get(),
            };
            transform_output(ms, &ob);
        };
        let len = nv + nm;
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

avx2_or_baseline! {
    /// `chans` planes of `src` (`plane` floats apart, rows `w` apart; `rows x cols` of each
    /// used) into `dst` interleaved: plane `l`'s (y, x) at `(y * wp + x) * L + l`.
    #[allow(clippy::too_many_arguments)]
    fn interleave(
        src: &[f32],
        chans: usize,
        plane: usize,
        w: usize,
        rows: usize,
        cols: usize,
        dst: &mut [f32],
        wp: usize,
    ) {
        for y in 0..rows {
            let d = &mut dst[y * wp * L..(y * wp + cols) * L];
            if chans == L {
                let s: [&[f32]; L] = std::array::from_fn(|l| &src[l * plane + y * w..][..cols]);
                for (x, px) in d.chunks_exact_mut(L).enumerate() {
                    for l in 0..L {
                        px[l] = s[l][x];
                    }
                }
            } else {
                for l in 0..chans {
                    let s = &src[l * plane + y * w..][..cols];
                    for (x, &v) in s.iter().enumerate() {
                        d[x * L + l] = v;
                    }
                }
            }
        }
    }
}
