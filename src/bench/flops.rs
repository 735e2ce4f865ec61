//! FLOP models (matrix products, counted as two operations per multiply-add) of the timed
//! kernels, against which their rates and shares of the machine's sgemm rate are reported.

use crate::model::RunConfig;

/// Matmul FLOPs of a BERT-style encoder forward over `b` sequences of `t` tokens.
pub fn lm_flop(b: usize, t: usize, h: usize, inter: usize, layers: usize) -> f64 {
    let (b, t, h, i) = (b as f64, t as f64, h as f64, inter as f64);
    layers as f64 * (8.0 * b * t * h * h + 4.0 * b * t * t * h + 4.0 * b * t * h * i)
}

/// Matmul FLOPs of one ViT block forward (attention + GLU; the depthwise conv is not a matmul).
pub fn vit_block_flop(b: usize, t: usize, w: usize, mlp: usize) -> f64 {
    let (b, t, w, m) = (b as f64, t as f64, w as f64, mlp as f64);
    8.0 * b * t * w * w + 4.0 * b * t * t * w + 6.0 * b * t * w * m
}

/// Matmul FLOPs of one `lqae-small` training step at batch `b` (model count): encoder and
/// decoder forward + backward (3x), the search (forward only), the frozen LM forward and its
/// input gradient (2x: its weights get none), and the tied MLM head where the model has one.
pub fn train_step_flop(
    cfg: &RunConfig,
    lm_h: usize,
    lm_i: usize,
    lm_layers: usize,
    vocab: usize,
    b: usize,
) -> f64 {
    let m = &cfg.model;
    let g = m.image_size / m.patch_size;
    let t = g * g;
    let patch = m.channels * m.patch_size * m.patch_size;
    let bt = (b * t) as f64;
    let (w, h) = (m.width as f64, lm_h as f64);
    let blocks = (m.enc_depth + m.dec_depth) as f64 * vit_block_flop(b, t, m.width, m.mlp_dim);
    let proj = if m.width != lm_h {
        2.0 * 2.0 * bt * w * h
    } else {
        0.0
    };
    let patches = 2.0 * 2.0 * bt * patch as f64 * w;
    // The tied MLM head on the masked tokens: logits forward and their input gradient.
    let mlm = if m.kind == crate::model::ModelKind::Lqae && m.mlm == crate::model::MlmMode::Tied {
        2.0 * 2.0 * bt * m.mask_ratio * vocab as f64 * h
    } else {
        0.0
    };
    3.0 * (blocks + proj + patches)
        + 2.0 * bt * vocab as f64 * h
        + 2.0 * lm_flop(b, t, lm_h, lm_i, lm_layers)
        + mlm
}
