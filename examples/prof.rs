use candle_core::Var;
use std::time::Instant;
fn t(name: &str, mut f: impl FnMut()) {
    f();
    let n = 4;
    let s = Instant::now();
    for _ in 0..n {
        f();
    }
    println!(
        "{name:40} {:8.2} ms",
        s.elapsed().as_secs_f64() * 1e3 / n as f64
    );
}
fn main() {
    if std::env::var_os("TUNE").is_some() {
        lqae::kernels::tune_allocator();
    }
    let dev = candle_core::Device::Cpu;
    let cfg = lqae::bench::lqae_small().unwrap();
    let mut ts = lqae::bench::TrainStep::new(cfg.clone(), &dev).unwrap();
    let x = lqae::bench::images(&cfg, 16, 9, &dev).unwrap();
    t("train step", || {
        ts.step(&x).unwrap();
    });
    let lqae::model::Autoencoder::Lqae(m) = &ts.model else {
        panic!()
    };
    let z = Var::from_tensor(&lqae::bench::uniform(&[16, 64, 384], 3, &dev).unwrap()).unwrap();
    t("lm fwd", || {
        m.lm().forward_embeds(z.as_tensor(), None).unwrap();
    });
    t("lm fwd+bwd", || {
        m.lm()
            .forward_embeds(z.as_tensor(), None)
            .unwrap()
            .pop()
            .unwrap()
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap()
            .backward()
            .unwrap();
    });
    t("lm+dec fwd+bwd", || {
        m.decode_lm_input(z.as_tensor())
            .unwrap()
            .0
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap()
            .backward()
            .unwrap();
    });
    t("encoder fwd+bwd", || {
        m.encode_continuous(&x)
            .unwrap()
            .0
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap()
            .backward()
            .unwrap();
    });
    t("quantize", || {
        m.quantizer().quantize(z.as_tensor()).unwrap();
    });
}
