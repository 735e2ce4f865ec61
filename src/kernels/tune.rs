//! Process tuning for the CPU: the allocator and the worker threads.

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

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    fn buffer(t: &Tensor) -> *const f32 {
        let (s, l) = t.storage_and_layout();
        match &*s {
            candle_core::Storage::Cpu(c) => {
                c.as_slice::<f32>().unwrap()[l.start_offset()..].as_ptr()
            }
            _ => unreachable!("CPU tensors"),
        }
    }

    /// The vendored candle-core (vendor/README.md) is the one built: its backward pass stores a
    /// tensor's first gradient as it is, so both sides of a sum receive the sum's gradient
    /// itself (one buffer), where candle's own adds each to a fresh tensor of zeros (two
    /// buffers). The values are the same either way; this fails if the `[patch]` is lost.
    #[test]
    fn first_gradients_are_stored_without_a_copy() {
        let d = Device::Cpu;
        let a = Var::from_tensor(&Tensor::arange(0f32, 6., &d).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::arange(1f32, 7., &d).unwrap()).unwrap();
        let y = (a.as_tensor() + b.as_tensor()).unwrap();
        let g = (&y * &y).unwrap().sum_all().unwrap().backward().unwrap();
        let (ga, gb) = (g.get(&a).unwrap(), g.get(&b).unwrap());
        let want: Vec<f32> = (0..6).map(|i| 2.0 * (2 * i + 1) as f32).collect();
        assert_eq!(ga.to_vec1::<f32>().unwrap(), want);
        assert_eq!(gb.to_vec1::<f32>().unwrap(), want);
        assert_eq!(
            buffer(ga),
            buffer(gb),
            "the patched backward pass is not in use"
        );
    }
}
