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
///
/// Also builds rayon's global pool (rayon's own thread count) with [`POOL_STACK`] bytes of
/// stack per thread, so that [`on_pool`] can run a whole command on one of its threads
/// (candle's backward pass walks the graph recursively; a command's main thread has 8 MiB),
/// and with [`idle_spin`] of looking for work before an idle thread sleeps.
pub fn tune_threads() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
            std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", CANDLE_SPIN_LIMIT);
        }
        // An error here means the global pool exists already (built by someone else, with
        // its own stack size); `on_pool` then leaves the work where it is.
        let built = rayon::ThreadPoolBuilder::new()
            .stack_size(POOL_STACK)
            .idle_spin(idle_spin())
            .build_global()
            .is_ok();
        POOL_TUNED.store(built, std::sync::atomic::Ordering::Relaxed);
    });
}

/// How long one of rayon's threads that ran out of work keeps looking for more before it
/// sleeps, once [`tune_threads`] has built the pool: [`IDLE_SPIN_US`] microseconds, or
/// `LQAE_IDLE_SPIN_US` (0: rayon's own few tens of microseconds).
///
/// Why: a parallel op whose tasks find the other thread asleep wakes it through the kernel
/// (a futex wake-up, a context switch, tens of microseconds before it runs), and the ViT
/// block's forward and backward pass has dozens of parallel ops with gaps between them
/// (candle's own element-wise ops, the graph's bookkeeping) longer than rayon's own search.
/// The patched rayon-core (vendor/README.md) keeps the thread looking, yielding its core
/// between looks so that a runnable thread of another pool (candle's) still gets it, as
/// OpenMP runtimes (PyTorch's threads among them) do before their threads block. On the
/// 2-core Xeon (`kernel_loop vit-block 300`, alternating pairs against
/// `LQAE_IDLE_SPIN_US=0`): 500 us 0.935x; in a first experiment 300 us and 1 ms gave the same,
/// 3 ms no more. Only scheduling changes: the same bits.
pub fn idle_spin() -> std::time::Duration {
    let us = match std::env::var("LQAE_IDLE_SPIN_US") {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            panic!("LQAE_IDLE_SPIN_US=`{v}`: give whole microseconds (0 for rayon's own search)")
        }),
        Err(_) => IDLE_SPIN_US,
    };
    std::time::Duration::from_micros(us)
}

/// The default of [`idle_spin`], in microseconds.
pub const IDLE_SPIN_US: u64 = 500;

/// The stack of each of rayon's threads once [`tune_threads`] has built its pool: 64 MiB of
/// address space, of which only the pages a thread touches are ever backed.
pub const POOL_STACK: usize = 64 << 20;

static POOL_TUNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Run `f` on one of rayon's threads (the pool the kernels split their work on) and wait for
/// it; directly where this thread is one already, or where [`tune_threads`] did not build the
/// pool (its threads' stacks are then rayon's default 2 MiB, too small for a deep backward
/// pass).
///
/// Why: a kernel called from a thread outside the pool hands its tasks to the pool's threads
/// and sleeps until they are done, so each parallel op costs two futex wake-ups and two
/// context switches more than one called from inside, where the calling thread takes a task
/// itself. On the 2-core Xeon (`kernel_loop`, alternating pairs, the whole call on the pool
/// against on the main thread): the ViT block 0.947x, the LM forward 0.971x, VGG16 at 64 px
/// 0.961x; the training step 0.96x, Inception 0.97x, AlexNet at 64 px 0.93x. Only the threads change: every kernel
/// splits its work by sizes and the thread count, never by which thread runs it, so the
/// results are the same bits (`tests/shipped.rs` runs the recipes on the pool).
pub fn on_pool<R>(f: impl FnOnce() -> R) -> R {
    if rayon::current_thread_index().is_some()
        || !POOL_TUNED.load(std::sync::atomic::Ordering::Relaxed)
    {
        return f();
    }
    /// `f` and its result cross to a pool thread and back while this thread waits for them.
    struct Carried<T>(T);
    // SAFETY: `rayon::scope` returns only after the closure has run to its end on the pool
    // thread (or unwound, the panic then resumed here), and this thread does nothing in the
    // meantime: whatever `f` holds or returns (an `Rc`, a tensor) is used by one thread at a
    // time, the way a value moved to a scoped thread and back is. Nothing that `f` reaches
    // keeps a reference to a thread-local of the thread it ran on.
    unsafe impl<T> Send for Carried<T> {}
    let job = Carried(f);
    let out = rayon::scope(move |_| {
        let job = job;
        Carried((job.0)())
    });
    out.0
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor, Var};

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

    /// The vendored candle-core fills a tensor made contiguous from one value broadcast to
    /// every element (the gradient of a sum or a mean), where candle walked every element's
    /// index: the value at the view's start, at any rank, and other views as before.
    #[test]
    fn broadcast_values_are_filled_from_the_views_start() {
        let d = Device::Cpu;
        let t = Tensor::arange(0f32, 10., &d).unwrap();
        let one = t.narrow(0, 7, 1).unwrap();
        for shape in [vec![5], vec![3, 4], vec![2, 3, 4]] {
            let b = one
                .reshape(vec![1; shape.len()])
                .unwrap()
                .broadcast_as(shape.clone())
                .unwrap();
            assert!(b.stride().iter().all(|&s| s == 0) && !b.is_contiguous());
            let c = b.contiguous().unwrap().flatten_all().unwrap();
            assert_eq!(
                c.to_vec1::<f32>().unwrap(),
                vec![7.0; shape.iter().product()]
            );
        }
        // A broadcast along one axis only is not a fill.
        let rows = t.narrow(0, 2, 3).unwrap().reshape((1, 3)).unwrap();
        let c = rows.broadcast_as((2, 3)).unwrap().contiguous().unwrap();
        assert_eq!(
            c.to_vec2::<f32>().unwrap(),
            vec![vec![2.0, 3.0, 4.0], vec![2.0, 3.0, 4.0]]
        );
        // The gradient of a mean.
        let v = Var::from_tensor(&Tensor::ones((4, 8), DType::F32, &d).unwrap()).unwrap();
        let g = v.as_tensor().mean_all().unwrap().backward().unwrap();
        let gv = g
            .get(&v)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(gv, vec![1.0 / 32.0; 32]);
    }
}
