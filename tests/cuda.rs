//! CUDA against CPU: runs where a GPU is present and the crate was built with `--features
//! cuda`; anywhere else it says that it skipped and why.

mod common;

use candle_core::{Device, Tensor};
use lqae::quantizer::{Quantizer, QuantizerConfig};

fn cuda() -> Option<Device> {
    if !cfg!(feature = "cuda") {
        eprintln!("SKIPPED: built without the `cuda` feature (cargo test --features cuda on a GPU machine runs this)");
        return None;
    }
    match Device::new_cuda(0) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("SKIPPED: no CUDA device: {e}");
            None
        }
    }
}

#[test]
fn quantizer_and_frozen_lm_agree_between_cuda_and_cpu() {
    let Some(gpu) = cuda() else { return };
    let dir = lqae::assets::ensure(&lqae::assets::MINILM).unwrap();
    let cpu_lm = lqae::lm::FrozenLm::load(&dir, &Device::Cpu).unwrap();
    let gpu_lm = lqae::lm::FrozenLm::load(&dir, &gpu).unwrap();
    let ids = cpu_lm
        .tokenize("a photo of a sneaker on a white background", true)
        .unwrap();
    let ids_c = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let a = cpu_lm.forward_ids(&ids_c, None).unwrap().pop().unwrap();
    let b = gpu_lm
        .forward_ids(&ids_c.to_device(&gpu).unwrap(), None)
        .unwrap()
        .pop()
        .unwrap()
        .to_device(&Device::Cpu)
        .unwrap();
    let d = common::max_abs_diff(&a, &b);
    assert!(d < 1e-3, "LM last hidden state CPU vs CUDA: {d}");
    let x = (cpu_lm.word_embeddings().narrow(0, 1000, 300).unwrap() * 2.0).unwrap();
    let qc = Quantizer::new(cpu_lm.word_embeddings(), QuantizerConfig::default()).unwrap();
    let qg = Quantizer::new(gpu_lm.word_embeddings(), QuantizerConfig::default()).unwrap();
    let ic: Vec<u32> = qc.nearest(&x).unwrap().to_vec1().unwrap();
    let ig: Vec<u32> = qg
        .nearest(&x.to_device(&gpu).unwrap())
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(ic, ig);
    assert_eq!(ic, (1000..1300).collect::<Vec<u32>>());
}
