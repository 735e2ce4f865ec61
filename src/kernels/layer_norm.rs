//! LayerNorm with its backward, row sums in eight lanes, and its primitive-op reference
//! form.

use super::*;

pub(crate) struct LayerNormOp {
    eps: f32,
}
pub(crate) struct LayerNormBwd {
    eps: f32,
}

/// Lanes of the row sums below: eight independent partial sums (then added pairwise), so that
/// the reductions vectorise instead of waiting on one accumulator per element.
pub(crate) const LANES: usize = 8;

/// Pairwise total of the lane partial sums.
#[inline(always)]
pub(crate) fn lanes_total(a: [f32; LANES]) -> f32 {
    ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]))
}

/// `sum f(x[k])` over a row, in `LANES` interleaved partial sums ([`lane_sum3`] of one row).
#[inline(always)]
pub(crate) fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    lane_sum3(x, x, x, |v, _, _| f(v))
}

/// `sum f(a[k], b[k], c[k])` over rows of equal length, in `LANES` interleaved partial sums
/// (lane `k % LANES`, the tail's elements in lanes 0.., then the lanes added in pairs).
#[inline(always)]
pub(crate) fn lane_sum3(a: &[f32], b: &[f32], c: &[f32], f: impl Fn(f32, f32, f32) -> f32) -> f32 {
    let n = a.len().min(b.len()).min(c.len());
    let (a, b, c) = (&a[..n], &b[..n], &c[..n]);
    let mut acc = [0f32; LANES];
    let mut it = a
        .chunks_exact(LANES)
        .zip(b.chunks_exact(LANES))
        .zip(c.chunks_exact(LANES));
    for ((ac, bc), cc) in &mut it {
        for l in 0..LANES {
            acc[l] += f(ac[l], bc[l], cc[l]);
        }
    }
    let tail = n - n % LANES;
    for k in tail..n {
        acc[k - tail] += f(a[k], b[k], c[k]);
    }
    lanes_total(acc)
}

/// The largest element of a row (`-inf` for an empty one), in `LANES` interleaved maxima.
#[inline(always)]
pub(crate) fn lane_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut it = x.chunks_exact(LANES);
    for c in &mut it {
        for l in 0..LANES {
            acc[l] = acc[l].max(c[l]);
        }
    }
    for (l, &v) in it.remainder().iter().enumerate() {
        acc[l] = acc[l].max(v);
    }
    acc.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b))
}

#[inline(always)]
pub(crate) fn row_stats(xr: &[f32], eps: f32) -> (f32, f32) {
    let d = xr.len() as f32;
    let mean = lane_sum(xr, |v| v) / d;
    let var = lane_sum(xr, |v| (v - mean) * (v - mean)) / d;
    (mean, 1.0 / (var + eps).sqrt())
}

avx2_or_baseline! {
    /// LayerNorm of each `w.len()`-wide row of `x` into `y`.
    fn layer_norm_rows(y: &mut [MaybeUninit<f32>], x: &[f32], w: &[f32], b: &[f32], eps: f32) {
        let d = w.len();
        for (yr, xr) in y.chunks_mut(d).zip(x.chunks(d)) {
            let (mean, rstd) = row_stats(xr, eps);
            let (yr, xr, b) = (&mut yr[..d], &xr[..d], &b[..d]);
            for k in 0..d {
                yr[k].write((xr[k] - mean) * rstd * w[k] + b[k]);
            }
        }
    }
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "lqae-layer-norm"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice(s1, l1, "layer norm")?;
        let (w, b) = (
            slice(s2, l2, "layer norm weight")?,
            slice(s3, l3, "layer norm bias")?,
        );
        let d = w.len();
        if d == 0 || x.len() % d != 0 || b.len() != d {
            candle_core::bail!("layer norm: input width does not match the weight ({d})");
        }
        let eps = self.eps;
        let r = rows_per_task(d) * d;
        // SAFETY: layer_norm_rows writes every element of its rows.
        let y = unsafe {
            par_written(x.len(), r, |i, yo| {
                layer_norm_rows(yo, &x[i * r..][..yo.len()], w, b, eps)
            })
        };
        Ok((storage(y), l1.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // One op computes all three: [dx (n) | dw (d) | db (d)].
        let packed = x.apply_op3_no_bwd(w, &grad.contiguous()?, &LayerNormBwd { eps: self.eps })?;
        let [dx, dw, db]: [Tensor; 3] = unpack(&packed, &[x.shape(), w.shape(), w.shape()])?
            .try_into()
            .expect("three parts");
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

avx2_or_baseline! {
    /// LayerNorm backward over rows: `dx` per row (every element written), and the column sums
    /// of `g xhat` (the weight's gradient) and `g` (the bias's) added into `acc` = `[dw | db]`.
    fn layer_norm_grad_rows(
        dx: &mut [MaybeUninit<f32>],
        x: &[f32],
        g: &[f32],
        w: &[f32],
        acc: &mut [f32],
        eps: f32,
    ) {
        let d = w.len();
        let (aw, ab) = acc.split_at_mut(d);
        for ((or, xr), gr) in dx.chunks_mut(d).zip(x.chunks(d)).zip(g.chunks(d)) {
            let (mean, rstd) = row_stats(xr, eps);
            // m1 = mean(g w), m2 = mean(g w xhat), each a vectorised pass over the row (one
            // loop carrying both sums and the column sums below stayed scalar).
            let m1 = lane_sum3(gr, w, gr, |g, w, _| g * w);
            let m2 = lane_sum3(xr, gr, w, |x, g, w| g * w * ((x - mean) * rstd));
            // The column sums of dw (g xhat) and db (g).
            let (aw, ab) = (&mut aw[..d], &mut ab[..d]);
            for k in 0..d {
                let xh = (xr[k] - mean) * rstd;
                aw[k] += gr[k] * xh;
                ab[k] += gr[k];
            }
            let (m1, m2) = (m1 / d as f32, m2 / d as f32);
            let (or, xr, gr) = (&mut or[..d], &xr[..d], &gr[..d]);
            for k in 0..d {
                let xh = (xr[k] - mean) * rstd;
                or[k].write(rstd * (gr[k] * w[k] - m1 - xh * m2));
            }
        }
    }
}

impl CustomOp3 for LayerNormBwd {
    fn name(&self) -> &'static str {
        "lqae-layer-norm-bwd"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice(s1, l1, "layer norm backward")?;
        let w = slice(s2, l2, "layer norm backward")?;
        let g = slice(s3, l3, "layer norm backward")?;
        let d = w.len();
        let n = x.len();
        if d == 0 || n % d != 0 || g.len() != n {
            candle_core::bail!(
                "layer norm backward: {} gradients for {n} inputs of width {d}",
                g.len()
            );
        }
        let eps = self.eps;
        let r = rows_per_task(d) * d;
        // dx per row; dw and db as per-task partial sums, added up after.
        // SAFETY: layer_norm_grad_rows writes every element of its rows of dx.
        let out = unsafe {
            par_written_summed(n, r, 2 * d, |i, o| {
                let (xi, gi) = (&x[i * r..][..o.len()], &g[i * r..][..o.len()]);
                let mut acc = vec![0f32; 2 * d];
                layer_norm_grad_rows(o, xi, gi, w, &mut acc, eps);
                acc
            })
        };
        Ok((storage(out), Shape::from(n + 2 * d)))
    }
}

/// LayerNorm over the last axis: `(x - mean) / sqrt(var + eps) * weight + bias`.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if fused(x) && fused(weight) && fused(bias) {
        x.contiguous()?.apply_op3(
            &weight.contiguous()?,
            &bias.contiguous()?,
            LayerNormOp { eps: eps as f32 },
        )
    } else {
        layer_norm_ops(x, weight, bias, eps)
    }
}

/// LayerNorm from primitive ops (other devices than the CPU, and the kernels' tests).
pub fn layer_norm_ops(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    use candle_core::D;
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let xn = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    xn.broadcast_mul(weight)?.broadcast_add(bias)
}
