//! Layers shared by the frozen LM and the ViT whose every op has a backward pass (candle's
//! fused LayerNorm and `softmax_last_dim` have none): the fused kernels of `crate::kernels`
//! on the CPU, their primitive-op forms elsewhere.

use candle_core::{Module, Result, Tensor};

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

    /// `r + self.forward(x)`, the addition fused into the kernel on the CPU
    /// ([`crate::kernels::layer_norm_plus`]).
    pub fn forward_plus(&self, x: &Tensor, r: &Tensor) -> Result<Tensor> {
        crate::kernels::layer_norm_plus(x, &self.weight, &self.bias, r, self.eps)
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::kernels::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}
