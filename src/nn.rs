//! Layers shared by the frozen LM and the ViT, built from primitive candle ops so that every
//! one has a backward pass (candle's fused LayerNorm and `softmax_last_dim` have none).

use candle_core::{Module, Result, Tensor, D};

#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn new(weight: Tensor, bias: Tensor, eps: f64) -> Self {
        Self { weight, bias, eps }
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::kernels::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

/// LayerNorm from primitive ops (other devices than the CPU, and the kernels' tests).
pub fn layer_norm_ops(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let xn = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    xn.broadcast_mul(weight)?.broadcast_add(bias)
}

/// Scaled dot-product attention over `(b, heads, s, d)` tensors, with an optional additive mask.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    additive_mask: Option<&Tensor>,
) -> Result<Tensor> {
    let d = q.dim(D::Minus1)?;
    let mut scores = (q.matmul(&k.t()?)? / (d as f64).sqrt())?;
    if let Some(m) = additive_mask {
        scores = scores.broadcast_add(m)?;
    }
    crate::kernels::softmax_last(&scores)?.matmul(v)
}
