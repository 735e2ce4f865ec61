//! LayerNorm with its backward, row sums in eight lanes, and its primitive-op reference
//! form.

use super::*;

/// LayerNorm over the last axis. When its input tracks gradients, the forward pass keeps each
/// row's mean and reciprocal standard deviation (two floats a row) for the backward pass,
/// which otherwise recomputes them (two of its passes over the row), with the same bits.
/// Its inputs are `(x, weight, bias)`, or with `plus` `(x, [weight | bias], r)`: `r + LN(x)`
/// for a residual `r` of `x`'s shape ([`layer_norm_plus`]).
pub(crate) struct LayerNormOp {
    eps: f32,
    /// `[mean, rstd]` per row, when the forward pass keeps them.
    kept: Kept,
    plus: bool,
}
impl LayerNormOp {
    /// The op for `x` with its weight and bias (or `[weight | bias]` with `plus`), keeping the
    /// rows' statistics when any of them tracks gradients.
    fn new(tracked: [&Tensor; 3], eps: f64, plus: bool) -> Self {
        Self {
            eps: eps as f32,
            kept: Kept::new(tracked.iter().any(|t| t.track_op())),
            plus,
        }
    }
}

pub(crate) struct LayerNormBwd {
    eps: f32,
    /// The forward pass's `[mean, rstd]` per row, or empty: recompute them.
    stats: Vec<f32>,
}

#[cfg(test)]
thread_local! {
    /// Tests only: backward passes on this thread that found the forward pass's row statistics.
    pub(crate) static STATS_TAKEN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
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
    /// LayerNorm of each `w.len()`-wide row of `x` into `y`, plus the same row of `res` when
    /// it is not empty (as long as `x`); each row's `[mean, rstd]` into `stats` too when it is
    /// not empty (two floats a row).
    fn layer_norm_rows(
        y: &mut [MaybeUninit<f32>],
        x: &[f32],
        w: &[f32],
        b: &[f32],
        eps: f32,
        stats: &mut [MaybeUninit<f32>],
        res: &[f32],
    ) {
        let d = w.len();
        let keep = !stats.is_empty();
        for (r, (yr, xr)) in y.chunks_mut(d).zip(x.chunks(d)).enumerate() {
            let (mean, rstd) = row_stats(xr, eps);
            if keep {
                stats[2 * r].write(mean);
                stats[2 * r + 1].write(rstd);
            }
            let (yr, xr, b) = (&mut yr[..d], &xr[..d], &b[..d]);
            if res.is_empty() {
                for k in 0..d {
                    yr[k].write((xr[k] - mean) * rstd * w[k] + b[k]);
                }
            } else {
                let rr = &res[r * d..][..d];
                for k in 0..d {
                    yr[k].write(rr[k] + ((xr[k] - mean) * rstd * w[k] + b[k]));
                }
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
        let (w, b, res) = if self.plus {
            let wb = slice(s2, l2, "layer norm weight and bias")?;
            let (w, b) = wb.split_at(wb.len() / 2);
            let res = slice(s3, l3, "layer norm residual")?;
            if res.len() != x.len() {
                candle_core::bail!("layer norm: a residual of {} floats expected", x.len());
            }
            (w, b, res)
        } else {
            (
                slice(s2, l2, "layer norm weight")?,
                slice(s3, l3, "layer norm bias")?,
                &[][..],
            )
        };
        let d = w.len();
        if d == 0 || x.len() % d != 0 || b.len() != d {
            candle_core::bail!("layer norm: input width does not match the weight ({d})");
        }
        let eps = self.eps;
        let rows = rows_per_task(d);
        let r = rows * d;
        let n_rows = x.len() / d;
        let keep = self.kept.on();
        let mut stats = Vec::<f32>::with_capacity(if keep { 2 * n_rows } else { 0 });
        let sp = SendPtr(stats.as_mut_ptr());
        // SAFETY: layer_norm_rows writes every element of its rows, and (kept) the two
        // statistics of each of its rows, a range no other task writes.
        let y = unsafe {
            par_written(x.len(), r, |i, yo| {
                let st = if keep {
                    let first = i * rows;
                    let n = yo.len() / d;
                    std::slice::from_raw_parts_mut(
                        sp.get().add(2 * first) as *mut MaybeUninit<f32>,
                        2 * n,
                    )
                } else {
                    &mut []
                };
                let ro = if res.is_empty() {
                    res
                } else {
                    &res[i * r..][..yo.len()]
                };
                layer_norm_rows(yo, &x[i * r..][..yo.len()], w, b, eps, st, ro)
            })
        };
        if keep {
            // SAFETY: the tasks cover every row (see above).
            unsafe { stats.set_len(2 * n_rows) };
            self.kept.put(stats);
        }
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
        let stats = self.kept.take();
        #[cfg(test)]
        STATS_TAKEN.with(|n| n.set(n.get() + usize::from(!stats.is_empty())));
        let weight = if self.plus {
            // [weight | bias]: the weight is its first half.
            &w.narrow(0, 0, w.dim(0)? / 2)?
        } else {
            w
        };
        let grad = grad.contiguous()?;
        let packed = x.apply_op3_no_bwd(
            weight,
            &grad,
            &LayerNormBwd {
                eps: self.eps,
                stats,
            },
        )?;
        if self.plus {
            // [dw | db] is the gradient of [weight | bias]; the residual's is `grad`.
            let [dx, dwb]: [Tensor; 2] = unpack(&packed, &[x.shape(), w.shape()])?
                .try_into()
                .expect("two parts");
            return Ok((Some(dx), Some(dwb), Some(grad)));
        }
        let [dx, dw, db]: [Tensor; 3] = unpack(&packed, &[x.shape(), w.shape(), w.shape()])?
            .try_into()
            .expect("three parts");
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// One row's `m1 = sum g w` and `m2 = sum g w xhat` in [`LANES`] interleaved partial sums
/// (the order of [`lane_sum3`]: the same bits as two such passes), with the column sums of
/// `g xhat` and `g` added into `aw` and `ab` in the same pass.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn grad_sums(
    xr: &[f32],
    gr: &[f32],
    w: &[f32],
    aw: &mut [f32],
    ab: &mut [f32],
    mean: f32,
    rstd: f32,
) -> (f32, f32) {
    let d = w.len();
    let (xr, gr, aw, ab) = (&xr[..d], &gr[..d], &mut aw[..d], &mut ab[..d]);
    let (mut a1, mut a2) = ([0f32; LANES], [0f32; LANES]);
    let body = d - d % LANES;
    #[cfg(target_arch = "x86_64")]
    if avx2_on() {
        // SAFETY: AVX2 is present; every slice holds d floats.
        unsafe { avx2::grad_sums(xr, gr, w, aw, ab, mean, rstd, &mut a1, &mut a2, body) };
    } else {
        grad_sums_lanes(xr, gr, w, aw, ab, mean, rstd, &mut a1, &mut a2, body);
    }
    #[cfg(not(target_arch = "x86_64"))]
    grad_sums_lanes(xr, gr, w, aw, ab, mean, rstd, &mut a1, &mut a2, body);
    for k in body..d {
        let gw = gr[k] * w[k];
        let xh = (xr[k] - mean) * rstd;
        a1[k - body] += gw;
        a2[k - body] += gw * xh;
        aw[k] += gr[k] * xh;
        ab[k] += gr[k];
    }
    (lanes_total(a1), lanes_total(a2))
}

/// [`grad_sums`]' whole chunks of [`LANES`] elements, as plain loops.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn grad_sums_lanes(
    xr: &[f32],
    gr: &[f32],
    w: &[f32],
    aw: &mut [f32],
    ab: &mut [f32],
    mean: f32,
    rstd: f32,
    a1: &mut [f32; LANES],
    a2: &mut [f32; LANES],
    body: usize,
) {
    for k0 in (0..body).step_by(LANES) {
        for l in 0..LANES {
            let k = k0 + l;
            let gw = gr[k] * w[k];
            let xh = (xr[k] - mean) * rstd;
            a1[l] += gw;
            a2[l] += gw * xh;
            aw[k] += gr[k] * xh;
            ab[k] += gr[k];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::LANES;
    use std::arch::x86_64::*;

    /// [`super::grad_sums_lanes`] in AVX2 registers, one lane per partial sum (multiplies,
    /// subtractions and adds as written there: the same bits).
    ///
    /// # Safety
    /// AVX2; every slice holds at least `body` floats, `body` a multiple of [`LANES`] (8).
    #[target_feature(enable = "avx2")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn grad_sums(
        xr: &[f32],
        gr: &[f32],
        w: &[f32],
        aw: &mut [f32],
        ab: &mut [f32],
        mean: f32,
        rstd: f32,
        a1: &mut [f32; LANES],
        a2: &mut [f32; LANES],
        body: usize,
    ) {
        let (mv, rv) = (_mm256_set1_ps(mean), _mm256_set1_ps(rstd));
        let (mut s1, mut s2) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let (x, g, w, aw, ab) = (
            xr.as_ptr(),
            gr.as_ptr(),
            w.as_ptr(),
            aw.as_mut_ptr(),
            ab.as_mut_ptr(),
        );
        for k in (0..body).step_by(LANES) {
            let gv = _mm256_loadu_ps(g.add(k));
            let gw = _mm256_mul_ps(gv, _mm256_loadu_ps(w.add(k)));
            let xh = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x.add(k)), mv), rv);
            s1 = _mm256_add_ps(s1, gw);
            s2 = _mm256_add_ps(s2, _mm256_mul_ps(gw, xh));
            let awk = _mm256_add_ps(_mm256_loadu_ps(aw.add(k)), _mm256_mul_ps(gv, xh));
            _mm256_storeu_ps(aw.add(k), awk);
            _mm256_storeu_ps(ab.add(k), _mm256_add_ps(_mm256_loadu_ps(ab.add(k)), gv));
        }
        _mm256_storeu_ps(a1.as_mut_ptr(), s1);
        _mm256_storeu_ps(a2.as_mut_ptr(), s2);
    }
}

avx2_or_baseline! {
    /// LayerNorm backward over rows: `dx` per row (every element written), and the column sums
    /// of `g xhat` (the weight's gradient) and `g` (the bias's) added into `acc` = `[dw | db]`.
    /// `stats` holds the rows' `[mean, rstd]` from the forward pass, or is empty (recomputed).
    fn layer_norm_grad_rows(
        dx: &mut [MaybeUninit<f32>],
        x: &[f32],
        g: &[f32],
        w: &[f32],
        acc: &mut [f32],
        eps: f32,
        stats: &[f32],
    ) {
        let d = w.len();
        let (aw, ab) = acc.split_at_mut(d);
        for (r, ((or, xr), gr)) in dx.chunks_mut(d).zip(x.chunks(d)).zip(g.chunks(d)).enumerate() {
            let (mean, rstd) = if stats.is_empty() {
                row_stats(xr, eps)
            } else {
                (stats[2 * r], stats[2 * r + 1])
            };
            // m1 = mean(g w), m2 = mean(g w xhat), with the column sums of dw (g xhat) and db
            // (g), in one pass.
            let (m1, m2) = grad_sums(xr, gr, w, aw, ab, mean, rstd);
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
        let rows = rows_per_task(d);
        let r = rows * d;
        let st = &self.stats;
        if !st.is_empty() && st.len() != 2 * (n / d) {
            candle_core::bail!(
                "layer norm backward: {} kept statistics for {} rows",
                st.len(),
                n / d
            );
        }
        // dx per row; dw and db as per-task partial sums, added up after.
        // SAFETY: layer_norm_grad_rows writes every element of its rows of dx.
        let out = unsafe {
            par_written_summed(n, r, 2 * d, |i, o| {
                let (xi, gi) = (&x[i * r..][..o.len()], &g[i * r..][..o.len()]);
                let si = if st.is_empty() {
                    &[][..]
                } else {
                    &st[2 * i * rows..][..2 * (o.len() / d)]
                };
                let mut acc = vec![0f32; 2 * d];
                layer_norm_grad_rows(o, xi, gi, w, &mut acc, eps, si);
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
            LayerNormOp::new([x, weight, bias], eps, false),
        )
    } else {
        layer_norm_ops(x, weight, bias, eps)
    }
}

/// `r + layer_norm(x, weight, bias)` for a residual `r` of `x`'s shape (a block's
/// `x + LN(attn(x))`): the addition done as each row is normalised, where candle's addition
/// was one more parallel op and pass over the output. The same sums, so the same bits. The
/// weight and bias (1-D, `d` each) go in as one tensor `[weight | bias]`, the op's middle
/// input (candle's ops take at most three), a copy of `2 d` floats.
pub fn layer_norm_plus(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    r: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    if r.dims() != x.dims() || weight.dims() != bias.dims() {
        candle_core::bail!(
            "layer norm: input {:?}, residual {:?}, weight {:?}, bias {:?}",
            x.dims(),
            r.dims(),
            weight.dims(),
            bias.dims()
        );
    }
    if fused(x) && fused(weight) && fused(bias) && fused(r) && weight.rank() == 1 {
        x.contiguous()?.apply_op3(
            &Tensor::cat(&[weight, bias], 0)?,
            &r.contiguous()?,
            LayerNormOp::new([x, weight, bias], eps, true),
        )
    } else {
        r + layer_norm(x, weight, bias, eps)?
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
