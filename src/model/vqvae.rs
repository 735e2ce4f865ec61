//! The paper's VQ-VAE baseline: the same ViT encoder and decoder around a **learned**
//! codebook (1024 codes by default) with Euclidean nearest-neighbour lookup, codebook loss
//! `mean((e - stopgrad(z))^2)`, commitment `beta * mean((stopgrad(e) - z)^2)` (beta 0.25) and a
//! straight-through estimator. No language model.

use super::config::ModelConfig;
use super::params::Params;
use super::vit::{VitDecoder, VitEncoder};
use super::Losses;
use candle_core::{Result, Tensor, D};

pub struct Vqvae {
    cfg: ModelConfig,
    encoder: VitEncoder,
    decoder: VitDecoder,
    codebook: Tensor,
}

pub struct VqvaeOutput {
    pub recon: Tensor,
    pub ids: Tensor,
    pub losses: Losses,
}

impl Vqvae {
    pub fn new(cfg: &ModelConfig, p: &Params) -> Result<Self> {
        Ok(Self {
            cfg: cfg.clone(),
            encoder: VitEncoder::new(
                &p.pp("encoder"),
                &cfg.vit_shape(cfg.enc_depth),
                cfg.patch_size,
                cfg.channels,
            )?,
            decoder: VitDecoder::new(
                &p.pp("decoder"),
                &cfg.vit_shape(cfg.dec_depth),
                cfg.patch_size,
                cfg.channels,
            )?,
            // Default 1/sqrt(K); `codebook_init_std = 1/sqrt(width)` is the official
            // variance_scaling(1, fan_in, normal) over (codes, width).
            codebook: p.normal(
                "quantizer.codebook",
                (cfg.codebook_size, cfg.width),
                cfg.codebook_init_std
                    .unwrap_or(1.0 / (cfg.codebook_size as f64).sqrt()),
            )?,
        })
    }

    /// The learned codebook `(codes, width)`.
    pub fn codebook(&self) -> &Tensor {
        &self.codebook
    }

    pub fn codebook_size(&self) -> usize {
        self.cfg.codebook_size
    }

    /// Nearest code by squared Euclidean distance for `z` `(b, t, w)` -> ids `(b, t)`.
    pub fn nearest(&self, z: &Tensor) -> Result<Tensor> {
        let (b, t, w) = z.dims3()?;
        let z = z.detach().reshape((b * t, w))?;
        let e = self.codebook.detach();
        let d = z
            .matmul(&e.t()?)?
            .affine(-2.0, 0.0)?
            .broadcast_add(&e.sqr()?.sum(1)?.unsqueeze(0)?)?;
        d.argmin(D::Minus1)?.reshape((b, t))
    }

    pub fn encode(&self, images: &Tensor) -> Result<Tensor> {
        self.nearest(&self.encoder.forward(images)?.0)
    }

    pub fn encode_continuous(&self, images: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
        self.encoder.forward(images)
    }

    pub fn lookup(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        self.codebook
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, self.cfg.width))
    }

    pub fn decode_ids(&self, ids: &Tensor) -> Result<Tensor> {
        self.decoder.forward(&self.lookup(ids)?)
    }

    pub fn forward(&self, images: &Tensor) -> Result<VqvaeOutput> {
        let (z, _) = self.encoder.forward(images)?;
        let ids = self.nearest(&z)?;
        let e = self.lookup(&ids)?;
        let codebook = ((&e - z.detach())?.sqr()?.mean_all()? * self.cfg.codebook_weight)?;
        let commit = ((e.detach() - &z)?.sqr()?.mean_all()? * self.cfg.commitment)?;
        let st = (&z + (e - &z)?.detach())?;
        let recon = self.decoder.forward(&st)?;
        let recon_loss = (&recon - images)?.sqr()?.mean_all()?;
        let total = ((&recon_loss + &commit)? + &codebook)?;
        Ok(VqvaeOutput {
            recon,
            ids,
            losses: Losses {
                total,
                recon: recon_loss,
                quantizer: commit,
                codebook: Some(codebook),
                entropy: None,
                mlm: None,
            },
        })
    }
}
