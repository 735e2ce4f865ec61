//! Training: AdamW (decoupled weight decay, not on biases or position embeddings), linear
//! warm-up then cosine to 0, optional global-norm clipping, a seeded data order, and
//! checkpoints written atomically so that `--resume` continues exactly where a run stopped.
//!
//! Everything random is a pure function of `(seed, step)` (data order per epoch, crops, the
//! mask), so a resumed run replays the same batches and masks as an uninterrupted one.
//!
//! Layout of a run folder:
//! - `run.json`: the resolved configuration;
//! - `checkpoints/step-NNNNNNNN/{model,optimizer}.safetensors` + `state.json`, and
//!   `checkpoints/latest` naming the newest complete one (the last two are kept);
//! - `log.jsonl`: one line per logged step.

mod checkpoint;
pub mod diagnostics;
mod optim;
mod run;
mod step;

pub use checkpoint::{latest_checkpoint, load_model, CheckpointState};
pub use optim::{lr_at, AdamW};
pub use run::{batch_indices, train, LogLine, TrainOptions, TrainOutcome};
pub use step::{Step, StepOut};

use crate::error::Result;
use candle_core::{DType, Tensor};

/// Generation of the training numerics, part of the cache key of suite-trained models.
/// Bump it when a change alters float results of a training step (not only speed): 1 was
/// primitive candle ops; 2 the fused CPU kernels of `crate::kernels`; 3 their row sums in
/// eight lanes (LayerNorm statistics and gradients, softmax).
pub const NUMERICS: u32 = 3;

/// A fingerprint of each tensor: the 64-bit FNV-1a hash of its f32 values' bits, to check
/// that weights did not change.
pub fn fingerprint(ts: &[&Tensor]) -> Result<Vec<u64>> {
    ts.iter()
        .map(|t| {
            let v: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
            Ok(v.iter().fold(0xcbf29ce484222325u64, |h, x| {
                (h ^ x.to_bits() as u64).wrapping_mul(0x100000001b3)
            }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tc(steps: usize, warmup: usize) -> TrainConfig {
        let text = format!("batch_size = 4\nsteps = {steps}\nwarmup_steps = {warmup}\nlr = 1.0\n");
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn warmup_then_cosine_to_zero() {
        let t = tc(110, 10);
        assert!((lr_at(0, &t) - 0.1).abs() < 1e-12);
        assert!((lr_at(9, &t) - 1.0).abs() < 1e-12);
        assert!((lr_at(10, &t) - 1.0).abs() < 1e-12);
        assert!((lr_at(60, &t) - 0.5).abs() < 1e-12);
        assert!(lr_at(109, &t) < 1e-3 && lr_at(109, &t) > 0.0);
        assert!((1..110).all(|s| s <= 10 || lr_at(s, &t) <= lr_at(s - 1, &t)));
    }

    /// The fused AdamW pass and candle's op-by-op update give the same bits: parameters and
    /// both moments, decayed and not, with and without a gradient scale, over several steps
    /// (the cached suite models were trained op by op).
    #[test]
    fn fused_adamw_gives_the_same_bits_as_the_ops() {
        let dev = Device::Cpu;
        let mut t = tc(10, 2);
        t.lr = 3e-3;
        t.weight_decay = 0.05;
        let run = |fused: bool| -> Vec<u32> {
            let p = crate::model::Params::new(3, &dev);
            let w = p.normal("w", (37, 1000), 1.0).unwrap();
            let b = p.normal("b.bias", 1000, 0.1).unwrap();
            let pos = p.normal("pos_embedding", (5, 7), 0.5).unwrap();
            let mut opt = AdamW::new(&p, &t).unwrap();
            opt.fused = fused;
            let x = crate::rng::uniform_tensor(&[4, 37], 5, &dev).unwrap();
            for step in 0..4 {
                let y = x.matmul(&w).unwrap().broadcast_add(&b).unwrap();
                let loss = (y.sqr().unwrap().mean_all().unwrap()
                    + pos.sqr().unwrap().sum_all().unwrap())
                .unwrap();
                let grads = loss.backward().unwrap();
                let scale = if step == 2 { 0.37 } else { 1.0 };
                opt.step(&grads, lr_at(step, &t), scale).unwrap();
            }
            let mut bits = Vec::new();
            for tensor in [w, b, pos].iter().chain(&opt.m).chain(&opt.v) {
                let v: Vec<f32> = tensor.flatten_all().unwrap().to_vec1().unwrap();
                bits.extend(v.iter().map(|x| x.to_bits()));
            }
            bits
        };
        // The fused pass really runs on CPU f32 (else both runs above would be the ops).
        let t1 = crate::rng::uniform_tensor(&[3, 5], 1, &dev).unwrap();
        let k = crate::kernels::AdamWConsts {
            b1: 0.9,
            one_minus_b1: 0.1,
            b2: 0.95,
            one_minus_b2: 0.05,
            inv_c1: 10.0,
            inv_c2: 20.0,
            eps: 1e-8,
            lr: 1e-3,
            lr_decay: None,
            grad_scale: None,
        };
        assert!(crate::kernels::adamw_update(
            &t1,
            &t1.zeros_like().unwrap(),
            &t1.zeros_like().unwrap(),
            &t1,
            &k
        )
        .unwrap()
        .is_some());
        let (fused, ops) = (run(true), run(false));
        assert_eq!(fused.len(), 3 * (37_000 + 1000 + 35));
        let differ = fused.iter().zip(&ops).filter(|(a, b)| a != b).count();
        assert_eq!(differ, 0, "{differ} of {} values differ", fused.len());
        assert_ne!(&fused[..10], &run_untouched()[..10], "the parameters moved");
    }

    fn run_untouched() -> Vec<u32> {
        let p = crate::model::Params::new(3, &Device::Cpu);
        let w = p.normal("w", (37, 1000), 1.0).unwrap();
        w.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect()
    }

    #[test]
    fn each_epoch_visits_every_image_once() {
        let (n, b) = (10, 4);
        let seen: Vec<usize> = (0..5).flat_map(|s| batch_indices(s, b, n, 7)).collect(); // 2 epochs
        for epoch in seen.chunks(n) {
            let mut e = epoch.to_vec();
            e.sort();
            assert_eq!(e, (0..n).collect::<Vec<_>>());
        }
        assert_ne!(&seen[..n], &seen[n..], "epochs are shuffled differently");
        assert_eq!(batch_indices(3, b, n, 7), batch_indices(3, b, n, 7));
    }
}
