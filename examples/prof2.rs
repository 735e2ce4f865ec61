use candle_core::{Tensor, Var};
use std::time::Instant;
fn t(name: &str, mut f: impl FnMut()) {
    f();
    let n = 20;
    let mut v = Vec::new();
    for _ in 0..n {
        let s = Instant::now();
        f();
        v.push(s.elapsed().as_secs_f64() * 1e3);
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("{name:40} {:8.2} ms (min {:.2})", v[n / 2], v[0]);
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
    let w3 = u(&[192, 576], 4);
    let w2 = u(&[384, 192], 4);
    let wq = u(&[192, 192], 4);
    let k9 = u(&[9, 384], 4);
    let lw = u(&[192], 5);
    let lw2 = u(&[384], 5);
    t("dense 192->576 fwd+bwd", || {
        bw(lqae::kernels::dense(x.as_tensor(), w3.as_tensor()).unwrap())
    });
    t("dense 192->384 fwd+bwd", || {
        bw(lqae::kernels::dense(x.as_tensor(), w.as_tensor()).unwrap())
    });
    t("dense 384->192 fwd+bwd", || {
        bw(lqae::kernels::dense(h.as_tensor(), w2.as_tensor()).unwrap())
    });
    t("dense 192->192 fwd+bwd", || {
        bw(lqae::kernels::dense(x.as_tensor(), wq.as_tensor()).unwrap())
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
    t("ln fwd+bwd 384", || {
        bw(
            lqae::kernels::layer_norm(h.as_tensor(), lw2.as_tensor(), lw2.as_tensor(), 1e-5)
                .unwrap(),
        )
    });
    t("mul fwd+bwd 384", || {
        bw((h.as_tensor() * h.as_tensor()).unwrap())
    });
    t("add fwd+bwd 192", || {
        bw((x.as_tensor() + x.as_tensor()).unwrap())
    });
    t("sum bwd 192 baseline", || bw(x.as_tensor().clone()));
    let cfg = lqae::bench::lqae_small().unwrap();
    let p = lqae::model::Params::new(7, &dev);
    let tr = lqae::model::vit::Transformer::new(&p, &cfg.model.vit_shape(1)).unwrap();
    t("vit block fwd", || {
        tr.forward(x.as_tensor()).unwrap();
    });
    t("vit block fwd+bwd", || {
        bw(tr.forward(x.as_tensor()).unwrap().0)
    });
}
