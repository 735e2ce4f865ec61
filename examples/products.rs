//! Time the kernels' products (`kernels::blas::sgemm`) by shape, with nothing else in the
//! process: which backend (`LQAE_BLAS=off` for the gemm crate, `mkl`, `openblas`) is faster on
//! this CPU, on one thread and with every thread running its own product at once (as the ViT
//! block's callers do).
//!
//! ```sh
//! cargo build --release --example products
//! LQAE_BLAS=off ./target/release/examples/products 512x768x192 512x192x768:NT 192x384x1024:TN
//! ```
//!
//! A shape is `MxNxK` (`dst` is M x N, the inner size K), with `:AB` for the operands' layouts
//! (`N` row-major as given, `T` transposed; default `NN`). Prints, per shape, the fastest of
//! the repeats in GFLOP/s per thread: alone, and with all threads busy.
//!
//! `products peak` prints the core's FMA peak instead (x86-64 with AVX2 and FMA): twelve
//! independent chains of 8-lane fused multiply-adds in registers, on one thread and on all.

use lqae::error::{Error, Result};
use lqae::kernels::blas::{self, Par};
use rayon::prelude::*;

struct Shape {
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
}

fn parse(s: &str) -> Result<Shape> {
    let bad = || Error::Msg(format!("{s:?}: a shape is MxNxK or MxNxK:NT"));
    let (dims, ops) = s.split_once(':').unwrap_or((s, "NN"));
    let d: Vec<usize> = dims
        .split('x')
        .map(|v| v.parse().map_err(|_| bad()))
        .collect::<Result<_>>()?;
    let o: Vec<char> = ops.chars().collect();
    if d.len() != 3 || o.len() != 2 || o.iter().any(|c| !matches!(c, 'N' | 'T')) {
        return Err(bad());
    }
    Ok(Shape {
        m: d[0],
        n: d[1],
        k: d[2],
        ta: o[0] == 'T',
        tb: o[1] == 'T',
    })
}

/// One product of `s` on the calling thread, on operands of its own; seconds.
fn once(s: &Shape, a: &[f32], b: &[f32], c: &mut [f32]) -> f64 {
    let ls = if s.ta { (1, s.m) } else { (s.k, 1) };
    let rs = if s.tb { (1, s.k) } else { (s.n, 1) };
    let t = std::time::Instant::now();
    // SAFETY: a is m x k, b is k x n and c is m x n, each laid out as its strides say.
    unsafe {
        blas::sgemm(
            s.m,
            s.n,
            s.k,
            c.as_mut_ptr(),
            s.n,
            false,
            a.as_ptr(),
            ls,
            b.as_ptr(),
            rs,
            0.0,
            1.0,
            Par::None,
        )
    };
    t.elapsed().as_secs_f64()
}

/// GFLOP/s of `iters` rounds of twelve independent 8-lane FMA chains on this thread.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_chains(iters: u64) -> f64 {
    use std::arch::x86_64::*;
    let (a, b) = (_mm256_set1_ps(0.999_9), _mm256_set1_ps(1e-4));
    let mut acc = [_mm256_set1_ps(0.5); 12];
    let t = std::time::Instant::now();
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm256_fmadd_ps(*v, a, b);
        }
    }
    let dt = t.elapsed().as_secs_f64();
    // Every chain's result is used, or the compiler drops the chains nobody reads.
    let mut sum = [0f32; 8];
    for v in acc {
        _mm256_storeu_ps(sum.as_mut_ptr(), v);
        std::hint::black_box(sum);
    }
    (iters * 12 * 16) as f64 / dt / 1e9
}

/// The FMA peak per thread, alone and with every thread running the chains.
fn peak() -> Result<()> {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        let iters = 100_000_000;
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        let alone = unsafe { fma_chains(iters) };
        let busy: Vec<f64> = (0..rayon::current_num_threads())
            .into_par_iter()
            .map(|_| unsafe { fma_chains(iters) })
            .collect();
        println!("FMA peak: alone {alone:.1}, all busy {busy:.1?} GFLOP/s per thread");
        return Ok(());
    }
    Err(Error::Msg(
        "`products peak` needs x86-64 with AVX2 and FMA".into(),
    ))
}

fn main() -> Result<()> {
    if std::env::args().nth(1).as_deref() == Some("peak") {
        return peak();
    }
    let shapes: Vec<Shape> = std::env::args()
        .skip(1)
        .map(|a| parse(&a))
        .collect::<Result<_>>()?;
    if shapes.is_empty() {
        return Err(Error::Msg(
            "usage: products MxNxK[:AB] ... (see the file's header)".into(),
        ));
    }
    let threads = rayon::current_num_threads();
    println!("backend: {}; {threads} threads", blas::backend_name());
    for s in &shapes {
        let fill = |len: usize, seed: usize| -> Vec<f32> {
            (0..len)
                .map(|i| ((i * 7919 + seed) % 1000) as f32 / 1000.0 - 0.5)
                .collect()
        };
        let per: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = (0..threads)
            .map(|t| {
                (
                    fill(s.m * s.k, t),
                    fill(s.k * s.n, t + 1),
                    vec![0.0; s.m * s.n],
                )
            })
            .collect();
        let flop = 2.0 * (s.m * s.n * s.k) as f64;
        let reps = ((4e9 / flop) as usize).clamp(5, 2000);
        let (a, b, _) = &per[0];
        let mut c = vec![0.0; s.m * s.n];
        let alone = (0..reps)
            .map(|_| once(s, a, b, &mut c))
            .fold(f64::INFINITY, f64::min);
        let mut per = per;
        let busy = per
            .par_iter_mut()
            .map(|(a, b, c)| {
                (0..reps)
                    .map(|_| once(s, a, b, c))
                    .fold(f64::INFINITY, f64::min)
            })
            .reduce(|| 0.0, f64::max);
        println!(
            "{}x{}x{}:{}{}  alone {:6.1}  all busy {:6.1} GFLOP/s per thread",
            s.m,
            s.n,
            s.k,
            if s.ta { 'T' } else { 'N' },
            if s.tb { 'T' } else { 'N' },
            flop / alone / 1e9,
            flop / busy / 1e9
        );
    }
    Ok(())
}
