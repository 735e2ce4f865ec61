//! Run configurations as TOML files (`configs/*.toml`): `[model]`, `[data]`, `[train]`.
//! Unknown keys are errors; `--set section.key=value` overrides any key.

pub use crate::data::DataConfig;
use crate::error::{Error, Result};
use crate::util::toml_ext::apply_override;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Lqae,
    Vqvae,
}

/// The MLM loss on masked positions (LQAE only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MlmMode {
    /// No MLM loss (MiniLM ships no MLM head).
    #[default]
    Off,
    /// Logits are the last hidden states times the word-embedding table (a head tied to the
    /// codebook, without the transform layer a full MLM head has).
    Tied,
}

fn d_channels() -> usize {
    3
}
fn d_mask_ratio() -> f64 {
    0.5
}
fn d_mlm_weight() -> f64 {
    1e-4
}
fn d_codebook_size() -> usize {
    1024
}
fn d_one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub kind: ModelKind,
    pub image_size: usize,
    pub patch_size: usize,
    #[serde(default = "d_channels")]
    pub channels: usize,
    /// ViT width; a linear projection in and out is added when it differs from the LM width.
    pub width: usize,
    pub enc_depth: usize,
    pub dec_depth: usize,
    pub heads: usize,
    pub mlp_dim: usize,
    /// LQAE: the frozen LM, an asset name (`minilm`) or a checkpoint folder.
    #[serde(default)]
    pub lm: Option<String>,
    /// LQAE: probability that a token is replaced by the mask embedding during training.
    #[serde(default = "d_mask_ratio")]
    pub mask_ratio: f64,
    /// LQAE: draw each example's mask ratio uniformly from [`mask_ratio_min`, `mask_ratio_max`]
    /// (the official `bert_min_ratio`/`bert_max_ratio`; its command sets both to 0.5), then mask
    /// each token with that probability. Unset: every example at `mask_ratio`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_ratio_min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_ratio_max: Option<f64>,
    /// LQAE: std of the N(0, std) init of the width projections `proj_in`/`proj_out` (a port
    /// addition: the official ViT is as wide as its LM). Unset: 0.02, like every other weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proj_init_std: Option<f64>,
    /// Initial scale of the LayerNorm after attention in every ViT block (encoder and
    /// decoder). Unset: 1, the official init. At 1 the attention branch of a fresh block
    /// (uniform attention: every token gets the image's mean) is normalised to norm sqrt(width)
    /// and swamps the patch embeddings, so all tokens of an image start out almost equal and
    /// quantize to a handful of codes; a small value lets the patches through at the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attn_ln_init: Option<f64>,
    /// LQAE: weight of the official code's entropy loss (`quantizer_loss_entropy`, 0 there by
    /// default): per-token entropy of the softmax over cosine affinities to every code minus the
    /// entropy of the batch-average distribution, so each token picks one code decisively while
    /// the batch spreads over many. Unset: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entropy_weight: Option<f64>,
    /// LQAE: temperature of that softmax (the official `entropy_temperature`, 0.01), over
    /// affinities `-(2 - 2 cos)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entropy_temperature: Option<f64>,
    /// LQAE: straight-through estimator and commitment loss on the unit sphere (see
    /// `QuantizerConfig::sphere`): the encoder output is L2-normalised and scaled to its code's
    /// norm first, so the commitment is `beta * |e|^2 * (2 - 2 cos)` and only the direction
    /// the cosine search sees is trained. Unset/false: the raw output, as the official code,
    /// whose norm runs to 50-100x the code rows' (docs/ablations.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantize_on_sphere: Option<bool>,
    /// VQ-VAE: every this many steps, codes no token chose since the last restart are moved
    /// onto randomly drawn encoder outputs of the current batch (dead-code restart, as
    /// Jukebox and many VQ-VAEs since). Must divide `train.ckpt_every` so that a resumed run
    /// equals an uninterrupted one. Unset: off (the paper's baseline has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_dead_codes_every: Option<usize>,
    /// VQ-VAE: std of the codebook's normal init. Unset: 1/sqrt(codebook_size); the official
    /// `variance_scaling(1, fan_in)` over (codes, width) gives 1/sqrt(width).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codebook_init_std: Option<f64>,
    /// Commitment weight: 0.01 for LQAE (the official code's effective value), 0.25 for VQ-VAE.
    pub commitment: f64,
    #[serde(default)]
    pub mlm: MlmMode,
    #[serde(default = "d_mlm_weight")]
    pub mlm_weight: f64,
    /// VQ-VAE: number of learned codes.
    #[serde(default = "d_codebook_size")]
    pub codebook_size: usize,
    /// VQ-VAE: weight of the codebook loss `mean((e - stopgrad(z))^2)`.
    #[serde(default = "d_one")]
    pub codebook_weight: f64,
}

fn d_beta1() -> f64 {
    0.9
}
fn d_beta2() -> f64 {
    0.95
}
fn d_wd() -> f64 {
    5e-4
}
fn d_eps() -> f64 {
    1e-8
}
fn d_seed() -> u64 {
    42
}
fn d_log_every() -> usize {
    10
}
fn d_ckpt_every() -> usize {
    100
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub batch_size: usize,
    pub steps: usize,
    pub warmup_steps: usize,
    /// Peak learning rate, reached after warm-up, then cosine to 0.
    pub lr: f64,
    #[serde(default = "d_beta1")]
    pub beta1: f64,
    #[serde(default = "d_beta2")]
    pub beta2: f64,
    #[serde(default = "d_wd")]
    pub weight_decay: f64,
    #[serde(default = "d_eps")]
    pub eps: f64,
    /// Clip the global gradient norm to this value; absent: no clipping (the official setting).
    #[serde(default)]
    pub grad_clip: Option<f64>,
    #[serde(default = "d_seed")]
    pub seed: u64,
    #[serde(default = "d_log_every")]
    pub log_every: usize,
    #[serde(default = "d_ckpt_every")]
    pub ckpt_every: usize,
    /// Log codebook usage, encoder scale and held-out reconstruction every `log_every` steps
    /// (no effect on the weights).
    #[serde(default = "d_true", skip_serializing_if = "is_true")]
    pub diagnostics: bool,
    /// Parameters left as initialised: every parameter whose name starts with one of these
    /// (`encoder`, `proj_in`, ...) gets no update (the ablation of a random, untrained
    /// tokenizer under a trained decoder). Each must name at least one parameter, and either
    /// all or none of the weights a block keeps as one parameter (`[query|key|value]`,
    /// `[fc1|fc2]`: `Params::stacked_normal`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frozen: Vec<String>,
}

fn d_true() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub model: ModelConfig,
    pub data: DataConfig,
    pub train: TrainConfig,
}

impl ModelConfig {
    /// The frozen LM as `model.lm` names it (`minilm` when unset).
    pub fn lm_name(&self) -> String {
        self.lm.clone().unwrap_or_else(|| "minilm".into())
    }

    /// The ViT shape of the encoder or decoder with `depth` blocks.
    pub fn vit_shape(&self, depth: usize) -> super::vit::VitShape {
        super::vit::VitShape {
            width: self.width,
            depth,
            heads: self.heads,
            mlp_dim: self.mlp_dim,
            grid: self.image_size / self.patch_size,
            attn_ln_init: self.attn_ln_init.unwrap_or(1.0),
        }
    }
}

impl RunConfig {
    pub fn from_toml_str(text: &str, origin: &Path, overrides: &[String]) -> Result<Self> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| Error::file(origin, format!("invalid TOML: {e}")))?;
        for o in overrides {
            apply_override(&mut table, o)?;
        }
        // Deserialise from text so that errors point at the offending key and line; with
        // overrides, the text is the merged configuration.
        let (merged, what) = if overrides.is_empty() {
            (text.to_string(), "")
        } else {
            (
                toml::to_string(&table).map_err(|e| Error::Msg(e.to_string()))?,
                " (after the --set overrides)",
            )
        };
        let cfg: RunConfig = toml::from_str(&merged)
            .map_err(|e| Error::file(origin, format!("bad run configuration{what}: {e}")))?;
        cfg.validate(origin)?;
        Ok(cfg)
    }

    pub fn from_file(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::file(path, format!("cannot read the run configuration: {e}")))?;
        Self::from_toml_str(&text, path, overrides)
    }

    fn validate(&self, origin: &Path) -> Result<()> {
        let m = &self.model;
        let bad = |key: &str, msg: String| Err(Error::file(origin, format!("`{key}`: {msg}")));
        if m.patch_size == 0 || !m.image_size.is_multiple_of(m.patch_size) {
            return bad(
                "model.patch_size",
                format!(
                    "{} does not divide image_size {}",
                    m.patch_size, m.image_size
                ),
            );
        }
        if m.heads == 0 || !m.width.is_multiple_of(m.heads) {
            return bad(
                "model.heads",
                format!("{} does not divide width {}", m.heads, m.width),
            );
        }
        if !(0.0..1.0).contains(&m.mask_ratio) {
            return bad(
                "model.mask_ratio",
                format!("{} is not in [0, 1)", m.mask_ratio),
            );
        }
        if m.kind == ModelKind::Lqae && m.lm.is_none() {
            return bad(
                "model.lm",
                "an LQAE needs a frozen language model (an asset name like `minilm` or a folder)"
                    .into(),
            );
        }
        if self.train.batch_size == 0 || self.train.steps == 0 {
            return bad("train.batch_size/steps", "must be at least 1".into());
        }
        if self.train.ckpt_every == 0 || self.train.log_every == 0 {
            return bad("train.ckpt_every/log_every", "must be at least 1".into());
        }
        Ok(())
    }

    pub fn tokens_per_image(&self) -> usize {
        (self.model.image_size / self.model.patch_size).pow(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
name = "t"
[model]
kind = "lqae"
image_size = 32
patch_size = 4
width = 16
enc_depth = 1
dec_depth = 1
heads = 2
mlp_dim = 32
lm = "minilm"
commitment = 0.01
[data]
dataset = "fashion-mnist"
[train]
batch_size = 4
steps = 10
warmup_steps = 2
lr = 1e-3
"#;

    #[test]
    fn parses_overrides_and_rejects_bad_keys() {
        let p = Path::new("x.toml");
        let c = RunConfig::from_toml_str(
            BASE,
            p,
            &[
                "train.steps=99".into(),
                "data.limit=5".into(),
                "model.mlm=\"tied\"".into(),
            ],
        )
        .unwrap();
        assert_eq!(
            (c.train.steps, c.data.limit, c.model.mlm),
            (99, Some(5), MlmMode::Tied)
        );
        assert_eq!(c.train.beta2, 0.95);
        let e = RunConfig::from_toml_str(BASE, p, &["train.stepz=1".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.toml") && e.contains("stepz"), "{e}");
        let e = RunConfig::from_toml_str(BASE, p, &["model.patch_size=5".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("model.patch_size"), "{e}");
        let e = RunConfig::from_toml_str(BASE, p, &["train.lr=\"fast\"".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("lr"), "{e}");
    }
}
