//! Image metrics per image pair at 32x32 and 256x256 RGB: MSE + PSNR, SSIM (f64, scikit-image
//! conventions) and LPIPS (AlexNet, VGG16; candle on the CPU, batched).
//!
//! `cargo bench --bench metrics` (add `-- --quick` for a fast pass). After the criterion run a
//! table gives the time per 1000 image pairs, from criterion's `estimates.json` medians.
//! The LPIPS weights are the `lpips` asset (fetched once); `fid_features` (FID Inception-v3
//! features of one image, `inception-fid` asset) is per image.

use candle_core::{Device, Tensor};
use criterion::{BenchmarkId, Criterion, Throughput};
use lqae::lpips::{Lpips, LpipsNet};
use lqae::metrics::{compare, mse, psnr_from_mse, Planes};
use std::path::PathBuf;
use std::time::Duration;

const SIZES: &[usize] = &[32, 256];
/// `fid_features` is per image, not per pair: FID Inception-v3 features of one image.
const METRICS: [&str; 5] = [
    "mse_psnr",
    "ssim",
    "lpips_alex",
    "lpips_vgg16",
    "fid_features",
];

/// Pairs per iteration: enough to amortise, few enough for 2 cores.
fn batch(metric: &str, size: usize) -> usize {
    match (metric, size) {
        ("mse_psnr", 32) => 1000,
        ("mse_psnr", _) => 50,
        ("ssim", 32) => 100,
        ("ssim", _) => 4,
        ("lpips_alex", 32) => 100,
        ("lpips_alex", _) => 8,
        ("lpips_vgg16", 32) => 32,
        ("fid_features", _) => 4,
        _ => 2,
    }
}

fn random_planes(n: usize, s: usize, seed: u64) -> Vec<Planes> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let v: Vec<f64> = (0..3 * s * s).map(|_| rng.random::<f64>()).collect();
            Planes::new(s, s, 3, v, "bench").unwrap()
        })
        .collect()
}

fn to_tensor(p: &[Planes]) -> Tensor {
    let s = p[0].h;
    let v: Vec<f32> = p
        .iter()
        .flat_map(|x| x.data.iter().map(|&v| v as f32))
        .collect();
    Tensor::from_vec(v, (p.len(), 3, s, s), &Device::Cpu).unwrap()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("metrics");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let alex = Lpips::load(LpipsNet::Alex, &Device::Cpu).unwrap();
    let vgg = Lpips::load(LpipsNet::Vgg16, &Device::Cpu).unwrap();
    let fid = lqae::fid::FeatureNet::load(&Device::Cpu, false).unwrap();
    for &s in SIZES {
        let n_max = batch("mse_psnr", s);
        let a = random_planes(n_max, s, 1);
        let b = random_planes(n_max, s, 2);
        for metric in METRICS {
            let n = batch(metric, s);
            g.throughput(Throughput::Elements(n as u64));
            let id = BenchmarkId::new(metric, s);
            match metric {
                "mse_psnr" => g.bench_function(id, |bch| {
                    bch.iter(|| {
                        a[..n]
                            .iter()
                            .zip(&b[..n])
                            .map(|(x, y)| psnr_from_mse(mse(x, y)).unwrap_or(100.0))
                            .sum::<f64>()
                    })
                }),
                "ssim" => g.bench_function(id, |bch| {
                    bch.iter(|| {
                        a[..n]
                            .iter()
                            .zip(&b[..n])
                            .map(|(x, y)| compare(x, y).unwrap().ssim)
                            .sum::<f64>()
                    })
                }),
                "fid_features" => {
                    // One side of an rFID: uint8 RGB in, resized to 299x299, 2048-d features out.
                    let imgs: Vec<lqae::fid::Rgb8> = a[..n]
                        .iter()
                        .map(|p| lqae::fid::Rgb8::from_planes(p).unwrap())
                        .collect();
                    g.bench_function(id, |bch| {
                        bch.iter(|| fid.of(&imgs, &mut |_, _| {}).unwrap())
                    })
                }
                _ => {
                    let lp = if metric == "lpips_alex" { &alex } else { &vgg };
                    let (ta, tb) = (to_tensor(&a[..n]), to_tensor(&b[..n]));
                    g.bench_function(id, |bch| bch.iter(|| lp.distances(&ta, &tb, n).unwrap()))
                }
            };
        }
    }
    g.finish();
}

fn criterion_home() -> PathBuf {
    if let Some(h) = std::env::var_os("CRITERION_HOME") {
        return h.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| "target".into());
    target.join("criterion")
}

/// Median seconds of one iteration, from criterion's estimates.json.
fn median_s(metric: &str, size: usize) -> Option<f64> {
    let p = criterion_home()
        .join("metrics")
        .join(metric)
        .join(size.to_string())
        .join("new")
        .join("estimates.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()?;
    Some(v["median"]["point_estimate"].as_f64()? * 1e-9)
}

fn summary() {
    println!(
        "\nimage metrics, seconds per 1000 RGB image pairs (median of criterion samples, {} threads)",
        candle_core::utils::get_num_threads()
    );
    println!("| metric | 32x32 | 256x256 |\n|---|---|---|");
    for metric in METRICS {
        let cell = |s: usize| {
            median_s(metric, s)
                .map(|t| format!("{:.3}", t / batch(metric, s) as f64 * 1000.0))
                .unwrap_or_else(|| "-".into())
        };
        println!("| {metric} | {} | {} |", cell(32), cell(256));
    }
}

fn main() {
    lqae::kernels::tune_threads();
    // On the kernels' thread pool, as `lqae-eval` runs its commands (`kernels::on_pool`).
    lqae::kernels::on_pool(run)
}

fn run() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
    // `cargo test --benches` runs each bench once without `--bench` and writes no estimates.
    if std::env::args().any(|a| a == "--bench") {
        summary();
    }
}
