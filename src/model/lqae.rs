//! The Language-Quantized AutoEncoder: ViT encoder -> nearest rows of the frozen LM's
//! word-embedding table (straight-through) -> random masking with the LM's mask embedding
//! (training only) -> the frozen LM on those input embeddings -> ViT decoder on its last hidden
//! states. Loss: pixel MSE + commitment + optional MLM.

use super::config::{MlmMode, ModelConfig};
use super::params::Params;
use super::vit::{dense, VitDecoder, VitEncoder};
use super::Losses;
use crate::lm::FrozenLm;
use crate::quantizer::{Quantizer, QuantizerConfig};
use crate::rng::Rng;
use candle_core::{DType, Result, Tensor, D};
use std::sync::Arc;

pub struct Lqae {
    cfg: ModelConfig,
    encoder: VitEncoder,
    proj_in: Option<Tensor>,
    proj_out: Option<Tensor>,
    decoder: VitDecoder,
    lm: Arc<FrozenLm>,
    quantizer: Quantizer,
    mask_embedding: Tensor,
}

/// What one forward pass gives.
pub struct LqaeOutput {
    pub recon: Tensor,
    /// Code ids `(b, t)`.
    pub ids: Tensor,
    /// 1.0 where a token was replaced by the mask embedding `(b, t)`; all zeros in eval.
    pub mask: Tensor,
    pub losses: Losses,
}

impl Lqae {
    pub fn new(cfg: &ModelConfig, lm: Arc<FrozenLm>, p: &Params) -> Result<Self> {
        let g = cfg.image_size / cfg.patch_size;
        let h = lm.hidden_size();
        let std = cfg.proj_init_std.unwrap_or(0.02);
        let (proj_in, proj_out) = if cfg.width != h {
            (
                Some(p.normal("proj_in", (cfg.width, h), std)?),
                Some(p.normal("proj_out", (h, cfg.width), std)?),
            )
        } else {
            (None, None)
        };
        let encoder = VitEncoder::new(
            &p.pp("encoder"),
            &cfg.vit_shape(cfg.enc_depth),
            cfg.patch_size,
            cfg.channels,
        )?;
        let decoder = VitDecoder::new(
            &p.pp("decoder"),
            &cfg.vit_shape(cfg.dec_depth),
            cfg.patch_size,
            cfg.channels,
        )?;
        match (cfg.mask_ratio_min, cfg.mask_ratio_max) {
            (None, None) => {}
            (Some(lo), Some(hi)) if (0.0..=hi).contains(&lo) && hi <= 1.0 => {}
            (lo, hi) => candle_core::bail!(
                "setting `model.mask_ratio_min`/`mask_ratio_max`: set both, with 0 <= min <= max <= 1 (got {lo:?}, {hi:?})"
            ),
        }
        let max = lm.config().max_tokens();
        if g * g > max {
            candle_core::bail!("{} tokens per image exceed the language model's {max} positions; use a larger patch_size", g * g);
        }
        let quantizer = Quantizer::new(
            lm.word_embeddings(),
            QuantizerConfig {
                beta: cfg.commitment,
                sphere: cfg.quantize_on_sphere.unwrap_or(false),
                ..Default::default()
            },
        )
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let mask_embedding = lm.word_embeddings().get(lm.mask_id() as usize)?;
        Ok(Self {
            cfg: cfg.clone(),
            encoder,
            proj_in,
            proj_out,
            decoder,
            lm,
            quantizer,
            mask_embedding,
        })
    }

    pub fn lm(&self) -> &FrozenLm {
        &self.lm
    }

    pub fn quantizer(&self) -> &Quantizer {
        &self.quantizer
    }

    /// Encoder output projected to the LM width, and every encoder block's output.
    pub fn encode_continuous(&self, images: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
        let (z, blocks) = self.encoder.forward(images)?;
        let z = match &self.proj_in {
            Some(w) => dense(&z, w)?,
            None => z,
        };
        Ok((z, blocks))
    }

    /// Code ids `(b, t)` of images, no masking.
    pub fn encode(&self, images: &Tensor) -> Result<Tensor> {
        let (z, _) = self.encode_continuous(images)?;
        self.quantizer
            .nearest(&z)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }

    /// Images from code ids (no masking): the codes' raw rows through the LM and the decoder.
    pub fn decode_ids(&self, ids: &Tensor) -> Result<Tensor> {
        let codes = self
            .quantizer
            .lookup(ids)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Ok(self.decode_lm_input(&codes)?.0)
    }

    /// Bernoulli(`ratio`) mask `(b, t)` from `rng`.
    pub fn sample_mask(
        b: usize,
        t: usize,
        ratio: f64,
        rng: &mut Rng,
        device: &candle_core::Device,
    ) -> Result<Tensor> {
        let m: Vec<f32> = (0..b * t)
            .map(|_| if rng.uniform() < ratio { 1.0 } else { 0.0 })
            .collect();
        Tensor::from_vec(m, (b, t), device)
    }

    /// Per-example ratios drawn uniformly from [lo, hi], then Bernoulli(ratio) per token `(b, t)`.
    pub fn sample_ratio_mask(
        b: usize,
        t: usize,
        (lo, hi): (f64, f64),
        rng: &mut Rng,
        device: &candle_core::Device,
    ) -> Result<Tensor> {
        let mut m = Vec::with_capacity(b * t);
        for _ in 0..b {
            let r = lo + (hi - lo) * rng.uniform();
            m.extend((0..t).map(|_| if rng.uniform() < r { 1.0f32 } else { 0.0 }));
        }
        Tensor::from_vec(m, (b, t), device)
    }

    /// The training mask of a batch: a per-example ratio range if configured, else
    /// `mask_ratio` for every token.
    fn training_mask(
        &self,
        b: usize,
        t: usize,
        rng: &mut Rng,
        device: &candle_core::Device,
    ) -> Result<Tensor> {
        match (self.cfg.mask_ratio_min, self.cfg.mask_ratio_max) {
            (Some(lo), Some(hi)) => Self::sample_ratio_mask(b, t, (lo, hi), rng, device),
            _ if self.cfg.mask_ratio > 0.0 => {
                Self::sample_mask(b, t, self.cfg.mask_ratio, rng, device)
            }
            _ => Tensor::zeros((b, t), DType::F32, device),
        }
    }

    /// Pixel MSE of images reconstructed with a fraction `ratio` of their tokens masked
    /// (evaluation at a mask ratio, as the official `eval_loss.py` does at 0.15).
    pub fn recon_mse_masked(&self, images: &Tensor, ratio: f64, rng: &mut Rng) -> Result<f64> {
        let (z, _) = self.encode_continuous(images)?;
        let (b, t, _) = z.dims3()?;
        let q = self
            .quantizer
            .quantize(&z)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let mask = Self::sample_mask(b, t, ratio, rng, z.device())?;
        let (recon, _) = self.decode_lm_input(&self.mask_inputs(&q.straight_through, &mask)?)?;
        Ok((recon.clamp(0f32, 1f32)? - images)?
            .sqr()?
            .mean_all()?
            .to_scalar::<f32>()? as f64)
    }

    /// The LM's mask-token embedding row that replaces masked tokens.
    pub fn mask_embedding(&self) -> &Tensor {
        &self.mask_embedding
    }

    /// LM input: straight-through codes where `mask` is 0, the mask embedding where it is 1.
    pub fn mask_inputs(&self, codes: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let m = mask.unsqueeze(2)?;
        let keep = (1.0 - &m)?;
        codes.broadcast_mul(&keep)?
            + m.broadcast_mul(&self.mask_embedding.reshape((1, 1, ()))?)?
    }

    /// The frozen LM on `lm_in`, then the decoder: `(reconstruction, LM last hidden states)`.
    pub fn decode_lm_input(&self, lm_in: &Tensor) -> Result<(Tensor, Tensor)> {
        let last = self
            .lm
            .encoder()
            .forward_embeds(lm_in, None)?
            .pop()
            .expect("hidden states");
        let h = match &self.proj_out {
            Some(w) => dense(&last, w)?,
            None => last.clone(),
        };
        Ok((self.decoder.forward(&h)?, last))
    }

    /// One pass. `mask_rng` is `Some` in training (tokens masked with `mask_ratio`), `None` in
    /// evaluation (no masking).
    pub fn forward(&self, images: &Tensor, mask_rng: Option<&mut Rng>) -> Result<LqaeOutput> {
        let (z, _) = self.encode_continuous(images)?;
        let (b, t, _) = z.dims3()?;
        let q = self
            .quantizer
            .quantize(&z)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let mask = match mask_rng {
            Some(rng) => self.training_mask(b, t, rng, z.device())?,
            None => Tensor::zeros((b, t), DType::F32, z.device())?,
        };
        let (recon, last) = self.decode_lm_input(&self.mask_inputs(&q.straight_through, &mask)?)?;
        let recon_loss = (&recon - images)?.sqr()?.mean_all()?;
        let mlm = match self.cfg.mlm {
            MlmMode::Off => None,
            MlmMode::Tied => self.mlm_loss(&last, &q.ids, &mask)?,
        };
        let entropy = match self.cfg.entropy_weight {
            Some(w) if w != 0.0 => Some((self.entropy_loss(&z)? * w)?),
            _ => None,
        };
        let mut total = (&recon_loss + &q.commit_loss)?;
        if let Some(e) = &entropy {
            total = (total + e)?;
        }
        if let Some(l) = &mlm {
            total = (total + (l * self.cfg.mlm_weight)?)?;
        }
        Ok(LqaeOutput {
            recon,
            ids: q.ids,
            mask,
            losses: Losses {
                total,
                recon: recon_loss,
                quantizer: q.commit_loss,
                codebook: None,
                entropy,
                mlm,
            },
        })
    }

    /// The official entropy loss over `z` `(b, t, h)`: mean per-token entropy of
    /// `softmax(-(2 - 2 cos) / T)` over every code, minus the entropy of the batch-average
    /// distribution (the codebook is a constant: only `z` gets a gradient). Computed over blocks
    /// of tokens whose `tokens x codes` tensors stay under [`ENTROPY_BLOCK_ELEMS`]: whole-batch
    /// ones (125 MB at 1,024 tokens x 30,522 codes) are above what the C allocator keeps for
    /// reuse, so every step mapped them fresh and faulted every page in (8 s a step on one
    /// thread, nearly all of it in the kernel).
    fn entropy_loss(&self, z: &Tensor) -> Result<Tensor> {
        let rows = (ENTROPY_BLOCK_ELEMS / self.quantizer.normed().dim(0)?).max(1);
        entropy_loss_blocked(
            z,
            self.quantizer.normed(),
            self.cfg.entropy_temperature.unwrap_or(0.01),
            rows,
        )
    }

    /// Cross-entropy of the tied head on masked positions against the quantized ids.
    fn mlm_loss(&self, last: &Tensor, ids: &Tensor, mask: &Tensor) -> Result<Option<Tensor>> {
        let flat_mask: Vec<f32> = mask.flatten_all()?.to_vec1()?;
        let rows: Vec<u32> = flat_mask
            .iter()
            .enumerate()
            .filter(|(_, &m)| m > 0.5)
            .map(|(i, _)| i as u32)
            .collect();
        if rows.is_empty() {
            return Ok(None);
        }
        let h = last.dim(D::Minus1)?;
        let idx = Tensor::new(rows.as_slice(), last.device())?;
        let hid = last.reshape(((), h))?.index_select(&idx, 0)?;
        let target = ids.flatten_all()?.index_select(&idx, 0)?;
        // The table is frozen: its gradient is never formed (fused on CPU; see `kernels`).
        let logits = crate::kernels::frozen_matmul_t(&hid, self.lm.word_embeddings())?;
        Ok(Some(crate::kernels::cross_entropy(&logits, &target)?))
    }
}

/// The largest `tokens x codes` block the entropy loss forms at once (24 MB of f32: under glibc's
/// 32 MB ceiling for memory it keeps for reuse).
pub const ENTROPY_BLOCK_ELEMS: usize = 6 << 20;

/// The entropy loss over `z` `(b, t, h)` against the normalised codebook `normed`, `rows`
/// tokens at a time: each block's summed per-token entropies and summed distributions, then
/// the mean entropy minus the entropy of the mean distribution.
pub fn entropy_loss_blocked(
    z: &Tensor,
    normed: &Tensor,
    temperature: f64,
    rows: usize,
) -> Result<Tensor> {
    let h = z.dim(D::Minus1)?;
    let z = z.reshape(((), h))?;
    let n = z.dim(0)?;
    let zn = crate::quantizer::l2_normalize_rows(&z)?;
    let codes_t = normed.t()?;
    let mut sample_sum: Option<Tensor> = None;
    let mut p_sum: Option<Tensor> = None;
    let mut start = 0;
    while start < n {
        let len = rows.min(n - start);
        // -(2 - 2 cos) / T: the constant -2 / T does not change a softmax.
        let logits = (zn.narrow(0, start, len)?.matmul(&codes_t)? * (2.0 / temperature))?;
        let p = crate::kernels::softmax_last(&logits)?;
        let max = logits.max_keepdim(D::Minus1)?.detach();
        let lse = (logits
            .broadcast_sub(&max)?
            .exp()?
            .sum_keepdim(D::Minus1)?
            .log()?
            + &max)?;
        let logp = logits.broadcast_sub(&lse)?;
        let s = p.mul(&logp)?.sum_all()?;
        let ps = p.sum(0)?;
        sample_sum = Some(match sample_sum {
            Some(acc) => (acc + s)?,
            None => s,
        });
        p_sum = Some(match p_sum {
            Some(acc) => (acc + ps)?,
            None => ps,
        });
        start += len;
    }
    let (Some(sample_sum), Some(p_sum)) = (sample_sum, p_sum) else {
        return Err(candle_core::Error::Msg(
            "the entropy loss of no tokens".into(),
        ));
    };
    let sample = (sample_sum * (-1.0 / n as f64))?;
    let avg = (p_sum / n as f64)?;
    let avg_entropy = (avg.mul(&(&avg + 1e-5)?.log()?)?.sum_all()? * -1.0)?;
    sample - avg_entropy
}
