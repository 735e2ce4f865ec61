//! Softmax over the last axis.

use super::*;

pub(crate) struct Softmax;
pub(crate) struct SoftmaxBwd;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "lqae-softmax-last"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l, "softmax")?;
        let d = l.dims().last().copied().unwrap_or(1).max(1);
        let mut y = vec![0f32; x.len()];
        let r = rows_per_task(d) * d;
        y.par_chunks_mut(r)
            .zip(x.par_chunks(r))
            .for_each(|(yo, xi)| {
                for (yr, xr) in yo.chunks_mut(d).zip(xi.chunks(d)) {
                    let m = xr.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0f32;
                    for (o, &v) in yr.iter_mut().zip(xr) {
                        *o = fast_exp(v - m);
                    }
                    for &o in yr.iter() {
                        sum += o;
                    }
                    let inv = 1.0 / sum;
                    for o in yr.iter_mut() {
                        *o *= inv;
                    }
                }
            });
        Ok((storage(y), l.shape().clone()))
    }
    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            res.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxBwd)?,
        ))
    }
}

impl CustomOp2 for SoftmaxBwd {
    fn name(&self) -> &'static str {
        "lqae-softmax-last-bwd"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (y, g) = (
            slice(s1, l1, "softmax backward")?,
            slice(s2, l2, "softmax backward")?,
        );
        let d = l1.dims().last().copied().unwrap_or(1).max(1);
        let mut dx = vec![0f32; y.len()];
        let r = rows_per_task(d) * d;
        dx.par_chunks_mut(r)
            .zip(y.par_chunks(r).zip(g.par_chunks(r)))
            .for_each(|(o, (yi, gi))| {
                for ((or, yr), gr) in o.chunks_mut(d).zip(yi.chunks(d)).zip(gi.chunks(d)) {
                    let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
                    for ((o, &yv), &gv) in or.iter_mut().zip(yr).zip(gr) {
                        *o = yv * (gv - dot);
                    }
                }
            });
        Ok((storage(dx), l1.shape().clone()))
    }
}

/// Softmax over the last axis.
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    if fused(x) {
        x.contiguous()?.apply_op1(Softmax)
    } else {
        candle_nn::ops::softmax(x, candle_core::D::Minus1)
    }
}
