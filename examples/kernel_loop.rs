//! Call one of the bench's kernels (`lqae-eval bench` names: `vit-block`, `train-step`,
//! `lm-forward`, ...) many times, with nothing else in the process: for a profiler, or for A/B
//! timings of two builds run alternately (the bench's figures, with the PyTorch peer in the
//! same rounds, come from `lqae-eval bench --peer`):
//!
//! ```sh
//! cargo build --release --example kernel_loop
//! perf record ./target/release/examples/kernel_loop vit-block 200   # kernel, calls
//! LQAE_BLAS_PROFILE=1 ./target/release/examples/kernel_loop vit-block 20  # products by shape
//! ```
//!
//! Prints the median and the fastest call in ms (on a shared machine the fastest is the
//! steadier figure to compare builds by). The calls run on the kernels' thread pool, as
//! `lqae-eval` runs its commands (`kernels::on_pool`); `LQAE_OFF_POOL=1` runs them on the main
//! thread instead.

use candle_core::Device;
use lqae::error::{Error, Result};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: kernel_loop KERNEL [calls]";
    let name = args.get(1).ok_or_else(|| Error::Msg(usage.into()))?.clone();
    let calls: usize = match args.get(2) {
        Some(s) => s
            .parse()
            .map_err(|_| Error::Msg(format!("{s:?} is not a number; {usage}")))?,
        None => 50,
    };
    lqae::kernels::tune_threads();
    let mut ks = lqae::bench::selected(&Device::Cpu, false, std::slice::from_ref(&name))?;
    if ks.len() != 1 {
        let names: Vec<_> = ks.iter().map(|k| k.name.clone()).collect();
        return Err(Error::Msg(format!(
            "{name:?} names {} kernels ({names:?}); name exactly one",
            ks.len()
        )));
    }
    let k = &mut ks[0];
    // Where the CLI runs its commands: on the kernels' pool (`kernels::on_pool`);
    // `LQAE_OFF_POOL=1` keeps the calls on the main thread, for A/B runs.
    let times = if std::env::var_os("LQAE_OFF_POOL").is_some() {
        k.time_for(0.0, calls.max(1), calls.max(1))?
    } else {
        lqae::kernels::on_pool(|| k.time_for(0.0, calls.max(1), calls.max(1)))?
    };
    if let Some(r) = lqae::kernels::blas::profile_report() {
        println!("{r}");
    }
    let min = times.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "{} calls {} median {:.3} ms min {:.3} ms",
        k.name,
        times.len(),
        1e3 * lqae::bench::median(&times),
        1e3 * min
    );
    Ok(())
}
