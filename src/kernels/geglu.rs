//! The gated GELU of the ViT MLP over one `[fc1|fc2]` product.

use super::*;

/// `gelu_tanh(a) * b` for a packed `(..., 2m)` input whose rows are `[a | b]`: the ViT's GLU
/// after one product with `[fc1 | fc2]`. One pass forward, one backward.
pub(crate) struct GeGlu;
pub(crate) struct GeGluBwd;

pub(crate) fn geglu_m(l: &Layout) -> Result<usize> {
    let w = l.dims().last().copied().unwrap_or(0);
    if w == 0 || w % 2 != 0 {
        candle_core::bail!("gated gelu: the last axis ({w}) must hold [a | b] of equal widths");
    }
    Ok(w / 2)
}

avx2_or_baseline! {
    /// `y = gelu_tanh(a) * b`.
    fn geglu_row(y: &mut [MaybeUninit<f32>], a: &[f32], b: &[f32]) {
        let n = y.len().min(a.len()).min(b.len());
        let (y, a, b) = (&mut y[..n], &a[..n], &b[..n]);
        for k in 0..n {
            y[k].write(gelu_fwd(GeluKind::Tanh, a[k]) * b[k]);
        }
    }
}
avx2_or_baseline! {
    /// The gradients of `geglu_row` for the output gradient `g`.
    fn geglu_grad_row(
        da: &mut [MaybeUninit<f32>],
        db: &mut [MaybeUninit<f32>],
        a: &[f32],
        b: &[f32],
        g: &[f32],
    ) {
        let n = da.len().min(db.len()).min(a.len()).min(b.len()).min(g.len());
        let (da, db, a, b, g) = (&mut da[..n], &mut db[..n], &a[..n], &b[..n], &g[..n]);
        for k in 0..n {
            da[k].write(g[k] * b[k] * gelu_grad(GeluKind::Tanh, a[k]));
            db[k].write(g[k] * gelu_fwd(GeluKind::Tanh, a[k]));
        }
    }
}

impl CustomOp1 for GeGlu {
    fn name(&self) -> &'static str {
        "lqae-geglu"
    }
    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(st, l, "gated gelu")?;
        let m = geglu_m(l)?;
        let r = rows_per_task(2 * m);
        // SAFETY: each output row of m is written whole by geglu_row from its [a | b] row.
        let y = unsafe {
            par_written(x.len() / 2, r * m, |i, yo| {
                let xi = &x[i * r * 2 * m..][..2 * yo.len()];
                for (yr, xr) in yo.chunks_mut(m).zip(xi.chunks(2 * m)) {
                    let (a, b) = xr.split_at(m);
                    geglu_row(yr, a, b);
                }
            })
        };
        let mut dims = l.dims().to_vec();
        *dims.last_mut().expect("checked") = m;
        Ok((storage(y), Shape::from(dims)))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad.contiguous()?, &GeGluBwd)?))
    }
}

impl CustomOp2 for GeGluBwd {
    fn name(&self) -> &'static str {
        "lqae-geglu-bwd"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice(s1, l1, "gated gelu backward")?;
        let g = slice(s2, l2, "gated gelu backward")?;
        let m = geglu_m(l1)?;
        if 2 * g.len() != x.len() {
            candle_core::bail!(
                "gated gelu backward: {} gradients for {} inputs (2 per gradient)",
                g.len(),
                x.len()
            );
        }
        let r = rows_per_task(2 * m);
        // SAFETY: each row of 2m is written whole by geglu_grad_row (both halves, from full
        // rows of x and g: their lengths are checked above).
        let dx = unsafe {
            par_written(x.len(), r * 2 * m, |i, o| {
                let xi = &x[i * r * 2 * m..][..o.len()];
                let gi = &g[i * r * m..][..o.len() / 2];
                for ((or, xr), gr) in o.chunks_mut(2 * m).zip(xi.chunks(2 * m)).zip(gi.chunks(m)) {
                    let (a, b) = xr.split_at(m);
                    let (da, db) = or.split_at_mut(m);
                    geglu_grad_row(da, db, a, b, gr);
                }
            })
        };
        Ok((storage(dx), l1.shape().clone()))
    }
}

/// `gelu_tanh(a) * b` for `x` `(..., 2m)` = `[a | b]` -> `(..., m)`. Other devices: candle ops.
pub fn gated_gelu(x: &Tensor) -> Result<Tensor> {
    if fused(x) {
        return x.contiguous()?.apply_op1(GeGlu);
    }
    let m = x.dim(candle_core::D::Minus1)? / 2;
    let last = x.rank() - 1;
    x.narrow(last, 0, m)?.gelu()? * x.narrow(last, m, m)?
}
