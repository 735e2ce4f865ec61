//! Time the kernels' products (`kernels::blas::sgemm`, and `sgemm_small` for the shapes it
//! takes) by shape, with nothing else in the
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
//! A shape that the attention's products take (`blas::sgemm_small`: at most 64 x 64, on the
//! gemm crate's path) is timed both ways, its own kernel and `sgemm`, alone, alternating.
//!
//! `products peak` prints the core's FMA peak instead (`lqae::bench::peak`: twelve independent
//! chains of fused multiply-adds in the widest registers the CPU has), on one thread and on all.

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

/// One product of `s` on the calling thread, on operands of its own (by
/// `blas::sgemm_small` when `small`); seconds.
fn once(s: &Shape, a: &[f32], b: &[f32], c: &mut [f32], small: bool) -> f64 {
    let ls = if s.ta { (1, s.m) } else { (s.k, 1) };
    let rs = if s.tb { (1, s.k) } else { (s.n, 1) };
    let (m, n, k) = (s.m, s.n, s.k);
    let (a, b, c) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
    let t = std::time::Instant::now();
    // SAFETY: a is m x k, b is k x n and c is m x n, each laid out as its strides say.
    unsafe {
        if small {
            blas::sgemm_small(m, n, k, c, n, a, ls, b, rs, 1.0)
        } else {
            blas::sgemm(m, n, k, c, n, false, a, ls, b, rs, 0.0, 1.0, Par::None)
        }
    };
    t.elapsed().as_secs_f64()
}

/// The FMA peak per thread, alone and with every thread running the chains.
fn peak() -> Result<()> {
    let iters = 100_000_000;
    let alone = lqae::bench::peak::fma_chains(iters).ok_or_else(|| {
        Error::Msg("`products peak` needs x86-64 with AVX2 and FMA (or AVX-512)".into())
    })?;
    let busy: Vec<f64> = (0..rayon::current_num_threads())
        .into_par_iter()
        .filter_map(|_| lqae::bench::peak::fma_chains(iters))
        .collect();
    println!(
        "FMA peak ({}): alone {alone:.1}, all busy {busy:.1?} GFLOP/s per thread",
        lqae::bench::peak::fma_path()
    );
    Ok(())
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
        let small = blas::small_taken(s.m, s.n, s.k);
        if small {
            let (mut ours, mut gemm) = (f64::INFINITY, f64::INFINITY);
            for _ in 0..reps {
                ours = ours.min(once(s, a, b, &mut c, true));
                gemm = gemm.min(once(s, a, b, &mut c, false));
            }
            println!(
                "{}x{}x{}  alone, alternating: attention's kernel {:6.1}, sgemm {:6.1} GFLOP/s",
                s.m,
                s.n,
                s.k,
                flop / ours / 1e9,
                flop / gemm / 1e9
            );
        }
        let alone = (0..reps)
            .map(|_| once(s, a, b, &mut c, small))
            .fold(f64::INFINITY, f64::min);
        let mut per = per;
        let busy = per
            .par_iter_mut()
            .map(|(a, b, c)| {
                (0..reps)
                    .map(|_| once(s, a, b, c, small))
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
