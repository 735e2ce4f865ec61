//! A BERT/RoBERTa encoder in the candle-transformers style that, unlike candle's `BertModel`,
//! takes either token ids or **input embeddings** and returns **every hidden state**.
//!
//! Every operation here has a backward pass (see `crate::nn`), because candle's fused `LayerNorm`/`softmax_last_dim` silently stop
//! the gradient (candle #2977, #3011) and LQAE's encoder learns through this frozen model.
//! The weights are plain tensors (never `Var`s), so they get no gradient and never change.

use super::config::{HiddenAct, LmConfig};
use crate::nn::LayerNorm;
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

fn layer_norm(size: usize, eps: f64, vb: VarBuilder) -> Result<LayerNorm> {
    Ok(LayerNorm::new(
        vb.get(size, "weight")?,
        vb.get(size, "bias")?,
        eps,
    ))
}

/// A frozen linear layer `x @ w^T + b` (`w` `(out, in)`); see `crate::kernels::frozen_linear`.
#[derive(Debug, Clone)]
struct Linear {
    weight: Tensor,
    /// `weight^T` `(in, out)`, contiguous, on the CPU: the forward product's layout (see
    /// `crate::kernels::frozen_linear_t`).
    weight_t: Option<Tensor>,
    bias: Tensor,
    /// The weight packed by a vendor BLAS, where one that packs is in use (see
    /// `crate::kernels::FrozenPacks`).
    packs: std::sync::Arc<crate::kernels::FrozenPacks>,
}

impl Linear {
    fn new(weight: Tensor, bias: Tensor) -> Result<Self> {
        // Only where `frozen_linear_t` can take it (it falls back to `frozen_linear` else):
        // the copy is the linear weights' memory again.
        let weight_t = if crate::kernels::fused(&weight) && crate::kernels::blas::active().is_none()
        {
            // Detached: no gradient ever reaches a frozen weight (and candle's backward
            // needs one for every tracked intermediate).
            Some(weight.t()?.contiguous()?.detach())
        } else {
            None
        };
        Ok(Self {
            weight,
            weight_t,
            bias,
            packs: Default::default(),
        })
    }

    /// `self.forward(x) + r`, the addition done by the product's tasks where it can be
    /// (`crate::kernels::frozen_linear_plus`; the same bits as adding afterwards).
    fn forward_plus(&self, x: &Tensor, r: &Tensor) -> Result<Tensor> {
        match &self.weight_t {
            Some(_) => self.forward(x)? + r,
            None => crate::kernels::frozen_linear_plus(
                x,
                &self.weight,
                &self.bias,
                r,
                Some(&self.packs),
            ),
        }
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.weight_t {
            Some(wt) => crate::kernels::frozen_linear_t(x, &self.weight, wt, &self.bias),
            None => {
                crate::kernels::frozen_linear_packed(x, &self.weight, &self.bias, Some(&self.packs))
            }
        }
    }
}

fn linear(inp: usize, out: usize, vb: VarBuilder) -> Result<Linear> {
    let (weight, bias) = linear_tensors(inp, out, vb)?;
    Linear::new(weight, bias)
}

/// A linear layer's weight `(out, in)` and bias `(out)`, as stored.
fn linear_tensors(inp: usize, out: usize, vb: VarBuilder) -> Result<(Tensor, Tensor)> {
    Ok((vb.get((out, inp), "weight")?, vb.get(out, "bias")?))
}

#[derive(Debug, Clone)]
pub struct Embeddings {
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    token_type_embeddings: Tensor,
    layer_norm: LayerNorm,
    position_offset: usize,
}

impl Embeddings {
    pub fn new(cfg: &LmConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            word_embeddings: vb.get((cfg.vocab_size, cfg.hidden_size), "word_embeddings.weight")?,
            position_embeddings: vb.get(
                (cfg.max_position_embeddings, cfg.hidden_size),
                "position_embeddings.weight",
            )?,
            token_type_embeddings: vb.get(
                (cfg.type_vocab_size, cfg.hidden_size),
                "token_type_embeddings.weight",
            )?,
            layer_norm: layer_norm(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("LayerNorm"))?,
            position_offset: cfg.position_offset(),
        })
    }

    pub fn word_embeddings(&self) -> &Tensor {
        &self.word_embeddings
    }

    /// Input embeddings `(b, s, h)` + position `offset..offset+s` + token type 0, then LayerNorm.
    pub fn forward(&self, inputs_embeds: &Tensor) -> Result<Tensor> {
        let (_b, s, _h) = inputs_embeds.dims3()?;
        let max = self.position_embeddings.dim(0)?;
        if self.position_offset + s > max {
            candle_core::bail!(
                "sequence of {s} tokens is longer than the model allows ({} positions from offset {})",
                max - self.position_offset.min(max),
                self.position_offset
            );
        }
        let pos = self
            .position_embeddings
            .narrow(0, self.position_offset, s)?;
        let ty = self.token_type_embeddings.get(0)?;
        let x = inputs_embeds.broadcast_add(&pos)?.broadcast_add(&ty)?;
        self.layer_norm.forward(&x)
    }

    /// Word-embedding lookup of `ids` `(b, s)` -> `(b, s, h)`.
    pub fn lookup(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, s) = ids.dims2()?;
        let flat = self.word_embeddings.index_select(&ids.flatten_all()?, 0)?;
        flat.reshape((b, s, self.word_embeddings.dim(1)?))
    }
}

#[derive(Debug, Clone)]
struct SelfAttention {
    /// Query, key and value projections stacked: weight `(3h, h)`, bias `(3h)`.
    qkv: Linear,
    heads: usize,
}

impl SelfAttention {
    fn new(cfg: &LmConfig, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        // The parts as stored (no transposed copies of their own): only the stack is used.
        let [(wq, bq), (wk, bk), (wv, bv)] = [
            linear_tensors(h, h, vb.pp("query"))?,
            linear_tensors(h, h, vb.pp("key"))?,
            linear_tensors(h, h, vb.pp("value"))?,
        ];
        Ok(Self {
            qkv: Linear::new(
                Tensor::cat(&[&wq, &wk, &wv], 0)?,
                Tensor::cat(&[&bq, &bk, &bv], 0)?,
            )?,
            heads: cfg.num_attention_heads,
        })
    }

    fn forward(&self, x: &Tensor, additive_mask: Option<&Tensor>) -> Result<Tensor> {
        crate::kernels::attention_qkv(&self.qkv.forward(x)?, self.heads, additive_mask)
    }
}

#[derive(Debug, Clone)]
struct Layer {
    attention: SelfAttention,
    attention_output: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
    act: HiddenAct,
}

impl Layer {
    fn new(cfg: &LmConfig, vb: VarBuilder) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            attention: SelfAttention::new(cfg, vb.pp("attention.self"))?,
            attention_output: linear(h, h, vb.pp("attention.output.dense"))?,
            attention_norm: layer_norm(h, cfg.layer_norm_eps, vb.pp("attention.output.LayerNorm"))?,
            intermediate: linear(h, i, vb.pp("intermediate.dense"))?,
            output: linear(i, h, vb.pp("output.dense"))?,
            output_norm: layer_norm(h, cfg.layer_norm_eps, vb.pp("output.LayerNorm"))?,
            act: cfg.hidden_act,
        })
    }

    fn forward(&self, x: &Tensor, additive_mask: Option<&Tensor>) -> Result<Tensor> {
        let a = self.attention.forward(x, additive_mask)?;
        let x = self
            .attention_norm
            .forward(&self.attention_output.forward_plus(&a, x)?)?;
        let f = self.intermediate.forward(&x)?;
        let f = match self.act {
            HiddenAct::Gelu => crate::kernels::gelu_erf(&f)?,
            HiddenAct::GeluTanh => crate::kernels::gelu_tanh(&f)?,
            HiddenAct::Relu => f.relu()?,
        };
        self.output_norm.forward(&self.output.forward_plus(&f, &x)?)
    }
}

/// Embeddings + the layer stack. `forward_*` return `num_hidden_layers + 1` hidden states:
/// the embedding output first, then each layer's output, each `(b, s, h)`.
#[derive(Debug, Clone)]
pub struct Encoder {
    embeddings: Embeddings,
    layers: Vec<Layer>,
}

impl Encoder {
    /// `vb` points at the model root (the `bert.`/`roberta.` prefix already applied).
    pub fn new(cfg: &LmConfig, vb: VarBuilder) -> Result<Self> {
        let embeddings = Embeddings::new(cfg, vb.pp("embeddings"))?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::new(cfg, vb.pp(format!("encoder.layer.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { embeddings, layers })
    }

    pub fn embeddings(&self) -> &Embeddings {
        &self.embeddings
    }

    pub fn forward_ids(
        &self,
        ids: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<Vec<Tensor>> {
        self.forward_embeds(&self.embeddings.lookup(ids)?, attention_mask)
    }

    /// `inputs_embeds` `(b, s, h)`; `attention_mask` `(b, s)`, 1 for real tokens, 0 for padding.
    pub fn forward_embeds(
        &self,
        inputs_embeds: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<Vec<Tensor>> {
        let additive = match attention_mask {
            Some(m) => {
                let (b, s) = m.dims2()?;
                let m = m.to_dtype(inputs_embeds.dtype())?.reshape((b, 1, 1, s))?;
                // (1 - m) * most-negative, as Hugging Face does.
                Some(((m.ones_like()? - &m)? * f32::MIN as f64)?)
            }
            None => None,
        };
        let mut h = self.embeddings.forward(inputs_embeds)?;
        let mut states = Vec::with_capacity(self.layers.len() + 1);
        states.push(h.clone());
        for layer in &self.layers {
            h = layer.forward(&h, additive.as_ref())?;
            states.push(h.clone());
        }
        Ok(states)
    }
}
