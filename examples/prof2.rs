use candle_core::{Tensor, Var};
use std::time::Instant;
fn t(name: &str, mut f: impl FnMut()) {
    f();
    let n = 10;
    let s = Instant::now();
    for _ in 0..n {
        f();
    }
    println!(
        "{name:40} {:8.2} ms",
        s.elapsed().as_secs_f64() * 1e3 / n as f64
    );
}
fn bw(x: Tensor) {
    x.sum_all().unwrap().backward().unwrap();
}
fn main() {
    lqae::kernels::tune_allocator();
    let dev = candle_core::Device::Cpu;
    let u = |s: &[usize], seed| {
        Var::from_tensor(&lqae::bench::uniform(s, seed, &dev).unwrap()).unwrap()
    };
    let x = u(&[16, 64, 192], 2);
    let h = u(&[16, 64, 384], 3);
    let qkv = u(&[16, 64, 576], 3);
    let w = u(&[192, 384], 4);
    let w2 = u(&[384, 192], 4);
    let wq = u(&[192, 192], 4);
    let k9 = u(&[9, 384], 4);
    let lw = u(&[192], 5);
    t("dense 192->384 fwd", || {
        lqae::model::vit::dense(x.as_tensor(), w.as_tensor()).unwrap();
    });
    t("sum_all bwd 1024x384", || bw(h.as_tensor().clone()));
    let xc = x.as_tensor().reshape((1024, 192)).unwrap();
    t("candle matmul 1024x192x384", || {
        xc.matmul(w.as_tensor()).unwrap();
    });
    t("candle matmul xT g 192x1024x384", || {
        xc.t()
            .unwrap()
            .matmul(&h.as_tensor().reshape((1024, 384)).unwrap())
            .unwrap();
    });
    t("dense 192->384 fwd+bwd", || {
        bw(lqae::model::vit::dense(x.as_tensor(), w.as_tensor()).unwrap())
    });
    t("dense 384->192 fwd+bwd", || {
        bw(lqae::model::vit::dense(h.as_tensor(), w2.as_tensor()).unwrap())
    });
    t("dense 192->192 fwd+bwd", || {
        bw(lqae::model::vit::dense(x.as_tensor(), wq.as_tensor()).unwrap())
    });
    t("attention fused fwd+bwd", || {
        bw(lqae::kernels::attention_qkv(qkv.as_tensor(), 6, None).unwrap())
    });
    t("gelu tanh fwd+bwd 384", || {
        bw(lqae::kernels::gelu_tanh(h.as_tensor()).unwrap())
    });
    t("dwconv fwd+bwd", || {
        bw(
            lqae::kernels::depthwise3x3(h.as_tensor(), k9.as_tensor(), 8, || unreachable!())
                .unwrap(),
        )
    });
    t("ln fwd+bwd 192", || {
        bw(lqae::kernels::layer_norm(x.as_tensor(), lw.as_tensor(), lw.as_tensor(), 1e-5).unwrap())
    });
    t("mul fwd+bwd 384", || {
        bw((h.as_tensor() * h.as_tensor()).unwrap())
    });
    t("cat qkv weights fwd+bwd", || {
        bw(Tensor::cat(&[wq.as_tensor(), wq.as_tensor(), wq.as_tensor()], 1).unwrap())
    });
}
