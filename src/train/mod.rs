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
/// eight lanes (LayerNorm statistics and gradients, softmax); 4 the code search's near ties
/// settled in f64 (`quantizer::SEARCH_RULE`).
pub const NUMERICS: u32 = 4;

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
