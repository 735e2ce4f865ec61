//! Nearest-code search over a frozen LM codebook at MiniLM (30522 x 384) and RoBERTa-base
//! (50265 x 768) shapes, next to the plain candle matmul of the same shape and a square sgemm:
//! the search costs 2*N*V*D FLOPs, so the matmul rate is its ceiling.
//!
//! `cargo bench --bench quantizer` (add `-- --quick` for a fast pass). After the criterion
//! run a table gives tokens/s, GFLOP/s and the share of the matmul rate, read from criterion's
//! `estimates.json` medians.

use candle_core::{Device, Tensor};
use criterion::{BenchmarkId, Criterion, Throughput};
use lqae::quantizer::{Quantizer, QuantizerConfig};
use std::path::PathBuf;
use std::time::Duration;

const SHAPES: &[(&str, usize, usize)] = &[("minilm", 30522, 384), ("roberta", 50265, 768)];
const TOKENS: &[usize] = &[256, 1024];
const SGEMM: usize = 2048;

fn randn(shape: (usize, usize), seed: u64) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let v: Vec<f32> = (0..shape.0 * shape.1)
        .map(|_| rng.random::<f32>() - 0.5)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("quantizer");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for &(name, v, d) in SHAPES {
        let codebook = randn((v, d), 1);
        let q = Quantizer::new(&codebook, QuantizerConfig::default()).unwrap();
        for &n in TOKENS {
            let x = randn((n, d), 2);
            g.throughput(Throughput::Elements(n as u64));
            g.bench_with_input(
                BenchmarkId::new(format!("{name}/nearest"), n),
                &x,
                |b, x| b.iter(|| q.nearest(x).unwrap()),
            );
            let q_candle = Quantizer::new(
                &codebook,
                QuantizerConfig {
                    fused_cpu: false,
                    ..Default::default()
                },
            )
            .unwrap();
            g.bench_with_input(
                BenchmarkId::new(format!("{name}/nearest_candle_ops"), n),
                &x,
                |b, x| b.iter(|| q_candle.nearest(x).unwrap()),
            );
            let et = codebook.t().unwrap();
            g.bench_with_input(BenchmarkId::new(format!("{name}/matmul"), n), &x, |b, x| {
                b.iter(|| x.matmul(&et).unwrap())
            });
        }
    }
    let a = randn((SGEMM, SGEMM), 3);
    let bm = randn((SGEMM, SGEMM), 4);
    g.throughput(Throughput::Elements((2 * SGEMM * SGEMM * SGEMM) as u64));
    g.bench_function(BenchmarkId::new("sgemm", SGEMM), |b| {
        b.iter(|| a.matmul(&bm).unwrap())
    });
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

/// Median time in seconds of one benchmark, from criterion's estimates.json.
fn median_s(id: &str) -> Option<f64> {
    // criterion writes a function name's '/' as '_' in folder names.
    let (func, param) = id.rsplit_once('/')?;
    let p = criterion_home()
        .join("quantizer")
        .join(func.replace('/', "_"))
        .join(param)
        .join("new")
        .join("estimates.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()?;
    Some(v["median"]["point_estimate"].as_f64()? * 1e-9)
}

fn summary() {
    let sgemm = median_s(&format!("sgemm/{SGEMM}")).map(|t| 2.0 * (SGEMM as f64).powi(3) / t / 1e9);
    println!(
        "\nnearest-code search, median of criterion samples ({} threads)",
        candle_core::utils::get_num_threads()
    );
    println!("| shape (V x D) | tokens | search ms | tokens/s | GFLOP/s | candle-ops search ms | matmul GFLOP/s | search / matmul | search / sgemm |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for &(name, v, d) in SHAPES {
        for &n in TOKENS {
            let (Some(ts), Some(tm)) = (
                median_s(&format!("{name}/nearest/{n}")),
                median_s(&format!("{name}/matmul/{n}")),
            ) else {
                continue;
            };
            let flop = 2.0 * (n * v * d) as f64;
            let (gs, gm) = (flop / ts / 1e9, flop / tm / 1e9);
            let ops = median_s(&format!("{name}/nearest_candle_ops/{n}"))
                .map(|t| format!("{:.1}", t * 1e3))
                .unwrap_or_else(|| "-".into());
            let vs_sgemm = sgemm
                .map(|s| format!("{:.0}%", 100.0 * gs / s))
                .unwrap_or_else(|| "-".into());
            println!(
                "| {name} ({v} x {d}) | {n} | {:.1} | {:.0} | {gs:.1} | {ops} | {gm:.1} | {:.0}% | {vs_sgemm} |",
                ts * 1e3,
                n as f64 / ts,
                100.0 * gs / gm
            );
        }
    }
    if let Some(s) = sgemm {
        println!("sgemm {SGEMM}^3 (candle matmul): {s:.1} GFLOP/s");
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
