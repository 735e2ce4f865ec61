//! The ViT of the official LQAE code: patch convolution (no bias) + learned position
//! embedding, then blocks of `x + LN(Attn(LN(x)))` (NormFormer-style LayerNorm after
//! attention, projections without bias) and `x + GLU(x)` where the GLU is
//! `LN -> gelu_tanh(fc1 x) * fc2 x -> depthwise 3x3 conv over the token grid -> LN -> fc_out`.
//! No final LayerNorm. Dense, conv and position weights start as N(0, 0.02), as in the
//! original. The patch convolutions are written as matrix products over flattened patches.

use super::params::Params;
use crate::nn::LayerNorm;
use candle_core::{Module, Result, Tensor};

const LN_EPS: f64 = 1e-5;
const INIT_STD: f64 = 0.02;

fn layer_norm(p: &Params, width: usize) -> Result<LayerNorm> {
    layer_norm_scaled(p, width, 1.0)
}

/// A LayerNorm whose scale starts at `scale` (1 everywhere in the official ViT).
fn layer_norm_scaled(p: &Params, width: usize, scale: f64) -> Result<LayerNorm> {
    Ok(LayerNorm::new(
        p.full("scale", width, scale)?,
        p.zeros("bias", width)?,
        LN_EPS,
    ))
}

/// `x @ w` for `x` `(b, t, i)` and `w` `(i, o)`, as one 2-D product (see
/// `crate::kernels::dense`): a broadcast batched product would materialise a `(b, i, o)`
/// weight gradient in the backward pass.
pub fn dense(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    crate::kernels::dense(x, w)
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VitShape {
    pub width: usize,
    pub depth: usize,
    pub heads: usize,
    pub mlp_dim: usize,
    /// Tokens per side of the square grid.
    pub grid: usize,
    /// Initial scale of the LayerNorm after attention (1 in the official block).
    #[serde(default = "one")]
    pub attn_ln_init: f64,
}

struct Attention {
    /// `[query | key | value]`, one stacked parameter (`Params::stacked_normal`).
    qkv: Tensor,
    o: Tensor,
    heads: usize,
}

impl Attention {
    fn new(p: &Params, s: &VitShape) -> Result<Self> {
        let w = s.width;
        Ok(Self {
            qkv: p.stacked_normal(&[("query", w), ("key", w), ("value", w)], w, INIT_STD)?,
            o: p.normal("out", (w, w), INIT_STD)?,
            heads: s.heads,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // One product for queries, keys and values, then fused attention over the packed result.
        let qkv = dense(x, &self.qkv)?;
        dense(
            &crate::kernels::attention_qkv(&qkv, self.heads, None)?,
            &self.o,
        )
    }
}

struct Glu {
    ln0: LayerNorm,
    /// `[fc1 | fc2]`, one stacked parameter.
    fc12: Tensor,
    /// Depthwise 3x3 kernel, `(9, mlp_dim)`: row `3 * dy + dx`.
    dwconv: Tensor,
    ln1: LayerNorm,
    fc_out: Tensor,
    grid: usize,
}

impl Glu {
    fn new(p: &Params, s: &VitShape) -> Result<Self> {
        Ok(Self {
            ln0: layer_norm(&p.pp("layernorm_0"), s.width)?,
            fc12: p.stacked_normal(&[("fc1", s.mlp_dim), ("fc2", s.mlp_dim)], s.width, INIT_STD)?,
            dwconv: p.normal("mid_ffn_conv", (9, s.mlp_dim), INIT_STD)?,
            ln1: layer_norm(&p.pp("layernorm_1"), s.mlp_dim)?,
            fc_out: p.normal("fc_out", (s.mlp_dim, s.width), INIT_STD)?,
            grid: s.grid,
        })
    }

    /// 3x3 depthwise convolution with zero ("SAME") padding over the `grid x grid` tokens.
    fn depthwise(&self, h: &Tensor) -> Result<Tensor> {
        crate::kernels::depthwise3x3(h, &self.dwconv, self.grid, || self.depthwise_ops(h))
    }

    /// The same convolution from primitive ops (other devices, and the kernel's tests).
    fn depthwise_ops(&self, h: &Tensor) -> Result<Tensor> {
        let (b, t, c) = h.dims3()?;
        let g = self.grid;
        let padded = h
            .reshape((b, g, g, c))?
            .pad_with_zeros(1, 1, 1)?
            .pad_with_zeros(2, 1, 1)?;
        let mut out: Option<Tensor> = None;
        for dy in 0..3 {
            for dx in 0..3 {
                let tap = padded
                    .narrow(1, dy, g)?
                    .narrow(2, dx, g)?
                    .broadcast_mul(&self.dwconv.get(3 * dy + dx)?)?;
                out = Some(match out {
                    None => tap,
                    Some(o) => (o + tap)?,
                });
            }
        }
        out.expect("nine taps").reshape((b, t, c))
    }

    /// `x + glu(x)`: the residual added by the last product's tasks.
    fn forward_plus(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.ln0.forward(x)?;
        // One product with [fc1 | fc2], then gelu(a) * b in one pass.
        let ab = dense(&h, &self.fc12)?;
        let gated = crate::kernels::gated_gelu(&ab)?;
        let h = self.ln1.forward(&self.depthwise(&gated)?)?;
        crate::kernels::dense_plus(&h, &self.fc_out, x)
    }
}

struct Block {
    ln_pre: LayerNorm,
    attn: Attention,
    ln_post: LayerNorm,
    glu: Glu,
}

impl Block {
    fn new(p: &Params, s: &VitShape) -> Result<Self> {
        Ok(Self {
            ln_pre: layer_norm(&p.pp("ln_pre"), s.width)?,
            attn: Attention::new(&p.pp("attention"), s)?,
            ln_post: layer_norm_scaled(&p.pp("ln_post"), s.width, s.attn_ln_init)?,
            glu: Glu::new(&p.pp("glu"), s)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = self
            .ln_post
            .forward_plus(&self.attn.forward(&self.ln_pre.forward(x)?)?, x)?;
        self.glu.forward_plus(&x)
    }
}

/// Position embedding + blocks; returns the output and every block's output.
pub struct Transformer {
    pos: Tensor,
    blocks: Vec<Block>,
}

impl Transformer {
    pub fn new(p: &Params, s: &VitShape) -> Result<Self> {
        let pos = p.normal("pos_embedding", (s.grid * s.grid, s.width), INIT_STD)?;
        let blocks = (0..s.depth)
            .map(|i| Block::new(&p.pp(&format!("block{i}")), s))
            .collect::<Result<_>>()?;
        Ok(Self { pos, blocks })
    }

    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
        let mut h = crate::kernels::add_items(x, &self.pos)?;
        let mut outs = Vec::with_capacity(self.blocks.len());
        for b in &self.blocks {
            h = b.forward(&h)?;
            outs.push(h.clone());
        }
        Ok((h, outs))
    }
}

/// `(b, c, s, s)` images -> `(b, (s/p)^2, c*p*p)` flattened patches, raster order.
pub fn patchify(img: &Tensor, p: usize) -> Result<Tensor> {
    let (b, c, h, w) = img.dims4()?;
    let (gh, gw) = (h / p, w / p);
    img.reshape((b, c, gh, p, gw, p))?
        .permute((0, 2, 4, 1, 3, 5))?
        .reshape((b, gh * gw, c * p * p))
}

/// Inverse of `patchify`.
pub fn unpatchify(x: &Tensor, p: usize, c: usize) -> Result<Tensor> {
    let (b, t, _) = x.dims3()?;
    let g = (t as f64).sqrt() as usize;
    x.reshape((b, g, g, c, p, p))?
        .permute((0, 3, 1, 4, 2, 5))?
        .reshape((b, c, g * p, g * p))
}

pub struct VitEncoder {
    patch: Tensor,
    patch_size: usize,
    transformer: Transformer,
}

impl VitEncoder {
    pub fn new(p: &Params, s: &VitShape, patch_size: usize, channels: usize) -> Result<Self> {
        Ok(Self {
            patch: p.normal(
                "patch_embeds",
                (channels * patch_size * patch_size, s.width),
                INIT_STD,
            )?,
            patch_size,
            transformer: Transformer::new(p, s)?,
        })
    }

    /// Images `(b, c, s, s)` in [0, 1] -> tokens `(b, t, width)` and every block's output.
    pub fn forward(&self, img: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
        self.transformer
            .forward(&dense(&patchify(img, self.patch_size)?, &self.patch)?)
    }
}

pub struct VitDecoder {
    transformer: Transformer,
    out_w: Tensor,
    out_b: Tensor,
    patch_size: usize,
    channels: usize,
}

impl VitDecoder {
    pub fn new(p: &Params, s: &VitShape, patch_size: usize, channels: usize) -> Result<Self> {
        Ok(Self {
            transformer: Transformer::new(p, s)?,
            out_w: p.normal(
                "deconv.kernel",
                (s.width, channels * patch_size * patch_size),
                INIT_STD,
            )?,
            out_b: p.zeros("deconv.bias", (channels, 1))?,
            patch_size,
            channels,
        })
    }

    /// Tokens `(b, t, width)` -> images `(b, c, s, s)` (no output activation).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (h, _) = self.transformer.forward(x)?;
        let (b, t, _) = h.dims3()?;
        let pp = self.patch_size * self.patch_size;
        let y = dense(&h, &self.out_w)?
            .reshape((b, t, self.channels, pp))?
            .broadcast_add(&self.out_b)?;
        unpatchify(
            &y.reshape((b, t, self.channels * pp))?,
            self.patch_size,
            self.channels,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn patchify_round_trips_and_orders_raster() {
        let img = Tensor::arange(0f32, 2. * 3. * 8. * 8., &Device::Cpu)
            .unwrap()
            .reshape((2, 3, 8, 8))
            .unwrap();
        let p = patchify(&img, 4).unwrap();
        assert_eq!(p.dims(), &[2, 4, 48]);
        // Token 1 is the top-right patch: channel 0, row 0, columns 4..8 come first.
        let first: Vec<f32> = p
            .get(0)
            .unwrap()
            .get(1)
            .unwrap()
            .narrow(0, 0, 4)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(first, vec![4., 5., 6., 7.]);
        let back = unpatchify(&p, 4, 3).unwrap();
        assert_eq!(
            back.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            img.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }

    #[test]
    fn depthwise_conv_matches_direct_sum() {
        let p = Params::new(1, &Device::Cpu);
        let s = VitShape {
            attn_ln_init: 1.0,
            width: 4,
            depth: 1,
            heads: 2,
            mlp_dim: 3,
            grid: 3,
        };
        let glu = Glu::new(&p, &s).unwrap();
        let h = Tensor::arange(0f32, 27., &Device::Cpu)
            .unwrap()
            .reshape((1, 9, 3))
            .unwrap();
        let out: Vec<Vec<f32>> = glu
            .depthwise(&h)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2()
            .unwrap();
        let k: Vec<Vec<f32>> = glu.dwconv.to_vec2().unwrap();
        let hv: Vec<Vec<f32>> = h.squeeze(0).unwrap().to_vec2().unwrap();
        for y in 0..3i32 {
            for x in 0..3i32 {
                for c in 0..3 {
                    let mut want = 0f32;
                    for dy in 0..3i32 {
                        for dx in 0..3i32 {
                            let (sy, sx) = (y + dy - 1, x + dx - 1);
                            if (0..3).contains(&sy) && (0..3).contains(&sx) {
                                want +=
                                    hv[(sy * 3 + sx) as usize][c] * k[(dy * 3 + dx) as usize][c];
                            }
                        }
                    }
                    let got = out[(y * 3 + x) as usize][c];
                    assert!((got - want).abs() < 1e-5, "({y},{x},{c}): {got} vs {want}");
                }
            }
        }
    }

    #[test]
    fn fused_depthwise_conv_matches_primitive_ops_with_gradients() {
        let p = Params::new(3, &Device::Cpu);
        let s = VitShape {
            attn_ln_init: 1.0,
            width: 4,
            depth: 1,
            heads: 2,
            mlp_dim: 5,
            grid: 4,
        };
        let glu = Glu::new(&p, &s).unwrap();
        let h =
            Var::from_tensor(&crate::rng::uniform_tensor(&[3, 16, 5], 4, &Device::Cpu).unwrap())
                .unwrap();
        crate::kernels::tests::same(
            &[h.as_tensor(), &glu.dwconv],
            || glu.depthwise(h.as_tensor()).unwrap(),
            || glu.depthwise_ops(h.as_tensor()).unwrap(),
            1e-5,
        );
    }

    #[test]
    fn encoder_gradient_reaches_the_patch_embedding() {
        let p = Params::new(2, &Device::Cpu);
        let s = VitShape {
            attn_ln_init: 1.0,
            width: 8,
            depth: 2,
            heads: 2,
            mlp_dim: 16,
            grid: 2,
        };
        let enc = VitEncoder::new(&p.pp("encoder"), &s, 4, 3).unwrap();
        let img = Var::from_tensor(
            &Tensor::ones((1, 3, 8, 8), candle_core::DType::F32, &Device::Cpu).unwrap(),
        )
        .unwrap();
        let (y, outs) = enc.forward(img.as_tensor()).unwrap();
        assert_eq!(outs.len(), 2);
        let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        for (name, v) in p.named_vars() {
            let gv = g
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {name}"));
            let n = gv
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                n > 0.0 || name.ends_with("bias"),
                "zero gradient for {name}"
            );
        }
    }
}
