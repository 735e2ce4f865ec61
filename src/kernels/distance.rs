//! LPIPS's per-tap distance of one image pair (for `Lpips::forward`): per pixel, the channel
//! vectors of both images scaled to unit length, their squared difference weighted per
//! channel, and the mean over pixels. Done in blocks of pixels small enough that the second pass over the
//! channels finds them in the L2 cache (a tap is read from memory once, not twice), with an
//! AVX2 copy of the loops; the operations per pixel and their order are those of the direct
//! form, so the bits are too.

/// Pixels per block: the block's channels of both images in about 512 KiB.
fn block_pixels(channels: usize) -> usize {
    ((1usize << 16) / channels.max(1)).clamp(64, 4096) / 8 * 8
}

/// `mean_p sum_c lin_c (a_cp / (|a_p| + 1e-10) - b_cp / (|b_p| + 1e-10))^2` for `a`, `b`
/// `(c, pixels)` and `lin` `(c)`.
pub fn lpips_tap_distance(a: &[f32], b: &[f32], lin: &[f32], pixels: usize) -> f32 {
    assert!(pixels > 0 && a.len() == b.len() && a.len() == lin.len() * pixels);
    let block = block_pixels(lin.len());
    let mut acc = vec![0f32; pixels];
    let mut norms = vec![0f32; 2 * block];
    for (k, acc) in acc.chunks_mut(block).enumerate() {
        tap_block(a, b, lin, pixels, k * block, acc, &mut norms);
    }
    acc.iter().sum::<f32>() / pixels as f32
}

avx2_or_baseline! {
    /// Pixels `p0..p0 + acc.len()` of [`lpips_tap_distance`] into `acc` (zeros on entry), the
    /// inverse norms in `norms`.
    fn tap_block(
        a: &[f32],
        b: &[f32],
        lin: &[f32],
        pixels: usize,
        p0: usize,
        acc: &mut [f32],
        norms: &mut [f32],
    ) {
        let n = acc.len();
        let (na, nb) = norms.split_at_mut(norms.len() / 2);
        let (na, nb) = (&mut na[..n], &mut nb[..n]);
        na.fill(0.0);
        nb.fill(0.0);
        let rows = |ch: usize| ch * pixels + p0..ch * pixels + p0 + n;
        for ch in 0..lin.len() {
            let (ar, br) = (&a[rows(ch)], &b[rows(ch)]);
            for p in 0..n {
                na[p] += ar[p] * ar[p];
                nb[p] += br[p] * br[p];
            }
        }
        for v in na.iter_mut().chain(nb.iter_mut()) {
            *v = 1.0 / (v.sqrt() + 1e-10);
        }
        for (ch, &l) in lin.iter().enumerate() {
            let (ar, br) = (&a[rows(ch)], &b[rows(ch)]);
            for p in 0..n {
                let d = ar[p] * na[p] - br[p] * nb[p];
                acc[p] += l * d * d;
            }
        }
    }
}
