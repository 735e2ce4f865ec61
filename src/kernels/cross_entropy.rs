//! Cross-entropy of logits against targets, one pass per row for the loss and one for its
//! gradient.

use super::*;

/// Mean cross-entropy of rows of logits against target classes, in one pass per row
/// (`logsumexp(row) - row[target]`), and its gradient `(softmax(row) - onehot) / n` in one more:
/// candle's `log_softmax` + gather makes about ten full-size temporaries of the `(n, V)` logits
/// forward and backward, which at the tied MLM head of the paper configuration (256 x 50265
/// logits a step, 51 MB each) cost as much as the two matmuls around them.
pub(crate) struct CrossEntropy {
    targets: std::sync::Arc<Vec<u32>>,
}
pub(crate) struct CrossEntropyBwd {
    targets: std::sync::Arc<Vec<u32>>,
    /// d loss / d (mean loss), times 1/n.
    scale: f32,
}

avx2_or_baseline! {
    /// `logsumexp` of a row: its maximum plus the log of the sum of `e^(x - max)`.
    fn row_logsumexp(x: &[f32], out: &mut f32) {
        let m = lane_max(x);
        let s = lane_sum(x, |v| fast_exp(v - m));
        *out = m + s.ln();
    }
}

avx2_or_baseline! {
    /// `o = scale * e^(x - lse)`: the softmax of the row times `scale`.
    fn row_scaled_softmax(x: &[f32], o: &mut [f32], lse: f32, scale: f32) {
        for i in 0..x.len() {
            o[i] = scale * fast_exp(x[i] - lse);
        }
    }
}

pub(crate) fn ce_rows(l: &Layout, targets: &[u32]) -> Result<(usize, usize)> {
    let (n, v) = match l.dims() {
        [n, v] => (*n, *v),
        d => candle_core::bail!("cross-entropy: logits must be (rows, classes), got {d:?}"),
    };
    if targets.len() != n {
        candle_core::bail!(
            "cross-entropy: {n} rows of logits but {} targets",
            targets.len()
        );
    }
    if let Some(t) = targets.iter().find(|&&t| t as usize >= v) {
        candle_core::bail!("cross-entropy: target class {t} is not below the {v} classes");
    }
    Ok((n, v))
}

impl CustomOp1 for CrossEntropy {
    fn name(&self) -> &'static str {
        "lqae-cross-entropy"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l, "cross-entropy")?;
        let (n, v) = ce_rows(l, &self.targets)?;
        let total: f64 = x
            .par_chunks(v)
            .zip(self.targets.par_iter())
            .map(|(row, &t)| {
                let mut lse = 0f32;
                row_logsumexp(row, &mut lse);
                (lse - row[t as usize]) as f64
            })
            .sum();
        Ok((
            storage(vec![(total / n.max(1) as f64) as f32]),
            Shape::from(()),
        ))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let n = arg.dim(0)?.max(1);
        let g = grad.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?;
        Ok(Some(arg.apply_op1_no_bwd(&CrossEntropyBwd {
            targets: self.targets.clone(),
            scale: g / n as f32,
        })?))
    }
}

impl CustomOp1 for CrossEntropyBwd {
    fn name(&self) -> &'static str {
        "lqae-cross-entropy-bwd"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l, "cross-entropy backward")?;
        let (_, v) = ce_rows(l, &self.targets)?;
        let mut dx: Vec<f32> = Vec::with_capacity(x.len());
        // SAFETY: every element is written below before the vector is read.
        #[allow(clippy::uninit_vec)]
        unsafe {
            dx.set_len(x.len())
        };
        dx.par_chunks_mut(v)
            .zip(x.par_chunks(v).zip(self.targets.par_iter()))
            .for_each(|(o, (row, &t))| {
                let mut lse = 0f32;
                row_logsumexp(row, &mut lse);
                row_scaled_softmax(row, o, lse, self.scale);
                o[t as usize] -= self.scale;
            });
        Ok((storage(dx), l.shape().clone()))
    }
}

/// Mean cross-entropy of `logits` `(n, classes)` against `targets` `(n,)` (u32 class ids), as
/// `candle_nn::loss::cross_entropy` computes it, with a gradient for the logits. Fused on CPU
/// f32 (see [`CrossEntropy`]); candle's ops elsewhere.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if fused(logits) {
        let t: Vec<u32> = targets
            .flatten_all()?
            .to_dtype(candle_core::DType::U32)?
            .to_vec1()?;
        logits.contiguous()?.apply_op1(CrossEntropy {
            targets: std::sync::Arc::new(t),
        })
    } else {
        candle_nn::loss::cross_entropy(logits, targets)
    }
}
