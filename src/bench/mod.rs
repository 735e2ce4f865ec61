//! Benchmarks: the kernels that `cargo bench --bench kernels`, the `throughput` suite and
//! `lqae-eval bench` time, built once so that all three time the same work.
//!
//! - [`timing`]: a kernel and its timed calls (each ended by a device synchronisation), medians;
//! - [`flops`]: the FLOP models the rates and sgemm shares are computed from;
//! - [`catalog`]: the kernels, named by a [`KernelId`], and their constructors;
//! - [`peer`]: the PyTorch peer (its process protocol, the same-work checks, side-by-side
//!   rounds); [`step`]: the training step at the paper's shape against it; [`gpu`]: CUDA
//!   against the CPU; [`runs`]: the recorded runs of the CLI's bench commands;
//! - [`peak`]: the cores' FMA peak, the yardstick of the sgemm rate itself.

pub mod catalog;
pub mod flops;
pub mod gpu;
pub mod peak;
pub mod peer;
pub mod runs;
pub mod step;
pub mod timing;

pub use catalog::{all, catalog, selected, KernelId, SEARCH_SHAPES, SEARCH_TOKENS, SGEMM_N};
pub use catalog::{search_inputs, sgemm};
pub use flops::{lm_flop, train_step_flop, vit_block_flop};
pub use timing::{median, time_calls, Kernel};

use crate::error::Result;
use crate::model::RunConfig;
pub use crate::rng::uniform_tensor as uniform;
use candle_core::{Device, Tensor};

/// The `lqae-small` configuration the model kernels use (the file under `configs/`).
pub const LQAE_SMALL_TOML: &str = include_str!("../../configs/lqae-small.toml");

/// The `lqae-small` run configuration.
pub fn lqae_small() -> Result<RunConfig> {
    RunConfig::from_toml_str(
        LQAE_SMALL_TOML,
        std::path::Path::new("configs/lqae-small.toml"),
        &[],
    )
}

/// A training step's loss, the code ids its forward pass chose, and its gradient norm: what
/// the same-work checks compare.
pub fn step_record(o: &crate::train::StepOut) -> Result<(f64, Vec<u32>, f64)> {
    Ok((
        o.forward.losses.total.to_scalar::<f32>()? as f64,
        o.forward.ids.flatten_all()?.to_vec1::<u32>()?,
        o.grad_norm,
    ))
}

/// Random images in [0, 1] of the `lqae-small` shape.
pub fn images(cfg: &RunConfig, batch: usize, seed: u64, device: &Device) -> Result<Tensor> {
    let s = cfg.model.image_size;
    Ok((uniform(&[batch, cfg.model.channels, s, s], seed, device)? + 0.5)?)
}
