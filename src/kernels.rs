//! Fused CPU kernels with their own backward pass, for the layers that dominate a training
//! step on the CPU: LayerNorm, softmax over the last axis, GELU (tanh and erf forms) and the
//! ViT's 3x3 depthwise convolution.
//!
//! Written from candle's primitive ops these layers are correct and differentiable (see
//! `crate::nn`) but slow on the CPU: each primitive is a separate pass over memory, many run
//! on one thread, and their backward passes multiply the passes again (the depthwise
//! convolution of one `lqae-small` block took about 120 ms forward + backward, GELU 37 ms). Here
//! each layer is one `CustomOp` whose forward and backward are single fused passes split
//! across threads by rows; the backward kernels are custom ops themselves (no second-order
//! gradients are needed).
//!
//! Every function falls back to the primitive-op form on other devices, so CUDA keeps working.
//! The tests check values and gradients against the primitive-op forms.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Keep freed memory in the process instead of handing it back to the kernel.
///
/// A training step allocates and frees many tensors of a few MiB. glibc serves such sizes
/// with fresh `mmap`s and trims the heap top after frees, so every new tensor pays a page
/// fault per 4 KiB on first touch: on this project's 2-core machines that was most of the
/// backward pass (a 1024 x 1536 `sqr().mean()` backward: 45 ms, 3.5 ms after this). Raising
/// the mmap and trim thresholds keeps the pages mapped and reused. Process-wide, once; glibc
/// only (a no-op elsewhere); set `LQAE_KEEP_MALLOC=1` to leave the allocator as it is.
pub fn tune_allocator() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("LQAE_KEEP_MALLOC").is_some() {
            return;
        }
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes glibc's allocation thresholds.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20); // glibc's maximum
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
            libc::mallopt(libc::M_TOP_PAD, 64 << 20);
        }
    });
}

/// How long candle's own worker threads spin for new work before they sleep
/// (`CANDLE_BARRIER_POOL_SPIN_LIMIT`, candle's default 25 000 spins, about half a millisecond).
pub const CANDLE_SPIN_LIMIT: &str = "50";

/// Stop candle's thread pool from spinning against ours.
///
/// candle runs its element-wise ops on its own pool of threads, which spin for about half a
/// millisecond after each op before they sleep; the kernels here and `gemm` run on rayon's
/// threads. On a 2-core machine each op of the other pool then shares its cores with a
/// spinning thread: a `lqae-small` training step took about 830 ms with candle's default and
/// 705 ms with a 50-spin limit (`lqae-eval bench train-step`). Sets
/// `CANDLE_BARRIER_POOL_SPIN_LIMIT` to [`CANDLE_SPIN_LIMIT`] unless it is set already: call it
/// first thing in `main`, before any thread starts and before candle's pool exists (it reads
/// the variable once, when it starts). Only scheduling changes: the results are the same.
pub fn tune_threads() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
            std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", CANDLE_SPIN_LIMIT);
        }
    });
}

/// Rows per parallel task: enough work per task to amortise the scheduling.
fn rows_per_task(cols: usize) -> usize {
    (16384 / cols.max(1)).max(1)
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what}: the input must be contiguous"),
    }
}

fn storage(v: Vec<f32>) -> CpuStorage {
    CpuStorage::F32(v)
}

static ENABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Turn the fused kernels off (every layer then runs as primitive candle ops, as on other
/// devices) or back on, process-wide: for checking one against the other.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, std::sync::atomic::Ordering::SeqCst);
}

/// True when the fused kernels apply: enabled, and a CPU f32 tensor.
fn fused(x: &Tensor) -> bool {
    ENABLED.load(std::sync::atomic::Ordering::SeqCst)
        && x.device().is_cpu()
        && x.dtype() == candle_core::DType::F32
}

// ---------------------------------------------------------------- AVX2

/// Tests only: run the baseline copies even where AVX2 is present, to compare the two.
static BASELINE_ONLY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Defines `fn $name(args) body` twice: as written (baseline x86-64, SSE2: 4 lanes) and
/// compiled for AVX2 (8 lanes), and calls the AVX2 copy when the CPU has it (a runtime check,
/// cached by std). For the element-wise loops below, which are written as plain index loops
/// over slices and call only `#[inline(always)]` helpers, so that the whole loop is compiled
/// inside the AVX2 function (a closure or iterator chain that is not inlined would stay
/// baseline code). Only the vector width changes, not the arithmetic (no fused multiply-add:
/// Rust never contracts `a * b + c`), so both copies give the same bits
/// (`tests::avx2_loops_match_the_baseline_bit_for_bit`).
macro_rules! avx2_or_baseline {
    ($(#[$m:meta])* fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) $body
                if !BASELINE_ONLY.load(std::sync::atomic::Ordering::Relaxed)
                    && std::is_x86_feature_detected!("avx2")
                {
                    // SAFETY: the CPU has AVX2 (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body
        }
    };
}

// ---------------------------------------------------------------- fast exp / erf

/// `e^x` in f32, branch-free so that loops over it vectorise: `2^n * p(r)` with
/// `x = n ln 2 + r`, `|r| <= ln 2 / 2` and a degree-6 Taylor polynomial (relative error
/// about 2e-7, the order of f32 rounding). Inputs are clamped to the finite range.
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // SAFETY: n is an integer in [-126, 127] after the clamp: the conversion is exact (and,
    // unlike a saturating `as`, vectorises).
    let e = unsafe { n.to_int_unchecked::<i32>() };
    p * f32::from_bits(((e + 127) as u32) << 23)
}

/// erf in f32 (Abramowitz and Stegun 7.1.26, absolute error below 1.5e-7), branch-free.
#[inline(always)]
pub fn fast_erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152 + t * 1.061_405_4))));
    (1.0 - poly * fast_exp(-a * a)).copysign(x)
}

// ---------------------------------------------------------------- GELU

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_C: f32 = 0.044715;

#[derive(Clone, Copy)]
enum GeluKind {
    Tanh,
    Erf,
}

#[inline(always)]
fn fast_tanh(u: f32) -> f32 {
    1.0 - 2.0 / (fast_exp(2.0 * u) + 1.0)
}

#[inline(always)]
fn gelu_fwd(k: GeluKind, x: f32) -> f32 {
    match k {
        GeluKind::Tanh => 0.5 * x * (1.0 + fast_tanh(SQRT_2_OVER_PI * (x + GELU_C * x * x * x))),
        GeluKind::Erf => 0.5 * x * (1.0 + fast_erf(x * std::f32::consts::FRAC_1_SQRT_2)),
    }
}

#[inline(always)]
fn gelu_grad(k: GeluKind, x: f32) -> f32 {
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
    fn gelu_rows(k: GeluKind, y: &mut [f32], x: &[f32]) {
        let n = y.len().min(x.len());
        let (y, x) = (&mut y[..n], &x[..n]);
        match k {
            GeluKind::Tanh => {
                for i in 0..n {
                    y[i] = gelu_fwd(GeluKind::Tanh, x[i]);
                }
            }
            GeluKind::Erf => {
                for i in 0..n {
                    y[i] = gelu_fwd(GeluKind::Erf, x[i]);
                }
            }
        }
    }
}
avx2_or_baseline! {
    /// `dx = g * gelu'(x)`.
    fn gelu_grad_rows(k: GeluKind, dx: &mut [f32], x: &[f32], g: &[f32]) {
        let n = dx.len().min(x.len()).min(g.len());
        let (dx, x, g) = (&mut dx[..n], &x[..n], &g[..n]);
        match k {
            GeluKind::Tanh => {
                for i in 0..n {
                    dx[i] = g[i] * gelu_grad(GeluKind::Tanh, x[i]);
                }
            }
            GeluKind::Erf => {
                for i in 0..n {
                    dx[i] = g[i] * gelu_grad(GeluKind::Erf, x[i]);
                }
            }
        }
    }
}

struct Gelu(GeluKind);
struct GeluBwd(GeluKind);

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "lqae-gelu"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l, "gelu")?;
        let k = self.0;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(16384)
            .zip(x.par_chunks(16384))
            .for_each(|(yo, xi)| gelu_rows(k, yo, xi));
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
        let mut dx = vec![0f32; x.len()];
        dx.par_chunks_mut(16384)
            .zip(x.par_chunks(16384).zip(g.par_chunks(16384)))
            .for_each(|(o, (xi, gi))| gelu_grad_rows(k, o, xi, gi));
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

// ---------------------------------------------------------------- dense products

/// `y (rows x out) = [bias +] x (rows x inp) @ rhs`, rhs `inp x out` at `rhs` with row stride
/// `rhs_rs` and column stride `rhs_cs`; returns `y`. Rows are split across the threads, one
/// single-threaded `gemm` each: for these short products (inner size 48-3072) that beats
/// gemm's own threading. `y` is never zero-filled first (a whole extra pass over memory for the
/// largest tensors of a step): every element is written, by the bias copy or by `gemm`, which
/// does not read the destination when told not to.
fn rows_gemm(
    x: &[f32],
    inp: usize,
    rhs: *const f32,
    (rhs_rs, rhs_cs): (usize, usize),
    out: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let rows = x.len() / inp.max(1);
    let threads = candle_core::utils::get_num_threads().max(1);
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
            gemm::gemm(
                m,
                out,
                inp,
                dst,
                1,
                out as isize,
                bias.is_some(),
                xc.as_ptr(),
                1,
                inp as isize,
                rhs.get() as *const f32,
                rhs_cs as isize,
                rhs_rs as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
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
fn as_rows(l: &Layout) -> Result<(usize, usize)> {
    let dims = l.dims();
    let last = *dims
        .last()
        .ok_or_else(|| candle_core::Error::Msg("dense: a scalar input".into()))?;
    Ok((l.shape().elem_count() / last.max(1), last))
}

fn with_last(shape: &Shape, last: usize) -> Shape {
    let mut d = shape.dims().to_vec();
    if let Some(x) = d.last_mut() {
        *x = last;
    }
    Shape::from(d)
}

/// `x @ w` for a trainable `w` `(in, out)`, with both gradients from single fused products
/// (candle's matmul backward goes through transposed copies and zero-filled accumulators).
struct Dense;
/// `g @ w^T`: the input gradient of `Dense` (`w` `(in, out)`) or of `FrozenLinear` (`w`
/// `(out, in)`, `w_is_out_in`).
struct DenseDx {
    w_is_out_in: bool,
}
/// `x^T @ g`: the weight gradient of `Dense`.
struct DenseDw;

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
        // SAFETY: dst inp x out; lhs = x^T (element (i, r) at x[r * inp + i]); rhs = g rows x out.
        unsafe {
            gemm::gemm(
                inp,
                out,
                rows,
                dw.as_mut_ptr(),
                1,
                out as isize,
                false,
                x.as_ptr(),
                inp as isize,
                1,
                g.as_ptr(),
                1,
                out as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(candle_core::utils::get_num_threads()),
            );
        }
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

// ---------------------------------------------------------------- frozen linear

/// `x @ w^T + b` for a frozen `w` `(out, in)`: one `gemm` call into rows preset to `b`. Its
/// backward returns the gradient of `x` only: candle's own matmul backward also computes
/// the weight's gradient (as many FLOPs again), which a frozen language model never uses.
struct FrozenLinear;

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
struct FrozenMatmulT;

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

// ---------------------------------------------------------------- attention

/// A raw pointer that may cross to the worker threads: each task writes a disjoint block.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer. A method, so that closures capture the whole (Send) wrapper.
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// `dst (m x n, row stride dst_rs) = [dst +] beta * lhs (m x k) @ rhs (k x n)`, any strides.
///
/// # Safety
/// Every pointer with its strides must address valid memory for the given sizes.
#[allow(clippy::too_many_arguments)]
unsafe fn mm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    lhs: *const f32,
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: *const f32,
    rhs_rs: usize,
    rhs_cs: usize,
    beta: f32,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        false,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        0.0,
        beta,
        false,
        false,
        false,
        gemm::Parallelism::None,
    )
}

avx2_or_baseline! {
    /// Softmax of each `s`-wide row of `p`, in place.
    fn softmax_rows(p: &mut [f32], s: usize) {
        for row in p.chunks_mut(s) {
            let m = lane_max(row);
            for v in row.iter_mut() {
                *v = fast_exp(*v - m);
            }
            let inv = 1.0 / lane_sum(row, |v| v);
            for v in row.iter_mut() {
                *v *= inv;
            }
        }
    }
}

/// Self-attention over a packed `qkv` `(b, s, 3 * heads * dh)` (queries, keys, values side by
/// side, heads contiguous within each) -> `(b, s, heads * dh)`, no mask. One task per batch
/// row and head; the `s x s` scores live in a task-local buffer and are recomputed in the
/// backward pass, so neither the head split nor the probabilities are ever stored.
struct Attention {
    heads: usize,
}
struct AttentionBwd {
    heads: usize,
}

fn attn_dims(l: &Layout, heads: usize) -> Result<(usize, usize, usize, usize)> {
    let (b, s, w3) = l.shape().dims3()?;
    if heads == 0 || w3 % (3 * heads) != 0 {
        candle_core::bail!("attention: packed width {w3} is not 3 x {heads} heads");
    }
    Ok((b, s, w3 / 3, w3 / (3 * heads)))
}

impl CustomOp1 for Attention {
    fn name(&self) -> &'static str {
        "lqae-attention"
    }
    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let qkv = slice(st, l, "attention")?;
        let (b, s, d, dh) = attn_dims(l, self.heads)?;
        let scale = 1.0 / (dh as f32).sqrt();
        let mut out = vec![0f32; b * s * d];
        let op = SendPtr(out.as_mut_ptr());
        let heads = self.heads;
        (0..b * heads).into_par_iter().for_each_init(
            || vec![0f32; s * s],
            |p, task| {
                let (bi, h) = (task / heads, task % heads);
                let base = qkv[bi * s * 3 * d..].as_ptr();
                // SAFETY: q, k, v of head h are columns h*dh.. of the three thirds of batch
                // row bi (row stride 3d); this task alone writes columns h*dh.. of its rows.
                unsafe {
                    let (q, k, v) = (
                        base.add(h * dh),
                        base.add(d + h * dh),
                        base.add(2 * d + h * dh),
                    );
                    mm(s, s, dh, p.as_mut_ptr(), s, q, 3 * d, 1, k, 1, 3 * d, scale);
                    softmax_rows(p, s);
                    let o = op.get().add(bi * s * d + h * dh);
                    mm(s, dh, s, o, d, p.as_ptr(), s, 1, v, 3 * d, 1, 1.0);
                }
            },
        );
        Ok((storage(out), Shape::from((b, s, d))))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(
            &grad.contiguous()?,
            &AttentionBwd { heads: self.heads },
        )?))
    }
}

impl CustomOp2 for AttentionBwd {
    fn name(&self) -> &'static str {
        "lqae-attention-bwd"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let qkv = slice(s1, l1, "attention backward")?;
        let go = slice(s2, l2, "attention backward")?;
        let (b, s, d, dh) = attn_dims(l1, self.heads)?;
        let scale = 1.0 / (dh as f32).sqrt();
        let mut dqkv = vec![0f32; b * s * 3 * d];
        let dp_ptr = SendPtr(dqkv.as_mut_ptr());
        let heads = self.heads;
        (0..b * heads).into_par_iter().for_each_init(
            || (vec![0f32; s * s], vec![0f32; s * s]),
            |(p, dp), task| {
                let (bi, h) = (task / heads, task % heads);
                let base = qkv[bi * s * 3 * d..].as_ptr();
                let g = go[bi * s * d + h * dh..].as_ptr();
                // SAFETY: as in the forward pass; this task alone writes columns h*dh.. of the
                // three thirds of batch row bi in dqkv.
                unsafe {
                    let (q, k, v) = (
                        base.add(h * dh),
                        base.add(d + h * dh),
                        base.add(2 * d + h * dh),
                    );
                    let dbase = dp_ptr.get().add(bi * s * 3 * d);
                    let (dq, dk, dv) = (
                        dbase.add(h * dh),
                        dbase.add(d + h * dh),
                        dbase.add(2 * d + h * dh),
                    );
                    mm(s, s, dh, p.as_mut_ptr(), s, q, 3 * d, 1, k, 1, 3 * d, scale);
                    softmax_rows(p, s);
                    // dV = P^T dO; dP = dO V^T.
                    mm(s, dh, s, dv, 3 * d, p.as_ptr(), 1, s, g, d, 1, 1.0);
                    mm(s, s, dh, dp.as_mut_ptr(), s, g, d, 1, v, 1, 3 * d, 1.0);
                    // dS = P * (dP - rowsum(dP * P)).
                    for (pr, dr) in p.chunks(s).zip(dp.chunks_mut(s)) {
                        let dot: f32 = pr.iter().zip(dr.iter()).map(|(a, b)| a * b).sum();
                        for (dv_, &pv) in dr.iter_mut().zip(pr) {
                            *dv_ = pv * (*dv_ - dot);
                        }
                    }
                    // dQ = scale dS K; dK = scale dS^T Q.
                    mm(s, dh, s, dq, 3 * d, dp.as_ptr(), s, 1, k, 3 * d, 1, scale);
                    mm(s, dh, s, dk, 3 * d, dp.as_ptr(), 1, s, q, 3 * d, 1, scale);
                }
            },
        );
        Ok((storage(dqkv), l1.shape().clone()))
    }
}

/// Self-attention of a packed `qkv` `(b, s, 3 * heads * dh)` with an optional additive mask
/// (broadcast to `(b, heads, s, s)`) -> `(b, s, heads * dh)`. Fused on the CPU without a mask;
/// otherwise the heads are split and `crate::nn::attention` runs.
pub fn attention_qkv(qkv: &Tensor, heads: usize, additive_mask: Option<&Tensor>) -> Result<Tensor> {
    if fused(qkv) && additive_mask.is_none() {
        return qkv.contiguous()?.apply_op1(Attention { heads });
    }
    let (b, s, w3) = qkv.dims3()?;
    let d = w3 / 3;
    let split = |i: usize| -> Result<Tensor> {
        qkv.narrow(2, i * d, d)?
            .reshape((b, s, heads, d / heads))?
            .transpose(1, 2)?
            .contiguous()
    };
    crate::nn::attention(&split(0)?, &split(1)?, &split(2)?, additive_mask)?
        .transpose(1, 2)?
        .reshape((b, s, d))
}

// ---------------------------------------------------------------- gated GELU

/// `gelu_tanh(a) * b` for a packed `(..., 2m)` input whose rows are `[a | b]`: the ViT's GLU
/// after one product with `[fc1 | fc2]`. One pass forward, one backward.
struct GeGlu;
struct GeGluBwd;

fn geglu_m(l: &Layout) -> Result<usize> {
    let w = l.dims().last().copied().unwrap_or(0);
    if w == 0 || w % 2 != 0 {
        candle_core::bail!("gated gelu: the last axis ({w}) must hold [a | b] of equal widths");
    }
    Ok(w / 2)
}

avx2_or_baseline! {
    /// `y = gelu_tanh(a) * b`.
    fn geglu_row(y: &mut [f32], a: &[f32], b: &[f32]) {
        let n = y.len().min(a.len()).min(b.len());
        let (y, a, b) = (&mut y[..n], &a[..n], &b[..n]);
        for k in 0..n {
            y[k] = gelu_fwd(GeluKind::Tanh, a[k]) * b[k];
        }
    }
}
avx2_or_baseline! {
    /// The gradients of `geglu_row` for the output gradient `g`.
    fn geglu_grad_row(da: &mut [f32], db: &mut [f32], a: &[f32], b: &[f32], g: &[f32]) {
        let n = da.len().min(db.len()).min(a.len()).min(b.len()).min(g.len());
        let (da, db, a, b, g) = (&mut da[..n], &mut db[..n], &a[..n], &b[..n], &g[..n]);
        for k in 0..n {
            da[k] = g[k] * b[k] * gelu_grad(GeluKind::Tanh, a[k]);
            db[k] = g[k] * gelu_fwd(GeluKind::Tanh, a[k]);
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
        let mut y = vec![0f32; x.len() / 2];
        let r = rows_per_task(2 * m);
        y.par_chunks_mut(r * m)
            .zip(x.par_chunks(r * 2 * m))
            .for_each(|(yo, xi)| {
                for (yr, xr) in yo.chunks_mut(m).zip(xi.chunks(2 * m)) {
                    let (a, b) = xr.split_at(m);
                    geglu_row(yr, a, b);
                }
            });
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
        let mut dx = vec![0f32; x.len()];
        let r = rows_per_task(2 * m);
        dx.par_chunks_mut(r * 2 * m)
            .zip(x.par_chunks(r * 2 * m).zip(g.par_chunks(r * m)))
            .for_each(|(o, (xi, gi))| {
                for ((or, xr), gr) in o.chunks_mut(2 * m).zip(xi.chunks(2 * m)).zip(gi.chunks(m)) {
                    let (a, b) = xr.split_at(m);
                    let (da, db) = or.split_at_mut(m);
                    geglu_grad_row(da, db, a, b, gr);
                }
            });
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

// ---------------------------------------------------------------- softmax

struct Softmax;
struct SoftmaxBwd;

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

// ---------------------------------------------------------------- AdamW

/// One AdamW update's constants, each converted to f32 exactly as candle converts the scalar of
/// the op it stands for (`t * x` is `affine(x, 0)`, `t / x` is `affine(1 / x, 0)`, `t + x` is
/// `affine(1, x)`: `x` computed in f64, then cast).
#[derive(Debug, Clone, Copy)]
pub struct AdamWConsts {
    pub b1: f32,
    pub one_minus_b1: f32,
    pub b2: f32,
    pub one_minus_b2: f32,
    /// `1 / (1 - b1^t)`, `1 / (1 - b2^t)`.
    pub inv_c1: f32,
    pub inv_c2: f32,
    pub eps: f32,
    pub lr: f32,
    /// `lr * weight_decay`, for decayed parameters.
    pub lr_decay: Option<f32>,
    /// Gradient scale (clipping), when not 1.
    pub grad_scale: Option<f32>,
}

avx2_or_baseline! {
    /// The AdamW update of `train::AdamW::step`, element by element, with candle's exact
    /// sequence of f32 operations (each `affine` is `x * mul + add`, kept as written: Rust
    /// neither fuses nor drops the `+ 0.0`), so the results are the same bits.
    /// `src`: parameter, moments, gradient; `out`: parameter, moments.
    fn adamw_chunk(
        src: (&[f32], &[f32], &[f32], &[f32]),
        out: (&mut [f32], &mut [f32], &mut [f32]),
        k: &AdamWConsts,
    ) {
        let (th, m, v, g) = src;
        let (o_th, o_m, o_v) = out;
        let (scale, gs) = (k.grad_scale.is_some(), k.grad_scale.unwrap_or(1.0));
        let (decay, lrd) = (k.lr_decay.is_some(), k.lr_decay.unwrap_or(0.0));
        for i in 0..th.len() {
            let gi = if scale { g[i] * gs + 0.0 } else { g[i] };
            let mi = (m[i] * k.b1 + 0.0) + (gi * k.one_minus_b1 + 0.0);
            let vi = (v[i] * k.b2 + 0.0) + ((gi * gi) * k.one_minus_b2 + 0.0);
            let upd = (mi * k.inv_c1 + 0.0) / ((vi * k.inv_c2 + 0.0).sqrt() * 1.0 + k.eps);
            let t = th[i];
            let mut next = t - (upd * k.lr + 0.0);
            if decay {
                next -= t * lrd + 0.0;
            }
            o_th[i] = next;
            o_m[i] = mi;
            o_v[i] = vi;
        }
    }
}

/// The elements of a contiguous CPU f32 storage view.
fn f32_view<'a>(st: &'a candle_core::Storage, l: &Layout) -> Option<&'a [f32]> {
    let (a, b) = l.contiguous_offsets()?;
    match st {
        candle_core::Storage::Cpu(CpuStorage::F32(v)) => Some(&v[a..b]),
        _ => None,
    }
}

/// One AdamW update of a parameter `theta` with moments `m`, `v` and gradient `g`, in one
/// pass: `(theta', m', v')`, the same bits as the op-by-op update (about a dozen full-size
/// temporaries; at the paper's 170 M parameters that was seconds a step). `None` where it does
/// not apply (not CPU f32 contiguous, or fused kernels off): the caller then runs the ops.
pub fn adamw_update(
    theta: &Tensor,
    m: &Tensor,
    v: &Tensor,
    g: &Tensor,
    k: &AdamWConsts,
) -> Result<Option<(Tensor, Tensor, Tensor)>> {
    let n = theta.elem_count();
    if ![theta, m, v, g]
        .iter()
        .all(|t| fused(t) && t.is_contiguous())
    {
        return Ok(None);
    }
    if [m, v, g].iter().any(|t| t.dims() != theta.dims()) {
        candle_core::bail!(
            "adamw: parameter {:?}, moments {:?} / {:?}, gradient {:?}",
            theta.dims(),
            m.dims(),
            v.dims(),
            g.dims()
        );
    }
    // Read locks on the four storages for the pass; the outputs are new tensors.
    let locked = [theta, m, v, g].map(|t| t.storage_and_layout());
    let [Some(th), Some(mm), Some(vv), Some(gg)] = locked.each_ref().map(|(st, l)| f32_view(st, l))
    else {
        return Ok(None);
    };
    let uninit = |n: usize| {
        let mut o = Vec::<f32>::with_capacity(n);
        // SAFETY: every element is written by `adamw_chunk` below before the vector is read
        // (all three outputs are sliced into the same chunks as the inputs).
        #[allow(clippy::uninit_vec)]
        unsafe {
            o.set_len(n)
        };
        o
    };
    let (mut o_th, mut o_m, mut o_v) = (uninit(n), uninit(n), uninit(n));
    const CHUNK: usize = 1 << 14;
    if n <= 4 * CHUNK {
        // Small tensors (biases, norms): one call, no tasks to schedule.
        adamw_chunk((th, mm, vv, gg), (&mut o_th, &mut o_m, &mut o_v), k);
    } else {
        o_th.par_chunks_mut(CHUNK)
            .zip(o_m.par_chunks_mut(CHUNK).zip(o_v.par_chunks_mut(CHUNK)))
            .enumerate()
            .for_each(|(c, (ot, (om, ov)))| {
                let r = c * CHUNK..(c * CHUNK + ot.len());
                adamw_chunk(
                    (&th[r.clone()], &mm[r.clone()], &vv[r.clone()], &gg[r]),
                    (ot, om, ov),
                    k,
                );
            });
    }
    drop(locked);
    let dev = theta.device();
    let shape = theta.shape();
    Ok(Some((
        Tensor::from_vec(o_th, shape, dev)?,
        Tensor::from_vec(o_m, shape, dev)?,
        Tensor::from_vec(o_v, shape, dev)?,
    )))
}

// ---------------------------------------------------------------- cross-entropy

/// Mean cross-entropy of rows of logits against target classes, in one pass per row
/// (`logsumexp(row) - row[target]`), and its gradient `(softmax(row) - onehot) / n` in one more:
/// candle's `log_softmax` + gather makes about ten full-size temporaries of the `(n, V)` logits
/// forward and backward, which at the tied MLM head of the paper configuration (256 x 50265
/// logits a step, 51 MB each) cost as much as the two matmuls around them.
struct CrossEntropy {
    targets: std::sync::Arc<Vec<u32>>,
}
struct CrossEntropyBwd {
    targets: std::sync::Arc<Vec<u32>>,
    /// d loss / d (mean loss), times 1/n.
    scale: f32,
}

avx2_or_baseline! {
    /// `logsumexp` of a row: its maximum plus the log of the sum of `e^(x - max)`.
    fn row_logsumexp(x: &[f32], out: &mut f32) {
        let m = lane_max(x);
        let s = lane_sum(x, |v| fast_exp(v - m));
        *out = m + s.ln();
    }
}

avx2_or_baseline! {
    /// `o = scale * e^(x - lse)`: the softmax of the row times `scale`.
    fn row_scaled_softmax(x: &[f32], o: &mut [f32], lse: f32, scale: f32) {
        for i in 0..x.len() {
            o[i] = scale * fast_exp(x[i] - lse);
        }
    }
}

fn ce_rows(l: &Layout, targets: &[u32]) -> Result<(usize, usize)> {
    let (n, v) = match l.dims() {
        [n, v] => (*n, *v),
        d => candle_core::bail!("cross-entropy: logits must be (rows, classes), got {d:?}"),
    };
    if targets.len() != n {
        candle_core::bail!(
            "cross-entropy: {n} rows of logits but {} targets",
            targets.len()
        );
    }
    if let Some(t) = targets.iter().find(|&&t| t as usize >= v) {
        candle_core::bail!("cross-entropy: target class {t} is not below the {v} classes");
    }
    Ok((n, v))
}

impl CustomOp1 for CrossEntropy {
    fn name(&self) -> &'static str {
        "lqae-cross-entropy"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l, "cross-entropy")?;
        let (n, v) = ce_rows(l, &self.targets)?;
        let total: f64 = x
            .par_chunks(v)
            .zip(self.targets.par_iter())
            .map(|(row, &t)| {
                let mut lse = 0f32;
                row_logsumexp(row, &mut lse);
                (lse - row[t as usize]) as f64
            })
            .sum();
        Ok((
            storage(vec![(total / n.max(1) as f64) as f32]),
            Shape::from(()),
        ))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let n = arg.dim(0)?.max(1);
        let g = grad.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?;
        Ok(Some(arg.apply_op1_no_bwd(&CrossEntropyBwd {
            targets: self.targets.clone(),
            scale: g / n as f32,
        })?))
    }
}

impl CustomOp1 for CrossEntropyBwd {
    fn name(&self) -> &'static str {
        "lqae-cross-entropy-bwd"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l, "cross-entropy backward")?;
        let (_, v) = ce_rows(l, &self.targets)?;
        let mut dx: Vec<f32> = Vec::with_capacity(x.len());
        // SAFETY: every element is written below before the vector is read.
        #[allow(clippy::uninit_vec)]
        unsafe {
            dx.set_len(x.len())
        };
        dx.par_chunks_mut(v)
            .zip(x.par_chunks(v).zip(self.targets.par_iter()))
            .for_each(|(o, (row, &t))| {
                let mut lse = 0f32;
                row_logsumexp(row, &mut lse);
                row_scaled_softmax(row, o, lse, self.scale);
                o[t as usize] -= self.scale;
            });
        Ok((storage(dx), l.shape().clone()))
    }
}

/// Mean cross-entropy of `logits` `(n, classes)` against `targets` `(n,)` (u32 class ids), as
/// `candle_nn::loss::cross_entropy` computes it, with a gradient for the logits. Fused on CPU
/// f32 (see [`CrossEntropy`]); candle's ops elsewhere.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if fused(logits) {
        let t: Vec<u32> = targets
            .flatten_all()?
            .to_dtype(candle_core::DType::U32)?
            .to_vec1()?;
        logits.contiguous()?.apply_op1(CrossEntropy {
            targets: std::sync::Arc::new(t),
        })
    } else {
        candle_nn::loss::cross_entropy(logits, targets)
    }
}

// ---------------------------------------------------------------- LayerNorm

struct LayerNormOp {
    eps: f32,
}
struct LayerNormBwd {
    eps: f32,
}

/// Lanes of the row sums below: eight independent partial sums (then added pairwise), so that
/// the reductions vectorise instead of waiting on one accumulator per element.
const LANES: usize = 8;

/// Pairwise total of the lane partial sums.
#[inline(always)]
fn lanes_total(a: [f32; LANES]) -> f32 {
    ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]))
}

/// `sum f(x[k])` over a row, in `LANES` interleaved partial sums.
#[inline(always)]
fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut it = x.chunks_exact(LANES);
    for c in &mut it {
        for l in 0..LANES {
            acc[l] += f(c[l]);
        }
    }
    for (l, &v) in it.remainder().iter().enumerate() {
        acc[l] += f(v);
    }
    lanes_total(acc)
}

/// The largest element of a row (`-inf` for an empty one), in `LANES` interleaved maxima.
#[inline(always)]
fn lane_max(x: &[f32]) -> f32 {
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
fn row_stats(xr: &[f32], eps: f32) -> (f32, f32) {
    let d = xr.len() as f32;
    let mean = lane_sum(xr, |v| v) / d;
    let var = lane_sum(xr, |v| (v - mean) * (v - mean)) / d;
    (mean, 1.0 / (var + eps).sqrt())
}

avx2_or_baseline! {
    /// LayerNorm of each `w.len()`-wide row of `x` into `y`.
    fn layer_norm_rows(y: &mut [f32], x: &[f32], w: &[f32], b: &[f32], eps: f32) {
        let d = w.len();
        for (yr, xr) in y.chunks_mut(d).zip(x.chunks(d)) {
            let (mean, rstd) = row_stats(xr, eps);
            let (yr, xr, b) = (&mut yr[..d], &xr[..d], &b[..d]);
            for k in 0..d {
                yr[k] = (xr[k] - mean) * rstd * w[k] + b[k];
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
        let mut y = vec![0f32; x.len()];
        let r = rows_per_task(d) * d;
        y.par_chunks_mut(r)
            .zip(x.par_chunks(r))
            .for_each(|(yo, xi)| layer_norm_rows(yo, xi, w, b, eps));
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
        let d = w.elem_count();
        let n = x.elem_count();
        // One op computes all three: [dx (n) | dw (d) | db (d)].
        let packed = x.apply_op3_no_bwd(w, &grad.contiguous()?, &LayerNormBwd { eps: self.eps })?;
        let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        let dw = packed.narrow(0, n, d)?.reshape(w.shape())?;
        let db = packed.narrow(0, n + d, d)?.reshape(w.shape())?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

avx2_or_baseline! {
    /// LayerNorm backward over rows: `dx` per row, and the column sums of `g xhat` (the
    /// weight's gradient) and `g` (the bias's) added into `acc` = `[dw | db]`.
    fn layer_norm_grad_rows(
        dx: &mut [f32],
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
            // m1 = mean(g w), m2 = mean(g w xhat) in lanes; the column sums of dw (g xhat)
            // and db (g) alongside.
            let (mut m1, mut m2) = ([0f32; LANES], [0f32; LANES]);
            let mut step = |l: usize, x: f32, g: f32, w: f32, aw: &mut f32, ab: &mut f32| {
                let xh = (x - mean) * rstd;
                let gw = g * w;
                m1[l] += gw;
                m2[l] += gw * xh;
                *aw += g * xh;
                *ab += g;
            };
            let mut chunks = xr
                .chunks_exact(LANES)
                .zip(gr.chunks_exact(LANES))
                .zip(w.chunks_exact(LANES))
                .zip(aw.chunks_exact_mut(LANES).zip(ab.chunks_exact_mut(LANES)));
            for (((xc, gc), wc), (awc, abc)) in &mut chunks {
                for l in 0..LANES {
                    step(l, xc[l], gc[l], wc[l], &mut awc[l], &mut abc[l]);
                }
            }
            let tail = d - d % LANES;
            for k in tail..d {
                step(k - tail, xr[k], gr[k], w[k], &mut aw[k], &mut ab[k]);
            }
            let (m1, m2) = (lanes_total(m1) / d as f32, lanes_total(m2) / d as f32);
            let (or, xr, gr) = (&mut or[..d], &xr[..d], &gr[..d]);
            for k in 0..d {
                let xh = (xr[k] - mean) * rstd;
                or[k] = rstd * (gr[k] * w[k] - m1 - xh * m2);
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
        let eps = self.eps;
        let mut out = vec![0f32; n + 2 * d];
        let (dx, _) = out.split_at_mut(n);
        let r = rows_per_task(d) * d;
        // dx per row; dw and db as per-task partial sums, added up after.
        let partials: Vec<Vec<f32>> = dx
            .par_chunks_mut(r)
            .zip(x.par_chunks(r).zip(g.par_chunks(r)))
            .map(|(o, (xi, gi))| {
                let mut acc = vec![0f32; 2 * d];
                layer_norm_grad_rows(o, xi, gi, w, &mut acc, eps);
                acc
            })
            .collect();
        let tail = &mut out[n..];
        for p in partials {
            for (t, v) in tail.iter_mut().zip(p) {
                *t += v;
            }
        }
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
        crate::nn::layer_norm_ops(x, weight, bias, eps)
    }
}

// ---------------------------------------------------------------- depthwise 3x3

struct Depthwise {
    grid: usize,
}
struct DepthwiseBwd {
    grid: usize,
}

avx2_or_baseline! {
    /// `dk[tap] += sum over positions of grad[y, x] * in[y + dy - 1, x + dx - 1]` for one image.
    fn depthwise_kernel_grad(gi: &[f32], xi: &[f32], dk: &mut [f32], g: usize, c: usize) {
        for y in 0..g {
            for xx in 0..g {
                let gv = &gi[(y * g + xx) * c..(y * g + xx + 1) * c];
                for dy in 0..3 {
                    let sy = (y + dy).wrapping_sub(1);
                    if sy >= g {
                        continue;
                    }
                    for dxx in 0..3 {
                        let sx = (xx + dxx).wrapping_sub(1);
                        if sx >= g {
                            continue;
                        }
                        let iv = &xi[(sy * g + sx) * c..(sy * g + sx + 1) * c];
                        let acc = &mut dk[(3 * dy + dxx) * c..(3 * dy + dxx + 1) * c];
                        for ((a, &gq), &ivq) in acc.iter_mut().zip(gv).zip(iv) {
                            *a += gq * ivq;
                        }
                    }
                }
            }
        }
    }
}

avx2_or_baseline! {
    /// One image `(g*g, c)` row-major, kernel `(9, c)`: out[y, x] = sum over taps of
    /// k[3*dy + dx] * in[y + dy - 1, x + dx - 1] (zero outside the grid); with `flip`, the
    /// input gradient (the taps mirrored).
    fn depthwise_image(inp: &[f32], k: &[f32], out: &mut [f32], g: usize, c: usize, flip: bool) {
        for y in 0..g {
            for x in 0..g {
                let o = &mut out[(y * g + x) * c..(y * g + x + 1) * c];
                o.iter_mut().for_each(|v| *v = 0.0);
                for dy in 0..3 {
                    // Forward reads in[y + dy - 1]; the input gradient reads grad[y - dy + 1].
                    let sy = if flip {
                        (y + 1).wrapping_sub(dy)
                    } else {
                        (y + dy).wrapping_sub(1)
                    };
                    if sy >= g {
                        continue;
                    }
                    for dx in 0..3 {
                        let sx = if flip {
                            (x + 1).wrapping_sub(dx)
                        } else {
                            (x + dx).wrapping_sub(1)
                        };
                        if sx >= g {
                            continue;
                        }
                        let kr = &k[(3 * dy + dx) * c..(3 * dy + dx + 1) * c];
                        let ir = &inp[(sy * g + sx) * c..(sy * g + sx + 1) * c];
                        for ((ov, &kv), &iv) in o.iter_mut().zip(kr).zip(ir) {
                            *ov += kv * iv;
                        }
                    }
                }
            }
        }
}
}

impl CustomOp2 for Depthwise {
    fn name(&self) -> &'static str {
        "lqae-depthwise3x3"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice(s1, l1, "depthwise conv")?;
        let k = slice(s2, l2, "depthwise conv kernel")?;
        let (b, t, c) = l1.shape().dims3()?;
        let g = self.grid;
        if g * g != t || k.len() != 9 * c {
            candle_core::bail!(
                "depthwise conv: {t} tokens are not a {g}x{g} grid, or the kernel is not (9, {c})"
            );
        }
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(t * c)
            .zip(x.par_chunks(t * c))
            .for_each(|(o, i)| depthwise_image(i, k, o, g, c, false));
        let _ = b;
        Ok((storage(y), l1.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        k: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let n = x.elem_count();
        let packed =
            x.apply_op3_no_bwd(k, &grad.contiguous()?, &DepthwiseBwd { grid: self.grid })?;
        let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        let dk = packed.narrow(0, n, k.elem_count())?.reshape(k.shape())?;
        Ok((Some(dx), Some(dk)))
    }
}

impl CustomOp3 for DepthwiseBwd {
    fn name(&self) -> &'static str {
        "lqae-depthwise3x3-bwd"
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
        let x = slice(s1, l1, "depthwise conv backward")?;
        let k = slice(s2, l2, "depthwise conv backward")?;
        let gr = slice(s3, l3, "depthwise conv backward")?;
        let (_b, t, c) = l1.shape().dims3()?;
        let g = self.grid;
        let n = x.len();
        let mut out = vec![0f32; n + 9 * c];
        let (dx, _) = out.split_at_mut(n);
        let partials: Vec<Vec<f32>> = dx
            .par_chunks_mut(t * c)
            .zip(x.par_chunks(t * c).zip(gr.par_chunks(t * c)))
            .map(|(o, (xi, gi))| {
                depthwise_image(gi, k, o, g, c, true);
                // dk[tap] = sum over positions of grad[y, x] * in[y + dy - 1, x + dx - 1].
                let mut dk = vec![0f32; 9 * c];
                depthwise_kernel_grad(gi, xi, &mut dk, g, c);
                dk
            })
            .collect();
        let tail = &mut out[n..];
        for p in partials {
            for (t, v) in tail.iter_mut().zip(p) {
                *t += v;
            }
        }
        Ok((storage(out), Shape::from(n + 9 * c)))
    }
}

/// 3x3 depthwise convolution with zero padding over the `grid x grid` tokens of `x`
/// `(b, grid*grid, c)`; `kernel` `(9, c)`, row `3 * dy + dx`. Other devices: `fallback`.
pub fn depthwise3x3(
    x: &Tensor,
    kernel: &Tensor,
    grid: usize,
    fallback: impl FnOnce() -> Result<Tensor>,
) -> Result<Tensor> {
    if fused(x) && fused(kernel) {
        x.contiguous()?
            .apply_op2(&kernel.contiguous()?, Depthwise { grid })
    } else {
        fallback()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn rand(shape: &[usize], seed: u64) -> Var {
        Var::from_tensor(
            &crate::bench::uniform(shape, seed, &Device::Cpu)
                .unwrap()
                .affine(4.0, 0.3)
                .unwrap(),
        )
        .unwrap()
    }

    /// The AVX2 copies of the element-wise loops give the same bits as the baseline copies
    /// (a no-op comparison on a CPU without AVX2, said so).
    #[test]
    fn avx2_loops_match_the_baseline_bit_for_bit() {
        if !std::is_x86_feature_detected!("avx2") {
            eprintln!("no AVX2 on this CPU: only the baseline copies run here");
        }
        let x = rand(&[3, 5, 2 * 37], 11);
        let w = rand(&[37], 12);
        let b = rand(&[37], 13);
        let xs = rand(&[3, 5, 37], 14);
        let qkv = rand(&[2, 9, 3 * 4 * 5], 15);
        let img = rand(&[2, 9, 11], 16);
        let taps = rand(&[9, 11], 17);
        let run = || {
            let outs = [
                gelu_erf(x.as_tensor()).unwrap(),
                gelu_tanh(x.as_tensor()).unwrap(),
                gated_gelu(x.as_tensor()).unwrap(),
                layer_norm(xs.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5).unwrap(),
                attention_qkv(qkv.as_tensor(), 4, None).unwrap(),
                depthwise3x3(img.as_tensor(), taps.as_tensor(), 3, || unreachable!()).unwrap(),
                cross_entropy(
                    &xs.as_tensor().reshape((15, 37)).unwrap(),
                    &Tensor::arange(0u32, 15, &Device::Cpu).unwrap(),
                )
                .unwrap(),
            ];
            let loss = outs
                .iter()
                .map(|o| o.sqr().unwrap().sum_all().unwrap())
                .reduce(|a, b| (a + b).unwrap())
                .unwrap();
            let grads = loss.backward().unwrap();
            let mut bits: Vec<u32> = Vec::new();
            for t in outs.iter().chain(
                [&x, &w, &b, &xs, &qkv, &img, &taps]
                    .iter()
                    .map(|v| grads.get(v.as_tensor()).unwrap()),
            ) {
                bits.extend(
                    t.flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap()
                        .iter()
                        .map(|v| v.to_bits()),
                );
            }
            bits
        };
        let fast = run();
        BASELINE_ONLY.store(true, std::sync::atomic::Ordering::SeqCst);
        let base = run();
        BASELINE_ONLY.store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(fast.len(), base.len());
        let differ = fast.iter().zip(&base).filter(|(a, b)| a != b).count();
        assert_eq!(differ, 0, "{differ} of {} values differ", fast.len());
    }

    pub(crate) fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    /// Values of `f` and `g`, and their gradients with respect to every var through
    /// `sum(out * r)` for a random `r`, agree within `tol`.
    pub(crate) fn same(vars: &[&Tensor], f: impl Fn() -> Tensor, g: impl Fn() -> Tensor, tol: f32) {
        let (a, b) = (f(), g());
        assert_eq!(a.dims(), b.dims());
        assert!(
            max_diff(&a, &b) < tol,
            "values differ by {}",
            max_diff(&a, &b)
        );
        let r = rand(a.dims(), 99);
        let ga = (a * r.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gb = (b * r.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (i, v) in vars.iter().enumerate() {
            let (x, y) = (ga.get(v).expect("fused grad"), gb.get(v).expect("ops grad"));
            let scale = y
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                .max(1.0);
            let d = max_diff(x, y);
            assert!(
                d < tol * scale,
                "gradient {i} differs by {d} (scale {scale})"
            );
        }
    }

    #[test]
    fn gelu_tanh_and_erf_match_candle_with_gradients() {
        let x = rand(&[7, 33], 1);
        same(
            &[x.as_tensor()],
            || gelu_tanh(x.as_tensor()).unwrap(),
            || x.as_tensor().gelu().unwrap(),
            1e-5,
        );
        same(
            &[x.as_tensor()],
            || gelu_erf(x.as_tensor()).unwrap(),
            || x.as_tensor().gelu_erf().unwrap(),
            1e-5,
        );
    }

    #[test]
    fn softmax_matches_candle_with_gradients() {
        let x = rand(&[3, 5, 17], 2);
        same(
            &[x.as_tensor()],
            || softmax_last(x.as_tensor()).unwrap(),
            || candle_nn::ops::softmax(x.as_tensor(), candle_core::D::Minus1).unwrap(),
            1e-5,
        );
        // Large logits: no overflow.
        let big = (x.as_tensor() * 100.0).unwrap();
        let y = softmax_last(&big).unwrap();
        let sums: Vec<f32> = y.sum(2).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5), "{sums:?}");
    }

    #[test]
    fn frozen_matmul_t_matches_candle_and_gives_no_weight_gradient() {
        let x = rand(&[2, 5, 7], 50);
        let w = rand(&[9, 7], 51);
        same(
            &[x.as_tensor()],
            || frozen_matmul_t(x.as_tensor(), w.as_tensor()).unwrap(),
            || {
                x.as_tensor()
                    .broadcast_matmul(&w.as_tensor().t().unwrap())
                    .unwrap()
            },
            1e-5,
        );
        let g = frozen_matmul_t(x.as_tensor(), w.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(g.get(x.as_tensor()).is_some());
        assert!(
            g.get(w.as_tensor()).is_none(),
            "the frozen table gets no gradient"
        );
        let e = frozen_matmul_t(x.as_tensor(), &w.as_tensor().t().unwrap()).unwrap_err();
        assert!(
            e.to_string().contains("input width 7, weight (7, 9)"),
            "{e}"
        );
    }

    #[test]
    fn cross_entropy_matches_candle_with_gradients() {
        let x = rand(&[6, 41], 7);
        let t = Tensor::new(&[0u32, 40, 3, 3, 17, 29], &Device::Cpu).unwrap();
        same(
            &[x.as_tensor()],
            || cross_entropy(x.as_tensor(), &t).unwrap(),
            || candle_nn::loss::cross_entropy(x.as_tensor(), &t).unwrap(),
            1e-5,
        );
        // Large logits stay finite and equal candle's.
        let big = (x.as_tensor() * 80.0).unwrap();
        let a = cross_entropy(&big, &t).unwrap().to_scalar::<f32>().unwrap();
        let b = candle_nn::loss::cross_entropy(&big, &t)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            a.is_finite() && (a - b).abs() <= 1e-5 * b.abs(),
            "{a} vs {b}"
        );
        // A target outside the classes is an error, not a wrong loss.
        let bad = Tensor::new(&[0u32, 41, 3, 3, 17, 29], &Device::Cpu).unwrap();
        let e = cross_entropy(x.as_tensor(), &bad).unwrap_err().to_string();
        assert!(e.contains("target class 41"), "{e}");
    }

    #[test]
    fn layer_norm_matches_primitive_ops_with_gradients() {
        let x = rand(&[4, 9, 24], 3);
        let w = rand(&[24], 4);
        let b = rand(&[24], 5);
        same(
            &[x.as_tensor(), w.as_tensor(), b.as_tensor()],
            || layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5).unwrap(),
            || {
                crate::nn::layer_norm_ops(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5)
                    .unwrap()
            },
            2e-5,
        );
        // Many rows: the per-task partial sums of dw and db add up across tasks.
        let x = rand(&[300, 130], 6);
        let w = rand(&[130], 7);
        let b = rand(&[130], 8);
        same(
            &[x.as_tensor(), w.as_tensor(), b.as_tensor()],
            || layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-12).unwrap(),
            || {
                crate::nn::layer_norm_ops(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-12)
                    .unwrap()
            },
            1e-4,
        );
    }

    #[test]
    fn fast_exp_and_erf_are_accurate() {
        let mut worst = (0f32, 0f32);
        for i in 0..20001 {
            let x = -80.0 + 160.0 * i as f32 / 20000.0;
            let want = (x as f64).exp();
            let rel = ((fast_exp(x) as f64 - want) / want).abs() as f32;
            worst.0 = worst.0.max(rel);
            let y = -5.0 + 10.0 * i as f32 / 20000.0;
            let e = (fast_erf(y) as f64 - candle_core::cpu::erf::erf_f64(y as f64)).abs() as f32;
            worst.1 = worst.1.max(e);
        }
        assert!(worst.0 < 5e-7, "exp relative error {}", worst.0);
        assert!(worst.1 < 6e-7, "erf absolute error {}", worst.1); // 1.5e-7 + f32 rounding
        assert_eq!(fast_exp(-1e30), fast_exp(-87.0));
        assert!(fast_exp(1e30).is_finite());
    }

    #[test]
    fn frozen_linear_matches_candle_and_gives_no_weight_gradient() {
        let x = rand(&[2, 5, 7], 10);
        let w = rand(&[3, 7], 11);
        let b = rand(&[3], 12);
        same(
            &[x.as_tensor()],
            || frozen_linear(x.as_tensor(), w.as_tensor(), b.as_tensor()).unwrap(),
            || {
                x.as_tensor()
                    .broadcast_matmul(&w.as_tensor().t().unwrap())
                    .unwrap()
                    .broadcast_add(b.as_tensor())
                    .unwrap()
            },
            1e-5,
        );
        let g = frozen_linear(x.as_tensor(), w.as_tensor(), b.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(g.get(w.as_tensor()).is_none() && g.get(b.as_tensor()).is_none());
    }

    #[test]
    fn fused_attention_matches_split_heads_with_gradients() {
        for (b, s, heads, dh) in [(2, 5, 3, 4), (3, 16, 2, 8)] {
            let qkv = rand(&[b, s, 3 * heads * dh], 20 + s as u64);
            same(
                &[qkv.as_tensor()],
                || attention_qkv(qkv.as_tensor(), heads, None).unwrap(),
                || {
                    // The unfused path: heads split, primitive softmax.
                    let d = heads * dh;
                    let t = qkv.as_tensor();
                    let split = |i: usize| {
                        t.narrow(2, i * d, d)
                            .unwrap()
                            .reshape((b, s, heads, dh))
                            .unwrap()
                            .transpose(1, 2)
                            .unwrap()
                            .contiguous()
                            .unwrap()
                    };
                    let (q, k, v) = (split(0), split(1), split(2));
                    let sc = (q.matmul(&k.t().unwrap()).unwrap() / (dh as f64).sqrt()).unwrap();
                    candle_nn::ops::softmax(&sc, candle_core::D::Minus1)
                        .unwrap()
                        .matmul(&v)
                        .unwrap()
                        .transpose(1, 2)
                        .unwrap()
                        .reshape((b, s, d))
                        .unwrap()
                },
                1e-5,
            );
        }
    }

    #[test]
    fn dense_matches_candle_matmul_with_gradients() {
        let x = rand(&[3, 7, 6], 30);
        let w = rand(&[6, 5], 31);
        same(
            &[x.as_tensor(), w.as_tensor()],
            || dense(x.as_tensor(), w.as_tensor()).unwrap(),
            || x.as_tensor().broadcast_matmul(w.as_tensor()).unwrap(),
            1e-5,
        );
    }

    #[test]
    fn gated_gelu_matches_gelu_times_gate_with_gradients() {
        let x = rand(&[3, 4, 10], 40);
        same(
            &[x.as_tensor()],
            || gated_gelu(x.as_tensor()).unwrap(),
            || {
                let t = x.as_tensor();
                (t.narrow(2, 0, 5).unwrap().gelu().unwrap() * t.narrow(2, 5, 5).unwrap()).unwrap()
            },
            1e-5,
        );
    }

    #[test]
    fn non_contiguous_inputs_are_accepted() {
        let x = rand(&[6, 8], 9);
        let t = x.as_tensor().t().unwrap();
        let a = softmax_last(&t).unwrap();
        let b = candle_nn::ops::softmax(&t.contiguous().unwrap(), candle_core::D::Minus1).unwrap();
        assert!(max_diff(&a, &b) < 1e-6);
    }
}
