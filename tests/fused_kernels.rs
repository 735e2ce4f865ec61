//! The fused CPU kernels (`lqae::kernels`) against the primitive-op layers, on the whole
//! `lqae-small` model (real MiniLM weights): the same loss, codes and gradient for every
//! trainable tensor, so the kernels change speed and nothing else. One test per binary: the
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
