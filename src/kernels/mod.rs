//! Fused CPU kernels with their own backward pass, for the layers that dominate a training
//! step on the CPU: LayerNorm, softmax over the last axis, GELU (tanh and erf forms) and the
//! ViT's 3x3 depthwise convolution.
//!
//! Written from candle's primitive ops these layers are correct and differentiable (the
//! `*_ops` reference forms) but slow on the CPU: each primitive is a separate pass over memory, many run
//! on one thread, and their backward passes multiply the passes again (the depthwise
//! convolution of one `lqae-small` block took about 120 ms forward + backward, GELU 37 ms). Here
//! each layer is one `CustomOp` whose forward and backward are single fused passes split
//! across threads by rows; the backward kernels are custom ops themselves (no second-order
//! gradients are needed).
//!
//! The frozen feature networks (FID Inception-v3, LPIPS) have forward-only kernels here too:
//! convolution with bias and ReLU as products on the BLAS path (`conv.rs`) and pooling
//! (`pool.rs`).
//!
//! Every function falls back to the primitive-op form on other devices, so CUDA keeps working.
//! One file per op, each with its primitive-op reference form where it has one; the tests
//! (`tests.rs`) check values and gradients against those forms.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;

#[macro_use]
mod simd;
mod adamw;
mod add_items;
mod attention;
pub mod blas;
mod conv;
mod cross_entropy;
mod dense;
mod depthwise;
mod distance;
mod frozen;
mod geglu;
mod gelu;
mod layer_norm;
mod pool;
mod small_mm;
mod softmax;
mod tune;
mod winograd;
pub use adamw::*;
pub use add_items::*;
pub use attention::*;
pub use conv::*;
pub use cross_entropy::*;
pub use dense::*;
pub use depthwise::*;
pub use distance::*;
pub use frozen::*;
pub use geglu::*;
pub use gelu::*;
pub use layer_norm::*;
pub use pool::*;
pub use simd::*;
pub use softmax::*;
pub use tune::*;
pub use winograd::winograd_enabled;

/// `len` floats made by `fill(i, chunk_i)` on consecutive chunks of `chunk` floats across the
/// threads, each chunk zeroed just before by the thread that fills it: in parallel and in that
/// thread's cache, where `vec![0.0; len]` zeroes the whole on the calling thread alone (for
/// the feature networks' padded copies, 1-3% of AlexNet's time).
pub(crate) fn par_filled(
    len: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [f32]) + Sync + Send,
) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, c)| fill(i, zeroed(c)));
    // SAFETY: the chunks cover 0..len, and each was initialised.
    unsafe { v.set_len(len) };
    v
}

/// `len` floats made by `fill(i, chunk_i)` on consecutive chunks of `chunk` floats across the
/// threads, where `fill` writes every element of its chunk (nothing is zeroed first: for the
/// element-wise kernels, zeroing their outputs had been 3-4% of a ViT block's samples).
///
/// # Safety
/// `fill` writes every element of the chunk it is given.
pub(crate) unsafe fn par_written(
    len: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync + Send,
) -> Vec<f32> {
    // SAFETY: passed on to the caller.
    unsafe {
        par_written_summed(len, chunk, 0, |i, c| {
            fill(i, c);
            Vec::new()
        })
    }
}

/// `[y | t]`: `y` (`len` floats) made as [`par_written`] makes it, where each chunk's `fill`
/// also returns `tail` partial sums (a weight's gradient over that chunk's rows), and `t` (`tail`
/// floats) their total, added from zero in chunk order: the backward passes' packed outputs,
/// whose `vec![0.0; len + tail]` had been zeroed whole by the calling thread while the workers
/// waited.
///
/// # Safety
/// `fill` writes every element of the chunk it is given.
pub(crate) unsafe fn par_written_summed(
    len: usize,
    chunk: usize,
    tail: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<f32>]) -> Vec<f32> + Sync + Send,
) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(len + tail);
    let partials: Vec<Vec<f32>> = v.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .map(|(i, c)| fill(i, c))
        .collect();
    // SAFETY: the chunks cover 0..len, and `fill` writes every element of each.
    unsafe { v.set_len(len) };
    v.resize(len + tail, 0.0);
    let t = &mut v[len..];
    for p in partials {
        for (t, x) in t.iter_mut().zip(p) {
            *t += x;
        }
    }
    v
}

/// The parts of a backward pass's packed output `[dx | t1 | t2 ...]` (`dx` then each tail, in
/// the shapes given): `dx` a view, the tails (weight gradients) copies of their own elements
/// only, since a view would keep the whole buffer, `dx`'s activation-sized part included,
/// alive for as long as the stored gradient. (`Tensor::copy` would not do: it clones the whole
/// storage under the view's layout, `dx` and all.)
pub(crate) fn unpack(packed: &Tensor, shapes: &[&Shape]) -> Result<Vec<Tensor>> {
    let mut at = 0;
    let mut parts = Vec::with_capacity(shapes.len());
    for (i, s) in shapes.iter().enumerate() {
        let part = packed.narrow(0, at, s.elem_count())?;
        let part = if i == 0 {
            part
        } else {
            part.force_contiguous()?
        };
        parts.push(part.reshape(*s)?);
        at += s.elem_count();
    }
    Ok(parts)
}

/// `c` zeroed, as floats.
pub(crate) fn zeroed(c: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    c.fill(MaybeUninit::new(0.0));
    // SAFETY: every element of `c` was initialised just above.
    unsafe { &mut *(c as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// The kernels' thread count: candle's (`RAYON_NUM_THREADS`, else the physical cores), read
/// once. candle works it out again on every call, reading and parsing `/proc/cpuinfo`: asked
/// once per product, that was about 5% of the calling thread's time in a ViT block's forward
/// and backward (perf, 2-core AMD EPYC), while the workers waited.
pub fn threads() -> usize {
    static T: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *T.get_or_init(|| candle_core::utils::get_num_threads().max(1))
}

/// Rows per parallel task: enough work per task to amortise the scheduling.
pub(crate) fn rows_per_task(cols: usize) -> usize {
    (16384 / cols.max(1)).max(1)
}

pub(crate) fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what}: the input must be contiguous"),
    }
}

/// `f` on the f32 elements of a contiguous CPU tensor, borrowed rather than copied.
pub(crate) fn with_cpu_slice<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let (st, layout) = t.storage_and_layout();
    match &*st {
        candle_core::Storage::Cpu(c) => Ok(f(slice(c, layout, "a CPU tensor")?)),
        _ => candle_core::bail!("with_cpu_slice: the tensor is not on the CPU"),
    }
}

pub(crate) fn storage(v: Vec<f32>) -> CpuStorage {
    CpuStorage::F32(v)
}

pub(crate) static ENABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Turn the fused kernels off (every layer then runs as primitive candle ops, as on other
/// devices) or back on, process-wide: for checking one against the other.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, std::sync::atomic::Ordering::SeqCst);
}

/// `LQAE_FUSED_KERNELS=off` runs every layer as primitive candle ops for the whole process
/// (the form before these kernels: for before/after timings and for bisecting numerics).
fn off_by_env() -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OFF.get_or_init(|| {
        std::env::var("LQAE_FUSED_KERNELS").is_ok_and(|v| v.eq_ignore_ascii_case("off"))
    })
}

/// Whether the fused kernels are on (not turned off by `LQAE_FUSED_KERNELS=off` or
/// [`set_enabled`]): recorded with every result and bench record.
pub fn fused_enabled() -> bool {
    !off_by_env() && ENABLED.load(std::sync::atomic::Ordering::SeqCst)
}

/// Where a result or bench record was computed: the machine
/// ([`crate::util::provenance::machine`]), whether the fused kernels were on and whether the
/// Winograd path of the convolutions was on.
pub fn machine() -> serde_json::Value {
    let mut m = crate::util::provenance::machine();
    m["fused_kernels"] = fused_enabled().into();
    m["winograd"] = winograd_enabled().into();
    m
}

/// True when the fused kernels apply: enabled, and a CPU f32 tensor.
pub(crate) fn fused(x: &Tensor) -> bool {
    !off_by_env()
        && ENABLED.load(std::sync::atomic::Ordering::SeqCst)
        && x.device().is_cpu()
        && x.dtype() == candle_core::DType::F32
}

/// What a forward op keeps for its backward pass (the attention's probabilities, LayerNorm's
/// row statistics): nothing, or a slot the forward pass fills and the first backward pass
/// takes; a second backward pass over the same graph finds it empty and recomputes.
pub(crate) struct Kept(Option<std::sync::Mutex<Vec<f32>>>);

impl Kept {
    pub(crate) fn new(keep: bool) -> Self {
        Self(keep.then(|| std::sync::Mutex::new(Vec::new())))
    }
    /// Whether the forward pass keeps anything.
    pub(crate) fn on(&self) -> bool {
        self.0.is_some()
    }
    /// The forward pass's values into the slot (nothing when off).
    pub(crate) fn put(&self, v: Vec<f32>) {
        if let Some(slot) = &self.0 {
            *slot.lock().expect("an op's kept values") = v;
        }
    }
    /// The kept values, leaving the slot empty; empty when none were kept (or already taken).
    pub(crate) fn take(&self) -> Vec<f32> {
        self.0.as_ref().map_or_else(Vec::new, |slot| {
            std::mem::take(&mut *slot.lock().expect("an op's kept values"))
        })
    }
}

/// A raw pointer that may cross to the worker threads: each task writes a disjoint block.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer. A method, so that closures capture the whole (Send) wrapper.
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

#[cfg(test)]
pub(crate) mod tests;

thread_local! {
    /// Each thread's working buffers (Winograd's `V`, `M` and output tiles of a block, the
    /// convolution's patches and grouped products), kept between calls: every element is
    /// written before it is read, so they are not cleared.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `f` on `len` floats of this thread's scratch (a fresh buffer when a caller up the stack
/// holds it: rayon may run another call on a thread that waits for its own tasks). The floats
/// hold whatever the last user left: `f` must write each before it reads it.
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut v) => {
            if v.len() < len {
                v.resize(len, 0.0);
            }
            f(&mut v[..len])
        }
        Err(_) => f(&mut vec![0f32; len]),
    })
}
