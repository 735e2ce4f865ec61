//! Every kernel of `lqae::bench` under criterion: the nearest-code search at MiniLM and
//! RoBERTa-base codebook shapes, the frozen LM forward, one ViT block forward + backward, a
//! full `lqae-small` training step, linear-probe feature extraction, SSIM and LPIPS per image,
//! and a 2048^3 sgemm (the machine's matrix-multiply rate). Throughput is in the kernel's
//! items (tokens, images); after the run a table gives GFLOP/s and the share of the sgemm rate
//! for the matmul-bound kernels, from criterion's medians.
//!
//! `cargo bench --bench kernels` (about 4 minutes here); `-- --quick` for a fast pass (about
//! 2 minutes); a filter after `--` picks kernels (`-- train-step`). On CUDA builds
//! `LQAE_BENCH_DEVICE=cuda` runs them on the GPU, each call ending with a device sync. The
//! MiniLM and LPIPS assets are fetched once.

use criterion::{Criterion, Throughput};
use std::path::PathBuf;
use std::time::Duration;

fn device() -> candle_core::Device {
    let spec = std::env::var("LQAE_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into());
    lqae::device::parse_device(&spec).expect("LQAE_BENCH_DEVICE")
}

fn median_s(group: &str, id: &str) -> Option<f64> {
    let home = std::env::var_os("CRITERION_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| "target".into())
                .join("criterion")
        });
    // criterion writes '/' in an id as '_' in folder names.
    let p = home
        .join(group)
        .join(id.replace('/', "_"))
        .join("new/estimates.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()?;
    Some(v["median"]["point_estimate"].as_f64()? * 1e-9)
}

fn main() {
    lqae::kernels::tune_threads();
    // On the kernels' thread pool, as `lqae-eval` runs its commands (`kernels::on_pool`).
    lqae::kernels::on_pool(run)
}

fn run() {
    let mut c = Criterion::default().configure_from_args();
    let dev = device();
    let mut kernels = lqae::bench::all(&dev, false).expect("building the kernels");
    let mut g = c.benchmark_group("kernels");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for k in kernels.iter_mut() {
        g.throughput(Throughput::Elements(k.items as u64));
        let name = k.name.clone();
        g.bench_function(&name, |b| b.iter(|| k.call().expect("kernel call")));
    }
    g.finish();
    c.final_summary();
    // `cargo test --benches` runs each once without `--bench` and writes no estimates.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let sgemm = kernels
        .iter()
        .find(|k| k.name.starts_with("sgemm/"))
        .and_then(|k| Some(k.flop? / median_s("kernels", &k.name)? / 1e9));
    println!(
        "\nkernels on {} ({} threads), medians of criterion samples",
        lqae::device::device_name(&dev),
        candle_core::utils::get_num_threads()
    );
    println!("| kernel | median ms | items/s | GFLOP/s | share of sgemm |\n|---|---|---|---|---|");
    for k in &kernels {
        let Some(t) = median_s("kernels", &k.name) else {
            continue;
        };
        let gf = k.flop.map(|f| f / t / 1e9);
        println!(
            "| {} | {:.2} | {:.0} {} | {} | {} |",
            k.name,
            t * 1e3,
            k.items / t,
            k.unit,
            gf.map(|g| format!("{g:.1}")).unwrap_or_else(|| "-".into()),
            gf.zip(sgemm)
                .map(|(g, s)| format!("{:.0}%", 100.0 * g / s))
                .unwrap_or_else(|| "-".into()),
        );
    }
}
