//! Run one feature network (FID Inception-v3 or an LPIPS backbone) on fixed inputs many times,
//! for a profiler or for A/B timings of two builds run alternately (the bench's figures come
//! from `lqae-eval bench --peer`; this has no peer and nothing else in the process):
//!
//! ```sh
//! cargo build --release --example feature_nets
//! perf record ./target/release/examples/feature_nets alex 256 4 100   # net, side, pairs, calls
//! ./target/release/examples/feature_nets inception 0 16 5            # 16 images of 299x299
//! FEATURE_BITS=1 ./target/release/examples/feature_nets vgg16 64 2 1  # the outputs' bits
//! LQAE_BLAS_PROFILE=1 ./target/release/examples/feature_nets alex 64 32 # products by shape
//! ```
//!
//! Prints the median and the fastest call in ms (on a shared machine the fastest is the
//! steadier figure to compare builds by); `FEATURE_BITS=1` also prints a hash of the outputs'
//! bits after each call, to check that a change kept the numerics.

use candle_core::{Device, Tensor};
use lqae::error::{Error, Result};

/// `n x 3 x side x side` values in [0, 1]: `0.5 + 0.5 sin(freq * i)` over the flat index.
fn input(n: usize, side: usize, freq: f64, d: &Device) -> Result<Tensor> {
    let len = n * 3 * side * side;
    Ok(Tensor::arange(0f32, len as f32, d)?
        .affine(freq, 0.0)?
        .sin()?
        .affine(0.5, 0.5)?
        .reshape((n, 3, side, side))?)
}

fn bits_hash(y: &Tensor) -> Result<u64> {
    let v: Vec<f32> = y.flatten_all()?.to_vec1()?;
    Ok(v.iter().fold(0u64, |h, x| {
        h.wrapping_mul(1_000_003)
            .wrapping_add(u64::from(x.to_bits()))
    }))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: feature_nets inception|alex|vgg16 [side] [images or pairs] [calls]";
    let net = args.get(1).map(String::as_str).unwrap_or("alex");
    let num = |i: usize, default: usize| -> Result<usize> {
        args.get(i).map_or(Ok(default), |s| {
            s.parse()
                .map_err(|_| Error::Msg(format!("{s:?} is not a number; {usage}")))
        })
    };
    let (n, calls) = (num(3, 4)?, num(4, 40)?.max(1));
    lqae::kernels::tune_allocator();
    let d = Device::Cpu;
    let bits = std::env::var_os("FEATURE_BITS").is_some();
    let f: Box<dyn Fn() -> Result<Tensor>> = if net == "inception" {
        let model = lqae::fid::Inception::load(&d)?;
        let x = input(n, lqae::fid::SIDE, 0.618, &d)?.affine(2.0, -1.0)?;
        Box::new(move || model.forward(&x))
    } else {
        let which = lqae::lpips::LpipsNet::parse(net)
            .ok_or_else(|| Error::Msg(format!("unknown network {net:?}; {usage}")))?;
        let model = lqae::lpips::Lpips::load(which, &d)?;
        let side = num(2, 256)?;
        let (a, b) = (input(n, side, 0.618, &d)?, input(n, side, 0.707, &d)?);
        Box::new(move || model.forward(&a, &b))
    };
    f()?;
    let mut ms = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = std::time::Instant::now();
        let y = f()?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        if bits {
            println!("bits {:016x}", bits_hash(&y)?);
        }
    }
    // With LQAE_BLAS_PROFILE=1: the products' shapes and rates over all the calls.
    if let Some(r) = lqae::kernels::blas::profile_report() {
        println!("{r}");
    }
    ms.sort_by(f64::total_cmp);
    println!(
        "{net} n={n}: median {:.2} ms min {:.2}",
        ms[calls / 2],
        ms[0]
    );
    Ok(())
}
