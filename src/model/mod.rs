//! The models: LQAE and its VQ-VAE baseline, built from a `ModelConfig`.

pub mod config;
pub mod lqae;
pub mod params;
pub mod vit;
pub mod vqvae;

pub use config::{DataConfig, MlmMode, ModelConfig, ModelKind, RunConfig, TrainConfig};
pub use lqae::Lqae;
pub use params::{Params, Part};
pub use vqvae::Vqvae;

use crate::error::{Error, Result};
use crate::lm::FrozenLm;
use crate::rng::Rng;
use candle_core::{Device, Tensor};
use std::path::PathBuf;
use std::sync::Arc;

/// Scalar loss terms of one pass.
pub struct Losses {
    pub total: Tensor,
    /// Pixel MSE in [0, 1].
    pub recon: Tensor,
    /// Commitment loss (already weighted).
    pub quantizer: Tensor,
    /// VQ-VAE codebook loss (weighted).
    pub codebook: Option<Tensor>,
    /// LQAE entropy loss (weighted), when `entropy_weight` is set.
    pub entropy: Option<Tensor>,
    /// LQAE MLM cross-entropy (unweighted).
    pub mlm: Option<Tensor>,
}

impl Losses {
    /// Name -> value, for logs.
    pub fn scalars(&self) -> candle_core::Result<Vec<(&'static str, f64)>> {
        let mut v = vec![
            ("loss", self.total.to_scalar::<f32>()? as f64),
            ("recon_mse", self.recon.to_scalar::<f32>()? as f64),
            ("commit", self.quantizer.to_scalar::<f32>()? as f64),
        ];
        if let Some(c) = &self.codebook {
            v.push(("codebook", c.to_scalar::<f32>()? as f64));
        }
        if let Some(e) = &self.entropy {
            v.push(("entropy", e.to_scalar::<f32>()? as f64));
        }
        if let Some(m) = &self.mlm {
            v.push(("mlm", m.to_scalar::<f32>()? as f64));
        }
        Ok(v)
    }
}

pub enum Autoencoder {
    Lqae(Lqae),
    Vqvae(Vqvae),
}

/// One forward pass of either model.
pub struct Forward {
    pub recon: Tensor,
    pub ids: Tensor,
    pub mask: Option<Tensor>,
    pub losses: Losses,
}

/// Folder of the frozen LM named by `model.lm`: an asset name or a path.
pub fn resolve_lm_dir(spec: &str) -> Result<PathBuf> {
    match crate::assets::by_name(spec) {
        Ok(asset) => crate::assets::ensure(asset),
        Err(_) => {
            let p = PathBuf::from(spec);
            if p.is_dir() {
                Ok(p)
            } else {
                Err(Error::setting(
                    "model.lm",
                    format!("`{spec}` is neither a known asset (minilm) nor a model folder"),
                ))
            }
        }
    }
}

impl Autoencoder {
    /// Codes the model can emit: the LM's vocabulary (LQAE) or the learned codebook (VQ-VAE).
    pub fn codebook_len(&self) -> usize {
        match self {
            Autoencoder::Lqae(m) => m.lm().vocab().len(),
            Autoencoder::Vqvae(m) => m.codebook_size(),
        }
    }

    /// The text of a code: the LM token's text (LQAE); None for a learned code.
    pub fn token_text(&self, id: u32) -> Option<String> {
        match self {
            Autoencoder::Lqae(m) => Some(m.lm().vocab().token_text(id).text),
            Autoencoder::Vqvae(_) => None,
        }
    }

    /// Usage statistics of per-image code ids: special tokens and word-continuation pieces
    /// are the LM's (a learned codebook has neither).
    pub fn token_stats(&self, per_image: &[Vec<u32>], top_k: usize) -> crate::metrics::TokenStats {
        match self {
            Autoencoder::Lqae(m) => {
                let v = m.lm().vocab();
                crate::metrics::token_stats(
                    per_image,
                    v.len(),
                    top_k,
                    |t| v.is_special(t),
                    |t| !v.token_text(t).starts_word,
                )
            }
            Autoencoder::Vqvae(m) => crate::metrics::token_stats(
                per_image,
                m.codebook_size(),
                top_k,
                |_| false,
                |_| false,
            ),
        }
    }

    /// Build a freshly initialised model (parameters drawn from `seed`) on `device`.
    pub fn build(cfg: &ModelConfig, seed: u64, device: &Device) -> Result<(Self, Params)> {
        crate::kernels::tune_allocator();
        let p = Params::new(seed, device);
        let model = match cfg.kind {
            ModelKind::Lqae => {
                let dir = resolve_lm_dir(&cfg.lm_name())?;
                let lm = Arc::new(FrozenLm::load(&dir, device)?);
                Autoencoder::Lqae(Lqae::new(cfg, lm, &p)?)
            }
            ModelKind::Vqvae => Autoencoder::Vqvae(Vqvae::new(cfg, &p)?),
        };
        Ok((model, p))
    }

    /// `mask_rng`: `Some` in training (LQAE masks tokens), `None` in evaluation.
    pub fn forward(&self, images: &Tensor, mask_rng: Option<&mut Rng>) -> Result<Forward> {
        Ok(match self {
            Autoencoder::Lqae(m) => {
                let o = m.forward(images, mask_rng)?;
                Forward {
                    recon: o.recon,
                    ids: o.ids,
                    mask: Some(o.mask),
                    losses: o.losses,
                }
            }
            Autoencoder::Vqvae(m) => {
                let o = m.forward(images)?;
                Forward {
                    recon: o.recon,
                    ids: o.ids,
                    mask: None,
                    losses: o.losses,
                }
            }
        })
    }

    pub fn encode(&self, images: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Autoencoder::Lqae(m) => m.encode(images)?,
            Autoencoder::Vqvae(m) => m.encode(images)?,
        })
    }

    /// The encoder's continuous output (at the LM width for an LQAE) and every block's output.
    pub fn encode_continuous(&self, images: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
        Ok(match self {
            Autoencoder::Lqae(m) => m.encode_continuous(images)?,
            Autoencoder::Vqvae(m) => m.encode_continuous(images)?,
        })
    }

    pub fn decode_ids(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Autoencoder::Lqae(m) => m.decode_ids(ids)?,
            Autoencoder::Vqvae(m) => m.decode_ids(ids)?,
        })
    }
}
