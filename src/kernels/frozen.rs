//! Products with frozen weights: no weight gradient is ever formed.

use super::*;

/// `x @ w^T + b` for a frozen `w` `(out, in)`: one `gemm` call into rows preset to `b`. Its
/// backward returns the gradient of `x` only: candle's own matmul backward also computes
/// the weight's gradient (as many FLOPs again), which a frozen language model never uses.
pub(crate) struct FrozenLinear;

impl CustomOp3 for FrozenLinear {
    fn name(&self) -> &'static str {
        "lqae-frozen-linear"
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
        let x = slice(s1, l1, "linear")?;
        let w = slice(s2, l2, "linear weight")?;
        let b = slice(s3, l3, "linear bias")?;
        let (_, inp) = as_rows(l1)?;
        let (out, win) = l2.shape().dims2()?;
        if win != inp || b.len() != out {
            candle_core::bail!(
                "linear: input width {inp}, weight ({out}, {win}), bias {}",
                b.len()
            );
        }
        // rhs = w^T: element (k, j) is w[j * inp + k].
        let y = rows_gemm(x, inp, w.as_ptr(), (1, inp), out, Some(b));
        Ok((storage(y), with_last(l1.shape(), out)))
    }
    fn bwd(
        &self,
        _x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        Ok((
            Some(
                grad.contiguous()?
                    .apply_op2_no_bwd(w, &DenseDx { w_is_out_in: true })?,
            ),
            None,
            None,
        ))
    }
}

/// `x @ w^T + b` for `x` `(..., in)`, a frozen weight `w` `(out, in)` and bias `b` `(out)`
/// (a BERT linear layer); the gradient flows to `x` only. Other devices: candle ops.
pub fn frozen_linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    if fused(x) && fused(w) && fused(b) {
        x.contiguous()?
            .apply_op3(&w.contiguous()?, &b.contiguous()?, FrozenLinear)
    } else {
        x.broadcast_matmul(&w.t()?)?.broadcast_add(b)
    }
}

/// `x @ w^T` for a frozen `w` `(out, in)`, no bias: the tied MLM head's logits over the word
/// table. Backward: the gradient of `x` only (candle's matmul would also form the
/// `(in, out)`-sized gradient of the table: 20 GFLOP a step at the paper's shapes, unused).
pub(crate) struct FrozenMatmulT;

impl CustomOp2 for FrozenMatmulT {
    fn name(&self) -> &'static str {
        "lqae-frozen-matmul-t"
    }
    /// `x @ w^T` is the product `DenseDx` forms with `w` read as `(in, out)` transposed.
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        DenseDx { w_is_out_in: false }.cpu_fwd(s1, l1, s2, l2)
    }
    fn bwd(
        &self,
        _x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((
            Some(
                grad.contiguous()?
                    .apply_op2_no_bwd(w, &DenseDx { w_is_out_in: true })?,
            ),
            None,
        ))
    }
}

/// `x @ w^T` for `x` `(..., in)` and a frozen `w` `(out, in)`; the gradient flows to `x`
/// only. Other devices: candle ops.
pub fn frozen_matmul_t(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (inp, (out, win)) = (x.dim(candle_core::D::Minus1)?, w.dims2()?);
    if win != inp {
        candle_core::bail!("frozen matmul: input width {inp}, weight ({out}, {win})");
    }
    if fused(x) && fused(w) {
        x.contiguous()?.apply_op2(&w.contiguous()?, FrozenMatmulT)
    } else {
        x.broadcast_matmul(&w.t()?)
    }
}
