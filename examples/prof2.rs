use candle_core::{Tensor, Var};
use std::time::Instant;
fn t(name: &str, mut f: impl FnMut()) {
    f();
    let n = 5;
    let s = Instant::now();
    for _ in 0..n { f(); }
    println!("{name:40} {:8.2} ms", s.elapsed().as_secs_f64() * 1e3 / n as f64);
}
fn bw(x: Tensor) { x.sum_all().unwrap().backward().unwrap(); }
fn main() {
    lqae::kernels::tune_allocator();
    let dev = candle_core::Device::Cpu;
    let u = |s: &[usize], seed| Var::from_tensor(&lqae::bench::uniform(s, seed, &dev).unwrap()).unwrap();
    let q = u(&[16, 12, 64, 32], 1);
    let x = u(&[16, 64, 384], 2);
    let h = u(&[16, 64, 1536], 3);
    let w = lqae::bench::uniform(&[1536, 384], 4, &dev).unwrap();
    let b = lqae::bench::uniform(&[1536], 5, &dev).unwrap();
    let w2 = lqae::bench::uniform(&[384, 1536], 4, &dev).unwrap();
    let b2 = lqae::bench::uniform(&[384], 5, &dev).unwrap();
    t("baseline sum bwd 16x64x384", || bw(x.as_tensor().clone()));
    t("attention fwd", || { lqae::nn::attention(q.as_tensor(), q.as_tensor(), q.as_tensor(), None).unwrap(); });
    t("attention fwd+bwd", || bw(lqae::nn::attention(q.as_tensor(), q.as_tensor(), q.as_tensor(), None).unwrap()));
    t("linear 384->1536 fwd", || { lqae::kernels::frozen_linear(x.as_tensor(), &w, &b).unwrap(); });
    t("linear 384->1536 fwd+bwd", || bw(lqae::kernels::frozen_linear(x.as_tensor(), &w, &b).unwrap()));
    let g = lqae::bench::uniform(&[1024, 1536], 4, &dev).unwrap();
    t("grad.matmul(w) 1024x1536 @ 1536x384", || { g.matmul(&w).unwrap(); });
    t("linear 1536->384 fwd+bwd", || bw(lqae::kernels::frozen_linear(h.as_tensor(), &w2, &b2).unwrap()));
    t("gelu erf fwd+bwd 1536", || bw(lqae::kernels::gelu_erf(h.as_tensor()).unwrap()));
    t("ln fwd+bwd", || bw(lqae::kernels::layer_norm(x.as_tensor(), &b2, &b2, 1e-12).unwrap()));
    t("split heads fwd+bwd", || bw(x.as_tensor().reshape((16,64,12,32)).unwrap().transpose(1,2).unwrap().contiguous().unwrap()));
    t("residual add fwd+bwd", || bw((x.as_tensor() + x.as_tensor()).unwrap()));
}
