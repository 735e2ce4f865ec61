//! The ViT's 3x3 depthwise convolution over the token grid.

use super::*;

pub(crate) struct Depthwise {
    grid: usize,
}
pub(crate) struct DepthwiseBwd {
    grid: usize,
}

avx2_or_baseline! {
    /// `dk[tap] += sum over positions of grad[y, x] * in[y + dy - 1, x + dx - 1]` for one image.
    fn depthwise_kernel_grad(gi: &[f32], xi: &[f32], dk: &mut [f32], g: usize, c: usize) {
        for y in 0..g {
            for xx in 0..g {
                let gv = &gi[(y * g + xx) * c..(y * g + xx + 1) * c];
                for dy in 0..3 {
                    let sy = (y + dy).wrapping_sub(1);
                    if sy >= g {
                        continue;
                    }
                    for dxx in 0..3 {
                        let sx = (xx + dxx).wrapping_sub(1);
                        if sx >= g {
                            continue;
                        }
                        let iv = &xi[(sy * g + sx) * c..(sy * g + sx + 1) * c];
                        let acc = &mut dk[(3 * dy + dxx) * c..(3 * dy + dxx + 1) * c];
                        for ((a, &gq), &ivq) in acc.iter_mut().zip(gv).zip(iv) {
                            *a += gq * ivq;
                        }
                    }
                }
            }
        }
    }
}

avx2_or_baseline! {
    /// One image `(g*g, c)` row-major, kernel `(9, c)`: out[y, x] = sum over taps of
    /// k[3*dy + dx] * in[y + dy - 1, x + dx - 1] (zero outside the grid); with `flip`, the
    /// input gradient (the taps mirrored).
    fn depthwise_image(
        inp: &[f32],
        k: &[f32],
        out: &mut [MaybeUninit<f32>],
        g: usize,
        c: usize,
        flip: bool,
    ) {
        for y in 0..g {
            for x in 0..g {
                // Each output position zeroed here, in cache, then its taps added.
                let o = zeroed(&mut out[(y * g + x) * c..(y * g + x + 1) * c]);
                for dy in 0..3 {
                    // Forward reads in[y + dy - 1]; the input gradient reads grad[y - dy + 1].
                    let sy = if flip {
                        (y + 1).wrapping_sub(dy)
                    } else {
                        (y + dy).wrapping_sub(1)
                    };
                    if sy >= g {
                        continue;
                    }
                    for dx in 0..3 {
                        let sx = if flip {
                            (x + 1).wrapping_sub(dx)
                        } else {
                            (x + dx).wrapping_sub(1)
                        };
                        if sx >= g {
                            continue;
                        }
                        let kr = &k[(3 * dy + dx) * c..(3 * dy + dx + 1) * c];
                        let ir = &inp[(sy * g + sx) * c..(sy * g + sx + 1) * c];
                        for ((ov, &kv), &iv) in o.iter_mut().zip(kr).zip(ir) {
                            *ov += kv * iv;
                        }
                    }
                }
            }
        }
}
}

impl CustomOp2 for Depthwise {
    fn name(&self) -> &'static str {
        "lqae-depthwise3x3"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice(s1, l1, "depthwise conv")?;
        let k = slice(s2, l2, "depthwise conv kernel")?;
        let (b, t, c) = l1.shape().dims3()?;
        let g = self.grid;
        if g * g != t || k.len() != 9 * c {
            candle_core::bail!(
                "depthwise conv: {t} tokens are not a {g}x{g} grid, or the kernel is not (9, {c})"
            );
        }
        // SAFETY: depthwise_image writes every position of its image.
        let y = unsafe {
            par_written(x.len(), t * c, |i, o| {
                depthwise_image(&x[i * t * c..][..o.len()], k, o, g, c, false)
            })
        };
        let _ = b;
        Ok((storage(y), l1.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        k: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let packed =
            x.apply_op3_no_bwd(k, &grad.contiguous()?, &DepthwiseBwd { grid: self.grid })?;
        let [dx, dk]: [Tensor; 2] = unpack(&packed, &[x.shape(), k.shape()])?
            .try_into()
            .expect("two parts");
        Ok((Some(dx), Some(dk)))
    }
}

impl CustomOp3 for DepthwiseBwd {
    fn name(&self) -> &'static str {
        "lqae-depthwise3x3-bwd"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice(s1, l1, "depthwise conv backward")?;
        let k = slice(s2, l2, "depthwise conv backward")?;
        let gr = slice(s3, l3, "depthwise conv backward")?;
        let (_b, t, c) = l1.shape().dims3()?;
        let g = self.grid;
        let n = x.len();
        // Every position is written below only for a whole grid of tokens.
        if g * g != t || k.len() != 9 * c || gr.len() != n {
            candle_core::bail!(
                "depthwise conv backward: {t} tokens are not a {g}x{g} grid, the kernel is not (9, {c}), or {} gradients for {n} inputs",
                gr.len()
            );
        }
        let m = t * c;
        // SAFETY: depthwise_image writes every position of its image.
        let out = unsafe {
            par_written_summed(n, m, 9 * c, |i, o| {
                let (xi, gi) = (&x[i * m..][..o.len()], &gr[i * m..][..o.len()]);
                depthwise_image(gi, k, o, g, c, true);
                // dk[tap] = sum over positions of grad[y, x] * in[y + dy - 1, x + dx - 1].
                let mut dk = vec![0f32; 9 * c];
                depthwise_kernel_grad(gi, xi, &mut dk, g, c);
                dk
            })
        };
        Ok((storage(out), Shape::from(n + 9 * c)))
    }
}

/// 3x3 depthwise convolution with zero padding over the `grid x grid` tokens of `x`
/// `(b, grid*grid, c)`; `kernel` `(9, c)`, row `3 * dy + dx`. Other devices: `fallback`.
pub fn depthwise3x3(
    x: &Tensor,
    kernel: &Tensor,
    grid: usize,
    fallback: impl FnOnce() -> Result<Tensor>,
) -> Result<Tensor> {
    if fused(x) && fused(kernel) {
        x.contiguous()?
            .apply_op2(&kernel.contiguous()?, Depthwise { grid })
    } else {
        fallback()
    }
}
