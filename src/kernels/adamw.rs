//! AdamW in one pass over parameter, moments and gradient, with candle's exact f32 operation
//! sequence.

use super::*;

/// One AdamW update's constants, each converted to f32 exactly as candle converts the scalar of
/// the op it stands for (`t * x` is `affine(x, 0)`, `t / x` is `affine(1 / x, 0)`, `t + x` is
/// `affine(1, x)`: `x` computed in f64, then cast).
#[derive(Debug, Clone, Copy)]
pub struct AdamWConsts {
    pub b1: f32,
    pub one_minus_b1: f32,
    pub b2: f32,
    pub one_minus_b2: f32,
    /// `1 / (1 - b1^t)`, `1 / (1 - b2^t)`.
    pub inv_c1: f32,
    pub inv_c2: f32,
    pub eps: f32,
    pub lr: f32,
    /// `lr * weight_decay`, for decayed parameters.
    pub lr_decay: Option<f32>,
    /// Gradient scale (clipping), when not 1.
    pub grad_scale: Option<f32>,
}

avx2_or_baseline! {
    /// The AdamW update of `train::AdamW::step`, element by element, with candle's exact
    /// sequence of f32 operations (each `affine` is `x * mul + add`, kept as written: Rust
    /// neither fuses nor drops the `+ 0.0`), so the results are the same bits.
    /// `src`: parameter, moments, gradient; `out`: parameter, moments.
    fn adamw_chunk(
        src: (&[f32], &[f32], &[f32], &[f32]),
        out: (&mut [f32], &mut [f32], &mut [f32]),
        k: &AdamWConsts,
    ) {
        let (th, m, v, g) = src;
        let (o_th, o_m, o_v) = out;
        let (scale, gs) = (k.grad_scale.is_some(), k.grad_scale.unwrap_or(1.0));
        let (decay, lrd) = (k.lr_decay.is_some(), k.lr_decay.unwrap_or(0.0));
        for i in 0..th.len() {
            let gi = if scale { g[i] * gs + 0.0 } else { g[i] };
            let mi = (m[i] * k.b1 + 0.0) + (gi * k.one_minus_b1 + 0.0);
            let vi = (v[i] * k.b2 + 0.0) + ((gi * gi) * k.one_minus_b2 + 0.0);
            let upd = (mi * k.inv_c1 + 0.0) / ((vi * k.inv_c2 + 0.0).sqrt() * 1.0 + k.eps);
            let t = th[i];
            let mut next = t - (upd * k.lr + 0.0);
            if decay {
                next -= t * lrd + 0.0;
            }
            o_th[i] = next;
            o_m[i] = mi;
            o_v[i] = vi;
        }
    }
}

/// The elements of a contiguous CPU f32 storage view.
pub(crate) fn f32_view<'a>(st: &'a candle_core::Storage, l: &Layout) -> Option<&'a [f32]> {
    let (a, b) = l.contiguous_offsets()?;
    match st {
        candle_core::Storage::Cpu(CpuStorage::F32(v)) => Some(&v[a..b]),
        _ => None,
    }
}

/// One AdamW update of a parameter `theta` with moments `m`, `v` and gradient `g`, in one
/// pass: `(theta', m', v')`, the same bits as the op-by-op update (about a dozen full-size
/// temporaries; at the paper's 170 M parameters that was seconds a step). `None` where it does
/// not apply (not CPU f32 contiguous, or fused kernels off): the caller then runs the ops.
pub fn adamw_update(
    theta: &Tensor,
    m: &Tensor,
    v: &Tensor,
    g: &Tensor,
    k: &AdamWConsts,
) -> Result<Option<(Tensor, Tensor, Tensor)>> {
    let n = theta.elem_count();
    if ![theta, m, v, g]
        .iter()
        .all(|t| fused(t) && t.is_contiguous())
    {
        return Ok(None);
    }
    if [m, v, g].iter().any(|t| t.dims() != theta.dims()) {
        candle_core::bail!(
            "adamw: parameter {:?}, moments {:?} / {:?}, gradient {:?}",
            theta.dims(),
            m.dims(),
            v.dims(),
            g.dims()
        );
    }
    // Read locks on the four storages for the pass; the outputs are new tensors.
    let locked = [theta, m, v, g].map(|t| t.storage_and_layout());
    let [Some(th), Some(mm), Some(vv), Some(gg)] = locked.each_ref().map(|(st, l)| f32_view(st, l))
    else {
        return Ok(None);
    };
    let uninit = |n: usize| {
        let mut o = Vec::<f32>::with_capacity(n);
        // SAFETY: every element is written by `adamw_chunk` below before the vector is read
        // (all three outputs are sliced into the same chunks as the inputs).
        #[allow(clippy::uninit_vec)]
        unsafe {
            o.set_len(n)
        };
        o
    };
    let (mut o_th, mut o_m, mut o_v) = (uninit(n), uninit(n), uninit(n));
    const CHUNK: usize = 1 << 14;
    if n <= 4 * CHUNK {
        // Small tensors (biases, norms): one call, no tasks to schedule.
        adamw_chunk((th, mm, vv, gg), (&mut o_th, &mut o_m, &mut o_v), k);
    } else {
        o_th.par_chunks_mut(CHUNK)
            .zip(o_m.par_chunks_mut(CHUNK).zip(o_v.par_chunks_mut(CHUNK)))
            .enumerate()
            .for_each(|(c, (ot, (om, ov)))| {
                let r = c * CHUNK..(c * CHUNK + ot.len());
                adamw_chunk(
                    (&th[r.clone()], &mm[r.clone()], &vv[r.clone()], &gg[r]),
                    (ot, om, ov),
                    k,
                );
            });
    }
    drop(locked);
    let dev = theta.device();
    let shape = theta.shape();
    Ok(Some((
        Tensor::from_vec(o_th, shape, dev)?,
        Tensor::from_vec(o_m, shape, dev)?,
        Tensor::from_vec(o_v, shape, dev)?,
    )))
}
