//! One training step, exactly as `train` runs it and every bench times it: the mask of step
//! `k` (seeded by `(seed, "mask", k)`), the forward pass, backward, the global gradient norm,
//! clipping to `train.grad_clip` when set, the learning rate of step `k`, and AdamW.

use super::optim::{lr_at, AdamW};
use crate::error::Result;
use crate::model::{Autoencoder, Forward, Params, RunConfig};
use crate::rng::Rng;
use candle_core::{Device, Tensor};

/// A model, its parameters and optimiser, and the number of steps taken.
pub struct Step {
    pub model: Autoencoder,
    pub params: Params,
    pub opt: AdamW,
    pub cfg: RunConfig,
    /// Steps taken (the next step's index).
    pub step: usize,
}

/// What one step computed.
pub struct StepOut {
    /// The forward pass (losses, the chosen code ids).
    pub forward: Forward,
    pub grad_norm: f64,
    pub lr: f64,
}

impl Step {
    /// The configuration's model at its seed's initialisation, a fresh optimiser, step 0.
    pub fn new(cfg: &RunConfig, device: &Device) -> Result<Step> {
        let (model, params) = Autoencoder::build(&cfg.model, cfg.train.seed, device)?;
        let opt = AdamW::new(&params, &cfg.train)?;
        Ok(Step {
            model,
            params,
            opt,
            cfg: cfg.clone(),
            step: 0,
        })
    }

    /// One step on `images`. Past the schedule's end (benches run more steps than a config
    /// trains) the learning rate stays at its last value.
    pub fn run(&mut self, images: &Tensor) -> Result<StepOut> {
        let t = &self.cfg.train;
        let mut mask_rng = Rng::derive(t.seed, "mask", self.step as u64);
        let forward = self.model.forward(images, Some(&mut mask_rng))?;
        let grads = forward.losses.total.backward()?;
        let grad_norm = self.opt.grad_norm(&grads)?;
        let scale = match t.grad_clip {
            Some(c) if grad_norm > c => c / grad_norm,
            _ => 1.0,
        };
        let lr = lr_at(self.step.min(t.steps.saturating_sub(1)), t);
        self.opt.step(&grads, lr, scale)?;
        self.step += 1;
        Ok(StepOut {
            forward,
            grad_norm,
            lr,
        })
    }
}
