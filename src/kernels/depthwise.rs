//! The ViT's 3x3 depthwise convolution over the token grid.

use super::*;

pub(crate) struct Depthwise {
    grid: usize,
}
pub(crate) struct DepthwiseBwd {
    grid: usize,
}

/// Channels per register block of the AVX2 loops below: eight vectors of sums kept in
/// registers across the taps (eight independent chains of adds hide their latency) (the plain loops summed into memory: three loads and a store
/// per multiply-add).
const CH: usize = 64;

/// The source position of tap `(dy, dx)` for output `(y, x)` on a `g x g` grid, if inside:
/// forward `(y + dy - 1, x + dx - 1)`, with `flip` (the input gradient) `(y - dy + 1, x - dx + 1)`.
#[inline(always)]
fn tap_source(y: usize, x: usize, dy: usize, dx: usize, g: usize, flip: bool) -> Option<usize> {
    let (sy, sx) = if flip {
        ((y + 1).wrapping_sub(dy), (x + 1).wrapping_sub(dx))
    } else {
        ((y + dy).wrapping_sub(1), (x + dx).wrapping_sub(1))
    };
    (sy < g && sx < g).then(|| sy * g + sx)
}

/// The outputs `y` (one axis) whose forward tap at offset `d` (0, 1, 2) reads inside the grid:
/// `0 <= y + d - 1 < g`.
fn tap_range(d: usize, g: usize) -> std::ops::Range<usize> {
    (1usize.saturating_sub(d))..(g + 1 - d).min(g)
}

/// `dk[tap] += sum over positions of grad[y, x] * in[y + dy - 1, x + dx - 1]` for one image
/// (`dk` `(9, c)`, the images `(g*g, c)` row-major): for each tap and channel, the products
/// added in position order (row-major), whatever the loop's blocking.
fn depthwise_kernel_grad(gi: &[f32], xi: &[f32], dk: &mut [f32], g: usize, c: usize) {
    assert!(gi.len() >= g * g * c && xi.len() >= g * g * c && dk.len() >= 9 * c);
    let mut c0 = 0;
    #[cfg(target_arch = "x86_64")]
    if avx2_on() {
        while c0 + CH <= c {
            for tap in 0..9 {
                // SAFETY: AVX2 is present; the blocks read lie inside the checked lengths.
                unsafe { avx2::kernel_grad_block(gi, xi, &mut dk[tap * c + c0..], g, c, c0, tap) };
            }
            c0 += CH;
        }
    }
    for tap in 0..9 {
        let (dy, dx) = (tap / 3, tap % 3);
        for y in tap_range(dy, g) {
            for x in tap_range(dx, g) {
                let src = (y + dy - 1) * g + (x + dx - 1);
                let gv = &gi[(y * g + x) * c..][..c];
                let iv = &xi[src * c..][..c];
                for l in c0..c {
                    dk[tap * c + l] += gv[l] * iv[l];
                }
            }
        }
    }
}

/// One image `(g*g, c)` row-major, kernel `(9, c)`: out[y, x] = sum over taps of
/// k[3*dy + dx] * in[y + dy - 1, x + dx - 1] (zero outside the grid); with `flip`, the
/// input gradient (the taps mirrored). Each output's sum starts at zero and adds the taps
/// in order.
fn depthwise_image(
    inp: &[f32],
    k: &[f32],
    out: &mut [MaybeUninit<f32>],
    g: usize,
    c: usize,
    flip: bool,
) {
    assert!(inp.len() >= g * g * c && out.len() >= g * g * c && k.len() >= 9 * c);
    for y in 0..g {
        for x in 0..g {
            // The taps inside the grid, in order: (kernel row, source position).
            let mut taps = [(0usize, 0usize); 9];
            let mut nt = 0;
            for tap in 0..9 {
                if let Some(src) = tap_source(y, x, tap / 3, tap % 3, g, flip) {
                    taps[nt] = (tap * c, src * c);
                    nt += 1;
                }
            }
            let taps = &taps[..nt];
            let o = &mut out[(y * g + x) * c..][..c];
            let mut c0 = 0;
            #[cfg(target_arch = "x86_64")]
            if avx2_on() {
                while c0 + CH <= c {
                    // SAFETY: AVX2 is present; every tap's block lies inside the checked
                    // lengths (offsets below 9c and g*g*c, c0 + CH <= c).
                    unsafe { avx2::image_block(inp, k, &mut o[c0..c0 + CH], taps, c0) };
                    c0 += CH;
                }
            }
            for l in c0..c {
                let mut acc = 0f32;
                for &(kt, src) in taps {
                    acc += k[kt + l] * inp[src + l];
                }
                o[l].write(acc);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{tap_range, MaybeUninit, CH};
    use std::arch::x86_64::*;

    /// Channels `c0..c0 + CH` of one output position: the taps' products added from zero in
    /// order (a multiply, then an add: the plain loop's bits).
    ///
    /// # Safety
    /// AVX2; `kt + c0 + CH <= k.len()` and `src + c0 + CH <= inp.len()` for every tap.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn image_block(
        inp: &[f32],
        k: &[f32],
        o: &mut [MaybeUninit<f32>],
        taps: &[(usize, usize)],
        c0: usize,
    ) {
        let mut acc = [_mm256_setzero_ps(); CH / 8];
        for &(kt, src) in taps {
            let (kp, ip) = (k.as_ptr().add(kt + c0), inp.as_ptr().add(src + c0));
            for (v, a) in acc.iter_mut().enumerate() {
                let p = _mm256_mul_ps(
                    _mm256_loadu_ps(kp.add(8 * v)),
                    _mm256_loadu_ps(ip.add(8 * v)),
                );
                *a = _mm256_add_ps(*a, p);
            }
        }
        let op = o.as_mut_ptr() as *mut f32;
        for (v, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(op.add(8 * v), *a);
        }
    }

    /// `dk[0..CH] += sum over the positions where tap `tap` reads inside the grid, in order, of
    /// grad * input`, channels `c0..c0 + CH`.
    ///
    /// # Safety
    /// AVX2; `gi` and `xi` hold `g*g*c` floats, `dk` at least `CH`, and `c0 + CH <= c`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn kernel_grad_block(
        gi: &[f32],
        xi: &[f32],
        dk: &mut [f32],
        g: usize,
        c: usize,
        c0: usize,
        tap: usize,
    ) {
        let (dy, dx) = (tap / 3, tap % 3);
        let d = dk.as_mut_ptr();
        let mut acc = [_mm256_setzero_ps(); CH / 8];
        for (v, a) in acc.iter_mut().enumerate() {
            *a = _mm256_loadu_ps(d.add(8 * v));
        }
        for y in tap_range(dy, g) {
            for x in tap_range(dx, g) {
                let src = (y + dy - 1) * g + (x + dx - 1);
                let gp = gi.as_ptr().add((y * g + x) * c + c0);
                let ip = xi.as_ptr().add(src * c + c0);
                for (v, a) in acc.iter_mut().enumerate() {
                    let p = _mm256_mul_ps(
                        _mm256_loadu_ps(gp.add(8 * v)),
                        _mm256_loadu_ps(ip.add(8 * v)),
                    );
                    *a = _mm256_add_ps(*a, p);
                }
            }
        }
        for (v, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(d.add(8 * v), *a);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The loops as first written: each output zeroed, then every tap added into memory; the
    /// kernel's gradient added into `dk` position by position. The register-blocked loops
    /// above must give these bits.
    fn plain(inp: &[f32], k: &[f32], g: usize, c: usize, flip: bool) -> Vec<f32> {
        let mut out = vec![0f32; g * g * c];
        for y in 0..g {
            for x in 0..g {
                for tap in 0..9 {
                    if let Some(src) = tap_source(y, x, tap / 3, tap % 3, g, flip) {
                        for l in 0..c {
                            out[(y * g + x) * c + l] += k[tap * c + l] * inp[src * c + l];
                        }
                    }
                }
            }
        }
        out
    }

    fn plain_kernel_grad(gi: &[f32], xi: &[f32], g: usize, c: usize) -> Vec<f32> {
        let mut dk = vec![0f32; 9 * c];
        for y in 0..g {
            for x in 0..g {
                for tap in 0..9 {
                    if let Some(src) = tap_source(y, x, tap / 3, tap % 3, g, false) {
                        for l in 0..c {
                            dk[tap * c + l] += gi[(y * g + x) * c + l] * xi[src * c + l];
                        }
                    }
                }
            }
        }
        dk
    }

    /// At the ViT's size (384 channels: whole blocks), with a partial last block (100), with
    /// no whole block (40, 11) and on small grids (every position at an edge): the same bits, on the AVX2 and the
    /// baseline copies alike.
    #[test]
    fn register_blocked_loops_give_the_plain_loops_bits() {
        for &(g, c) in &[(8, 384), (4, 100), (8, 40), (3, 11), (2, 33), (1, 5)] {
            let n = g * g * c;
            let x = crate::rng::Rng::new(70 + c as u64).normal_vec(n, 1.0);
            let gr = crate::rng::Rng::new(71 + g as u64).normal_vec(n, 1.0);
            let k = crate::rng::Rng::new(72).normal_vec(9 * c, 1.0);
            for flip in [false, true] {
                let mut out = vec![MaybeUninit::new(f32::NAN); n];
                depthwise_image(&x, &k, &mut out, g, c, flip);
                let want = plain(&x, &k, g, c, flip);
                for (i, (o, w)) in out.iter().zip(&want).enumerate() {
                    // SAFETY: filled with NaN above, then overwritten.
                    let o = unsafe { o.assume_init() };
                    assert_eq!(o.to_bits(), w.to_bits(), "g {g} c {c} flip {flip} at {i}");
                }
            }
            let mut dk = vec![0f32; 9 * c];
            depthwise_kernel_grad(&gr, &x, &mut dk, g, c);
            let want = plain_kernel_grad(&gr, &x, g, c);
            for (i, (a, b)) in dk.iter().zip(&want).enumerate() {
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "kernel gradient, g {g} c {c} at {i}"
                );
            }
        }
    }
}
