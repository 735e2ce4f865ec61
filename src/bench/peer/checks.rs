//! The same-work checks: before anything is timed side by side, the peer must compute what
//! we compute (the same codes of the search, the same losses and gradient norms of two
//! training steps from the same weights, images and masks).

use super::Peer;
use crate::bench::{lqae_small, search_inputs, step_record, Kernel, KernelId};
use crate::error::{Error, Result};
use crate::model::RunConfig;
use crate::train::Step;
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;

fn agreement(a: &[u32], b: &[u32]) -> f64 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64
}

/// What the same-work checks found.
#[derive(Debug, Clone, Serialize)]
pub struct Checks {
    /// Kernel -> share of tokens given the same code by both.
    pub search_agreement: Vec<(String, f64)>,
    /// Our and the peer's loss of each of two training steps, and the share of equal codes.
    pub train_losses: Vec<(f64, f64)>,
    /// Our and the peer's global gradient norm of each step (the first AdamW update is
    /// nearly `sign(g)`, so the second loss alone would not see a mis-scaled gradient).
    pub train_grad_norms: Vec<(f64, f64)>,
    pub train_code_agreement: f64,
}

/// The peer must compute what we compute: the same codes (at least 99.9% of tokens: a
/// near-tie may fall either way in float) and losses within 0.1% over two training steps.
pub fn check_same_work(
    peer: &mut Peer,
    kernels: &[Kernel],
    device: &candle_core::Device,
    work: &Path,
) -> Result<Checks> {
    let mut search_agreement = Vec::new();
    for k in kernels {
        let KernelId::Search { v, d, tokens, .. } = k.id else {
            continue;
        };
        let (q, x) = search_inputs(v, d, tokens, device)?;
        let ours: Vec<u32> = q.nearest(&x)?.to_vec1()?;
        let theirs = peer.search_ids(&k.name)?;
        let a = agreement(&ours, &theirs);
        if a < 0.999 {
            return Err(Error::Msg(format!(
                "the PyTorch peer's `{}` gives the same code for only {:.2}% of tokens: it does not compute the same search",
                k.name,
                100.0 * a
            )));
        }
        search_agreement.push((k.name.clone(), a));
    }
    let (mut train_losses, mut train_grad_norms, mut train_code_agreement) =
        (Vec::new(), Vec::new(), 1.0);
    if kernels
        .iter()
        .any(|k| matches!(k.id, KernelId::TrainStep { .. }))
    {
        let cfg = lqae_small()?;
        let a = train_same_work(peer, &cfg, cfg.train.batch_size, device, work)?;
        (train_losses, train_grad_norms, train_code_agreement) =
            (a.losses, a.grad_norms, a.code_agreement);
    }
    Ok(Checks {
        search_agreement,
        train_losses,
        train_grad_norms,
        train_code_agreement,
    })
}

/// Two training steps of `cfg` at batch `b` on both sides from the same weights (ours, seeded),
/// images and masks: our and the peer's losses and gradient norms per step (each within 0.1%,
/// else an error) and the share of tokens given the same code. The peer must have been set up
/// with `cfg`.
pub fn train_same_work(
    peer: &mut Peer,
    cfg: &RunConfig,
    b: usize,
    device: &candle_core::Device,
    work: &Path,
) -> Result<TrainAgreement> {
    let name = &cfg.name;
    let mut ts = Step::new(cfg, device)?;
    let t = cfg.tokens_per_image();
    let images = crate::bench::images(cfg, b, 9, device)?;
    let mut tensors: HashMap<String, candle_core::Tensor> = ts.params.tensors()?;
    tensors.insert("images".into(), images.clone());
    const STEPS: usize = 2;
    for i in 0..STEPS {
        let mut r = crate::rng::Rng::derive(cfg.train.seed, "mask", i as u64);
        tensors.insert(
            format!("mask{i}"),
            crate::model::Lqae::sample_mask(b, t, cfg.model.mask_ratio, &mut r, device)?,
        );
    }
    std::fs::create_dir_all(work).map_err(|e| Error::file(work, e.to_string()))?;
    let file = work.join("train_check.safetensors");
    candle_core::safetensors::save(&tensors, &file)?;
    drop(tensors);
    let mut ours = Vec::new();
    let mut our_ids = Vec::new();
    let mut our_norms = Vec::new();
    for _ in 0..STEPS {
        let (loss, ids, norm) = step_record(&ts.run(&images)?)?;
        ours.push(loss);
        our_ids.extend(ids);
        our_norms.push(norm);
    }
    drop(ts);
    let (theirs, their_ids, their_norms) = peer.train_check(&file, STEPS)?;
    let _ = std::fs::remove_file(&file);
    let code_agreement = agreement(&our_ids, &their_ids.concat());
    let mut losses = Vec::new();
    for (i, (&a, &b)) in ours.iter().zip(&theirs).enumerate() {
        let rel = (a - b).abs() / a.abs().max(1e-12);
        if rel > 1e-3 {
            return Err(Error::Msg(format!(
                "{name} training step {i}: our loss {a:.6} and the PyTorch peer's {b:.6} differ by {:.3}% (codes agree on {:.1}%): the peer does not compute the same step",
                100.0 * rel,
                100.0 * code_agreement
            )));
        }
        losses.push((a, b));
    }
    let mut norms = Vec::new();
    for (i, (&a, &b)) in our_norms.iter().zip(&their_norms).enumerate() {
        let rel = (a - b).abs() / a.abs().max(1e-12);
        if rel > 1e-3 {
            return Err(Error::Msg(format!(
                "{name} training step {i}: our gradient norm {a:.6} and the PyTorch peer's {b:.6} differ by {:.3}%: the peer does not compute the same gradients",
                100.0 * rel
            )));
        }
        norms.push((a, b));
    }
    Ok(TrainAgreement {
        losses,
        grad_norms: norms,
        code_agreement,
    })
}

/// What [`train_same_work`] found: our and the peer's loss and global gradient norm of each
/// step, and the share of tokens given the same code.
#[derive(Debug, Clone, Serialize)]
pub struct TrainAgreement {
    pub losses: Vec<(f64, f64)>,
    pub grad_norms: Vec<(f64, f64)>,
    pub code_agreement: f64,
}
