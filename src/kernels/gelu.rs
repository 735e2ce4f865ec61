//! GELU, tanh and erf forms, with its backward.

use super::*;

pub(crate) const SQRT_2_OVER_PI: f32 = 0.797_884_6;
pub(crate) const GELU_C: f32 = 0.044715;

#[derive(Clone, Copy)]
pub(crate) enum GeluKind {
    Tanh,
    Erf,
}

#[inline(always)]
pub(crate) fn fast_tanh(u: f32) -> f32 {
    1.0 - 2.0 / (fast_exp(2.0 * u) + 1.0)
}

#[inline(always)]
pub(crate) fn gelu_fwd(k: GeluKind, x: f32) -> f32 {
    match k {
        GeluKind::Tanh => 0.5 * x * (1.0 + fast_tanh(SQRT_2_OVER_PI * (x + GELU_C * x * x * x))),
        GeluKind::Erf => 0.5 * x * (1.0 + fast_erf(x * std::f32::consts::FRAC_1_SQRT_2)),
    }
}

#[inline(always)]
pub(crate) fn gelu_grad(k: GeluKind, x: f32) -> f32 {
    match k {
        GeluKind::Tanh => {
            let t = fast_tanh(SQRT_2_OVER_PI * (x + GELU_C * x * x * x));
            0.5 * (1.0 + t)
                + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * x * x)
        }
        GeluKind::Erf => {
            const INV_SQRT_2PI: f32 = 0.398_942_3;
            let cdf = 0.5 * (1.0 + fast_erf(x * std::f32::consts::FRAC_1_SQRT_2));
            cdf + x * INV_SQRT_2PI * fast_exp(-0.5 * x * x)
        }
    }
}

avx2_or_baseline! {
    /// `y = gelu(x)`.
    fn gelu_rows(k: GeluKind, y: &mut [MaybeUninit<f32>], x: &[f32]) {
        let n = y.len().min(x.len());
        let (y, x) = (&mut y[..n], &x[..n]);
        match k {
            GeluKind::Tanh => {
                for i in 0..n {
                    y[i].write(gelu_fwd(GeluKind::Tanh, x[i]));
                }
            }
            GeluKind::Erf => {
                for i in 0..n {
                    y[i].write(gelu_fwd(GeluKind::Erf, x[i]));
                }
            }
        }
    }
}
avx2_or_baseline! {
    /// `dx = g * gelu'(x)`.
    fn gelu_grad_rows(k: GeluKind, dx: &mut [MaybeUninit<f32>], x: &[f32], g: &[f32]) {
        let n = dx.len().min(x.len()).min(g.len());
        let (dx, x, g) = (&mut dx[..n], &x[..n], &g[..n]);
        match k {
            GeluKind::Tanh => {
                for i in 0..n {
                    dx[i].write(g[i] * gelu_grad(GeluKind::Tanh, x[i]));
                }
            }
            GeluKind::Erf => {
                for i in 0..n {
                    dx[i].write(g[i] * gelu_grad(GeluKind::Erf, x[i]));
                }
            }
        }
    }
}

pub(crate) struct Gelu(GeluKind);
pub(crate) struct GeluBwd(GeluKind);

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "lqae-gelu"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l, "gelu")?;
        let k = self.0;
        // SAFETY: gelu_rows writes every element (`x` is as long as the output).
        let y = unsafe {
            par_written(x.len(), 16384, |i, yo| {
                gelu_rows(k, yo, &x[i * 16384..][..yo.len()])
            })
        };
        Ok((storage(y), l.shape().clone()))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            arg.apply_op2_no_bwd(&grad.contiguous()?, &GeluBwd(self.0))?,
        ))
    }
}

impl CustomOp2 for GeluBwd {
    fn name(&self) -> &'static str {
        "lqae-gelu-bwd"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, g) = (
            slice(s1, l1, "gelu backward")?,
            slice(s2, l2, "gelu backward")?,
        );
        let k = self.0;
        if g.len() != x.len() {
            candle_core::bail!(
                "gelu backward: {} gradients for {} inputs",
                g.len(),
                x.len()
            );
        }
        // SAFETY: gelu_grad_rows writes every element (`x` and `g` are as long as `dx`).
        let dx = unsafe {
            par_written(x.len(), 16384, |i, o| {
                let (xi, gi) = (&x[i * 16384..][..o.len()], &g[i * 16384..][..o.len()]);
                gelu_grad_rows(k, o, xi, gi)
            })
        };
        Ok((storage(dx), l1.shape().clone()))
    }
}

/// GELU, tanh approximation (candle's `gelu`).
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    if fused(x) {
        x.contiguous()?.apply_op1(Gelu(GeluKind::Tanh))
    } else {
        x.gelu()
    }
}

/// GELU, exact erf form (candle's `gelu_erf`).
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if fused(x) {
        x.contiguous()?.apply_op1(Gelu(GeluKind::Erf))
    } else {
        x.gelu_erf()
    }
}
