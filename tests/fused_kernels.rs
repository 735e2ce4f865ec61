//! The fused CPU kernels (`lqae::kernels`) against the primitive-op layers, on the whole
//! `lqae-small` model (real MiniLM weights): the same loss, codes and gradient for every
//! trainable tensor, so the kernels change speed and nothing else; and the feature networks'
//! forward kernels (LPIPS, FID Inception) against their candle forms. One test per binary: the
//! switch is process-wide.

use candle_core::Device;
use lqae::model::Autoencoder;
use lqae::rng::Rng;

#[test]
fn fused_and_primitive_layers_give_the_same_lqae_small_loss_and_gradients() {
    let cfg = lqae::bench::lqae_small().unwrap();
    let (model, params) = Autoencoder::build(&cfg.model, 42, &Device::Cpu).unwrap();
    let images = lqae::bench::images(&cfg, 4, 9, &Device::Cpu).unwrap();
    let run = |fused: bool| {
        lqae::kernels::set_enabled(fused);
        let mut rng = Rng::derive(42, "mask", 0);
        let f = model.forward(&images, Some(&mut rng)).unwrap();
        let g = f.losses.total.backward().unwrap();
        let loss = f.losses.total.to_scalar::<f32>().unwrap();
        let ids: Vec<u32> = f.ids.flatten_all().unwrap().to_vec1().unwrap();
        let grads: Vec<(String, Vec<f32>)> = params
            .named_vars()
            .into_iter()
            .map(|(n, v)| {
                let gv = g
                    .get(v.as_tensor())
                    .unwrap_or_else(|| panic!("no gradient for {n}"));
                (n, gv.flatten_all().unwrap().to_vec1().unwrap())
            })
            .collect();
        (loss, ids, grads)
    };
    // Under each backend of the kernels' products: the gemm crate, then the BLAS `auto` loads
    // (oneMKL on an Intel CPU; on others the gemm crate only, said so).
    let blas = lqae::kernels::blas::available();
    if !blas {
        eprintln!("no BLAS on this CPU (LQAE_BLAS auto): the gemm crate only");
    }
    for on in [false, true].into_iter().filter(|&on| !on || blas) {
        lqae::kernels::blas::set_enabled(on);
        compare(&run, &lqae::kernels::blas::backend_name());
    }

    // The feature networks' forward kernels (convolution, pooling, LPIPS's per-tap distance)
    // against their candle forms, on real weights: LPIPS alex and vgg16 distances, Inception
    // pool features.
    let a = (lqae::rng::uniform_tensor(&[3, 3, 48, 48], 5, &Device::Cpu).unwrap() + 0.5).unwrap();
    let b = (lqae::rng::uniform_tensor(&[3, 3, 48, 48], 6, &Device::Cpu).unwrap() + 0.5).unwrap();
    for net in [lqae::lpips::LpipsNet::Alex, lqae::lpips::LpipsNet::Vgg16] {
        let lp = lqae::lpips::Lpips::load(net, &Device::Cpu).unwrap();
        let d = |fused: bool| -> Vec<f32> {
            lqae::kernels::set_enabled(fused);
            lp.forward(&a, &b).unwrap().to_vec1().unwrap()
        };
        let (ops, fused) = (d(false), d(true));
        for (o, f) in ops.iter().zip(&fused) {
            assert!(
                (o - f).abs() <= 1e-5 * o.abs().max(1e-3),
                "LPIPS {}: {ops:?} vs {fused:?}",
                net.name()
            );
        }
    }
    let net = lqae::fid::Inception::load(&Device::Cpu).unwrap();
    let x = (lqae::rng::uniform_tensor(&[2, 3, 299, 299], 7, &Device::Cpu).unwrap() * 2.0).unwrap();
    let f = |fused: bool| -> Vec<f32> {
        lqae::kernels::set_enabled(fused);
        net.forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let (ops, fused) = (f(false), f(true));
    let worst = ops
        .iter()
        .zip(&fused)
        .map(|(o, f)| (o - f).abs())
        .fold(0f32, f32::max);
    let scale = ops.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(
        worst <= 1e-4 * scale,
        "Inception features: max difference {worst} of {scale}"
    );
    lqae::kernels::set_enabled(true);
}

type Run<'a> = dyn Fn(bool) -> (f32, Vec<u32>, Vec<(String, Vec<f32>)>) + 'a;

fn compare(run: &Run, backend: &str) {
    let (l_ops, ids_ops, g_ops) = run(false);
    let (l_fused, ids_fused, g_fused) = run(true);
    eprintln!("{backend}: loss ops {l_ops} fused {l_fused}");
    assert_eq!(ids_ops, ids_fused, "{backend}: the codes differ");
    assert!(
        (l_ops - l_fused).abs() <= 1e-5 * l_ops.abs(),
        "{backend}: loss {l_ops} vs {l_fused}"
    );
    assert_eq!(g_ops.len(), g_fused.len());
    for ((n, a), (_, b)) in g_ops.iter().zip(&g_fused) {
        let norm = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        let diff = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y) * (x - y))
            .sum::<f32>()
            .sqrt();
        assert!(
            diff <= 1e-3 * norm.max(1e-6),
            "{backend}: gradient of {n}: |fused - ops| = {diff}, |ops| = {norm}"
        );
    }
}
