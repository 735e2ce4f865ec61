//! Dense products `x @ w` with both gradients, through [`blas::sgemm`] (a vendor BLAS or the
//! gemm crate).

use super::*;

/// `y (rows x out) = [bias +] x (rows x inp) @ rhs`, rhs `inp x out` at `rhs` with row stride
/// `rhs_rs` and column stride `rhs_cs`; returns `y`. Rows are split across the threads, one
/// single-threaded `gemm` each: for these short products (inner size 48-3072) that beats
/// gemm's own threading. `y` is never zero-filled first (a whole extra pass over memory for the
/// largest tensors of a step): every element is written, by the bias copy or by `gemm`, which
/// does not read the destination when told not to.
pub(crate) fn rows_gemm(
    x: &[f32],
    inp: usize,
    rhs: *const f32,
    (rhs_rs, rhs_cs): (usize, usize),
    out: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let rows = x.len() / inp.max(1);
    let threads = super::threads();
    let per = rows.div_ceil(threads).max(1);
    let rhs = SendPtr(rhs as *mut f32);
    let mut y = Vec::<f32>::with_capacity(rows * out);
    let yp = SendPtr(y.as_mut_ptr());
    (0..rows.div_ceil(per)).into_par_iter().for_each(|task| {
        let r0 = task * per;
        let m = per.min(rows - r0);
        let xc = &x[r0 * inp..(r0 + m) * inp];
        // SAFETY: this task alone writes rows r0..r0+m of y, inside its capacity (rows * out).
        let dst = unsafe { yp.get().add(r0 * out) };
        if let Some(b) = bias {
            for r in 0..m {
                // SAFETY: row r of this task's block; b has `out` elements (checked by callers).
                unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), dst.add(r * out), out) };
            }
        }
        // SAFETY: dst m x out (row stride out), lhs m x inp (row stride inp); the caller
        // vouches for rhs and its strides. gemm reads dst only with a bias (written above).
        unsafe {
            blas::sgemm(
                m,
                out,
                inp,
                dst,
                out,
                bias.is_some(),
                xc.as_ptr(),
                (inp, 1),
                rhs.get() as *const f32,
                (rhs_rs, rhs_cs),
                1.0,
                1.0,
                blas::Par::None,
            );
        }
    });
    // SAFETY: the tasks cover rows 0..rows and wrote every element of each.
    unsafe { y.set_len(rows * out) };
    y
}

/// `(rows, last)` of a layout read as a matrix of its last axis; `with_last` the same shape with
/// the last axis replaced. The dense ops take and give N-D tensors directly, so no reshape
/// nodes (and their backward bookkeeping) surround them.
pub(crate) fn as_rows(l: &Layout) -> Result<(usize, usize)> {
    let dims = l.dims();
    let last = *dims
        .last()
        .ok_or_else(|| candle_core::Error::Msg("dense: a scalar input".into()))?;
    Ok((l.shape().elem_count() / last.max(1), last))
}

pub(crate) fn with_last(shape: &Shape, last: usize) -> Shape {
    let mut d = shape.dims().to_vec();
    if let Some(x) = d.last_mut() {
        *x = last;
    }
    Shape::from(d)
}

/// `x @ w` for a trainable `w` `(in, out)`, with both gradients from single fused products
/// (candle's matmul backward goes through transposed copies and zero-filled accumulators).
pub(crate) struct Dense;
/// `g @ w^T`: the input gradient of `Dense` (`w` `(in, out)`) or of `FrozenLinear` (`w`
/// `(out, in)`, `w_is_out_in`).
pub(crate) struct DenseDx {
    pub(crate) w_is_out_in: bool,
}
/// `x^T @ g`: the weight gradient of `Dense`.
pub(crate) struct DenseDw;

impl CustomOp2 for Dense {
    fn name(&self) -> &'static str {
        "lqae-dense"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice(s1, l1, "dense")?;
        let w = slice(s2, l2, "dense weight")?;
        let (_, inp) = as_rows(l1)?;
        let (win, out) = l2.shape().dims2()?;
        if win != inp {
            candle_core::bail!("dense: input width {inp}, weight ({win}, {out})");
        }
        let y = rows_gemm(x, inp, w.as_ptr(), (out, 1), out, None);
        Ok((storage(y), with_last(l1.shape(), out)))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad.contiguous()?;
        let dx = g.apply_op2_no_bwd(w, &DenseDx { w_is_out_in: false })?;
        let dw = x.apply_op2_no_bwd(&g, &DenseDw)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp2 for DenseDx {
    fn name(&self) -> &'static str {
        "lqae-dense-dx"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = slice(s1, l1, "dense backward")?;
        let w = slice(s2, l2, "dense backward")?;
        let (_, out) = as_rows(l1)?;
        let (a, b) = l2.shape().dims2()?;
        // rhs = w^T as (out x inp).
        let (inp, rs, cs) = if self.w_is_out_in {
            (b, b, 1)
        } else {
            (a, 1, b)
        };
        if (self.w_is_out_in && a != out) || (!self.w_is_out_in && b != out) {
            candle_core::bail!("dense backward: gradient width {out}, weight ({a}, {b})");
        }
        let dx = rows_gemm(g, out, w.as_ptr(), (rs, cs), inp, None);
        Ok((storage(dx), with_last(l1.shape(), inp)))
    }
}

impl CustomOp2 for DenseDw {
    fn name(&self) -> &'static str {
        "lqae-dense-dw"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice(s1, l1, "dense backward")?;
        let g = slice(s2, l2, "dense backward")?;
        let (rows, inp) = as_rows(l1)?;
        let (_, out) = as_rows(l2)?;
        let mut dw = vec![0f32; inp * out];
        // The columns of dw split across the threads, one single-threaded product each (for
        // these shapes, inner size the batch's rows, gemm's own threading ran at 55-85% of
        // this rate on the AVX-512 AMD machine).
        let threads = super::threads();
        let per = out.div_ceil(threads).next_multiple_of(16).min(out.max(1));
        let dp = SendPtr(dw.as_mut_ptr());
        (0..out.div_ceil(per)).into_par_iter().for_each(|task| {
            let c0 = task * per;
            let n = per.min(out - c0);
            // SAFETY: dst is columns c0..c0+n of dw (inp x out, row stride out), this task's
            // alone; lhs = x^T (element (i, r) at x[r * inp + i]); rhs = columns c0..c0+n of
            // g (rows x out).
            unsafe {
                blas::sgemm(
                    inp,
                    n,
                    rows,
                    dp.get().add(c0),
                    out,
                    false,
                    x.as_ptr(),
                    (1, inp),
                    g.as_ptr().add(c0),
                    (out, 1),
                    0.0,
                    1.0,
                    blas::Par::None,
                );
            }
        });
        Ok((storage(dw), Shape::from((inp, out))))
    }
}

/// `x @ w` for `x` `(..., in)` and a trainable `w` `(in, out)`. Other devices: candle's matmul
/// over the flattened rows.
pub fn dense(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if fused(x) && fused(w) {
        return x.contiguous()?.apply_op2(&w.contiguous()?, Dense);
    }
    let dims = x.dims().to_vec();
    let inp = *dims.last().unwrap_or(&1);
    let rows = x.elem_count() / inp.max(1);
    let y = x.contiguous()?.reshape((rows, inp))?.matmul(w)?;
    let mut shape = dims;
    *shape.last_mut().expect("not a scalar") = w.dim(1)?;
    y.reshape(shape)
}
