//! Square max and average pooling over NCHW planes, forward only, for the frozen feature
//! networks (FID Inception-v3, LPIPS): one pass per output plane, planes split across rayon's
//! threads. Padding never enters a window: a max is over the window's in-image values and an
//! average divides by their count (`count_include_pad=False`, as the FID Inception pools).
//!
//! [`pool2d_ops`] is the reference form in candle ops (zero padding, candle's pooling, and for
//! the average the in-image count pooled the same way), used on other devices and when the
//! fused kernels are off. Zero padding equals the in-image max only for inputs that are never
//! negative: the networks pool ReLU outputs (and unpadded windows), and the tests compare the
//! two forms there and check negative inputs against a direct computation.

use candle_core::{DType, Result, Tensor};

/// Which pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    /// The mean of the window's in-image values.
    Avg,
}

/// A `k x k` window every `stride` pixels over the input padded by `pad` on each side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    pub kind: PoolKind,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Pool {
    fn out(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        let (hp, wp) = (h + 2 * self.pad, w + 2 * self.pad);
        if hp < self.k || wp < self.k || self.stride == 0 || self.pad >= self.k {
            candle_core::bail!(
                "pool2d: a {0}x{0} window (stride {1}, padding {2}) does not fit a {h}x{w} input",
                self.k,
                self.stride,
                self.pad
            );
        }
        Ok((
            (hp - self.k) / self.stride + 1,
            (wp - self.k) / self.stride + 1,
        ))
    }
}

/// The pooling in candle ops: the reference form.
pub fn pool2d_ops(x: &Tensor, p: Pool) -> Result<Tensor> {
    let pad = |t: &Tensor| -> Result<Tensor> {
        if p.pad == 0 {
            Ok(t.clone())
        } else {
            t.pad_with_zeros(2, p.pad, p.pad)?
                .pad_with_zeros(3, p.pad, p.pad)
        }
    };
    let (k, s) = ((p.k, p.k), (p.stride, p.stride));
    match p.kind {
        PoolKind::Max => pad(x)?.max_pool2d_with_stride(k, s),
        PoolKind::Avg => {
            let sum = pad(x)?.avg_pool2d_with_stride(k, s)?;
            if p.pad == 0 {
                return Ok(sum);
            }
            let (_, _, h, w) = x.dims4()?;
            let ones = Tensor::ones((1, 1, h, w), DType::F32, x.device())?;
            let count = pad(&ones)?.avg_pool2d_with_stride(k, s)?;
            sum.broadcast_div(&count)
        }
    }
}

/// Pool `x` `(n, c, h, w)`, f32.
pub fn pool2d(x: &Tensor, p: Pool) -> Result<Tensor> {
    if !super::fused(x) {
        return pool2d_ops(x, p);
    }
    let (n, c, h, w) = x.dims4()?;
    let (ho, wo) = p.out(h, w)?;
    if h * w == 0 {
        candle_core::bail!("pool2d: an empty {h}x{w} input");
    }
    x.contiguous()?.apply_op1_no_bwd(&PoolOp {
        p,
        n,
        c,
        h,
        w,
        ho,
        wo,
    })
}

/// Output columns `lo..hi` of `wo`, on rows of `w` input columns: those whose window lies whole
/// inside the row (`ow * s >= pad` and `ow * s + k - pad <= w`).
fn whole_windows(p: Pool, w: usize, wo: usize) -> (usize, usize) {
    let lo = p.pad.div_ceil(p.stride).min(wo);
    let hi = if w + p.pad >= p.k {
        ((w + p.pad - p.k) / p.stride + 1).min(wo).max(lo)
    } else {
        lo
    };
    (lo, hi)
}

/// Input columns (rows) `c0..c1` of output column (row) `ow`, of `w` input columns (rows): the
/// in-image part of its window.
fn window(p: Pool, ow: usize, w: usize) -> (usize, usize) {
    (
        (ow * p.stride).saturating_sub(p.pad),
        (ow * p.stride + p.k - p.pad).min(w),
    )
}

/// One plane, separably: each input row reduced over every output column's window into `tmp`
/// (`h x wo`), then each output row reduced over its window's rows of `tmp`. The additions of
/// an average are in the order of the direct form (a row's values left to right, then the rows
/// top to bottom), so it gives the same sums; the windows that lie whole inside the row run as
/// a pass per tap over all of them, which the compiler vectorises for stride 1.
/// The max (`MAX`), or the sum, of two values.
#[inline(always)]
fn op2<const MAX: bool>(a: f32, b: f32) -> f32 {
    if MAX {
        a.max(b)
    } else {
        a + b
    }
}

#[inline(always)]
fn pool_plane_of<const MAX: bool>(
    p: Pool,
    (h, w): (usize, usize),
    (ho, wo): (usize, usize),
    plane: &[f32],
    o: &mut [f32],
    tmp: &mut [f32],
) {
    let op = op2::<MAX>;
    if MAX && p.stride > 1 {
        return max_strided(p, (h, w), (ho, wo), plane, o, tmp);
    }
    let (lo, hi) = whole_windows(p, w, wo);
    for (xr, tr) in plane.chunks(w).zip(tmp.chunks_mut(wo)) {
        for ow in (0..lo).chain(hi..wo) {
            let (c0, c1) = window(p, ow, w);
            tr[ow] = xr[c0 + 1..c1].iter().fold(xr[c0], |a, &b| op(a, b));
        }
        let s = p.stride;
        for (ow, t) in (lo..hi).zip(&mut tr[lo..hi]) {
            *t = xr[ow * s - p.pad];
        }
        for j in 1..p.k {
            let off = j as isize - p.pad as isize;
            if s == 1 {
                let src = &xr[(lo as isize + off) as usize..(hi as isize + off) as usize];
                for (t, &v) in tr[lo..hi].iter_mut().zip(src) {
                    *t = op(*t, v);
                }
            } else {
                for (ow, t) in (lo..hi).zip(&mut tr[lo..hi]) {
                    *t = op(*t, xr[((ow * s) as isize + off) as usize]);
                }
            }
        }
    }
    for (oh, orow) in o.chunks_mut(wo).enumerate().take(ho) {
        let (r0, r1) = window(p, oh, h);
        orow.copy_from_slice(&tmp[r0 * wo..(r0 + 1) * wo]);
        for r in r0 + 1..r1 {
            for (v, &t) in orow.iter_mut().zip(&tmp[r * wo..(r + 1) * wo]) {
                *v = op(*v, t);
            }
        }
        if !MAX {
            for (ow, v) in orow.iter_mut().enumerate() {
                let (c0, c1) = window(p, ow, w);
                *v /= ((r1 - r0) * (c1 - c0)) as f32;
            }
        }
    }
}

/// Planes narrower than this are pooled window by window ([`max_windows`]): their rows are
/// too short for the passes of [`max_strided`] to pay. AlexNet at 64 px pools 15x15 and 7x7
/// planes; its 7x7 pool took 0.36-0.38 ms instead of 0.62-0.63 (32 pairs), the 15x15 one
/// 0.55-0.58 instead of 0.58-0.59; on its 31x31 planes at 256 px the windows were slower
/// (0.93-0.99 ms against 0.68).
const SMALL: usize = 16;

/// A strided max pool of a small plane, each output the max of its window read directly; an
/// unpadded 3x3 window (AlexNet's) as nine named reads, without the loops over the window's
/// bounds (the pooling's share of AlexNet's samples at 64 px, 32 pairs, on the AVX2 AMD
/// machine: 6.3% -> 2.5%).
#[inline(always)]
fn max_windows(
    p: Pool,
    (h, w): (usize, usize),
    (ho, wo): (usize, usize),
    plane: &[f32],
    o: &mut [f32],
) {
    if p.k == 3 && p.pad == 0 {
        let s = p.stride;
        for (oh, orow) in o.chunks_mut(wo).enumerate().take(ho) {
            let rows = &plane[oh * s * w..][..3 * w];
            let (a, rest) = rows.split_at(w);
            let (b, c) = rest.split_at(w);
            for (ow, v) in orow.iter_mut().enumerate() {
                let x = ow * s;
                let (a, b, c) = (&a[x..x + 3], &b[x..x + 3], &c[x..x + 3]);
                let m = a[0].max(a[1]).max(a[2]);
                let m = m.max(b[0]).max(b[1]).max(b[2]);
                *v = m.max(c[0]).max(c[1]).max(c[2]);
            }
        }
        return;
    }
    for (oh, orow) in o.chunks_mut(wo).enumerate().take(ho) {
        let (r0, r1) = window(p, oh, h);
        for (ow, v) in orow.iter_mut().enumerate() {
            let (c0, c1) = window(p, ow, w);
            let mut m = plane[r0 * w + c0];
            for r in r0..r1 {
                for &x in &plane[r * w + c0..r * w + c1] {
                    m = m.max(x);
                }
            }
            *v = m;
        }
    }
}

/// A strided max pool (exact in any order): each output row's window rows reduced first, over
/// the whole width, then the running max of `k` columns at every column (vectorised passes)
/// picked at the output columns.
#[inline(always)]
fn max_strided(
    p: Pool,
    (h, w): (usize, usize),
    (ho, wo): (usize, usize),
    plane: &[f32],
    o: &mut [f32],
    tmp: &mut [f32],
) {
    if w < SMALL {
        return max_windows(p, (h, w), (ho, wo), plane, o);
    }
    let (rows, run) = tmp[..2 * w].split_at_mut(w);
    let (s, (lo, hi)) = (p.stride, whole_windows(p, w, wo));
    for (oh, orow) in o.chunks_mut(wo).enumerate().take(ho) {
        let (r0, r1) = window(p, oh, h);
        rows.copy_from_slice(&plane[r0 * w..(r0 + 1) * w]);
        for r in r0 + 1..r1 {
            for (v, &x) in rows.iter_mut().zip(&plane[r * w..(r + 1) * w]) {
                *v = v.max(x);
            }
        }
        // run[j] = max(rows[j..j + k]) for every whole window.
        let whole = (w + 1).saturating_sub(p.k);
        run[..whole].copy_from_slice(&rows[..whole]);
        for j in 1..p.k {
            for (v, &x) in run[..whole].iter_mut().zip(&rows[j..j + whole]) {
                *v = v.max(x);
            }
        }
        // Output columns whose window lies whole inside the row read the running max at
        // their first column; the others, at most a few at each edge, reduce their window.
        for ow in (0..lo).chain(hi..wo) {
            let (c0, c1) = window(p, ow, w);
            orow[ow] = rows[c0 + 1..c1].iter().fold(rows[c0], |a, &b| a.max(b));
        }
        for (v, &m) in orow[lo..hi]
            .iter_mut()
            .zip(run[lo * s - p.pad..].iter().step_by(s))
        {
            *v = m;
        }
    }
}

avx2_or_baseline! {
    /// [`pool_plane_of`] for the pooling's kind.
    #[allow(clippy::too_many_arguments)]
    fn pool_plane(
        p: Pool,
        h: usize,
        w: usize,
        ho: usize,
        wo: usize,
        plane: &[f32],
        o: &mut [f32],
        tmp: &mut [f32],
    ) {
        match p.kind {
            PoolKind::Max => pool_plane_of::<true>(p, (h, w), (ho, wo), plane, o, tmp),
            PoolKind::Avg => pool_plane_of::<false>(p, (h, w), (ho, wo), plane, o, tmp),
        }
    }
}

/// A 3x3 window at stride 1 with padding 1 over whole planes `x` of `h x w` (`h, w >= 2`,
/// any number of them back to back) into `o`, as long passes over all of them: each row's
/// sums of three, left to right, over the flat run of planes (the two edge columns of every
/// row, which took a neighbouring row's value, redone with their two in-image values), then
/// each output the rows above, at and below, top to bottom, and for an average the division
/// by `counts` (the in-image count of each position of a plane). The additions are
/// [`pool_plane_of`]'s, in its order, so the sums are its; its passes ran over one row at a
/// time, which at Inception's 17x17 and 8x8 planes was mostly loop overhead (2 GB/s).
#[inline(always)]
fn same3_of<const MAX: bool>(
    (h, w): (usize, usize),
    x: &[f32],
    o: &mut [f32],
    t: &mut [f32],
    counts: &[f32],
) {
    let n = x.len().min(o.len()).min(t.len());
    let (x, o, t) = (&x[..n], &mut o[..n], &mut t[..n]);
    for (((v, &a), &b), &c) in t[1..n - 1].iter_mut().zip(x).zip(&x[1..]).zip(&x[2..]) {
        *v = op2::<MAX>(op2::<MAX>(a, b), c);
    }
    for r in 0..n / w {
        let (a, b) = (r * w, r * w + w - 1);
        t[a] = op2::<MAX>(x[a], x[a + 1]);
        t[b] = op2::<MAX>(x[b - 1], x[b]);
    }
    for (op, tp) in o.chunks_exact_mut(h * w).zip(t.chunks_exact(h * w)) {
        for ((v, &a), &b) in op[..w].iter_mut().zip(tp).zip(&tp[w..]) {
            *v = op2::<MAX>(a, b);
        }
        let mid = &mut op[w..(h - 1) * w];
        for (((v, &a), &b), &c) in mid.iter_mut().zip(tp).zip(&tp[w..]).zip(&tp[2 * w..]) {
            *v = op2::<MAX>(op2::<MAX>(a, b), c);
        }
        let last = (h - 1) * w;
        for ((v, &a), &b) in op[last..].iter_mut().zip(&tp[last - w..]).zip(&tp[last..]) {
            *v = op2::<MAX>(a, b);
        }
        if !MAX {
            for (v, &c) in op.iter_mut().zip(counts) {
                *v /= c;
            }
        }
    }
}

avx2_or_baseline! {
    /// [`same3_of`] for the pooling's kind.
    fn same3(
        kind: PoolKind,
        h: usize,
        w: usize,
        x: &[f32],
        o: &mut [f32],
        t: &mut [f32],
        counts: &[f32],
    ) {
        match kind {
            PoolKind::Max => same3_of::<true>((h, w), x, o, t, counts),
            PoolKind::Avg => same3_of::<false>((h, w), x, o, t, counts),
        }
    }
}

/// A `K x K` max (`K` 2 or 3) at stride 2 without padding over whole planes `x` of `h x w`
/// (any number of them back to back) into `o` (`ho x wo` each): per output row the max of its
/// `K` input rows over the whole width (into `v`), then the max of `K` neighbours in one pass
/// over all of a plane's rows (into `t`), picked at every second column. Exact in any order (but for the sign of a zero,
/// which `f32::max` may take from either side).
/// The row-at-a-time passes and window-by-window reads it replaced were mostly overhead at
/// Inception's 17x17, AlexNet's 15x15 and 7x7 and VGG16's 8x8 planes.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn max_s2_of<const K: usize>(
    (h, w): (usize, usize),
    (ho, wo): (usize, usize),
    x: &[f32],
    o: &mut [f32],
    v: &mut [f32],
    t: &mut [f32],
) {
    let (v, t) = (&mut v[..ho * w], &mut t[..ho * w]);
    let max3 = |a: f32, b: f32, c: f32| if K == 3 { a.max(b).max(c) } else { a.max(b) };
    for (xp, op) in x.chunks_exact(h * w).zip(o.chunks_exact_mut(ho * wo)) {
        for (oh, vr) in v.chunks_exact_mut(w).enumerate() {
            let r = &xp[2 * oh * w..][..K * w];
            let (a, rest) = r.split_at(w);
            let (b, c) = rest.split_at(w);
            // For K = 2, `c` is empty: the third row is `b` again.
            let c = if K == 3 { c } else { b };
            for (((m, &a), &b), &c) in vr.iter_mut().zip(a).zip(b).zip(c) {
                *m = max3(a, b, c);
            }
        }
        let n = ho * w - (K - 1);
        let third = &v[K - 1..];
        for (((m, &a), &b), &c) in t[..n].iter_mut().zip(&v[..]).zip(&v[1..]).zip(third) {
            *m = max3(a, b, c);
        }
        for (orow, tr) in op.chunks_exact_mut(wo).zip(t.chunks(w)) {
            for (ow, m) in orow.iter_mut().enumerate() {
                *m = tr[2 * ow];
            }
        }
    }
}

avx2_or_baseline! {
    /// [`max_s2_of`] for the window's side.
    #[allow(clippy::too_many_arguments)]
    fn max_s2(
        k: usize,
        h: usize,
        w: usize,
        ho: usize,
        wo: usize,
        x: &[f32],
        o: &mut [f32],
        vt: &mut [f32],
    ) {
        let (v, t) = vt.split_at_mut(ho * w);
        if k == 3 {
            max_s2_of::<3>((h, w), (ho, wo), x, o, v, t)
        } else {
            max_s2_of::<2>((h, w), (ho, wo), x, o, v, t)
        }
    }
}

/// The max, or the sum, of a whole plane with rows of `w` values: each row left to right,
/// then the rows top to bottom ([`pool_plane_of`]'s order for a window that covers the plane).
#[inline(always)]
fn one_window<const MAX: bool>(plane: &[f32], w: usize) -> f32 {
    let mut rows = plane
        .chunks_exact(w)
        .map(|row| row[1..].iter().fold(row[0], |a, &b| op2::<MAX>(a, b)));
    let first = rows.next().expect("a plane has a row");
    rows.fold(first, op2::<MAX>)
}

/// Whether [`max_s2`] computes `p` over `h x w` planes.
fn is_max_s2(p: Pool, h: usize, w: usize) -> bool {
    p.kind == PoolKind::Max
        && (p.k == 2 || p.k == 3)
        && p.stride == 2
        && p.pad == 0
        && h >= p.k
        && w >= p.k
}

/// Whether [`same3`] computes `p` over `h x w` planes.
fn is_same3(p: Pool, h: usize, w: usize) -> bool {
    p.k == 3 && p.stride == 1 && p.pad == 1 && h >= 2 && w >= 2
}

/// One pooling's sizes: the op the CPU path applies.
struct PoolOp {
    p: Pool,
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
}

impl candle_core::CustomOp1 for PoolOp {
    fn name(&self) -> &'static str {
        "lqae-pool2d"
    }
    fn cpu_fwd(
        &self,
        s: &candle_core::CpuStorage,
        l: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let xv = super::slice(s, l, "pool2d input")?;
        let (p, h, w, ho, wo) = (self.p, self.h, self.w, self.ho, self.wo);
        if is_same3(p, h, w) {
            // Whole planes, about 4,096 values a task.
            let counts: Vec<f32> = (0..h * w)
                .map(|i| {
                    let ((r0, r1), (c0, c1)) = (window(p, i / w, h), window(p, i % w, w));
                    ((r1 - r0) * (c1 - c0)) as f32
                })
                .collect();
            let len = (4096 / (h * w)).max(1) * h * w;
            let out = super::par_filled(self.n * self.c * h * w, len, |i, os| {
                let planes = &xv[i * len..][..os.len()];
                super::with_scratch(os.len(), |t| same3(p.kind, h, w, planes, os, t, &counts))
            });
            return Ok((super::storage(out), (self.n, self.c, ho, wo).into()));
        }
        if is_max_s2(p, h, w) {
            let planes = (4096 / (h * w)).max(1);
            let out = super::par_filled(self.n * self.c * ho * wo, planes * ho * wo, |i, os| {
                let x = &xv[i * planes * h * w..][..os.len() / (ho * wo) * h * w];
                super::with_scratch(2 * ho * w, |vt| max_s2(p.k, h, w, ho, wo, x, os, vt))
            });
            return Ok((super::storage(out), (self.n, self.c, ho, wo).into()));
        }
        if p.pad == 0 && p.k == h && p.k == w {
            // One window per plane (Inception's last 8x8 average): each row's values left to
            // right, the rows top to bottom, as `pool_plane_of` adds them; its row passes
            // were one element long here.
            const PLANES: usize = 256;
            let out = super::par_filled(self.n * self.c, PLANES, |i, os| {
                for (j, v) in os.iter_mut().enumerate() {
                    let plane = &xv[(i * PLANES + j) * h * w..][..h * w];
                    *v = match p.kind {
                        PoolKind::Max => one_window::<true>(plane, w),
                        PoolKind::Avg => one_window::<false>(plane, w) / (h * w) as f32,
                    };
                }
            });
            return Ok((super::storage(out), (self.n, self.c, ho, wo).into()));
        }
        // Small planes go to the threads in groups of about 2,048 input values (one task each
        // was most of the time of AlexNet's 7x7 planes), each group's output zeroed by its
        // thread; the row buffers are the thread's scratch (written before they are read).
        let group = (2048 / (h * w)).max(1);
        let out = super::par_filled(self.n * self.c * ho * wo, group * ho * wo, |i, os| {
            let planes = &xv[i * group * h * w..];
            super::with_scratch((h * wo).max(2 * w), |tmp| {
                for (o, plane) in os.chunks_mut(ho * wo).zip(planes.chunks(h * w)) {
                    pool_plane(p, h, w, ho, wo, plane, o, tmp)
                }
            })
        });
        Ok((super::storage(out), (self.n, self.c, ho, wo).into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The whole-plane paths ([`same3`], [`max_s2`], the one-window average) against the
    /// plane-by-plane kernel they bypass ([`pool_plane`]), bit for bit: the same sums in the
    /// same order, the same maxima, at the networks' plane sizes, odd ones and the smallest
    /// each takes; values of both signs.
    #[test]
    fn whole_plane_paths_give_the_plane_kernels_bits() {
        let pools = [
            (PoolKind::Avg, 3, 1, 1),
            (PoolKind::Max, 3, 1, 1),
            (PoolKind::Max, 3, 2, 0),
            (PoolKind::Max, 2, 2, 0),
        ];
        let sizes = [
            (2, 2),
            (3, 3),
            (7, 7),
            (8, 8),
            (9, 8),
            (13, 21),
            (15, 15),
            (17, 17),
            (35, 35),
            (71, 71),
        ];
        let mut cases: Vec<(Pool, usize, usize)> = Vec::new();
        for &(kind, k, stride, pad) in &pools {
            for &(h, w) in &sizes {
                cases.push((
                    Pool {
                        kind,
                        k,
                        stride,
                        pad,
                    },
                    h,
                    w,
                ));
            }
        }
        for (h, w) in [(8, 8), (5, 7)] {
            for kind in [PoolKind::Avg, PoolKind::Max] {
                let p = Pool {
                    kind,
                    k: h,
                    stride: h,
                    pad: 0,
                };
                if w == h {
                    cases.push((p, h, w));
                }
            }
        }
        let mut fast_paths = 0;
        for (i, &(p, h, w)) in cases.iter().enumerate() {
            let Ok((ho, wo)) = p.out(h, w) else { continue };
            let (n, c) = (2, 37);
            let x = crate::rng::uniform_tensor(&[n, c, h, w], 900 + i as u64, &Device::Cpu)
                .unwrap()
                .affine(2.0, -1.0)
                .unwrap();
            let got: Vec<f32> = pool2d(&x, p)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let xs: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
            let mut want = vec![0f32; n * c * ho * wo];
            let mut tmp = vec![0f32; (h * wo).max(2 * w)];
            for (o, plane) in want.chunks_mut(ho * wo).zip(xs.chunks(h * w)) {
                pool_plane(p, h, w, ho, wo, plane, o, &mut tmp);
            }
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert!(
                bits(&got) == bits(&want),
                "{p:?} over {h}x{w}: the whole-plane path differs from the plane kernel"
            );
            fast_paths += usize::from(is_same3(p, h, w) || is_max_s2(p, h, w) || p.k == h);
        }
        assert!(
            fast_paths >= 25,
            "only {fast_paths} cases took a whole-plane path"
        );
    }
}
