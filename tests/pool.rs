//! `kernels::on_pool`, where the CLI runs its commands: the work runs on one of rayon's
//! threads (with the larger stack `tune_threads` gives them), values that are not `Send` go
//! there and back, panics come back to the caller, a call from the pool stays where it is, and
//! the kernels give the same bits on the pool as off it.

mod common;

use candle_core::{Device, Var};
use std::rc::Rc;

/// One `lqae-small` ViT block, forward and backward (the bench's `vit-block`, 1,024 tokens:
/// every kernel splits its rows across the threads): the output and the input's gradient.
fn block_bits() -> (Vec<u32>, Vec<u32>) {
    let cfg = lqae::bench::lqae_small().unwrap();
    let shape = cfg.model.vit_shape(1);
    let p = lqae::model::params::Params::new(7, &Device::Cpu);
    let tr = lqae::model::vit::Transformer::new(&p, &shape).unwrap();
    let t = shape.grid * shape.grid;
    let x = lqae::rng::uniform_tensor(&[16, t, shape.width], 8, &Device::Cpu).unwrap();
    let x = Var::from_tensor(&x).unwrap();
    let (y, _) = tr.forward(x.as_tensor()).unwrap();
    let g = y.sqr().unwrap().mean_all().unwrap().backward().unwrap();
    let bits = |t: &candle_core::Tensor| common::bits(&t.flatten_all().unwrap().to_vec1().unwrap());
    (bits(&y), bits(g.get(x.as_tensor()).unwrap()))
}

/// Uses about `depth` KiB of stack.
fn deep(depth: usize) -> u64 {
    let pad = std::hint::black_box([depth as u8; 1000]);
    if depth == 0 {
        return pad[0] as u64;
    }
    deep(depth - 1) + pad[999] as u64
}

#[test]
fn on_pool_runs_the_work_on_the_pool_with_the_same_bits() {
    lqae::kernels::tune_threads();
    assert!(
        rayon::current_thread_index().is_none(),
        "a test's own thread"
    );

    // Not Send, in and out; the work runs on a pool thread; nested calls stay there.
    let shared = Rc::new(41);
    let (index, nested, back) = lqae::kernels::on_pool(|| {
        let here = rayon::current_thread_index();
        let nested = lqae::kernels::on_pool(rayon::current_thread_index);
        (here, nested, Rc::new(*shared + 1))
    });
    assert!(index.is_some(), "on_pool ran the work off the pool");
    assert_eq!(nested, index, "a call from the pool moved");
    assert_eq!(*back, 42);

    // 20 MiB of stack: past a main thread's 8 MiB and rayon's default 2 MiB.
    let n = 20 * 1024;
    let want: u64 = (1..=n).map(|d| d as u8 as u64).sum();
    assert_eq!(lqae::kernels::on_pool(|| deep(n)), want);

    // A panic comes back to the caller.
    let caught = std::panic::catch_unwind(|| lqae::kernels::on_pool(|| panic!("inside")));
    let msg = caught.expect_err("the panic was lost");
    assert_eq!(msg.downcast_ref::<&str>(), Some(&"inside"));

    // The same bits either way.
    let off = block_bits();
    let on = lqae::kernels::on_pool(block_bits);
    assert!(off.0 == on.0, "the block's output differs on the pool");
    assert!(
        off.1 == on.1,
        "the block's input gradient differs on the pool"
    );
}

/// This thread's voluntary context switches so far (each time it blocked: slept on a lock,
/// a condition variable or a timer).
#[cfg(target_os = "linux")]
fn voluntary_switches() -> u64 {
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .expect("voluntary_ctxt_switches in /proc/thread-self/status")
        .trim()
        .parse()
        .unwrap()
}

/// The patched rayon-core (vendor/README.md) is the one built, and its idle workers keep
/// looking for work for the pool's `idle_spin` before they sleep: two pools of two threads
/// run the same 100 small joins, 5 ms apart (the caller sleeping between them). With
/// rayon's own search (a few tens of microseconds) the workers block between the joins, about
/// once per join each; with a spin longer than the whole run they never do. Counted by the
/// kernel (`voluntary_ctxt_switches`), not timed.
#[cfg(target_os = "linux")]
#[test]
fn idle_workers_keep_looking_for_the_spin_before_they_sleep() {
    let rounds = 100u64;
    let blocked = |spin: std::time::Duration| -> u64 {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .idle_spin(spin)
            .build()
            .unwrap();
        let count = || pool.broadcast(|_| voluntary_switches()).iter().sum::<u64>();
        // Both workers start and run once before counting.
        pool.install(|| rayon::join(|| deep(4), || deep(4)));
        let before = count();
        for _ in 0..rounds {
            let (a, b) = pool.install(|| rayon::join(|| deep(4), || deep(4)));
            assert_eq!(a, b);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // The broadcast that counts wakes each worker once more.
        count() - before
    };
    let upstream = blocked(std::time::Duration::ZERO);
    let spinning = blocked(std::time::Duration::from_secs(30));
    assert!(
        upstream >= rounds,
        "rayon's own idle workers blocked {upstream} times in {rounds} joins 5 ms apart"
    );
    assert!(
        spinning <= 10,
        "workers with a 30 s spin blocked {spinning} times in {rounds} joins (rayon's own: {upstream})"
    );
}
