//! 2-D convolution with bias and an optional ReLU, for the frozen feature networks (FID
//! Inception-v3, LPIPS): NCHW input, OIHW weights, any stride, asymmetric zero padding, no
//! dilation or groups, forward only.
//!
//! On the CPU each image is a product on the BLAS path ([`super::blas::sgemm`]):
//! `out (c_out x Ho*Wo) = W (c_out x C*kh*kw) . col (C*kh*kw x Ho*Wo)`, where `col` holds the
//! image's patches (im2col) for a tile of output pixels at a time, sized to stay in cache; a 1x1
//! stride-1 unpadded convolution reads the image itself. Bias and ReLU are applied to each
//! output tile right after its product (the epilogue), while it is in cache. Outputs smaller
//! than [`GROUP_COLUMNS`] pixels make poor products one image at a time: images are grouped,
//! their patches side by side, into one product, and bias and ReLU are applied on the way to
//! each image's output (not a 1x1 convolution read in place: its products are as fast per
//! image, and grouping would copy its input). The weights are used as they are stored (OIHW is already
//! `c_out x (C*kh*kw)` row-major, the order `col`'s rows follow), and the padding of a
//! stride-1 convolution is never materialised. A strided convolution first splits each image
//! into space-to-depth planes (zero padding included), so that its patch rows are contiguous
//! runs too rather than element-by-element gathers. Images (or groups) go to rayon's threads
//! when there are enough of them; otherwise each product is split across the threads.
//! 3x3 and 5x5 stride-1 layers with channels and tiles enough take the Winograd path
//! ([`super::winograd`]), and so do strided layers whose space-to-depth form is one (AlexNet's
//! 11x11/4 stem is a 3x3 convolution of its input's 48 planes: [`s2d_weights`]); 1x7, 7x1,
//! 1x3 and 3x1 stride-1 layers (Inception's factorised towers) take the 1-D Winograd path
//! ([`super::winograd::line`]) under the same rules;
//! [`Conv2d::stack`] runs several convolutions of one input as one.
//!
//! [`conv2d_bias_relu_ops`] is the reference form in candle ops (pad, `conv2d`, add, ReLU),
//! used on other devices and when the fused kernels are off; the tests check one against the
//! other.

use super::blas::{sgemm, Par};
use super::winograd::Transformed;
use candle_core::{Result, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

static MACS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Multiply-adds of the convolutions run on the CPU path since the process started (the
/// bench's FLOP count of a network: read before and after one call).
pub fn conv_macs() -> u64 {
    MACS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Stride and zero padding (top, bottom, left, right) of a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    pub stride: usize,
    pub pad: [usize; 4],
}

impl ConvGeometry {
    /// The same padding on every side.
    pub fn same(stride: usize, pad: usize) -> Self {
        Self {
            stride,
            pad: [pad; 4],
        }
    }

    fn out(&self, h: usize, w: usize, kh: usize, kw: usize) -> Result<(usize, usize)> {
        let [t, b, l, r] = self.pad;
        let (hp, wp) = (h + t + b, w + l + r);
        if hp < kh || wp < kw || self.stride == 0 {
            candle_core::bail!(
                "conv2d: a {kh}x{kw} kernel (stride {}) does not fit a padded {hp}x{wp} input",
                self.stride
            );
        }
        Ok(((hp - kh) / self.stride + 1, (wp - kw) / self.stride + 1))
    }
}

/// Output pixels per im2col tile: about 1 MiB of patches, at least 256 columns.
fn tile_pixels(k: usize, pixels: usize) -> usize {
    ((1usize << 18) / k.max(1)).max(256).min(pixels.max(1))
}

/// `relu?(conv2d(x, weight) + bias)` in candle ops: the reference form.
pub fn conv2d_bias_relu_ops(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    g: ConvGeometry,
    relu: bool,
) -> Result<Tensor> {
    let [t, b, l, r] = g.pad;
    let y = if t == b && b == l && l == r {
        x.conv2d(weight, t, g.stride, 1, 1)?
    } else {
        x.pad_with_zeros(2, t, b)?
            .pad_with_zeros(3, l, r)?
            .conv2d(weight, 0, g.stride, 1, 1)?
    };
    let y = y.broadcast_add(&bias.reshape((1, (), 1, 1))?)?;
    if relu {
        y.relu()
    } else {
        Ok(y)
    }
}

/// [`conv2d_bias_relu_ops`] with the ReLU on output channels `0..relu` only.
pub(crate) fn ops_relu_below(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    g: ConvGeometry,
    relu: usize,
) -> Result<Tensor> {
    let co = weight.dim(0)?;
    let y = conv2d_bias_relu_ops(x, weight, bias, g, relu >= co)?;
    if relu == 0 || relu >= co {
        Ok(y)
    } else {
        Tensor::cat(
            &[y.narrow(1, 0, relu)?.relu()?, y.narrow(1, relu, co - relu)?],
            1,
        )
    }
}

/// `relu?(conv2d(x, weight) + bias)`: `x` `(n, c, h, w)`, `weight` `(c_out, c, kh, kw)`,
/// `bias` `(c_out)` (any shape of `c_out` elements), f32. A convolution the Winograd path
/// takes ([`super::winograd::eligible`]) transforms the weights on every call; [`Conv2d`]
/// keeps them.
pub fn conv2d_bias_relu(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    g: ConvGeometry,
    relu: bool,
) -> Result<Tensor> {
    conv_with(x, weight, bias, g, relu, WinoPath::Auto)
}

/// Which way a convolution that may take the Winograd path goes.
pub(crate) enum WinoPath<'a> {
    /// Winograd where it applies, the weights transformed for this call.
    Auto,
    /// Winograd where it applies, the weights' transform kept in the cell for its tile
    /// (computed by the first call that takes the path with that tile).
    Cached(&'a TileCache),
    /// im2col (for the tests' comparisons).
    #[cfg_attr(not(test), allow(dead_code))]
    Off,
    /// Winograd for every kernel it can compute, whatever the channel counts (for the tests).
    #[cfg_attr(not(test), allow(dead_code))]
    Always,
}

/// A layer's Winograd transforms of its weights, one per [`super::winograd::Tile`] (the tile
/// follows the map's size), each made by the first call that takes it.
/// The last cell keeps the 1-D transform of a 1 x r or r x 1 layer ([`super::winograd::line`]).
pub(crate) type TileCache = [std::sync::OnceLock<Arc<Transformed>>; super::winograd::TILES + 1];

/// A convolution layer of a frozen network: weights, bias, geometry, activation, and the
/// weights' Winograd transforms once the first CPU calls have computed them.
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Tensor,
    pub g: ConvGeometry,
    /// Output channels `0..relu` get the ReLU (all or none, except in [`Conv2d::stack`]s).
    pub relu: usize,
    wino: TileCache,
}

impl Conv2d {
    pub fn new(weight: Tensor, bias: Tensor, g: ConvGeometry, relu: bool) -> Self {
        let relu = if relu { weight.dim(0).unwrap_or(0) } else { 0 };
        Self {
            weight,
            bias,
            g,
            relu,
            wino: Default::default(),
        }
    }

    /// Convolutions of one input with the same kernel size and geometry as one layer, their
    /// output channels one after another (one product reads the input once): each part's
    /// ReLU flag with it, the parts with a ReLU first.
    pub fn stack(parts: &[(&Conv2d, bool)]) -> Result<Self> {
        let Some((first, _)) = parts.first() else {
            candle_core::bail!("Conv2d::stack: no convolutions");
        };
        let (_, c, kh, kw) = first.weight.dims4()?;
        // Output channels with a ReLU, and of all the parts so far.
        let (mut relu, mut all) = (0, 0);
        for (i, (p, r)) in parts.iter().enumerate() {
            let (co, pc, ph, pw) = p.weight.dims4()?;
            if (pc, ph, pw) != (c, kh, kw) || p.g != first.g {
                candle_core::bail!("Conv2d::stack: part {i} has another input, kernel or geometry");
            }
            if *r {
                if relu < all {
                    candle_core::bail!("Conv2d::stack: the parts with a ReLU must come first");
                }
                relu += co;
            }
            all += co;
        }
        let w: Vec<&Tensor> = parts.iter().map(|(p, _)| &p.weight).collect();
        let b: Vec<Tensor> = parts
            .iter()
            .map(|(p, _)| p.bias.flatten_all())
            .collect::<Result<_>>()?;
        Ok(Self {
            weight: Tensor::cat(&w, 0)?,
            bias: Tensor::cat(&b, 0)?,
            g: first.g,
            relu,
            wino: Default::default(),
        })
    }

    /// `relu?(conv2d(x, weight) + bias)`, as [`conv2d_bias_relu`] (the ReLU on output channels
    /// `0..relu`).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let path = WinoPath::Cached(&self.wino);
        conv_relu_below(x, &self.weight, &self.bias, self.g, self.relu, path)
    }
}

/// The Winograd transform for `tile` of OIHW f32 weights of a kernel the path computes
/// ([`super::winograd::fits`]): of the weights themselves at stride 1, of their
/// space-to-depth form ([`s2d_weights`]) at a larger stride.
fn transformed(weight: &Tensor, stride: usize, tile: super::winograd::Tile) -> Result<Vec<f32>> {
    let (co, c, k, _) = weight.dims4()?;
    let w = weight.flatten_all()?.to_vec1::<f32>()?;
    let w = if stride > 1 {
        s2d_weights(&w, [co, c, k], stride)
    } else {
        w
    };
    Ok(super::winograd::winograd_weights(
        &w,
        co,
        c * stride * stride,
        tile,
    ))
}

/// OIHW `k x k` weights `(co, c, k, k)` of a stride-`s` convolution as the weights of the
/// stride-1 convolution of the input's space-to-depth planes ([`ConvPlan::space_to_depth`]):
/// `(co, c s^2, r, r)`, `r` = [`super::winograd::s2d_kernel`], plane `(ch, dy, dx)`'s tap
/// `(ky, kx)` is tap `(s ky + dy, s kx + dx)` of channel `ch`, zero past `k`.
fn s2d_weights(w: &[f32], [co, c, k]: [usize; 3], s: usize) -> Vec<f32> {
    let r = super::winograd::s2d_kernel(k, s);
    let mut out = vec![0f32; co * c * s * s * r * r];
    for (i, tap) in out.iter_mut().enumerate() {
        let (kx, ky, pi, o) = (
            i % r,
            i / r % r,
            i / (r * r) % (c * s * s),
            i / (r * r * c * s * s),
        );
        let (ch, dy, dx) = (pi / (s * s), pi / s % s, pi % s);
        let (y, x) = (s * ky + dy, s * kx + dx);
        if y < k && x < k {
            *tap = w[((o * c + ch) * k + y) * k + x];
        }
    }
    out
}

/// The weights' transform in `cell`, made by `make` on the first call (an error is not kept).
fn kept(
    cell: &std::sync::OnceLock<Arc<Transformed>>,
    make: impl FnOnce() -> Result<Arc<Transformed>>,
) -> Result<Arc<Transformed>> {
    match cell.get() {
        Some(u) => Ok(u.clone()),
        None => {
            let u = make()?;
            Ok(cell.get_or_init(|| u).clone())
        }
    }
}

pub(crate) fn conv_with(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    g: ConvGeometry,
    relu: bool,
    wino: WinoPath,
) -> Result<Tensor> {
    let relu = if relu { weight.dim(0)? } else { 0 };
    conv_relu_below(x, weight, bias, g, relu, wino)
}

/// [`conv_with`] with the ReLU on output channels `0..relu` only.
fn conv_relu_below(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    g: ConvGeometry,
    relu: usize,
    wino: WinoPath,
) -> Result<Tensor> {
    if !super::fused(x) || weight.dtype() != candle_core::DType::F32 {
        return ops_relu_below(x, weight, bias, g, relu);
    }
    let (n, c, h, w) = x.dims4()?;
    let (co, ci, kh, kw) = weight.dims4()?;
    if ci != c {
        candle_core::bail!("conv2d: the input has {c} channels, the weights expect {ci}");
    }
    if bias.elem_count() != co {
        candle_core::bail!(
            "conv2d: {} bias values for {co} output channels",
            bias.elem_count()
        );
    }
    let (ho, wo) = g.out(h, w, kh, kw)?;
    if n * c * h * w * co * kh * kw == 0 {
        candle_core::bail!(
            "conv2d: an empty input or kernel ({n}x{c}x{h}x{w} input, {co}x{ci}x{kh}x{kw} kernel)"
        );
    }
    // 1 x r and r x 1 kernels: the 1-D Winograd path, where it applies.
    let line = match super::winograd::line::kernel(kh, kw, g.stride, g.pad) {
        None => None,
        Some((r, _)) => {
            let make = || -> Result<Arc<Transformed>> {
                let w = weight.flatten_all()?.to_vec1::<f32>()?;
                Ok(Arc::new(Transformed::new(super::winograd::line::weights(
                    &w, co, c, r,
                ))))
            };
            let geometry = (kh, kw, g.stride, g.pad);
            match &wino {
                WinoPath::Off => None,
                // The transform's epilogue has one ReLU flag for all channels.
                _ if relu != 0 && relu < co => None,
                WinoPath::Always => Some(make()?),
                _ if !super::winograd::line::eligible(c, co, geometry, [n, ho, wo]) => None,
                WinoPath::Cached(cells) => Some(kept(&cells[super::winograd::TILES], make)?),
                WinoPath::Auto => Some(make()?),
            }
        }
    };
    // The tile for this map, where the kernel has one.
    let tile = super::winograd::tile_for(super::winograd::s2d_kernel(kh, g.stride), ho, wo);
    let wino = match (wino, tile) {
        (_, None) => None,
        (WinoPath::Always, Some(t)) if super::winograd::fits(kh, kw, g.stride) => Some((
            t,
            Arc::new(Transformed::new(transformed(weight, g.stride, t)?)),
        )),
        // The transform's epilogue has one ReLU flag for all channels.
        _ if relu != 0 && relu < co => None,
        _ if !super::winograd::eligible(c, co, kh, kw, g.stride, [n, ho, wo]) => None,
        (WinoPath::Cached(cells), Some(t)) => Some((
            t,
            kept(&cells[t.index()], || {
                Ok(Arc::new(Transformed::new(transformed(
                    weight, g.stride, t,
                )?)))
            })?,
        )),
        (WinoPath::Auto, Some(t)) => Some((
            t,
            Arc::new(Transformed::new(transformed(weight, g.stride, t)?)),
        )),
        (WinoPath::Off | WinoPath::Always, _) => None,
    };
    let plan = ConvPlan {
        wino,
        line,
        n,
        c,
        h,
        w,
        co,
        kh,
        kw,
        ho,
        wo,
        g,
        relu,
    };
    MACS.fetch_add(
        (n * co * ho * wo * c * kh * kw) as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    x.contiguous()?
        .apply_op3_no_bwd(&weight.contiguous()?, &bias.contiguous()?, &plan)
}

impl candle_core::CustomOp3 for ConvPlan {
    fn name(&self) -> &'static str {
        "lqae-conv2d-bias-relu"
    }
    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
        s3: &candle_core::CpuStorage,
        l3: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let xv = super::slice(s1, l1, "conv2d input")?;
        let wv = super::slice(s2, l2, "conv2d weights")?;
        let bv = super::slice(s3, l3, "conv2d bias")?;
        let (n, co, ho, wo) = (self.n, self.co, self.ho, self.wo);
        let len = n * co * ho * wo;
        if let (Some(u), Some((r, vertical))) = (
            &self.line,
            super::winograd::line::kernel(self.kh, self.kw, self.g.stride, self.g.pad),
        ) {
            let mut out = Vec::with_capacity(len);
            super::winograd::line::Line {
                n,
                c: self.c,
                h: self.h,
                w: self.w,
                co,
                ho,
                wo,
                r,
                vertical,
                before: if vertical {
                    self.g.pad[0]
                } else {
                    self.g.pad[2]
                },
                relu: self.relu >= co,
            }
            .run(xv, u, bv, out.spare_capacity_mut());
            // SAFETY: `run` wrote all `len` elements.
            unsafe { out.set_len(len) };
            return Ok((super::storage(out), (n, co, ho, wo).into()));
        }
        if let Some((tile, u)) = &self.wino {
            // At a stride, the stride-1 convolution of the space-to-depth planes (their zero
            // padding included) by the weights' space-to-depth form.
            let s = self.g.stride;
            let (src, _) = self.patch_source(xv);
            let (h, w, top, left) = if s > 1 {
                let (hs, ws) = self.s2d_sides();
                (hs, ws, 0, 0)
            } else {
                (self.h, self.w, self.g.pad[0], self.g.pad[2])
            };
            let mut out = Vec::with_capacity(len);
            super::winograd::Wino {
                n,
                c: self.c * s * s,
                h,
                w,
                co,
                ho,
                wo,
                top,
                left,
                relu: self.relu >= co,
                tile: *tile,
            }
            .run(&src, u, bv, out.spare_capacity_mut());
            // SAFETY: `run` wrote all `len` elements (not zeroed first: on the calling thread
            // alone, that was 2-3% of AlexNet's time).
            unsafe { out.set_len(len) };
            return Ok((super::storage(out), (n, co, ho, wo).into()));
        }
        let (per_in, per_out, p) = (self.c * self.h * self.w, co * ho * wo, ho * wo);
        // Small outputs are poor products one image at a time: images go together, their
        // patches side by side, until a product has about GROUP_COLUMNS columns.
        // Each thread gets a group of its own when there are images enough: one-thread
        // products of a few hundred columns run nearer the machine's rate than one product
        // split across the threads.
        // A 1x1 convolution read in place is not grouped: grouping would copy its input
        // side by side and its output back, and its products (hundreds of rows and inner
        // size) run at the same rate on one 17x17 or 8x8 map as on several.
        let threads = super::threads();
        let group = if self.direct() {
            1
        } else {
            GROUP_COLUMNS.div_ceil(p).clamp(1, (n / threads).max(1))
        };
        let par = if n.div_ceil(group) >= threads && threads > 1 {
            Par::None
        } else {
            Par::Rayon
        };
        let run = |(o, xi): (&mut [f32], &[f32])| {
            if group == 1 {
                self.image(xi, wv, bv, o, par)
            } else {
                self.images(xi, wv, bv, o, par)
            }
        };
        let out = match par {
            // Each group's output zeroed by the thread that computes it.
            Par::None => super::par_filled(len, group * per_out, |i, o| {
                run((
                    o,
                    &xv[i * group * per_in..((i + 1) * group * per_in).min(xv.len())],
                ))
            }),
            Par::Rayon => {
                let mut out = vec![0f32; len];
                out.chunks_mut(group * per_out)
                    .zip(xv.chunks(group * per_in))
                    .for_each(run);
                out
            }
        };
        Ok((super::storage(out), (n, co, ho, wo).into()))
    }
}

avx2_or_baseline! {
    /// `v = relu?(v + b)` over a row of a product's output (the epilogue).
    fn bias_act(row: &mut [f32], b: f32, relu: bool) {
        if relu {
            for v in row.iter_mut() {
                *v = (*v + b).max(0.0);
            }
        } else {
            for v in row.iter_mut() {
                *v += b;
            }
        }
    }
}

avx2_or_baseline! {
    /// `dst = relu?(src + b)`.
    fn bias_act_from(dst: &mut [f32], src: &[f32], b: f32, relu: bool) {
        if relu {
            for (v, &s) in dst.iter_mut().zip(src) {
                *v = (s + b).max(0.0);
            }
        } else {
            for (v, &s) in dst.iter_mut().zip(src) {
                *v = s + b;
            }
        }
    }
}

/// Columns a product should have at least before images are grouped into it.
const GROUP_COLUMNS: usize = 1024;

/// One convolution's sizes, geometry and activation: the op the CPU path applies.
struct ConvPlan {
    /// The tile and the weights' Winograd transform for it, for a convolution that takes
    /// that path.
    wino: Option<(super::winograd::Tile, Arc<Transformed>)>,
    /// The 1-D transform of the weights of a 1 x r or r x 1 convolution that takes that path.
    line: Option<Arc<Transformed>>,
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    co: usize,
    kh: usize,
    kw: usize,
    ho: usize,
    wo: usize,
    g: ConvGeometry,
    /// Output channels `0..relu` get the ReLU.
    relu: usize,
}

impl ConvPlan {
    /// A 1x1 stride-1 unpadded convolution: its products read the image itself.
    fn direct(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.g.stride == 1 && self.g.pad == [0; 4]
    }

    /// One image: `x` `(c, h, w)` into `out` `(co, ho, wo)`.
    fn image(&self, x: &[f32], wt: &[f32], bias: &[f32], out: &mut [f32], par: Par) {
        let (k, p) = (self.c * self.kh * self.kw, self.ho * self.wo);
        let direct = self.direct();
        let tile = if direct { p } else { tile_pixels(k, p) };
        let (src, _) = self.patch_source(x);
        let x = &src[..];
        let mut tiles = |col: &mut [f32]| {
            for q0 in (0..p).step_by(tile) {
                self.tile(x, wt, bias, out, par, q0, tile.min(p - q0), col);
            }
        };
        if direct {
            tiles(&mut [])
        } else {
            // Every patch is written before the product reads it.
            super::with_scratch(k * tile, tiles)
        }
    }

    /// Output pixels `q0..q0 + tn` of one image (as [`Self::image`]), their patches in `col`
    /// (`k * tn` floats; unused, and empty, for a 1x1 convolution read in place).
    #[allow(clippy::too_many_arguments)]
    fn tile(
        &self,
        x: &[f32],
        wt: &[f32],
        bias: &[f32],
        out: &mut [f32],
        par: Par,
        q0: usize,
        tn: usize,
        col: &mut [f32],
    ) {
        let relu = self.relu;
        let (k, p) = (self.c * self.kh * self.kw, self.ho * self.wo);
        let (rhs, rhs_rs) = if self.direct() {
            (x.as_ptr(), p)
        } else {
            self.im2col(x, q0, tn, &mut col[..k * tn], tn);
            (col.as_ptr(), tn)
        };
        // SAFETY: W is co x k row-major; rhs is k x tn with row stride rhs_rs; the
        // destination is rows 0..co, columns q0..q0+tn of out (co x p, row stride p).
        unsafe {
            sgemm(
                self.co,
                tn,
                k,
                out.as_mut_ptr().add(q0),
                p,
                false,
                wt.as_ptr(),
                (k, 1),
                rhs,
                (rhs_rs, 1),
                0.0,
                1.0,
                par,
            );
        }
        for (i, (o, &b)) in out.chunks_mut(p).zip(bias).enumerate() {
            bias_act(&mut o[q0..q0 + tn], b, i < relu);
        }
    }

    /// Several images, `x` `(g, c, h, w)` into `out` `(g, co, ho, wo)`, in one product: the
    /// images' patches side by side (`k x g*p`), then bias and ReLU on the way to each image.
    fn images(&self, x: &[f32], wt: &[f32], bias: &[f32], out: &mut [f32], par: Par) {
        let relu = self.relu;
        let (k, p) = (self.c * self.kh * self.kw, self.ho * self.wo);
        let g = x.len() / (self.c * self.h * self.w);
        let cols = g * p;
        let (src, per_in) = self.patch_source(x);
        let x = &src[..];
        // The patches, then the product: every float is written before it is read.
        super::with_scratch(k * cols + self.co * cols, |buf| {
            let (col, tmp) = buf.split_at_mut(k * cols);
            let fill = |(r, row): (usize, &mut [f32])| {
                for (xi, seg) in x.chunks(per_in).zip(row.chunks_mut(p)) {
                    self.patch_row(xi, r, 0, seg);
                }
            };
            match par {
                Par::Rayon => col.par_chunks_mut(cols).enumerate().for_each(fill),
                Par::None => col.chunks_mut(cols).enumerate().for_each(fill),
            }
            // SAFETY: W is co x k, col is k x cols, tmp is co x cols, all row-major and dense.
            unsafe {
                sgemm(
                    self.co,
                    cols,
                    k,
                    tmp.as_mut_ptr(),
                    cols,
                    false,
                    wt.as_ptr(),
                    (k, 1),
                    col.as_ptr(),
                    (cols, 1),
                    0.0,
                    1.0,
                    par,
                );
            }
            for (j, o) in out.chunks_mut(self.co * p).enumerate() {
                for (i, ((row, t), &b)) in
                    o.chunks_mut(p).zip(tmp.chunks(cols)).zip(bias).enumerate()
                {
                    bias_act_from(row, &t[j * p..(j + 1) * p], b, i < relu);
                }
            }
        })
    }

    /// Patches of output pixels `q0..q0 + tn` (row-major over `ho x wo`): row `(ch, i, j)` of
    /// `col` (`k` rows `ld` apart, `tn` used) holds input `(ch, oh * s + i - top, ow * s + j -
    /// left)`, 0 outside.
    fn im2col(&self, x: &[f32], q0: usize, tn: usize, col: &mut [f32], ld: usize) {
        let k = self.c * self.kh * self.kw;
        for r in 0..k {
            self.patch_row(x, r, q0, &mut col[r * ld..r * ld + tn]);
        }
    }

    /// Images `(g, c, h, w)` as [`Self::patch_row`] reads them, with the floats per image:
    /// themselves, or for a strided convolution their [`Self::space_to_depth`] planes, one
    /// image after another.
    fn patch_source<'a>(&self, x: &'a [f32]) -> (std::borrow::Cow<'a, [f32]>, usize) {
        let per_in = self.c * self.h * self.w;
        if self.g.stride == 1 {
            return (x.into(), per_in);
        }
        let (hs, ws) = self.s2d_sides();
        let per = self.c * self.g.stride * self.g.stride * hs * ws;
        let planes = super::par_filled(x.len() / per_in * per, per, |i, d| {
            self.space_to_depth(&x[i * per_in..(i + 1) * per_in], d)
        });
        (planes.into(), per)
    }

    /// Sides of the planes of [`Self::space_to_depth`].
    fn s2d_sides(&self) -> (usize, usize) {
        let s = self.g.stride;
        (self.ho + (self.kh - 1) / s, self.wo + (self.kw - 1) / s)
    }

    /// One image `(c, h, w)` of a strided convolution split into `c * s * s` planes of
    /// [`Self::s2d_sides`], written into `out` (which holds zeros): plane `(ch, dy, dx)` holds
    /// the zero-padded input `(ch, s Y + dy - top, s X + dx - left)` at `(Y, X)`, so that every
    /// patch row is a contiguous run of one plane (kernel tap `(i, j)` of output `(oh, ow)` is
    /// plane `(ch, i % s, j % s)` at `(oh + i / s, ow + j / s)`).
    fn space_to_depth(&self, x: &[f32], out: &mut [f32]) {
        let (s, [top, _, left, _]) = (self.g.stride, self.g.pad);
        let (h, w) = (self.h, self.w);
        let (hs, ws) = self.s2d_sides();
        for (pi, plane) in out.chunks_mut(hs * ws).enumerate() {
            let (ch, dy, dx) = (pi / (s * s), pi / s % s, pi % s);
            let src = &x[ch * h * w..(ch + 1) * h * w];
            // Columns X with 0 <= s X + dx - left < w.
            let x_lo = (left.saturating_sub(dx)).div_ceil(s);
            let x_hi = ((w + left).saturating_sub(dx)).div_ceil(s).min(ws);
            for (y, row) in plane.chunks_mut(ws).enumerate() {
                let iy = (s * y + dy) as isize - top as isize;
                if iy < 0 || iy >= h as isize || x_lo >= x_hi {
                    continue;
                }
                let srow = &src[iy as usize * w..];
                let first = s * x_lo + dx - left;
                for (v, &e) in row[x_lo..x_hi]
                    .iter_mut()
                    .zip(srow[first..].iter().step_by(s))
                {
                    *v = e;
                }
            }
        }
    }

    /// Row `r = (ch, i, j)` of the patches of output pixels `q0..q0 + row.len()`; `x` is the
    /// image, or its [`Self::space_to_depth`] planes for a strided convolution.
    fn patch_row(&self, x: &[f32], r: usize, q0: usize, row: &mut [f32]) {
        let (s, [top, _, left, _]) = (self.g.stride, self.g.pad);
        let (h, w, wo) = (self.h, self.w, self.wo);
        let tn = row.len();
        let (ch, i, j) = (r / (self.kh * self.kw), r / self.kw % self.kh, r % self.kw);
        if s > 1 {
            let (hs, ws) = self.s2d_sides();
            let pi = (ch * s + i % s) * s + j % s;
            let plane = &x[pi * hs * ws..(pi + 1) * hs * ws];
            let (ky, kx) = (i / s, j / s);
            let (mut q, mut dst) = (q0, 0);
            while dst < tn {
                let (oh, ow0) = (q / wo, q % wo);
                let run = (wo - ow0).min(tn - dst);
                let at = (oh + ky) * ws + ow0 + kx;
                copy_short(&mut row[dst..dst + run], &plane[at..at + run]);
                q += run;
                dst += run;
            }
            return;
        }
        let plane = &x[ch * h * w..(ch + 1) * h * w];
        if j == left && w == wo {
            // A tap with no horizontal offset of a map as wide as its output (a 7x1 kernel,
            // the middle column of a 3x3 one): output pixel q reads input pixel
            // q + (i - top) w, so the row is one run of the plane between zeros.
            let shift = i as isize - top as isize;
            let valid = |rows: isize| (rows.max(0) as usize * w).clamp(q0, q0 + tn) - q0;
            let (a, b) = (valid(-shift), valid(h as isize - shift));
            row[..a].fill(0.0);
            if b > a {
                let at = ((q0 + a) as isize + shift * w as isize) as usize;
                row[a..b].copy_from_slice(&plane[at..at + b - a]);
            }
            row[b.max(a)..].fill(0.0);
            return;
        }
        let mut q = q0;
        let mut dst = 0;
        while dst < tn {
            let (oh, ow0) = (q / wo, q % wo);
            let run = (wo - ow0).min(tn - dst);
            let seg = &mut row[dst..dst + run];
            let ih = (oh * s + i) as isize - top as isize;
            if ih < 0 || ih >= h as isize {
                seg.fill(0.0);
            } else {
                // Input columns ow0 + j - left .. : zeros left and right of the image.
                let src = &plane[ih as usize * w..(ih as usize + 1) * w];
                let c0 = (ow0 + j) as isize - left as isize;
                let lo = ((-c0).max(0) as usize).min(run);
                let hi = ((w as isize - c0).clamp(0, run as isize)) as usize;
                seg[..lo].fill(0.0);
                if hi > lo {
                    let a = (c0 + lo as isize) as usize;
                    copy_short(&mut seg[lo..hi], &src[a..a + hi - lo]);
                }
                seg[hi.max(lo)..].fill(0.0);
            }
            q += run;
            dst += run;
        }
    }
}

/// `dst.copy_from_slice(src)` for the short runs of a patch row (one output row of a small
/// map: 8 to 35 floats in Inception's 17x17 and 35x35 layers) without a call: whole vectors of
/// 8 (or 4), the last one overlapping the one before, where `copy_from_slice` (and a loop for
/// the rest, which the compiler turns into the same call) calls `memmove` for each run.
#[inline]
fn copy_short(dst: &mut [f32], src: &[f32]) {
    fn copy<const N: usize>(dst: &mut [f32], src: &[f32]) {
        let d: &mut [f32; N] = dst.try_into().unwrap();
        *d = src.try_into().unwrap();
    }
    let n = dst.len();
    assert_eq!(n, src.len());
    match n {
        65.. => dst.copy_from_slice(src),
        8.. => {
            for at in (0..n - 8).step_by(8) {
                copy::<8>(&mut dst[at..at + 8], &src[at..at + 8]);
            }
            copy::<8>(&mut dst[n - 8..], &src[n - 8..]);
        }
        4.. => {
            copy::<4>(&mut dst[..4], &src[..4]);
            copy::<4>(&mut dst[n - 4..], &src[n - 4..]);
        }
        _ => {
            if n > 0 {
                dst[0] = src[0];
            }
            if n > 1 {
                dst[1] = src[1];
            }
            if n > 2 {
                dst[2] = src[2];
            }
        }
    }
}
