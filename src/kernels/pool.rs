//! Square max and average pooling over NCHW planes, forward only, for the frozen feature
//! networks (FID Inception-v3, LPIPS): one pass per output plane, planes split across rayon's
//! threads. Padding never enters a window: a max is over the window's in-image values and an
//! average divides by their count (`count_include_pad=False`, as the FID Inception pools).
//!
//! [`pool2d_ops`] is the reference form in candle ops (zero padding, candle's pooling, and for
//! the average the in-image count pooled the same way), used on other devices and when the
//! fused kernels are off. Zero padding equals the in-image max only for inputs that are never
//! negative: the networks pool ReLU outputs (and unpadded windows), and the tests compare the
//! two forms there and check negative inputs against a direct computation.

use candle_core::{DType, Result, Tensor};
use rayon::prelude::*;

/// Which pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    /// The mean of the window's in-image values.
    Avg,
}

/// A `k x k` window every `stride` pixels over the input padded by `pad` on each side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    pub kind: PoolKind,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Pool {
    fn out(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        let (hp, wp) = (h + 2 * self.pad, w + 2 * self.pad);
        if hp < self.k || wp < self.k || self.stride == 0 || self.pad >= self.k {
            candle_core::bail!(
                "pool2d: a {0}x{0} window (stride {1}, padding {2}) does not fit a {h}x{w} input",
                self.k,
                self.stride,
                self.pad
            );
        }
        Ok((
            (hp - self.k) / self.stride + 1,
            (wp - self.k) / self.stride + 1,
        ))
    }
}

/// The pooling in candle ops: the reference form.
pub fn pool2d_ops(x: &Tensor, p: Pool) -> Result<Tensor> {
    let pad = |t: &Tensor| -> Result<Tensor> {
        if p.pad == 0 {
            Ok(t.clone())
        } else {
            t.pad_with_zeros(2, p.pad, p.pad)?
                .pad_with_zeros(3, p.pad, p.pad)
        }
    };
    let (k, s) = ((p.k, p.k), (p.stride, p.stride));
    match p.kind {
        PoolKind::Max => pad(x)?.max_pool2d_with_stride(k, s),
        PoolKind::Avg => {
            let sum = pad(x)?.avg_pool2d_with_stride(k, s)?;
            if p.pad == 0 {
                return Ok(sum);
            }
            let (_, _, h, w) = x.dims4()?;
            let ones = Tensor::ones((1, 1, h, w), DType::F32, x.device())?;
            let count = pad(&ones)?.avg_pool2d_with_stride(k, s)?;
            sum.broadcast_div(&count)
        }
    }
}

/// Pool `x` `(n, c, h, w)`, f32.
pub fn pool2d(x: &Tensor, p: Pool) -> Result<Tensor> {
    if !super::fused(x) {
        return pool2d_ops(x, p);
    }
    let (n, c, h, w) = x.dims4()?;
    let (ho, wo) = p.out(h, w)?;
    if h * w == 0 {
        candle_core::bail!("pool2d: an empty {h}x{w} input");
    }
    x.contiguous()?.apply_op1_no_bwd(&PoolOp {
        p,
        n,
        c,
        h,
        w,
        ho,
        wo,
    })
}

/// One pooling's sizes: the op the CPU path applies.
struct PoolOp {
    p: Pool,
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
}

impl candle_core::CustomOp1 for PoolOp {
    fn name(&self) -> &'static str {
        "lqae-pool2d"
    }
    fn cpu_fwd(
        &self,
        s: &candle_core::CpuStorage,
        l: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let xv = super::slice(s, l, "pool2d input")?;
        let (p, h, w, ho, wo) = (self.p, self.h, self.w, self.ho, self.wo);
        let mut out = vec![0f32; self.n * self.c * ho * wo];
        out.par_chunks_mut(ho * wo)
            .zip(xv.par_chunks(h * w))
            .for_each(|(o, plane)| {
                for oh in 0..ho {
                    let r0 = (oh * p.stride).saturating_sub(p.pad);
                    let r1 = (oh * p.stride + p.k - p.pad).min(h);
                    for ow in 0..wo {
                        let c0 = (ow * p.stride).saturating_sub(p.pad);
                        let c1 = (ow * p.stride + p.k - p.pad).min(w);
                        let rows = (r0..r1).map(|r| &plane[r * w + c0..r * w + c1]);
                        o[oh * wo + ow] = match p.kind {
                            PoolKind::Max => rows
                                .flat_map(|s| s.iter().copied())
                                .fold(f32::NEG_INFINITY, f32::max),
                            PoolKind::Avg => {
                                let sum: f32 = rows.map(|s| s.iter().sum::<f32>()).sum();
                                sum / ((r1 - r0) * (c1 - c0)) as f32
                            }
                        };
                    }
                }
            });
        Ok((super::storage(out), (self.n, self.c, ho, wo).into()))
    }
}
