//! Language-codebook quantizer: each vector goes to the nearest row of the frozen LM's
//! word-embedding table by cosine similarity, exactly, over the **whole** vocabulary.
//!
//! The search works on tiles of `tokens x codes` no larger than `max_block_elems`, keeping a
//! running best per token, so the `N x V` similarity matrix is never held at once. The
//! codebook is normalised once at construction (it is frozen). The inputs are not normalised:
//! a positive scale of a row does not change its arg-max. Ties go to the lowest id.
//!
//! What passes on is the **raw** embedding row, through the straight-through estimator
//! `q = x + stopgrad(e - x)`, with the commitment loss `beta * mean((stopgrad(e) - x)^2)`.

use crate::error::{Error, Result};
use candle_core::{DType, Tensor, D};

#[derive(Debug, Clone, Copy)]
pub struct QuantizerConfig {
    /// Commitment weight. Default 0.01, the official code's effective value (0.005 counted twice).
    pub beta: f64,
    /// Largest similarity tile held at once, in elements. Default 4M (16 MiB of f32).
    pub max_block_elems: usize,
}

impl Default for QuantizerConfig {
    fn default() -> Self {
        Self { beta: 0.01, max_block_elems: 1 << 22 }
    }
}

pub struct Quantizer {
    raw: Tensor,
    normed: Tensor,
    cfg: QuantizerConfig,
}

/// The result of `Quantizer::quantize` for input `x` of shape `(..., D)`.
pub struct Quantized {
    /// Code ids, u32, shape `x.shape[..-1]`.
    pub ids: Tensor,
    /// The raw (un-normalised) codebook rows, shape of `x`, no gradient.
    pub codes: Tensor,
    /// `x + stopgrad(codes - x)`: equal to `codes` in value, the identity for gradients.
    pub straight_through: Tensor,
    /// `beta * mean((stopgrad(codes) - x)^2)`, a scalar.
    pub commit_loss: Tensor,
}

/// What the tiled search held, for tests and benches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SearchStats {
    pub peak_block_elems: usize,
    pub blocks: usize,
}

impl Quantizer {
    /// `codebook` `(V, D)`, e.g. `FrozenLm::word_embeddings()`. It is detached: it never learns.
    pub fn new(codebook: &Tensor, cfg: QuantizerConfig) -> Result<Self> {
        let (v, _d) = codebook.dims2().map_err(|e| Error::Msg(format!("codebook must be (vocab, dim): {e}")))?;
        if v == 0 {
            return Err(Error::Msg("codebook is empty".into()));
        }
        if cfg.max_block_elems == 0 {
            return Err(Error::setting("max_block_elems", "must be at least 1"));
        }
        let raw = codebook.detach().to_dtype(DType::F32)?.contiguous()?;
        let norm = raw.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12f32, f32::MAX)?;
        let normed = raw.broadcast_div(&norm)?.contiguous()?;
        Ok(Self { raw, normed, cfg })
    }

    pub fn codebook(&self) -> &Tensor {
        &self.raw
    }
    pub fn config(&self) -> &QuantizerConfig {
        &self.cfg
    }
    pub fn vocab_size(&self) -> usize {
        self.raw.dim(0).expect("2-D codebook")
    }
    pub fn dim(&self) -> usize {
        self.raw.dim(1).expect("2-D codebook")
    }

    /// Nearest code id for each vector of `x` `(..., D)`.
    pub fn nearest(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.nearest_with_stats(x)?.0)
    }

    pub fn nearest_with_stats(&self, x: &Tensor) -> Result<(Tensor, SearchStats)> {
        let dims = x.dims().to_vec();
        let d = *dims.last().ok_or_else(|| Error::Msg("quantizer input is a scalar".into()))?;
        if d != self.dim() {
            return Err(Error::Msg(format!(
                "quantizer input has width {d} but the codebook rows have {}; project the encoder output to the LM width",
                self.dim()
            )));
        }
        let n: usize = dims[..dims.len() - 1].iter().product();
        let x2 = x.detach().to_dtype(DType::F32)?.reshape((n, d))?;
        let v = self.vocab_size();
        let cv = v.min(self.cfg.max_block_elems);
        let nt = (self.cfg.max_block_elems / cv).max(1);
        let mut stats = SearchStats::default();
        let mut out = Vec::with_capacity(n.div_ceil(nt));
        for t0 in (0..n).step_by(nt) {
            let tn = nt.min(n - t0);
            let xt = x2.narrow(0, t0, tn)?;
            let mut best: Option<(Tensor, Tensor)> = None;
            for c0 in (0..v).step_by(cv) {
                let cn = cv.min(v - c0);
                let sims = xt.matmul(&self.normed.narrow(0, c0, cn)?.t()?)?;
                stats.peak_block_elems = stats.peak_block_elems.max(tn * cn);
                stats.blocks += 1;
                let idx = sims.argmax_keepdim(D::Minus1)?;
                let val = sims.gather(&idx, D::Minus1)?;
                drop(sims);
                let idx = if c0 == 0 { idx } else { idx.broadcast_add(&Tensor::new(c0 as u32, x.device())?)? };
                best = Some(match best {
                    None => (val, idx),
                    // Strictly greater: on a tie the earlier chunk, hence the lower id, wins.
                    Some((bv, bi)) => {
                        let better = val.gt(&bv)?;
                        (better.where_cond(&val, &bv)?, better.where_cond(&idx, &bi)?)
                    }
                });
            }
            out.push(best.expect("vocab is not empty").1);
        }
        let ids = if out.is_empty() { Tensor::zeros(0, DType::U32, x.device())? } else { Tensor::cat(&out, 0)? };
        Ok((ids.reshape(&dims[..dims.len() - 1])?, stats))
    }

    /// Quantize `x` `(..., D)`: ids, raw codes, straight-through output and commitment loss.
    pub fn quantize(&self, x: &Tensor) -> Result<Quantized> {
        let ids = self.nearest(x)?;
        let codes = self.lookup(&ids)?;
        let x32 = x.to_dtype(DType::F32)?;
        let straight_through = (&x32 + (&codes - &x32)?.detach())?;
        let commit_loss = ((codes.detach() - &x32)?.sqr()?.mean_all()? * self.cfg.beta)?;
        Ok(Quantized { ids, codes, straight_through, commit_loss })
    }

    /// Raw codebook rows for `ids` of any shape -> `ids.shape + (D,)`.
    pub fn lookup(&self, ids: &Tensor) -> Result<Tensor> {
        let mut shape = ids.dims().to_vec();
        shape.push(self.dim());
        Ok(self.raw.index_select(&ids.flatten_all()?, 0)?.reshape(shape)?)
    }
}
