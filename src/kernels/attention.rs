//! Attention over packed QKV, per batch row and head (probabilities kept for the backward pass
//! up to a bound, else recomputed there), and its primitive-op reference form.

use super::*;

use super::blas::sgemm_small as mm;

avx2_or_baseline! {
    /// Softmax of each `s`-wide row of `p`, in place.
    fn softmax_rows(p: &mut [f32], s: usize) {
        for row in p.chunks_mut(s) {
            let m = lane_max(row);
            for v in row.iter_mut() {
                *v = fast_exp(*v - m);
            }
            let inv = 1.0 / lane_sum(row, |v| v);
            for v in row.iter_mut() {
                *v *= inv;
            }
        }
    }
}

/// One batch row and head's probabilities, `softmax(scale q k^T)`, into `p` (`s x s`, not
/// read before it is written): the forward pass's and, where not kept, the backward pass's.
///
/// # Safety
/// `q` and `k` address `s` rows of `dh` floats at row stride `3 d` (a packed `qkv`); `p`
/// addresses `s * s` floats that no other thread touches.
unsafe fn probabilities(
    p: *mut f32,
    q: *const f32,
    k: *const f32,
    s: usize,
    dh: usize,
    d: usize,
    scale: f32,
) {
    let w3 = 3 * d;
    mm(s, s, dh, p, s, q, (w3, 1), k, (1, w3), scale);
    // SAFETY: the product wrote all s * s elements.
    softmax_rows(std::slice::from_raw_parts_mut(p, s * s), s);
}

/// The most bytes of probabilities one attention op keeps for its backward pass (beyond, they
/// are recomputed there): the ViT block's and the LM's at `lqae-small`'s sizes are 1.5 and 3
/// MiB, the paper configuration's RoBERTa-base at batch 128 and 256 tokens 384 MiB per layer.
const KEEP_BYTES: usize = 16 << 20;

#[cfg(test)]
thread_local! {
    /// Tests only: backward passes on this thread that found the forward pass's probabilities.
    pub(crate) static KEPT_TAKEN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Self-attention over a packed `qkv` `(b, s, 3 * heads * dh)` (queries, keys, values side by
/// side, heads contiguous within each) -> `(b, s, heads * dh)`, no mask. One task per batch
/// row and head; the head split is never stored. The `s x s` probabilities are kept for the
/// backward pass when the input tracks gradients and they fit in [`KEEP_BYTES`] (their product
/// and softmax were a seventh of the attention's work there); otherwise they live in a
/// task-local buffer and the backward pass recomputes them, with the same bits.
pub(crate) struct Attention {
    heads: usize,
    /// The probabilities `(b, heads, s, s)`, when the forward pass keeps them.
    kept: Kept,
}
pub(crate) struct AttentionBwd {
    heads: usize,
    /// The forward pass's probabilities, or empty: recompute them.
    kept: Vec<f32>,
}

pub(crate) fn attn_dims(l: &Layout, heads: usize) -> Result<(usize, usize, usize, usize)> {
    let (b, s, w3) = l.shape().dims3()?;
    if heads == 0 || w3 % (3 * heads) != 0 {
        candle_core::bail!("attention: packed width {w3} is not 3 x {heads} heads");
    }
    Ok((b, s, w3 / 3, w3 / (3 * heads)))
}

impl CustomOp1 for Attention {
    fn name(&self) -> &'static str {
        "lqae-attention"
    }
    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let qkv = slice(st, l, "attention")?;
        let (b, s, d, dh) = attn_dims(l, self.heads)?;
        let scale = 1.0 / (dh as f32).sqrt();
        // Not zero-filled: the heads' products write every element without reading it.
        let mut out = Vec::<f32>::with_capacity(b * s * d);
        let op = SendPtr(out.as_mut_ptr());
        let heads = self.heads;
        let keep = self.kept.on();
        let mut kept = Vec::<f32>::with_capacity(if keep { b * heads * s * s } else { 0 });
        let kp = SendPtr(kept.as_mut_ptr());
        (0..b * heads).into_par_iter().for_each_init(
            || vec![0f32; if keep { 0 } else { s * s }],
            |p, task| {
                let (bi, h) = (task / heads, task % heads);
                let base = qkv[bi * s * 3 * d..].as_ptr();
                // SAFETY: q, k, v of head h are columns h*dh.. of the three thirds of batch
                // row bi (row stride 3d); this task alone writes columns h*dh.. of its rows,
                // and its own s x s block of the kept probabilities.
                unsafe {
                    let (q, k, v) = (
                        base.add(h * dh),
                        base.add(d + h * dh),
                        base.add(2 * d + h * dh),
                    );
                    let p = if keep {
                        kp.get().add(task * s * s)
                    } else {
                        p.as_mut_ptr()
                    };
                    probabilities(p, q, k, s, dh, d, scale);
                    let o = op.get().add(bi * s * d + h * dh);
                    mm(s, dh, s, o, d, p, (s, 1), v, (3 * d, 1), 1.0);
                }
            },
        );
        // SAFETY: the tasks cover every batch row and head: all rows and columns of `out`, and
        // every block of the kept probabilities.
        unsafe { out.set_len(b * s * d) };
        if keep {
            unsafe { kept.set_len(b * heads * s * s) };
            self.kept.put(kept);
        }
        Ok((storage(out), Shape::from((b, s, d))))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let kept = self.kept.take();
        #[cfg(test)]
        KEPT_TAKEN.with(|n| n.set(n.get() + usize::from(!kept.is_empty())));
        Ok(Some(arg.apply_op2_no_bwd(
            &grad.contiguous()?,
            &AttentionBwd {
                heads: self.heads,
                kept,
            },
        )?))
    }
}

impl CustomOp2 for AttentionBwd {
    fn name(&self) -> &'static str {
        "lqae-attention-bwd"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let qkv = slice(s1, l1, "attention backward")?;
        let go = slice(s2, l2, "attention backward")?;
        let (b, s, d, dh) = attn_dims(l1, self.heads)?;
        let scale = 1.0 / (dh as f32).sqrt();
        // Not zero-filled: dQ, dK and dV of every head are products that write every element
        // of their columns without reading them.
        let mut dqkv = Vec::<f32>::with_capacity(b * s * 3 * d);
        let dp_ptr = SendPtr(dqkv.as_mut_ptr());
        let heads = self.heads;
        let kept = &self.kept;
        if !kept.is_empty() && kept.len() != b * heads * s * s {
            candle_core::bail!(
                "attention backward: {} kept probabilities for {b} x {heads} heads of {s} x {s}",
                kept.len()
            );
        }
        (0..b * heads).into_par_iter().for_each_init(
            || {
                let own = if kept.is_empty() { s * s } else { 0 };
                (vec![0f32; own], vec![0f32; s * s])
            },
            |(own, dp), task| {
                let (bi, h) = (task / heads, task % heads);
                let base = qkv[bi * s * 3 * d..].as_ptr();
                let g = go[bi * s * d + h * dh..].as_ptr();
                // SAFETY: as in the forward pass; this task alone writes columns h*dh.. of the
                // three thirds of batch row bi in dqkv.
                unsafe {
                    let (q, k, v) = (
                        base.add(h * dh),
                        base.add(d + h * dh),
                        base.add(2 * d + h * dh),
                    );
                    let dbase = dp_ptr.get().add(bi * s * 3 * d);
                    let (dq, dk, dv) = (
                        dbase.add(h * dh),
                        dbase.add(d + h * dh),
                        dbase.add(2 * d + h * dh),
                    );
                    let p: &[f32] = if kept.is_empty() {
                        probabilities(own.as_mut_ptr(), q, k, s, dh, d, scale);
                        own
                    } else {
                        &kept[task * s * s..][..s * s]
                    };
                    // dV = P^T dO; dP = dO V^T.
                    mm(s, dh, s, dv, 3 * d, p.as_ptr(), (1, s), g, (d, 1), 1.0);
                    mm(s, s, dh, dp.as_mut_ptr(), s, g, (d, 1), v, (1, 3 * d), 1.0);
                    // dS = P * (dP - rowsum(dP * P)).
                    for (pr, dr) in p.chunks(s).zip(dp.chunks_mut(s)) {
                        let dot: f32 = pr.iter().zip(dr.iter()).map(|(a, b)| a * b).sum();
                        for (dv_, &pv) in dr.iter_mut().zip(pr) {
                            *dv_ = pv * (*dv_ - dot);
                        }
                    }
                    // dQ = scale dS K; dK = scale dS^T Q.
                    mm(
                        s,
                        dh,
                        s,
                        dq,
                        3 * d,
                        dp.as_ptr(),
                        (s, 1),
                        k,
                        (3 * d, 1),
                        scale,
                    );
                    mm(
                        s,
                        dh,
                        s,
                        dk,
                        3 * d,
                        dp.as_ptr(),
                        (1, s),
                        q,
                        (3 * d, 1),
                        scale,
                    );
                }
            },
        );
        // SAFETY: the tasks cover every batch row and head, and each writes dQ, dK and dV.
        unsafe { dqkv.set_len(b * s * 3 * d) };
        Ok((storage(dqkv), l1.shape().clone()))
    }
}

/// Self-attention of a packed `qkv` `(b, s, 3 * heads * dh)` with an optional additive mask
/// (broadcast to `(b, heads, s, s)`) -> `(b, s, heads * dh)`. Fused on the CPU without a mask;
/// otherwise the heads are split and `attention_ops` runs.
pub fn attention_qkv(qkv: &Tensor, heads: usize, additive_mask: Option<&Tensor>) -> Result<Tensor> {
    if fused(qkv) && additive_mask.is_none() {
        let (b, s, _) = qkv.dims3()?;
        let keep = qkv.track_op() && b * heads * s * s * 4 <= KEEP_BYTES;
        return qkv.contiguous()?.apply_op1(Attention {
            heads,
            kept: Kept::new(keep),
        });
    }
    let (b, s, w3) = qkv.dims3()?;
    let d = w3 / 3;
    let split = |i: usize| -> Result<Tensor> {
        qkv.narrow(2, i * d, d)?
            .reshape((b, s, heads, d / heads))?
            .transpose(1, 2)?
            .contiguous()
    };
    attention_ops(&split(0)?, &split(1)?, &split(2)?, additive_mask)?
        .transpose(1, 2)?
        .reshape((b, s, d))
}

/// Scaled dot-product attention over `(b, heads, s, d)` tensors, with an optional additive
/// mask, from primitive ops (other devices than the CPU, and the kernels' tests).
pub fn attention_ops(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    additive_mask: Option<&Tensor>,
) -> Result<Tensor> {
    use candle_core::D;
    let d = q.dim(D::Minus1)?;
    let mut scores = (q.matmul(&k.t()?)? / (d as f64).sqrt())?;
    if let Some(m) = additive_mask {
        scores = scores.broadcast_add(m)?;
    }
    softmax_last(&scores)?.matmul(v)
}
