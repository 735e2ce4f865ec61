//! Language-codebook quantizer: each vector goes to the nearest row of the frozen LM's
//! word-embedding table by cosine similarity, exactly, over the **whole** vocabulary.
//!
//! The search works on tiles of `tokens x codes` no larger than `max_block_elems`, keeping a
//! running best per token, so the `N x V` similarity matrix is never held at once. The
//! codebook is normalised once at construction (it is frozen). The inputs are not normalised:
//! a positive scale of a row does not change its arg-max. Ties go to the lowest id.
//!
//! On the CPU the search is fused: each thread takes a slice of the vocabulary, fills a
//! cache-sized tile of similarities with one `gemm` call against a transposed copy of the
//! normalised codebook, and folds it into a running arg-max at once; no per-call `N x V`
//! allocation and no single-threaded arg-max pass. Other devices use candle ops tile by tile.
//!
//! **Ties are settled exactly** ([`SEARCH_RULE`]): an f32 product's last bits depend on the BLAS,
//! the thread count and how the product is split, so two codes whose cosines differ by less than
//! that rounding could swap places between machines. Every code whose f32 similarity lies within
//! [`TIE_MARGIN`] (in cosine units, times the input's norm) of the best is re-scored in f64 over
//! the stored normalised vectors, in one fixed order, and the f64 best wins, the lowest id on an
//! exact tie. The margin is about 8x the worst-case f32 error of a 1,024-long dot product of unit
//! vectors (`2 * 1024 * 2^-24`), so the exact best is always among the candidates and the same
//! input gives the same ids under every backend, thread count and tiling.
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
    /// Use the fused CPU kernel when the codebook is on the CPU (default). Off: candle ops
    /// tile by tile, the path every other device takes.
    pub fused_cpu: bool,
    /// Straight-through and commitment on the unit sphere: the input is L2-normalised and
    /// scaled to its code's norm before `q = x' + stopgrad(e - x')` and the commitment
    /// `beta * mean((stopgrad(e) - x')^2)`, so only the input's direction (what the cosine
    /// search sees) is trained and its norm cannot run away. Off (default): the raw input, as the
    /// official code.
    pub sphere: bool,
    /// The tie margin in cosine units (default [`TIE_MARGIN`]); 0 turns the f64 re-scoring off
    /// for everything but equal f32 scores (the bench's plain search).
    pub tie_margin: f32,
}

/// Codes within this cosine of the f32 best are re-scored in f64.
pub const TIE_MARGIN: f32 = 1e-3;
/// The largest margin allowed: each code within it costs an f64 dot product per token.
pub const MAX_TIE_MARGIN: f32 = 1e-2;

/// The code-search rule, as results record it.
pub const SEARCH_RULE: &str = "nearest normalised codebook row by cosine over the whole vocabulary; codes within the margin (cosine) of the f32 best re-scored in f64 over the normalised vectors, highest wins, lowest id on an exact tie";

/// [`SEARCH_RULE`] and [`TIE_MARGIN`] as a result's `extra.code_search`.
pub fn search_rule() -> serde_json::Value {
    serde_json::json!({ "rule": SEARCH_RULE, "margin": TIE_MARGIN })
}

impl Default for QuantizerConfig {
    fn default() -> Self {
        Self {
            beta: 0.01,
            max_block_elems: 1 << 22,
            fused_cpu: true,
            sphere: false,
            tie_margin: TIE_MARGIN,
        }
    }
}

pub struct Quantizer {
    raw: Tensor,
    normed: Tensor,
    /// The normalised codebook transposed to `(D, V)`, row-major: the fused CPU kernel's
    /// operand (columns of one tile are contiguous in memory).
    normed_t_cpu: Option<Vec<f32>>,
    cfg: QuantizerConfig,
}

/// Every row (last axis) of `x` scaled to unit L2 norm (norms floored at 1e-12): the
/// codebook's form for the search, and the tokens' for cosine affinities.
pub fn l2_normalize_rows(x: &Tensor) -> candle_core::Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12f32, f32::MAX)?;
    x.broadcast_div(&norm)
}

/// Codes per tile column block of the fused kernel: 2048 x 256 tokens x 4 B = 2 MiB.
const CODE_TILE: usize = 2048;

/// The result of `Quantizer::quantize` for input `x` of shape `(..., D)`.
pub struct Quantized {
    /// Code ids, u32, shape `x.shape[..-1]`.
    pub ids: Tensor,
    /// The raw (un-normalised) codebook rows, shape of `x`, no gradient.
    pub codes: Tensor,
    /// `x + stopgrad(codes - x)`: equal to `codes` in value, the identity for gradients
    /// (with `sphere`, `x` normalised and scaled to its code's norm first).
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
        let (v, _d) = codebook
            .dims2()
            .map_err(|e| Error::Msg(format!("codebook must be (vocab, dim): {e}")))?;
        if v == 0 {
            return Err(Error::Msg("codebook is empty".into()));
        }
        if cfg.max_block_elems == 0 {
            return Err(Error::setting("max_block_elems", "must be at least 1"));
        }
        if !(0.0..=1.0).contains(&cfg.tie_margin) {
            return Err(Error::setting(
                "tie_margin",
                "must be in [0, 1] (cosine units)",
            ));
        }
        let raw = codebook.detach().to_dtype(DType::F32)?.contiguous()?;
        let normed = l2_normalize_rows(&raw)?.contiguous()?;
        let normed_t_cpu = if cfg.fused_cpu && raw.device().is_cpu() {
            Some(normed.t()?.contiguous()?.flatten_all()?.to_vec1::<f32>()?)
        } else {
            None
        };
        Ok(Self {
            raw,
            normed,
            normed_t_cpu,
            cfg,
        })
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
    /// The L2-normalised codebook `(V, D)` the search compares against.
    pub fn normed(&self) -> &Tensor {
        &self.normed
    }

    pub fn nearest(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.nearest_with_stats(x)?.0)
    }

    pub fn nearest_with_stats(&self, x: &Tensor) -> Result<(Tensor, SearchStats)> {
        let dims = x.dims().to_vec();
        let d = *dims
            .last()
            .ok_or_else(|| Error::Msg("quantizer input is a scalar".into()))?;
        if d != self.dim() {
            return Err(Error::Msg(format!(
                "quantizer input has width {d} but the codebook rows have {}; project the encoder output to the LM width",
                self.dim()
            )));
        }
        let n: usize = dims[..dims.len() - 1].iter().product();
        let x2 = x.detach().to_dtype(DType::F32)?.reshape((n, d))?;
        if let (Some(et), true) = (&self.normed_t_cpu, x.device().is_cpu()) {
            let xv = x2.flatten_all()?.to_vec1::<f32>()?;
            let (ids, stats) = self.nearest_fused_cpu(&xv, n, d, et)?;
            return Ok((
                Tensor::from_vec(ids, &dims[..dims.len() - 1], x.device())?,
                stats,
            ));
        }
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
                let idx = if c0 == 0 {
                    idx
                } else {
                    idx.broadcast_add(&Tensor::new(c0 as u32, x.device())?)?
                };
                best = Some(match best {
                    None => (val, idx),
                    // Strictly greater: on a tie the earlier chunk, hence the lower id, wins.
                    Some((bv, bi)) => {
                        let better = val.gt(&bv)?;
                        (better.where_cond(&val, &bv)?, better.where_cond(&idx, &bi)?)
                    }
                });
            }
            let (bv, bi) = best.expect("vocab is not empty");
            if !bv.sum_all()?.to_scalar::<f32>()?.is_finite() {
                return Err(Error::Msg(format!(
                    "quantizer input rows {t0}..{} include one with no finite similarity to any code (NaN or infinite values in the encoder output)",
                    t0 + tn
                )));
            }
            out.push(self.settle_on_device(&xt, &bv, bi, &mut stats)?);
        }
        let ids = if out.is_empty() {
            Tensor::zeros(0, DType::U32, x.device())?
        } else {
            Tensor::cat(&out, 0)?
        };
        Ok((ids.reshape(&dims[..dims.len() - 1])?, stats))
    }

    fn nearest_fused_cpu(
        &self,
        x: &[f32],
        n: usize,
        d: usize,
        et: &[f32],
    ) -> Result<(Vec<u32>, SearchStats)> {
        let v = self.vocab_size();
        let max_block = self.cfg.max_block_elems;
        let threads = crate::kernels::threads().min(max_block).min(v).max(1);
        let budget = (max_block / threads).max(1);
        let part = v.div_ceil(threads);
        let cv = part.min(CODE_TILE).min(budget);
        let nt = (budget / cv).max(1).min(n.max(1));
        let tols = tolerances(x, n, d, self.cfg.tie_margin);
        let tols = &tols;
        let per_thread: Vec<(Vec<Near>, usize)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (lo, hi) = (t * part, ((t + 1) * part).min(v));
                    s.spawn(move || search_slice(x, n, d, et, v, lo, hi, nt, cv, tols))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("quantizer worker panicked"))
                .collect()
        });
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let best = per_thread
                .iter()
                .map(|(near, _)| near[i].best)
                .fold(f32::NEG_INFINITY, f32::max);
            if !best.is_finite() {
                return Err(Error::Msg(format!(
                    "quantizer input row {i} has no finite similarity to any code (NaN or infinite values in the encoder output)"
                )));
            }
            if tols[i].is_nan() {
                // A zero input is as near to every code: the lowest id, as an exact tie.
                ids.push(0);
                continue;
            }
            let cands = per_thread.iter().flat_map(|(near, _)| &near[i].cands);
            let xi = &x[i * d..(i + 1) * d];
            let id = settle(best - tols[i], cands.copied(), |id| {
                exact_score(xi, |k| et[k * v + id as usize])
            });
            ids.push(id.expect("the best code is a candidate"));
        }
        let stats = SearchStats {
            peak_block_elems: threads.min(v.div_ceil(cv)) * nt.min(n) * cv,
            blocks: per_thread.iter().map(|(_, b)| b).sum(),
        };
        Ok((ids, stats))
    }

    /// The generic path's tie settling for one block of tokens `xt` `(tn, D)` with f32 best
    /// scores `bv` and ids `bi` `(tn, 1)`: a second pass over the tiles marks every code within
    /// the margin; the tokens with more than one are re-scored on the host.
    fn settle_on_device(
        &self,
        xt: &Tensor,
        bv: &Tensor,
        bi: Tensor,
        stats: &mut SearchStats,
    ) -> Result<Tensor> {
        let (tn, d) = xt.dims2()?;
        let v = self.vocab_size();
        let cv = v.min(self.cfg.max_block_elems);
        let xv = xt.flatten_all()?.to_vec1::<f32>()?;
        let tols = tolerances(&xv, tn, d, self.cfg.tie_margin);
        let thr: Vec<f32> = bv
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .zip(&tols)
            .map(|(b, t)| b - t)
            .collect();
        let thr_t = Tensor::from_vec(thr, (tn, 1), xt.device())?;
        // How many codes lie within the margin of each token's best: only counts come back.
        let mut counts = vec![0f32; tn];
        for c0 in (0..v).step_by(cv) {
            let cn = cv.min(v - c0);
            let sims = xt.matmul(&self.normed.narrow(0, c0, cn)?.t()?)?;
            stats.blocks += 1;
            let c = sims
                .broadcast_ge(&thr_t)?
                .to_dtype(DType::F32)?
                .sum(1)?
                .to_vec1::<f32>()?;
            counts.iter_mut().zip(c).for_each(|(a, b)| *a += b);
        }
        // A zero input is as near to every code: the lowest id, as an exact tie.
        let tied: Vec<u32> = (0..tn as u32)
            .filter(|&r| counts[r as usize] > 1.0 && !tols[r as usize].is_nan())
            .collect();
        if tied.is_empty() {
            return Ok(bi);
        }
        // The few tied tokens: their candidates' ids, then the exact scores on the host.
        let sel = Tensor::new(tied.as_slice(), xt.device())?;
        let (xs, ts) = (xt.index_select(&sel, 0)?, thr_t.index_select(&sel, 0)?);
        let mut cands: Vec<Vec<u32>> = vec![Vec::new(); tied.len()];
        for c0 in (0..v).step_by(cv) {
            let cn = cv.min(v - c0);
            let near = xs
                .matmul(&self.normed.narrow(0, c0, cn)?.t()?)?
                .broadcast_ge(&ts)?
                .to_vec2::<u8>()?;
            for (c, row) in cands.iter_mut().zip(near) {
                c.extend((0..cn).filter(|&j| row[j] != 0).map(|j| (c0 + j) as u32));
            }
        }
        let mut ids = bi.flatten_all()?.to_vec1::<u32>()?;
        for (&r, list) in tied.iter().zip(&cands) {
            let rows = self
                .normed
                .index_select(&Tensor::new(list.as_slice(), xt.device())?, 0)?
                .to_vec2::<f32>()?;
            let xi = &xv[r as usize * d..(r as usize + 1) * d];
            let scored = list
                .iter()
                .zip(&rows)
                .map(|(&id, row)| (id, exact_score(xi, |k| row[k])));
            ids[r as usize] = best_exact(scored).expect("the best code is a candidate");
        }
        Ok(Tensor::from_vec(ids, (tn, 1), xt.device())?)
    }

    /// Quantize `x` `(..., D)`: ids, raw codes, straight-through output and commitment loss.
    pub fn quantize(&self, x: &Tensor) -> Result<Quantized> {
        let ids = self.nearest(x)?;
        let codes = self.lookup(&ids)?;
        let mut x32 = x.to_dtype(DType::F32)?;
        if self.cfg.sphere {
            let code_norm = codes.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
            x32 = l2_normalize_rows(&x32)?.broadcast_mul(&code_norm)?;
        }
        let straight_through = (&x32 + (&codes - &x32)?.detach())?;
        let commit_loss = ((codes.detach() - &x32)?.sqr()?.mean_all()? * self.cfg.beta)?;
        Ok(Quantized {
            ids,
            codes,
            straight_through,
            commit_loss,
        })
    }

    /// Raw codebook rows for `ids` of any shape -> `ids.shape + (D,)`.
    pub fn lookup(&self, ids: &Tensor) -> Result<Tensor> {
        let mut shape = ids.dims().to_vec();
        shape.push(self.dim());
        Ok(self
            .raw
            .index_select(&ids.flatten_all()?, 0)?
            .reshape(shape)?)
    }
}

/// One token's search over part of the vocabulary: the best f32 similarity and every code
/// within the tolerance of it (pruned as the best rises).
#[derive(Debug, Clone)]
struct Near {
    best: f32,
    cands: Vec<(f32, u32)>,
}

impl Near {
    /// Fold one tile row (codes `c0..c0 + row.len()`) in.
    fn fold(&mut self, row: &[f32], c0: usize, tol: f32) {
        let m = row_max(row);
        if m < self.best - tol {
            return;
        }
        if m > self.best {
            self.best = m;
            let th = m - tol;
            self.cands.retain(|c| c.0 >= th);
        }
        let th = self.best - tol;
        for (j, &s) in row.iter().enumerate() {
            if s >= th {
                self.cands.push((s, (c0 + j) as u32));
            }
        }
    }
}

/// Each token's tolerance in the unnormalised similarity: the margin times the input's norm;
/// NaN for a zero input (every similarity is 0: no candidate is kept, and the search gives
/// the lowest id).
fn tolerances(x: &[f32], n: usize, d: usize, margin: f32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let s: f64 = x[i * d..(i + 1) * d]
                .iter()
                .map(|&v| v as f64 * v as f64)
                .sum();
            if s == 0.0 {
                f32::NAN
            } else {
                (s.sqrt() * margin as f64) as f32
            }
        })
        .collect()
}

/// The dot product of `x` with one normalised code (its element `k` from `code(k)`), in f64,
/// summed in index order: the same number on every machine.
fn exact_score(x: &[f32], code: impl Fn(usize) -> f32) -> f64 {
    x.iter()
        .enumerate()
        .map(|(k, &v)| v as f64 * code(k) as f64)
        .sum()
}

/// The id among the candidates at or above `threshold` (f32) with the highest exact score, the
/// lowest id on an exact tie; one candidate is taken as it is. `None` only for no candidate.
fn settle(
    threshold: f32,
    cands: impl Iterator<Item = (f32, u32)>,
    exact: impl Fn(u32) -> f64,
) -> Option<u32> {
    // Threads search disjoint id ranges and fold each code once: no id repeats.
    let near: Vec<u32> = cands.filter(|c| c.0 >= threshold).map(|c| c.1).collect();
    if near.len() == 1 {
        return Some(near[0]);
    }
    best_exact(near.into_iter().map(|id| (id, exact(id))))
}

/// The highest exact score's id, the lowest id on an exact tie (ids in any order).
fn best_exact(scored: impl Iterator<Item = (u32, f64)>) -> Option<u32> {
    scored
        .fold(None, |best: Option<(u32, f64)>, (id, s)| match best {
            Some((bid, bs)) if bs > s || (bs == s && bid < id) => Some((bid, bs)),
            _ => Some((id, s)),
        })
        .map(|b| b.0)
}

/// Each token's [`Near`] over codes `lo..hi`, one `tn x cn` tile at a time.
#[allow(clippy::too_many_arguments)]
fn search_slice(
    x: &[f32],
    n: usize,
    d: usize,
    et: &[f32],
    v: usize,
    lo: usize,
    hi: usize,
    nt: usize,
    cv: usize,
    tols: &[f32],
) -> (Vec<Near>, usize) {
    let mut near = vec![
        Near {
            best: f32::NEG_INFINITY,
            cands: Vec::new()
        };
        n
    ];
    if lo >= hi || n == 0 {
        return (near, 0);
    }
    let mut tile = vec![0f32; nt * cv];
    let mut blocks = 0;
    for t0 in (0..n).step_by(nt) {
        let tn = nt.min(n - t0);
        for c0 in (lo..hi).step_by(cv) {
            let cn = cv.min(hi - c0);
            // SAFETY: all pointers stay inside their slices: x rows t0..t0+tn of width d,
            // et columns c0..c0+cn of its d rows of length v, tile rows of length cn.
            unsafe {
                crate::kernels::blas::sgemm(
                    tn,
                    cn,
                    d,
                    tile.as_mut_ptr(),
                    cn,
                    false,
                    x.as_ptr().add(t0 * d),
                    (d, 1),
                    et.as_ptr().add(c0),
                    (v, 1),
                    0.0,
                    1.0,
                    crate::kernels::blas::Par::None,
                );
            }
            blocks += 1;
            for r in 0..tn {
                near[t0 + r].fold(&tile[r * cn..(r + 1) * cn], c0, tols[t0 + r]);
            }
        }
    }
    (near, blocks)
}

/// Maximum of a row (NaNs ignored), with independent lanes so the compiler vectorises it.
fn row_max(row: &[f32]) -> f32 {
    const L: usize = 16;
    let mut acc = [f32::NEG_INFINITY; L];
    let mut chunks = row.chunks_exact(L);
    for c in &mut chunks {
        for k in 0..L {
            acc[k] = if c[k] > acc[k] { c[k] } else { acc[k] };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &s in acc.iter().chain(chunks.remainder()) {
        if s > m {
            m = s;
        }
    }
    m
}
