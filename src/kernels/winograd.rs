//! 3x3 and 5x5 stride-1 convolutions by Winograd's minimal filtering (Lavin and Gray, "Fast
//! Algorithms for Convolutional Neural Networks", 2016): each `m x m` block of outputs (a tile)
//! comes from its `n x n` input patch `d` and the filter `g` as `A^T [(G g G^T) .* (B^T d B)]
//! A`, `n^2` multiplications per tile and input channel instead of `m^2 r^2`. Four tiles
//! ([`Tile`]): F(4x4, 3x3) and F(2x2, 5x5) on 6x6 patches (36 against 144 and 100), and for
//! the maps where they need fewer products ([`tile_for`]) F(3x3, 3x3) on 5x5 patches (25
//! against 36 on AlexNet's 3x3 maps) and F(4x4, 5x5) on 8x8 patches (64 per 16 outputs against
//! 36 per 4). Which layers take the path: [`eligible`] (a strided layer as the stride-1
//! convolution of its input's space-to-depth planes, [`s2d_kernel`]). Summed over the input
//! channels, the element-wise products become `n^2` matrix products, one per position `xi` of
//! the transformed tile: `M_xi (c_out x tiles) = U_xi (c_out x C) . V_xi (C x tiles)`, on the
//! BLAS path ([`super::blas::sgemm`]).
//!
//! The input is first copied once into zero-padded planes whose sides are whole tiles, eight
//! channels interleaved to a pixel, so that a patch of eight channels is `n^2` vector loads
//! without bounds checks. Then, for a block of tiles at a time (tiles of all the images of the
//! call, so that deep layers' small maps still make products of a useful width, and few
//! enough that the block's `V_xi` stay in the L2 cache): the input patches transformed
//! (`V`, eight channels per vector, stored tile by tile), the `n^2` products, and the output
//! transform with bias and ReLU straight into the output planes (eight tiles per vector). The
//! 6x6 transforms have AVX2 copies in intrinsics that do the generic forms' operations in the
//! same order (the same bits); the 5x5 and 8x8 ones are factored forms of their matrices
//! ([`Xform`]), compiled for AVX2 and for the baseline from one source (the same bits). The
//! weights' transform `U = G g G^T` is computed in f64 once per weight tensor and tile
//! ([`winograd_weights`], kept by [`super::Conv2d`]).
//!
//! The points 0, +-1, +-2 give transforms with entries up to 8 (`A`) and 1/24 (`G`): in f32 the
//! result differs from the direct sum by a few units in 1e-6 of the output's scale for the
//! networks' channel counts (the tests bound it against the candle form); F(4x4, 5x5) adds the
//! points +-1/2 (entries up to 8 and 5.25; one channel of normal data: 3.7e-6 of the scale
//! against 2.0e-6 for F(4x4, 3x3)). The FID and LPIPS goldens against PyTorch and numpy hold at
//! their tolerances.

use super::blas::{self, sgemm, Par};
use super::simd::avx2_on;
use super::{with_scratch, SendPtr};
use rayon::prelude::*;
use std::sync::OnceLock;

/// Tiles transformed together, one per vector lane.
const L: usize = 8;
/// Positions of a transformed 6x6 tile (the hand-written transforms').
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

/// A Winograd tile, F(m x m, r x r): `m x m` outputs of an `r x r` kernel from an `n x n` input
/// patch, `n = m + r - 1`, by `n^2` products per input channel. F(4x4, 3x3) and F(2x2, 5x5)
/// (6x6 patches) have hand-written transforms; F(3x3, 3x3) (5x5) and F(4x4, 5x5) (8x8) take
/// theirs from [`Tile::mats`], for maps where they need fewer products ([`tile_for`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tile {
    F4x3,
    F2x5,
    F3x3,
    F4x5,
}

/// The weights' transforms a layer may keep, one per [`Tile`] ([`Tile::index`]).
pub(crate) const TILES: usize = Tile::F4x5 as usize + 1;

impl Tile {
    /// Output tile side `m`.
    pub(crate) fn m(self) -> usize {
        match self {
            Tile::F4x3 | Tile::F4x5 => 4,
            Tile::F3x3 => 3,
            Tile::F2x5 => 2,
        }
    }

    /// Kernel side `r`.
    pub(crate) fn r(self) -> usize {
        match self {
            Tile::F4x3 | Tile::F3x3 => 3,
            Tile::F2x5 | Tile::F4x5 => 5,
        }
    }

    /// Input patch side `n = m + r - 1`.
    pub(crate) fn n(self) -> usize {
        self.m() + self.r() - 1
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The finite interpolation points (with the point at infinity, `n` of them). F(3x3, 3x3)
    /// takes -1/2 rather than 2 or -2: of those, its f32 error was the smallest (6.7e-7 of the
    /// output's scale against 9.5e-7 and 1.5e-6, one channel of normal data). F(4x4, 5x5) takes
    /// the seven points of the usual F(6x6, 3x3).
    fn points(self) -> &'static [f64] {
        match self {
            Tile::F4x3 | Tile::F2x5 => &P,
            Tile::F3x3 => &[0.0, 1.0, -1.0, -0.5],
            Tile::F4x5 => &[0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5],
        }
    }

    /// Transformed positions for an `ho x wo` output map: `n^2` per tile.
    fn positions(self, ho: usize, wo: usize) -> usize {
        let m = self.m();
        ho.div_ceil(m) * wo.div_ceil(m) * self.n() * self.n()
    }

    /// The tile's matrices from its points (Toom-Cook, in f64): `A^T` (m x n) `A^T[i][j] =
    /// p_j^i`; `G` (n x r) `G[j][k] = p_j^k / prod_{l != j} (p_j - p_l)`; `B^T` (n x n), row `j`
    /// the coefficients (lowest power first) of `prod_{l != j} (x - p_l)`; the point at infinity
    /// is the last column of `A^T` (1 in the last row), the last row of `G` (1 in the last
    /// column) and the last row of `B^T` (the coefficients of `prod_l (x - p_l)`). For the points
    /// 0, +-1, +-2 these are the hand-written transforms' matrices (a test checks).
    pub(crate) fn mats(self) -> Mats {
        toom_cook(self.m(), self.r(), self.points())
    }
}

/// The Toom-Cook matrices of F(m, r) at the finite points `p` and infinity (`m + r - 1 = n`
/// points in all), in f64 (see [`Tile::mats`]; the 2-D tiles' are these applied on both sides).
pub(crate) fn toom_cook(m: usize, r: usize, p: &[f64]) -> Mats {
    let n = m + r - 1;
    assert_eq!(p.len() + 1, n, "F({m}, {r}) takes {} finite points", n - 1);
    let poly = |skip: Option<usize>| {
        let mut c = vec![1f64];
        for (l, &q) in p.iter().enumerate() {
            if Some(l) != skip {
                // c (x - q)
                let mut d = vec![0f64; c.len() + 1];
                for (i, &ci) in c.iter().enumerate() {
                    d[i + 1] += ci;
                    d[i] -= q * ci;
                }
                c = d;
            }
        }
        c
    };
    let (mut at, mut g, mut bt) = (vec![0f64; m * n], vec![0f64; n * r], vec![0f64; n * n]);
    for (j, &pj) in p.iter().enumerate() {
        for i in 0..m {
            at[i * n + j] = pj.powi(i as i32);
        }
        let f: f64 = p
            .iter()
            .enumerate()
            .filter(|&(l, _)| l != j)
            .map(|(_, &q)| pj - q)
            .product();
        for k in 0..r {
            g[j * r + k] = pj.powi(k as i32) / f;
        }
        for (k, c) in poly(Some(j)).into_iter().enumerate() {
            bt[j * n + k] = c;
        }
    }
    at[(m - 1) * n + n - 1] = 1.0;
    g[(n - 1) * r + r - 1] = 1.0;
    for (k, c) in poly(None).into_iter().enumerate() {
        bt[(n - 1) * n + k] = c;
    }
    Mats { at, g, bt }
}

/// A tile's transforms ([`Tile::mats`]), row-major, in f64.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) struct Mats {
    pub at: Vec<f64>,
    pub g: Vec<f64>,
    pub bt: Vec<f64>,
}

/// The tile for an `r x r` kernel on an `ho x wo` output map: of the two for `r` (3: F(4x4,
/// 3x3), F(3x3, 3x3); 5: F(4x4, 5x5), F(2x2, 5x5)), the one with fewer transformed positions,
/// the first on a tie. F(3x3, 3x3) wins where F(4x4, 3x3) would compute many outputs past
/// the map (AlexNet's 3x3 maps at 64 px: 25 products per image against 36; also 6x6, 9x9,
/// 21x21); F(4x4, 5x5) on most maps (AlexNet's 7x7 and 31x31), F(2x2, 5x5) on a few narrow
/// ones (2x2, 2x6, 5x1).
pub(crate) fn tile_for(r: usize, ho: usize, wo: usize) -> Option<Tile> {
    let candidates = match r {
        3 => [Tile::F4x3, Tile::F3x3],
        5 => [Tile::F4x5, Tile::F2x5],
        _ => return None,
    };
    candidates.into_iter().min_by_key(|t| t.positions(ho, wo))
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
        && (c * stride * stride).min(co) >= min_channels(stride, kh)
        && tile_for(s2d_kernel(kh, stride), ho, wo)
            .is_some_and(|t| n * ho.div_ceil(t.m()) * wo.div_ceil(t.m()) >= MIN_TILES)
}

/// Fewer tiles than this and the `n^2` products are too narrow. With the transforms as they are
/// now, VGG16's 4x4 maps at 64 px (16 tiles for 8 pairs) ran 7-9% faster by Winograd than by
/// im2col products grouped across images, and Inception's 8x8 maps (16 tiles for 4 images)
/// the same within noise; with the older transforms both were slower, and the rule was 64.
const MIN_TILES: usize = 16;

/// A kernel the Winograd path can compute: square, 3x3 or 5x5 at stride 1, or at a larger
/// stride one whose space-to-depth form is 3x3 or 5x5 ([`s2d_kernel`]: AlexNet's 11x11/4 stem
/// is a 3x3 convolution of its input's 48 space-to-depth planes).
pub(crate) fn fits(kh: usize, kw: usize, stride: usize) -> bool {
    kh == kw && stride >= 1 && matches!(s2d_kernel(kh, stride), 3 | 5)
}

/// The kernel side of the space-to-depth form of a `k x k` convolution at stride `s`: with the
/// input split into its `s x s` phases (`c s^2` planes), output `(y, x)` reads planes' pixels
/// `y..y + (k - 1) / s` (the taps past `k` in the last block are zero); `k` itself at stride 1.
pub(crate) fn s2d_kernel(k: usize, s: usize) -> usize {
    (k.max(1) - 1) / s.max(1) + 1
}

/// Fewer channels than this on either side (input channels of the space-to-depth form at a
/// stride) and the `n^2` products are too thin (k or m of a few dozen) to repay the transforms:
/// Inception's 32-channel stem ran slower by Winograd than by im2col on the AVX-512 AMD
/// machine. AlexNet's 11x11/4 stem (48 planes, 64 outputs) ran faster. A 5x5 kernel at stride
/// 1 saves more (F(4x4, 5x5): 64 products per 16 outputs and channel pair, against 400), so it
/// takes the path from 32: Inception's 48-to-64 5x5 layers (6% of its product time by im2col)
/// cut its product time by 6-12% (sums of `LQAE_BLAS_PROFILE=1`, two pairs of runs) and its
/// fastest call from 1,041-1,082 ms to 982-992 on the AVX2 AMD machine.
pub fn min_channels(stride: usize, k: usize) -> usize {
    match (stride, k) {
        (2.., _) => 48,
        (_, 5) => 32,
        _ => 64,
    }
}

/// `U` `(n^2, co, c)` of OIHW `r x r` weights `(co, c, r, r)` for `tile` (`r` its kernel side):
/// `U[xi][o][i] = (G g_oi G^T)[xi]`, computed in f64.
pub(crate) fn winograd_weights(w: &[f32], co: usize, c: usize, tile: Tile) -> Vec<f32> {
    let (r, n) = (tile.r(), tile.n());
    // G (n x r): the hand-written tiles' scaled form, or the one from the points.
    let gm: Vec<f64> = match tile {
        Tile::F4x3 | Tile::F2x5 => g_matrix(r)
            .iter()
            .flat_map(|row| row[..r].to_vec())
            .collect(),
        _ => tile.mats().g,
    };
    let nn = n * n;
    let mut u = vec![0f32; nn * co * c];
    let mut t = vec![0f64; n * r];
    for o in 0..co {
        for i in 0..c {
            let g = &w[(o * c + i) * r * r..(o * c + i + 1) * r * r];
            // t = G g (n x r), then t G^T (n x n).
            for a in 0..n {
                for k in 0..r {
                    t[a * r + k] = (0..r).map(|j| gm[a * r + j] * g[j * r + k] as f64).sum();
                }
            }
            for a in 0..n {
                for b in 0..n {
                    let v: f64 = (0..r).map(|k| t[a * r + k] * gm[b * r + k]).sum();
                    u[((a * n + b) * co + o) * c + i] = v as f32;
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
    pub tile: Tile,
}

type Lanes = [f32; L];

/// Floats from one position's matrix (`V_xi`, `M_xi`) of a block to the next: the matrix and a
/// cache line more, so that the `n^2` rows a transform reads or writes at once do not all fall in
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
/// apart), `B^T d B` (`bt`: `B^T` of `N` rows of lanes) into `v[xi][t][ch]` (`cb * L`
/// channels to a tile, a tile's channels contiguous), the eight channels one per lane.
#[inline(always)]
fn transform_input_of<const N: usize, const M: usize, X: Xform<N, M>>(
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
            // Columns q of the patch, transformed down the rows: t[q] = B^T d[., q]. (Loops,
            // not closures: a closure is not inlined into a caller compiled for AVX2.)
            let mut tq = [[[0f32; L]; N]; N];
            for (q, tqq) in tq.iter_mut().enumerate() {
                let mut col = [[0f32; L]; N];
                for (r, c) in col.iter_mut().enumerate() {
                    *c = lanes(xp, b0 + (r * wp + q) * L);
                }
                *tqq = X::bt(&col);
            }
            // Then along the columns: V[a][.] = B^T (t[.][a]).
            #[allow(clippy::needless_range_loop)]
            for a in 0..N {
                let mut row = [[0f32; L]; N];
                for (q, rq) in row.iter_mut().enumerate() {
                    *rq = tq[q][a];
                }
                let vb = X::bt(&row);
                for (b, lanes_v) in vb.iter().enumerate() {
                    let idx = (a * N + b) * xs + t * c8 + k * L;
                    v[idx..idx + L].copy_from_slice(lanes_v);
                }
            }
        }
    }
}

/// A tile's transforms of rows of lanes, as static functions (inlined where a closure or a
/// function pointer would not be, into callers compiled for AVX2).
trait Xform<const N: usize, const M: usize> {
    fn bt(z: &[Lanes; N]) -> [Lanes; N];
    fn at(z: &[Lanes; N]) -> [Lanes; M];
}

/// F(4x4, 3x3), F(2x2, 5x5): the hand-written transforms.
struct Hand43;
struct Hand25;
/// F(3x3, 3x3), F(4x4, 5x5): factored forms of [`Tile::mats`]' matrices (a test checks them
/// against those).
struct Mat33;
struct Mat45;

impl Xform<6, 4> for Hand43 {
    #[inline(always)]
    fn bt(z: &[Lanes; 6]) -> [Lanes; 6] {
        bt(z)
    }
    #[inline(always)]
    fn at(z: &[Lanes; 6]) -> [Lanes; 4] {
        at(z)
    }
}
impl Xform<6, 2> for Hand25 {
    #[inline(always)]
    fn bt(z: &[Lanes; 6]) -> [Lanes; 6] {
        bt(z)
    }
    #[inline(always)]
    fn at(z: &[Lanes; 6]) -> [Lanes; 2] {
        at2(z)
    }
}
impl Xform<5, 3> for Mat33 {
    /// `B^T` at 0, 1, -1, -1/2 and infinity, factored.
    #[inline(always)]
    fn bt(z: &[Lanes; 5]) -> [Lanes; 5] {
        let mut o = [[0f32; L]; 5];
        for l in 0..L {
            let [z0, z1, z2, z3, z4] = [z[0][l], z[1][l], z[2][l], z[3][l], z[4][l]];
            o[0][l] = (z3 - z1) + 0.5 * (z2 - z0);
            o[1][l] = (0.5 * z1 + 1.5 * z2) + z3;
            o[2][l] = z3 - 0.5 * (z1 + z2);
            o[3][l] = z3 - z1;
            o[4][l] = (z4 - z2) + 0.5 * (z3 - z1);
        }
        o
    }
    #[inline(always)]
    fn at(z: &[Lanes; 5]) -> [Lanes; 3] {
        let mut o = [[0f32; L]; 3];
        for l in 0..L {
            let [z0, z1, z2, z3, z4] = [z[0][l], z[1][l], z[2][l], z[3][l], z[4][l]];
            let (s12, d12) = (z1 + z2, z1 - z2);
            o[0][l] = (z0 + s12) + z3;
            o[1][l] = d12 - 0.5 * z3;
            o[2][l] = (s12 + 0.25 * z3) + z4;
        }
        o
    }
}
impl Xform<8, 4> for Mat45 {
    /// `B^T` at 0, +-1, +-2, +-1/2 and infinity, factored (rows in pairs: a sum and a
    /// difference of the same two parts).
    #[inline(always)]
    fn bt(z: &[Lanes; 8]) -> [Lanes; 8] {
        let mut o = [[0f32; L]; 8];
        for l in 0..L {
            let [z0, z1, z2, z3, z4, z5, z6, z7] = std::array::from_fn(|i| z[i][l]);
            o[0][l] = (z6 - z0) + 5.25 * (z2 - z4);
            o[7][l] = (z7 - z1) + 5.25 * (z3 - z5);
            let (p, q) = ((z1 + z5) - 4.25 * z3, (z2 + z6) - 4.25 * z4);
            o[1][l] = q + p;
            o[2][l] = q - p;
            let (p, q) = (
                (0.5 * z1 - 2.5 * z3) + 2.0 * z5,
                (0.25 * z2 - 1.25 * z4) + z6,
            );
            o[3][l] = q + p;
            o[4][l] = q - p;
            let (p, q) = ((2.0 * z1 - 2.5 * z3) + 0.5 * z5, (4.0 * z2 - 5.0 * z4) + z6);
            o[5][l] = q + p;
            o[6][l] = q - p;
        }
        o
    }
    #[inline(always)]
    fn at(z: &[Lanes; 8]) -> [Lanes; 4] {
        let mut o = [[0f32; L]; 4];
        for l in 0..L {
            let [z0, z1, z2, z3, z4, z5, z6, z7] = std::array::from_fn(|i| z[i][l]);
            let (s12, d12, s34, d34, s56, d56) =
                (z1 + z2, z1 - z2, z3 + z4, z3 - z4, z5 + z6, z5 - z6);
            o[0][l] = ((z0 + s12) + s34) + s56;
            o[1][l] = (d12 + 2.0 * d34) + 0.5 * d56;
            o[2][l] = (s12 + 4.0 * s34) + 0.25 * s56;
            o[3][l] = ((d12 + 8.0 * d34) + 0.125 * d56) + z7;
        }
        o
    }
}

/// `V` of one block for `tile` ([`transform_input_of`]): the hand-written 6x6 transform (with
/// AVX2, its intrinsics copy), or `tile`'s factored transform ([`Xform`], compiled for AVX2
/// where the CPU has it).
fn transform_input(
    tile: Tile,
    xp: &[f32],
    bases: &[usize],
    cb: usize,
    plane8: usize,
    wp: usize,
    v: &mut [f32],
) {
    let avx2 = avx2_on();
    match tile {
        Tile::F4x3 | Tile::F2x5 => {
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: the CPU has AVX2 (checked just above).
                return unsafe { x86::transform_input(xp, bases, cb, plane8, wp, v) };
            }
            transform_input_of::<6, 4, Hand43>(xp, bases, cb, plane8, wp, v)
        }
        Tile::F3x3 => input_for::<5, 3, Mat33>(avx2, xp, bases, cb, plane8, wp, v),
        Tile::F4x5 => input_for::<8, 4, Mat45>(avx2, xp, bases, cb, plane8, wp, v),
    }
}

/// [`transform_input_of`] for `X`, compiled for AVX2 when `avx2`.
#[allow(clippy::too_many_arguments)]
fn input_for<const N: usize, const M: usize, X: Xform<N, M>>(
    avx2: bool,
    xp: &[f32],
    bases: &[usize],
    cb: usize,
    plane8: usize,
    wp: usize,
    v: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        #[target_feature(enable = "avx2")]
        unsafe fn avx2<const N: usize, const M: usize, X: Xform<N, M>>(
            xp: &[f32],
            bases: &[usize],
            cb: usize,
            plane8: usize,
            wp: usize,
            v: &mut [f32],
        ) {
            transform_input_of::<N, M, X>(xp, bases, cb, plane8, wp, v)
        }
        // SAFETY: the caller found AVX2.
        return unsafe { avx2::<N, M, X>(xp, bases, cb, plane8, wp, v) };
    }
    let _ = avx2;
    transform_input_of::<N, M, X>(xp, bases, cb, plane8, wp, v)
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

/// One block's output transform: the `n^2` products `m` (`M_xi`: `co x nt`, [`xi_stride`]
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

/// The output transform of one block for `N x N` patches and tiles of side `M`, `at` its
/// `A^T`: `A^T M A + bias`, ReLU, straight into the output planes.
///
/// # Safety
/// `ob.out` must be valid for writes of every output `ob.dest` names, in each of the planes.
#[inline(always)]
unsafe fn transform_output_of<const N: usize, const M: usize, X: Xform<N, M>>(ob: &OutBlock) {
    let (co, nt) = (ob.co, ob.nt);
    let xs = xi_stride(co * nt);
    for (o, &bias) in ob.bias.iter().enumerate().take(co) {
        for (k, group) in ob.dest.chunks(L).enumerate() {
            // Columns q: A^T down the rows; then the rows s[a] = (cols[.][a]).
            let mut cols = [[[0f32; L]; M]; N];
            for (q, cq) in cols.iter_mut().enumerate() {
                let mut z = [[0f32; L]; N];
                for (r, zr) in z.iter_mut().enumerate() {
                    *zr = lanes(ob.m, (r * N + q) * xs + o * nt + k * L);
                }
                *cq = X::at(&z);
            }
            let mut s = [[[0f32; L]; N]; M];
            for (a, sa) in s.iter_mut().enumerate() {
                for (q, sq) in sa.iter_mut().enumerate() {
                    *sq = cols[q][a];
                }
            }
            for (a, s_a) in s.iter().enumerate() {
                let mut rm = X::at(s_a);
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

/// [`transform_output_of`] for `tile`: the hand-written transforms of 6x6 patches (with AVX2,
/// their intrinsics copies), or `tile`'s factored transform ([`Xform`], compiled for AVX2
/// where the CPU has it).
fn transform_output(tile: Tile, ob: &OutBlock) {
    let n = tile.n();
    assert!(
        ob.m.len() >= n * n * xi_stride(ob.co * ob.nt)
            && ob.bias.len() >= ob.co
            && ob.dest.len() <= ob.nt
            && ob.nt.is_multiple_of(L)
    );
    let avx2 = avx2_on();
    // SAFETY: the caller (`Wino::run`) names in `dest` only outputs inside `out`, and each of
    // them in one block only; `m` holds the n^2 products (checked above).
    unsafe {
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            match tile {
                Tile::F4x3 => return x86::transform_output4(ob),
                Tile::F2x5 => return x86::transform_output2(ob),
                _ => {}
            }
        }
        match tile {
            Tile::F4x3 => transform_output_of::<6, 4, Hand43>(ob),
            Tile::F2x5 => transform_output_of::<6, 2, Hand25>(ob),
            Tile::F3x3 => output_for::<5, 3, Mat33>(avx2, ob),
            Tile::F4x5 => output_for::<8, 4, Mat45>(avx2, ob),
        }
    }
}

/// [`transform_output_of`] for `X`, compiled for AVX2 when `avx2`.
///
/// # Safety
/// As [`transform_output_of`].
unsafe fn output_for<const N: usize, const M: usize, X: Xform<N, M>>(avx2: bool, ob: &OutBlock) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        #[target_feature(enable = "avx2")]
        unsafe fn avx2<const N: usize, const M: usize, X: Xform<N, M>>(ob: &OutBlock) {
            transform_output_of::<N, M, X>(ob)
        }
        return avx2::<N, M, X>(ob);
    }
    let _ = avx2;
    transform_output_of::<N, M, X>(ob)
}

/// The transforms in AVX2 intrinsics.
#[cfg(target_arch = "x86_64")]
mod x86;

pub(crate) mod line;

/// Tiles per block: about 16 KiB of one position's `V` (`C x tiles`) for 6x6 patches (`nn`
/// positions: as much in all for other patches), so that the block's `V_xi` (about 600 KiB)
/// stay in the L2 cache between the input transform and the products, at
/// least 32 tiles (narrower products run far below the machine's rate) and at most 512, a
/// multiple of `L`; smaller when that leaves a thread without a block, but not below 32 tiles
/// (then the `n^2` products of one block go to the threads instead). On the AVX-512 AMD machine,
/// AlexNet at 256 px ran 6-12% slower with 32 or 64 KiB and no faster with 8 KiB.
fn block_tiles(c: usize, nn: usize, tiles: usize, threads: usize) -> usize {
    let target = (4096 * XI / (nn * c.max(1))).clamp(32, 512);
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
        u: &Transformed,
        bias: &[f32],
        out: &mut [std::mem::MaybeUninit<f32>],
    ) {
        assert!(out.len() >= self.n * self.co * self.ho * self.wo);
        let (c, co, ho, wo, tile) = (self.c, self.co, self.ho, self.wo, self.tile);
        let (ms, pn) = (tile.m(), tile.n());
        let nn = pn * pn;
        let (th, tw) = (ho.div_ceil(ms), wo.div_ceil(ms));
        let (hp, wp) = ((th - 1) * ms + pn, (tw - 1) * ms + pn);
        // Zero-padded planes whose sides are whole tiles, eight channels interleaved to a
        // pixel (the lanes of the input transform): input (ch, y, x) at
        // (ch / L, y + top, x + left, ch % L); channels past `c` are zero.
        let cb = c.div_ceil(L);
        let plane8 = hp * wp * L;
        let xp = padded_planes(
            x,
            [self.n, c, self.h, self.w],
            [hp, wp, self.top, self.left],
        );
        let per_img = th * tw;
        let tiles = self.n * per_img;
        // Tile t: its image and its first output row and column (in the padded input too: a
        // tile's patch starts where its outputs do).
        let origin = |t: usize| {
            let r = t % per_img;
            (t / per_img, (r / tw) * ms, (r % tw) * ms)
        };
        let threads = super::threads();
        let tb = block_tiles(c, nn, tiles, threads);
        let dst = SendPtr(out.as_mut_ptr().cast::<f32>());
        let c8 = cb * L;
        let (nv, nm) = (nn * xi_stride(c8 * tb), nn * xi_stride(co * tb));
        // Tiles `t0..t0 + nt_valid` (at most `tb`) as one block.
        let run = |buf: &mut [f32], t0: usize, nt_valid: usize, across: bool| {
            let (v, m) = buf.split_at_mut(nv);
            let nt = nt_valid.div_ceil(L) * L;
            // Lanes past the last tile repeat it (computed, never written out).
            let bases: Vec<usize> = (0..nt)
                .map(|i| {
                    let (img, oy, ox) = origin(t0 + i.min(nt_valid - 1));
                    img * cb * plane8 + (oy * wp + ox) * L
                })
                .collect();
            transform_input(tile, &xp, &bases, cb, plane8, wp, v);
            position_products(nn, [co, nt, c, c8], u, v, m, across);
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
            transform_output(tile, &ob);
        };
        in_blocks(tiles, tb, threads, nv + nm, run);
    }
}

/// Images `x` `(n, c, h, w)` copied into zero-padded planes of `hp x wp`, eight channels
/// interleaved to a pixel (the lanes of the input transforms): input `(img, ch, y, x)` at
/// `((img * cb + ch / L) * hp * wp + (y + top) * wp + x + left) * L + ch % L`, `cb` =
/// `ceil(c / L)`; channels past `c`, and pixels past the planes' sides, are zero (dropped).
pub(super) fn padded_planes(
    x: &[f32],
    [n, c, h, w]: [usize; 4],
    [hp, wp, top, left]: [usize; 4],
) -> Vec<f32> {
    let cb = c.div_ceil(L);
    let plane8 = hp * wp * L;
    let (rows, cols) = (
        h.min(hp.saturating_sub(top)),
        w.min(wp.saturating_sub(left)),
    );
    super::par_filled(n * cb * plane8, plane8, |i, p| {
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
            &mut p[(top * wp + left) * L..],
            wp,
        );
    })
}

/// A layer's transformed weights `U` (its positions' `co x c` matrices, one after another:
/// [`winograd_weights`], [`line::weights`]), and those matrices packed by the BLAS
/// ([`blas::Packed`]) once the first products have asked for them, where that pays
/// ([`PACK_MIN`]).
pub(crate) struct Transformed {
    u: Vec<f32>,
    packed: OnceLock<Option<Vec<blas::Packed>>>,
}

/// The smallest `U_xi` (`co * c` floats, 256 KiB) whose products take it packed, where the
/// BLAS in use packs: the larger matrices come from memory in every product, where oneMKL's
/// kernel for products this narrow reads them as stored (`nocopy`) and waits on them; packed,
/// its copying kernels stream them (VGG16 at 64 px on the Xeon: `512 x 32 x 512` at 89 ->
/// 107 GFLOP/s, `512 x 32 x 256` 80 -> 103, `512 x 16 x 512` 52 -> 59). Smaller ones stay
/// in cache and ran slower packed (`64 x 64 x 64` 140 -> 97, `128 x 32 x 128` 142 -> 108).
pub(crate) const PACK_MIN: usize = 64 * 1024;

impl Transformed {
    pub(crate) fn new(u: Vec<f32>) -> Self {
        Self {
            u,
            packed: OnceLock::new(),
        }
    }

    /// The positions' `U_xi` packed as left operands (made by the first call), or `None`
    /// (no BLAS in use packs, `U_xi` smaller than [`PACK_MIN`], or the packing failed).
    fn packed(&self, positions: usize, co: usize, c: usize, nt: usize) -> Option<&[blas::Packed]> {
        if co * c < PACK_MIN || !blas::packs() {
            return None;
        }
        let made = self.packed.get_or_init(|| {
            (0..positions)
                .map(|xi| {
                    let u = &self.u[xi * co * c..(xi + 1) * co * c];
                    // SAFETY: U_xi is co x c row-major, inside `u`.
                    unsafe { blas::pack(blas::Side::Lhs, co, c, u.as_ptr(), (c, 1), nt) }
                })
                .collect()
        });
        made.as_deref()
            .filter(|p| p.len() == positions && p[0].dims() == (co, c))
    }
}

impl std::ops::Deref for Transformed {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.u
    }
}

/// `M_xi = U_xi . V_xi` for the `positions` positions of a block: `U_xi` `co x c` row-major
/// (`xi * co * c` into `u`; packed where [`Transformed::packed`] has them), `V_xi` `c x nt` with a tile's channels contiguous (column stride
/// `c8`, [`xi_stride`] apart in `v`), `M_xi` `co x nt` ([`xi_stride`] apart in `m`); on this
/// thread, or the positions across the threads when `across`.
pub(super) fn position_products(
    positions: usize,
    [co, nt, c, c8]: [usize; 4],
    u: &Transformed,
    v: &[f32],
    m: &mut [f32],
    across: bool,
) {
    assert!(
        u.len() >= positions * co * c
            && v.len() >= positions * xi_stride(c8 * nt)
            && m.len() >= positions * xi_stride(co * nt)
            && c <= c8
    );
    let mp = SendPtr(m.as_mut_ptr());
    let packed = u.packed(positions, co, c, nt);
    let product = |xi: usize| {
        // SAFETY: U_xi is co x c row-major; V_xi is c x nt, a tile's channels contiguous (row
        // stride 1, column stride c8); M_xi is co x nt (row stride nt); all lie inside their
        // buffers (checked above), and each xi writes its own M_xi.
        unsafe {
            if let Some(p) = packed {
                return blas::sgemm_packed(
                    co,
                    nt,
                    c,
                    mp.get().add(xi * xi_stride(co * nt)),
                    nt,
                    false,
                    &p[xi],
                    v.as_ptr().add(xi * xi_stride(c8 * nt)),
                    (1, c8),
                );
            }
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
    if across {
        (0..positions).into_par_iter().for_each(product);
    } else {
        (0..positions).for_each(product);
    }
}

/// `run(buf, t0, nt, across)` for every block of tiles `t0..t0 + nt` of `0..tiles`, `buf` a
/// thread's scratch of `len` floats. With blocks enough for every thread (`tiles / tb >=
/// threads`), each thread takes an equal share of the tiles (a multiple of L), in its own
/// blocks, `across` false: a share of whole blocks left one thread a block more than the other
/// (AlexNet's 5x5 layer at 64 px: 7 blocks of 40 tiles for 2 threads). Otherwise the blocks go
/// one by one on this thread, `across` true: their products go across the threads
/// ([`position_products`]). Within a share, the tiles go
/// in as few blocks as `tb` allows, their sizes in units of L differing by at most one (144
/// tiles at most 40 a block: 40, 32, 40, 32): at most `ceil(units / k) * L <= tb` tiles a
/// block, as `tb` is a multiple of L.
pub(super) fn in_blocks(
    tiles: usize,
    tb: usize,
    threads: usize,
    len: usize,
    run: impl Fn(&mut [f32], usize, usize, bool) + Sync,
) {
    let across = tiles.div_ceil(tb) < threads;
    let blocks_of = |buf: &mut [f32], a: usize, b: usize| {
        let (units, k) = ((b - a).div_ceil(L), (b - a).div_ceil(tb));
        for i in 0..k {
            let (t0, t1) = (a + i * units / k * L, (a + (i + 1) * units / k * L).min(b));
            debug_assert!(t1 - t0 <= tb && tb.is_multiple_of(L));
            if t0 < t1 {
                run(buf, t0, t1 - t0, across)
            }
        }
    };
    if !across {
        let share = tiles.div_ceil(threads).div_ceil(L) * L;
        (0..threads).into_par_iter().for_each(|k| {
            let (a, b) = ((k * share).min(tiles), ((k + 1) * share).min(tiles));
            if a < b {
                with_scratch(len, |buf| blocks_of(buf, a, b))
            }
        });
    } else {
        with_scratch(len, |buf| blocks_of(buf, 0, tiles));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `X`'s transforms applied to the unit vectors: the columns of its `B^T` and `A^T`.
    pub(super) fn columns<const N: usize, const M: usize, X: Xform<N, M>>() -> (Vec<f64>, Vec<f64>)
    {
        let (mut bt, mut at) = (vec![0f64; N * N], vec![0f64; M * N]);
        for j in 0..N {
            let mut e = [[0f32; L]; N];
            e[j] = [1.0; L];
            for (i, r) in X::bt(&e).iter().enumerate() {
                assert!(r.iter().all(|&v| v == r[0]), "lanes differ");
                bt[i * N + j] = r[0] as f64;
            }
            for (i, r) in X::at(&e).iter().enumerate() {
                at[i * N + j] = r[0] as f64;
            }
        }
        (bt, at)
    }

    /// Every tile's transforms (the hand-written 6x6 ones and the factored ones) are the
    /// matrices that Toom-Cook gives for its points, and the 6x6 tiles' scaled `G` is that
    /// construction's `G`; each tile computes a correlation exactly in f64 (one row: `A^T
    /// [(G g) .* (B^T d)]` against the direct sums).
    #[test]
    fn transforms_are_the_points_matrices() {
        let check = |tile: Tile, (bt, at): (Vec<f64>, Vec<f64>)| {
            let m = tile.mats();
            assert_eq!(bt, m.bt, "{tile:?} B^T");
            assert_eq!(at, m.at, "{tile:?} A^T");
        };
        check(Tile::F4x3, columns::<6, 4, Hand43>());
        check(Tile::F2x5, columns::<6, 2, Hand25>());
        check(Tile::F3x3, columns::<5, 3, Mat33>());
        check(Tile::F4x5, columns::<8, 4, Mat45>());
        for tile in [Tile::F4x3, Tile::F2x5] {
            let r = tile.r();
            let hand: Vec<f64> = g_matrix(r)
                .iter()
                .flat_map(|row| row[..r].to_vec())
                .collect();
            for (a, b) in hand.iter().zip(&tile.mats().g) {
                assert!((a - b).abs() <= 1e-15, "{tile:?} G: {a} against {b}");
            }
        }
        for tile in [Tile::F4x3, Tile::F2x5, Tile::F3x3, Tile::F4x5] {
            let (m, r, n, mats) = (tile.m(), tile.r(), tile.n(), tile.mats());
            let d: Vec<f64> = (0..n).map(|i| (i as f64 * 0.7).sin()).collect();
            let g: Vec<f64> = (0..r).map(|i| (i as f64 * 1.3 + 0.2).cos()).collect();
            let prod: Vec<f64> = (0..n)
                .map(|j| {
                    let gg: f64 = (0..r).map(|k| mats.g[j * r + k] * g[k]).sum();
                    let dd: f64 = (0..n).map(|k| mats.bt[j * n + k] * d[k]).sum();
                    gg * dd
                })
                .collect();
            for i in 0..m {
                let y: f64 = (0..n).map(|j| mats.at[i * n + j] * prod[j]).sum();
                let want: f64 = (0..r).map(|k| g[k] * d[i + k]).sum();
                assert!(
                    (y - want).abs() < 1e-12,
                    "{tile:?} output {i}: {y} against {want}"
                );
            }
        }
    }

    /// The tile for a map: the larger tiles except where the map is smaller than they are.
    #[test]
    fn tiles_follow_the_map() {
        assert_eq!(tile_for(3, 3, 3), Some(Tile::F3x3));
        assert_eq!(tile_for(3, 4, 4), Some(Tile::F4x3));
        assert_eq!(tile_for(3, 17, 17), Some(Tile::F4x3)); // a tie: 900 positions each
        assert_eq!(tile_for(3, 15, 15), Some(Tile::F4x3));
        assert_eq!(tile_for(5, 7, 7), Some(Tile::F4x5));
        assert_eq!(tile_for(5, 31, 31), Some(Tile::F4x5));
        assert_eq!(tile_for(5, 2, 2), Some(Tile::F2x5));
        assert_eq!(tile_for(7, 8, 8), None);
    }
}
