//! Products with frozen weights: no weight gradient is ever formed.

use super::*;
use std::sync::{Arc, OnceLock};

/// A frozen weight's forms packed by the vendor BLAS ([`blas::Packed`]; oneMKL), for the
/// forward product (`w^T`) and the backward one (`w`), each made by the first product that
/// takes it. oneMKL packs the weight on every call otherwise, on every thread: 8% of the
/// frozen MiniLM forward's samples on the 2-core Xeon (`scopy` of the weights and of the
/// activations). The packed products give `cblas_sgemm`'s bits where they are taken (at
/// least [`PACKED_MIN_ROWS`] rows a task), so the trained models' bits do not move.
#[derive(Default)]
pub struct FrozenPacks {
    fwd: OnceLock<Option<blas::Packed>>,
    bwd: OnceLock<Option<blas::Packed>>,
}

impl std::fmt::Debug for FrozenPacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (fwd, bwd) = self.made();
        f.debug_struct("FrozenPacks")
            .field("fwd", &fwd)
            .field("bwd", &bwd)
            .finish()
    }
}

/// The fewest rows a task of [`rows_gemm`] must have for the packed products: oneMKL's
/// `cblas_sgemm` takes another path for products of fewer than 16 rows, whose sums differ
/// from the packed products' (measured at BERT's and RoBERTa's shapes, 1 to 1,024 rows: the
/// same bits from 16 rows up; `tests/blas.rs` checks the sizes used here).
pub const PACKED_MIN_ROWS: usize = 32;

impl FrozenPacks {
    /// Whether the forward and the backward product's packed forms have been made.
    pub fn made(&self) -> (bool, bool) {
        let made = |c: &OnceLock<Option<blas::Packed>>| c.get().is_some_and(|p| p.is_some());
        (made(&self.fwd), made(&self.bwd))
    }

    /// The packed `w` of the backward product (`backward`) or `w^T` of the forward one, for
    /// products of `rows` rows: made by `make` on the first call that takes it; `None` where
    /// no BLAS in use packs or a task would have fewer than [`PACKED_MIN_ROWS`] rows.
    pub(crate) fn get(
        &self,
        backward: bool,
        rows: usize,
        make: impl FnOnce() -> Option<blas::Packed>,
    ) -> Option<&blas::Packed> {
        if !blas::packs() || fewest_rows_per_task(rows) < PACKED_MIN_ROWS {
            return None;
        }
        let cell = if backward { &self.bwd } else { &self.fwd };
        cell.get_or_init(make).as_ref()
    }
}

/// `x @ w^T + b` for a frozen `w` `(out, in)`: one `gemm` call into rows preset to `b`. Its
/// backward returns the gradient of `x` only: candle's own matmul backward also computes
/// the weight's gradient (as many FLOPs again), which a frozen language model never uses.
///
/// With `w` in `transposed_of`, the op's weight input is `w^T` `(in, out)`, a contiguous copy
/// the caller keeps beside `w` (the frozen language model; [`frozen_linear_t`]): the gemm
/// crate then reads the weight's columns in place instead of gathering `w`'s rows at a stride
/// of `in` floats into its packing buffer on every call, which for BERT's output layer (`in`
/// 1536, a 6 KiB stride) ran at 85 GFLOP/s against 100 (`examples/products 512x384x1536:NT`
/// and `512x384x1536` on a Zen 4 EPYC). The same sums in the same order where
/// [`same_sums_either_way`] holds, so the same bits (a test compares them). The backward pass
/// reads `w` itself, in the layout its product wants.
pub(crate) struct FrozenLinear {
    transposed_of: Option<Tensor>,
    packs: Option<Arc<FrozenPacks>>,
}

impl FrozenLinear {
    /// `x @ w^T + b [+ residual]` (the op's inputs as [`FrozenLinear`] takes them; a residual
    /// as large as the output, which [`frozen_linear_plus`] checks and [`rows_gemm_plus`]
    /// asserts).
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
        residual: Option<&[f32]>,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice(s1, l1, "linear")?;
        let w = slice(s2, l2, "linear weight")?;
        let b = slice(s3, l3, "linear bias")?;
        let (_, inp) = as_rows(l1)?;
        let (d0, d1) = l2.shape().dims2()?;
        // rhs = w^T: element (k, j) is w[j * inp + k], or wt[k * out + j] for the copy.
        let (out, win, rhs_strides) = match &self.transposed_of {
            None => (d0, d1, (1, inp)),
            Some(_) => (d1, d0, (d1, 1)),
        };
        // (With a copy, `frozen_linear_t` has checked the original's shape against it.)
        if win != inp || b.len() != out {
            candle_core::bail!(
                "linear: input width {inp}, {} ({d0}, {d1}), bias {}",
                match &self.transposed_of {
                    None => "weight".to_string(),
                    Some(w) => format!("transposed weight of {:?}", w.dims()),
                },
                b.len()
            );
        }
        let rows = x.len() / inp.max(1);
        let packed = match (&self.packs, &self.transposed_of) {
            (Some(p), None) => p.get(false, rows, || {
                // SAFETY: w is (out, inp) row-major: rhs element (k, j) at w[j * inp + k].
                unsafe { blas::pack(blas::Side::Rhs, inp, out, w.as_ptr(), (1, inp), rows) }
            }),
            _ => None,
        };
        let rhs = match packed {
            Some(p) => Rhs::Packed(p),
            None => Rhs::At(w.as_ptr(), rhs_strides),
        };
        let y = rows_gemm_plus(x, inp, rhs, out, Some(b), residual);
        Ok((storage(y), with_last(l1.shape(), out)))
    }

    /// The input gradient: `grad @ w` (`w` as stored, `(out, in)`).
    fn dx(&self, w: &Tensor, grad: &Tensor) -> Result<Tensor> {
        let w = self.transposed_of.as_ref().unwrap_or(w);
        let dx = DenseDx {
            w_is_out_in: true,
            packs: self.packs.clone(),
        };
        grad.contiguous()?.apply_op2_no_bwd(w, &dx)
    }
}

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
        self.forward(s1, l1, s2, l2, s3, l3, None)
    }
    fn bwd(
        &self,
        _x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        Ok((Some(self.dx(w, grad)?), None, None))
    }
}

/// `x @ w^T + b + r` for a frozen `w` and `b` (kept in the op) and a residual `r` as large as
/// the output (a BERT layer's `dense(x) + x` before its LayerNorm): [`FrozenLinear`] with
/// the residual added by each task to its rows straight after their product
/// ([`rows_gemm_plus`]), where candle's addition was one more parallel op and pass over the
/// output. The same sums, so the same bits. Backward: `grad @ w` to `x`, `grad` to `r`.
pub(crate) struct FrozenLinearPlus {
    linear: FrozenLinear,
    w: Tensor,
    b: Tensor,
}

impl CustomOp2 for FrozenLinearPlus {
    fn name(&self) -> &'static str {
        "lqae-frozen-linear-plus"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let r = slice(s2, l2, "linear residual")?;
        let (ws, wl) = self.w.storage_and_layout();
        let (bs, bl) = self.b.storage_and_layout();
        match (&*ws, &*bs) {
            (candle_core::Storage::Cpu(w), candle_core::Storage::Cpu(b)) => {
                self.linear.forward(s1, l1, w, wl, b, bl, Some(r))
            }
            _ => candle_core::bail!("linear: the weight and bias must be on the CPU"),
        }
    }
    fn bwd(
        &self,
        _x: &Tensor,
        _r: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(self.linear.dx(&self.w, grad)?), Some(grad.clone())))
    }
}

/// `x @ w^T + b` for `x` `(..., in)`, a frozen weight `w` `(out, in)` and bias `b` `(out)`
/// (a BERT linear layer); the gradient flows to `x` only. Other devices: candle ops.
pub fn frozen_linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    frozen_linear_packed(x, w, b, None)
}

/// [`frozen_linear`] with the weight's packed forms kept in `packs` ([`FrozenPacks`]: made by
/// the first products that take them, where a BLAS that packs is in use), which must belong to
/// this `w` alone.
pub fn frozen_linear_packed(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    packs: Option<&Arc<FrozenPacks>>,
) -> Result<Tensor> {
    if fused(x) && fused(w) && fused(b) {
        x.contiguous()?.apply_op3(
            &w.contiguous()?,
            &b.contiguous()?,
            FrozenLinear {
                transposed_of: None,
                packs: packs.cloned(),
            },
        )
    } else {
        x.broadcast_matmul(&w.t()?)?.broadcast_add(b)
    }
}

/// `x @ w^T + b + r` ([`frozen_linear_packed`] plus a residual `r` of the output's shape),
/// with the addition done by the product's tasks ([`FrozenLinearPlus`]); the gradient flows
/// to `x` and `r`. Other devices, and a weight or bias that is not contiguous: the product,
/// then candle's addition.
pub fn frozen_linear_plus(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    r: &Tensor,
    packs: Option<&Arc<FrozenPacks>>,
) -> Result<Tensor> {
    let out_shape = with_last(x.shape(), w.dim(0)?);
    if r.dims() != out_shape.dims() {
        candle_core::bail!("linear: output {out_shape:?}, residual {:?}", r.dims());
    }
    if fused(x) && fused(w) && fused(b) && fused(r) && w.is_contiguous() && b.is_contiguous() {
        let op = FrozenLinearPlus {
            linear: FrozenLinear {
                transposed_of: None,
                packs: packs.cloned(),
            },
            w: w.clone(),
            b: b.clone(),
        };
        x.contiguous()?.apply_op2(&r.contiguous()?, op)
    } else {
        frozen_linear_packed(x, w, b, packs)? + r
    }
}

/// [`frozen_linear`] given also `wt`, `w^T` `(in, out)` contiguous: the forward product reads
/// `wt` (see [`FrozenLinear`]), the backward `w`; the same values and bits. Other devices, a
/// `wt` that is not contiguous, a vendor BLAS loaded (its bits are its own, and the argument
/// of [`same_sums_either_way`] is about the gemm crate), or products too small for
/// [`same_sums_either_way`]: [`frozen_linear`]. `wt` must not carry a gradient (make it with
/// `detach`): no gradient flows to it, and candle's backward pass needs one for every tracked
/// tensor it meets.
pub fn frozen_linear_t(x: &Tensor, w: &Tensor, wt: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (inp, out) = (
        x.dim(candle_core::D::Minus1)?,
        wt.dim(candle_core::D::Minus1)?,
    );
    let ((win, wout), (wo, wi)) = (wt.dims2()?, w.dims2()?);
    if (win, wout) != (inp, out) || (wo, wi) != (out, inp) {
        candle_core::bail!(
            "linear: input width {inp}, transposed weight ({win}, {wout}), weight ({wo}, {wi})"
        );
    }
    if fused(x)
        && fused(w)
        && fused(wt)
        && fused(b)
        && wt.is_contiguous()
        && super::blas::active().is_none()
        && same_sums_either_way(x.elem_count() / inp.max(1), inp, out)
    {
        x.contiguous()?.apply_op3(
            wt,
            &b.contiguous()?,
            FrozenLinear {
                transposed_of: Some(w.contiguous()?),
                packs: None,
            },
        )
    } else {
        frozen_linear(x, w, b)
    }
}

/// Whether the gemm crate sums each output of [`rows_gemm`]'s products of `rows x inp` by
/// `inp x out` the same way whichever way the weight is laid out: it takes its blocked path
/// (one chain of fused multiply-adds per depth block, the blocks set by the sizes alone) for
/// every task's product. Its other paths depend on the operands' strides: the horizontal
/// kernels for at most 256 outputs, the matrix-vector loops for one row or column, the
/// outer-product loop for a depth of at most 2.
pub(crate) fn same_sums_either_way(rows: usize, inp: usize, out: usize) -> bool {
    let fewest = super::dense::fewest_rows_per_task(rows);
    fewest >= 2 && out >= 2 && fewest * out > 256 && inp >= 3
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
        DenseDx {
            w_is_out_in: false,
            packs: None,
        }
        .cpu_fwd(s1, l1, s2, l2)
    }
    fn bwd(
        &self,
        _x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((
            Some(grad.contiguous()?.apply_op2_no_bwd(
                w,
                &DenseDx {
                    w_is_out_in: true,
                    packs: None,
                },
            )?),
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
