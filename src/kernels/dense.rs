//! Dense products `x @ w` with both gradients, through [`blas::sgemm`] (a vendor BLAS or the
//! gemm crate).

use super::*;
use std::sync::Arc;

/// `y (rows x out) = [bias +] x (rows x inp) @ rhs`, rhs `inp x out` at `rhs` with row stride
/// `rhs_rs` and column stride `rhs_cs`; returns `y`. Rows are split across the threads, one
/// single-threaded `gemm` each: for these short products (inner size 48-3072) that beats
/// gemm's own threading. `y` is never zero-filled first (a whole extra pass over memory for the
/// largest tensors of a step): every element is written, by the bias copy or by `gemm`, which
/// does not read the destination when told not to.
pub(crate) fn rows_gemm(
    x: &[f32],
    inp: usize,
    rhs: Rhs,
    out: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    rows_gemm_plus(x, inp, rhs, out, bias, None)
}

/// [`rows_gemm`], then `y += residual` (`rows x out`, as long as `y`) by each task on its own
/// rows straight after its product, while they are still in its cache: the same sums as a
/// separate addition after the product (`(x @ rhs + bias) + residual`), one pass over `y`
/// and one parallel op fewer.
pub(crate) fn rows_gemm_plus(
    x: &[f32],
    inp: usize,
    rhs: Rhs,
    out: usize,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    let rows = x.len() / inp.max(1);
    if let Some(r) = residual {
        assert_eq!(r.len(), rows * out, "rows_gemm: the residual's size");
    }
    let per = rows_per_task(rows);
    let mut y = Vec::<f32>::with_capacity(rows * out);
    let yp = SendPtr(y.as_mut_ptr());
    (0..rows.div_ceil(per)).into_par_iter().for_each(|task| {
        let r0 = task * per;
        let m = per.min(rows - r0);
        // SAFETY: this task alone writes rows r0..r0+m of y, inside its capacity (rows * out);
        // the caller vouches for rhs and its strides. Those rows are then written whole.
        unsafe {
            rows_block(yp.get(), x, inp, (r0, m), &rhs, out, bias);
            if let Some(r) = residual {
                let mine = std::slice::from_raw_parts_mut(yp.get().add(r0 * out), m * out);
                add_to(mine, &r[r0 * out..(r0 + m) * out]);
            }
        }
    });
    // SAFETY: the tasks cover rows 0..rows and wrote every element of each.
    unsafe { y.set_len(rows * out) };
    y
}

/// The right operand of [`rows_gemm`]: `inp x out` at a pointer with its row and column
/// strides, or packed by the BLAS ([`blas::Packed`]).
pub(crate) enum Rhs<'a> {
    At(*const f32, (usize, usize)),
    Packed(&'a blas::Packed),
}

// SAFETY: `At`'s matrix is only read, by the tasks of one `rows_gemm` call, while the caller
// holds it (as `rows_gemm`'s callers vouch).
unsafe impl Send for Rhs<'_> {}
unsafe impl Sync for Rhs<'_> {}

/// The rows of each of [`rows_gemm`]'s tasks (the last may have fewer).
pub(crate) fn rows_per_task(rows: usize) -> usize {
    rows.div_ceil(super::threads()).max(1)
}

/// The fewest rows any of [`rows_gemm`]'s tasks has (the last one's, or the others').
pub(crate) fn fewest_rows_per_task(rows: usize) -> usize {
    let per = rows_per_task(rows);
    per.min(rows - per * (rows.div_ceil(per).max(1) - 1))
}

/// Rows `r0..r0 + m` of `y (rows x out) = [bias +] x (rows x inp) @ rhs` into `y` at `y`
/// (row stride `out`), one single-threaded `gemm`; every element of those rows is written, by
/// the bias copy or by `gemm`, which does not read the destination when told not to.
///
/// # Safety
/// `y` holds `(r0 + m) * out` floats that no other thread touches in these rows; `rhs` is an
/// `inp x out` matrix at strides `(rhs_rs, rhs_cs)`; `bias`, if any, has `out` elements.
#[allow(clippy::too_many_arguments)]
unsafe fn rows_block(
    y: *mut f32,
    x: &[f32],
    inp: usize,
    (r0, m): (usize, usize),
    rhs: &Rhs,
    out: usize,
    bias: Option<&[f32]>,
) {
    let xc = &x[r0 * inp..(r0 + m) * inp];
    let dst = y.add(r0 * out);
    if let Some(b) = bias {
        for r in 0..m {
            std::ptr::copy_nonoverlapping(b.as_ptr(), dst.add(r * out), out);
        }
    }
    match *rhs {
        Rhs::At(rhs, strides) => blas::sgemm(
            m,
            out,
            inp,
            dst,
            out,
            bias.is_some(),
            xc.as_ptr(),
            (inp, 1),
            rhs,
            strides,
            1.0,
            1.0,
            blas::Par::None,
        ),
        Rhs::Packed(p) => blas::sgemm_packed(
            m,
            out,
            inp,
            dst,
            out,
            bias.is_some(),
            p,
            xc.as_ptr(),
            (inp, 1),
        ),
    }
}

/// Columns `c0..c0 + n` of `dw (inp x out) = x^T (inp x rows) @ g (rows x out)` into `dw`
/// (row stride `out`), one single-threaded `gemm` that writes them without reading them.
///
/// # Safety
/// `dw` holds `inp * out` floats of which no other thread touches these columns.
unsafe fn dw_columns(
    dw: *mut f32,
    x: &[f32],
    inp: usize,
    g: &[f32],
    out: usize,
    c0: usize,
    n: usize,
) {
    let rows = x.len() / inp.max(1);
    // lhs = x^T (element (i, r) at x[r * inp + i]); rhs = columns c0..c0+n of g.
    blas::sgemm(
        inp,
        n,
        rows,
        dw.add(c0),
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
    /// A frozen `w` `(out, in)`'s packed forms ([`FrozenPacks`]), for its backward product.
    pub(crate) packs: Option<Arc<FrozenPacks>>,
}
/// Both gradients of `Dense`, `g @ w^T` and `x^T @ g`, packed as `[dx | dw]`: the threads
/// split between the two products (each whole on one thread when there are two), so that no
/// two threads pack the same operand, where splitting each product in turn packed its shared
/// operand once per thread, and one wait serves both.
pub(crate) struct DenseBwd;

/// `x @ w + r` for a residual `r` of the output's shape ([`dense_plus`]): [`Dense`] with the
/// residual added by each task to its rows straight after their product.
pub(crate) struct DensePlus;

/// [`Dense`]'s forward, plus `residual` when there is one.
fn dense_fwd(
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
    residual: Option<&[f32]>,
) -> Result<(CpuStorage, Shape)> {
    let x = slice(s1, l1, "dense")?;
    let w = slice(s2, l2, "dense weight")?;
    let (rows, inp) = as_rows(l1)?;
    let (win, out) = l2.shape().dims2()?;
    if win != inp {
        candle_core::bail!("dense: input width {inp}, weight ({win}, {out})");
    }
    if residual.is_some_and(|r| r.len() != rows * out) {
        candle_core::bail!("dense: a residual of {rows} x {out} expected");
    }
    let y = rows_gemm_plus(x, inp, Rhs::At(w.as_ptr(), (out, 1)), out, None, residual);
    Ok((storage(y), with_last(l1.shape(), out)))
}

/// Both gradients of `x @ w` in one op ([`DenseBwd`]).
fn dense_grads(x: &Tensor, w: &Tensor, grad: &Tensor) -> Result<(Tensor, Tensor)> {
    // One op forms both: [dx (x's size) | dw (w's size)].
    let packed = x.apply_op3_no_bwd(w, &grad.contiguous()?, &DenseBwd)?;
    let [dx, dw]: [Tensor; 2] = unpack(&packed, &[x.shape(), w.shape()])?
        .try_into()
        .expect("two parts");
    Ok((dx, dw))
}

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
        dense_fwd(s1, l1, s2, l2, None)
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = dense_grads(x, w, grad)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp3 for DensePlus {
    fn name(&self) -> &'static str {
        "lqae-dense-plus"
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
        dense_fwd(s1, l1, s2, l2, Some(slice(s3, l3, "dense residual")?))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _r: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = dense_grads(x, w, grad)?;
        Ok((Some(dx), Some(dw), Some(grad.clone())))
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
        let rows = g.len() / out.max(1);
        let packed = match &self.packs {
            // rhs = w (out x inp) as stored.
            Some(p) if self.w_is_out_in => p.get(true, rows, || {
                // SAFETY: w is (out, inp) row-major, `out * inp` floats.
                unsafe { blas::pack(blas::Side::Rhs, out, inp, w.as_ptr(), (inp, 1), rows) }
            }),
            _ => None,
        };
        let rhs = match packed {
            Some(p) => Rhs::Packed(p),
            None => Rhs::At(w.as_ptr(), (rs, cs)),
        };
        let dx = rows_gemm(g, out, rhs, inp, None);
        Ok((storage(dx), with_last(l1.shape(), inp)))
    }
}

impl CustomOp3 for DenseBwd {
    fn name(&self) -> &'static str {
        "lqae-dense-bwd"
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
        let x = slice(s1, l1, "dense backward")?;
        let w = slice(s2, l2, "dense backward weight")?;
        let g = slice(s3, l3, "dense backward gradient")?;
        let (rows, inp) = as_rows(l1)?;
        let (grows, out) = as_rows(l3)?;
        if l2.shape().dims2()? != (inp, out) || grows != rows {
            candle_core::bail!(
                "dense backward: input {:?}, weight {:?}, gradient {:?}",
                l1.dims(),
                l2.dims(),
                l3.dims()
            );
        }
        // dx's tasks take rows, dw's columns (in 16s); half the threads each.
        let threads = super::threads();
        let (tx, tw) = (threads / 2, threads - threads / 2);
        let per_row = rows.div_ceil(tx.max(1)).max(1);
        let per_col = out.div_ceil(tw).next_multiple_of(16).min(out.max(1));
        let tasks: Vec<(bool, usize)> = (0..rows.div_ceil(per_row))
            .map(|t| (true, t * per_row))
            .chain((0..out.div_ceil(per_col)).map(|t| (false, t * per_col)))
            .collect();
        let (nx, nw) = (rows * inp, inp * out);
        let mut packed = Vec::<f32>::with_capacity(nx + nw);
        let dst = SendPtr(packed.as_mut_ptr());
        let wp = SendPtr(w.as_ptr() as *mut f32);
        tasks.into_par_iter().for_each(|(is_dx, at)| {
            // SAFETY: dx is rows x inp at the start of `packed`, dw inp x out after it; each
            // task writes its own rows of dx or columns of dw; rhs = w^T, element (j, i) of
            // the (out x inp) matrix at w[i * out + j].
            unsafe {
                if is_dx {
                    let m = per_row.min(rows - at);
                    let rhs = Rhs::At(wp.get(), (1, out));
                    rows_block(dst.get(), g, out, (at, m), &rhs, inp, None);
                } else {
                    let n = per_col.min(out - at);
                    dw_columns(dst.get().add(nx), x, inp, g, out, at, n);
                }
            }
        });
        // SAFETY: the tasks cover every row of dx and every column of dw, each written whole.
        unsafe { packed.set_len(nx + nw) };
        Ok((storage(packed), Shape::from(nx + nw)))
    }
}

/// `r + x @ w` for a residual `r` of the output's shape (a block's `x + mlp(x)`): [`dense`]
/// with the addition done by the product's tasks on their own rows ([`DensePlus`]), where
/// candle's addition was one more parallel op and pass over the output. The same sums, so the
/// same bits. The gradient flows to `x`, `w` and `r`. Other devices: the product, then
/// candle's addition.
pub fn dense_plus(x: &Tensor, w: &Tensor, r: &Tensor) -> Result<Tensor> {
    let out_shape = with_last(x.shape(), w.dim(1)?);
    if r.dims() != out_shape.dims() {
        candle_core::bail!("dense: output {out_shape:?}, residual {:?}", r.dims());
    }
    if fused(x) && fused(w) && fused(r) {
        return x
            .contiguous()?
            .apply_op3(&w.contiguous()?, &r.contiguous()?, DensePlus);
    }
    r + dense(x, w)?
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
