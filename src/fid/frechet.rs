//! FID and KID from two sets of features, in f64 with nalgebra.
//!
//! **FID** (Heusel et al. 2017) = `|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr sqrt(S1 S2)`, the
//! covariances with `n - 1`. `tr sqrt(S1 S2)` is computed exactly, never by an iterative matrix
//! square root: with `S1 = A^T A`, `S2 = B^T B` (`A`, `B` the centred features over
//! `sqrt(n - 1)`), the eigenvalues of `S1 S2` are the squared singular values of `A B^T`, so
//! the trace is the sum of the singular values of the `n1 x n2` matrix `A B^T` (nalgebra's
//! SVD), the cheap form when the sets are smaller than the feature width; otherwise it is the sum
//! of the square roots of the eigenvalues of `sqrt(S1) S2 sqrt(S1)` (nalgebra's symmetric
//! eigendecompositions, negative round-off eigenvalues clamped to 0).
//!
//! **KID** (Binkowski et al. 2018) = the unbiased MMD^2 with the kernel
//! `k(x, y) = (x.y / d + 1)^3`, as torch-fidelity computes it: the mean and the (population)
//! standard deviation over `subsets` random subsets of `subset_size` features from each set
//! (drawn without replacement, seeded); one estimate over the full sets when `subset_size` is
//! at least the smaller set's size (then there is no standard deviation).

use crate::error::{Error, Result};
use crate::rng::Rng;
use nalgebra::DMatrix;

/// The feature width, after checking there are at least 2 features of one width.
fn width(feats: &[Vec<f32>], what: &str) -> Result<usize> {
    let n = feats.len();
    if n < 2 {
        return Err(Error::Msg(format!(
            "{what}: FID and KID need at least 2 images, got {n}"
        )));
    }
    let d = feats[0].len();
    if let Some((i, f)) = feats.iter().enumerate().find(|(_, f)| f.len() != d) {
        return Err(Error::Msg(format!(
            "{what}: feature {i} has width {}, the first has {d}",
            f.len()
        )));
    }
    Ok(d)
}

/// Features as rows: `n x d`, f64.
fn matrix(feats: &[Vec<f32>], what: &str) -> Result<DMatrix<f64>> {
    let d = width(feats, what)?;
    Ok(DMatrix::from_fn(feats.len(), d, |i, j| feats[i][j] as f64))
}

/// Mean row and the centred rows over `sqrt(n - 1)`.
fn centred(x: &DMatrix<f64>) -> (nalgebra::RowDVector<f64>, DMatrix<f64>) {
    let n = x.nrows();
    let mean = x.row_mean();
    let mut c = x.clone();
    for mut row in c.row_iter_mut() {
        row -= &mean;
    }
    (mean, c / ((n - 1) as f64).sqrt())
}

/// Square root of a symmetric positive semi-definite matrix by its eigendecomposition.
fn sqrt_psd(s: DMatrix<f64>) -> DMatrix<f64> {
    let eig = s.symmetric_eigen();
    let v = &eig.eigenvectors;
    let mut vs = v.clone();
    for (j, mut col) in vs.column_iter_mut().enumerate() {
        col *= eig.eigenvalues[j].max(0.0).sqrt();
    }
    &vs * v.transpose()
}

/// Frechet distance between the Gaussians fitted to two feature sets.
pub fn fid(a: &[Vec<f32>], b: &[Vec<f32>]) -> Result<f64> {
    let (xa, xb) = (matrix(a, "set A")?, matrix(b, "set B")?);
    if xa.ncols() != xb.ncols() {
        return Err(Error::Msg(format!(
            "feature widths differ: {} vs {}",
            xa.ncols(),
            xb.ncols()
        )));
    }
    let d = xa.ncols();
    let (ma, ca) = centred(&xa);
    let (mb, cb) = centred(&xb);
    let mean_term = (&ma - &mb).norm_squared();
    // tr(S) = squared Frobenius norm of the centred rows over sqrt(n - 1).
    let (tra, trb) = (ca.norm_squared(), cb.norm_squared());
    let (na, nb) = (ca.nrows(), cb.nrows());
    let tr_sqrt = if na.max(nb) <= d {
        (&ca * cb.transpose()).singular_values().sum()
    } else {
        let sa = ca.transpose() * &ca;
        let sb = cb.transpose() * &cb;
        let r = sqrt_psd(sa);
        let m = &r * sb * &r;
        let m = (&m + m.transpose()) * 0.5;
        m.symmetric_eigenvalues()
            .iter()
            .map(|&l| l.max(0.0).sqrt())
            .sum()
    };
    Ok(mean_term + tra + trb - 2.0 * tr_sqrt)
}

/// KID's settings, torch-fidelity's defaults.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct KidSettings {
    pub subsets: usize,
    pub subset_size: usize,
    pub seed: u64,
}

impl Default for KidSettings {
    fn default() -> Self {
        Self {
            subsets: 100,
            subset_size: 1000,
            seed: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Kid {
    pub mean: f64,
    /// `None` for one full-set estimate.
    pub std: Option<f64>,
    /// Subsets averaged (1 for the full-set estimate) and their size (per set).
    pub subsets: usize,
    pub subset_size: Option<usize>,
}

/// Unbiased MMD^2 between rows of `x` (m x d) and `y` (n x d) with the cubic kernel.
fn mmd2(x: &DMatrix<f32>, y: &DMatrix<f32>) -> f64 {
    let d = x.ncols() as f64;
    let k = |g: DMatrix<f32>| g.map(|v| (v as f64 / d + 1.0).powi(3));
    let kxx = k(x * x.transpose());
    let kyy = k(y * y.transpose());
    let kxy = k(x * y.transpose());
    let (m, n) = (x.nrows() as f64, y.nrows() as f64);
    let off = |k: &DMatrix<f64>| k.sum() - k.diagonal().sum();
    off(&kxx) / (m * (m - 1.0)) + off(&kyy) / (n * (n - 1.0)) - 2.0 * kxy.sum() / (m * n)
}

fn rows_f32(feats: &[Vec<f32>], idx: &[usize]) -> DMatrix<f32> {
    let d = feats[0].len();
    DMatrix::from_fn(idx.len(), d, |i, j| feats[idx[i]][j])
}

/// `k` distinct indices below `n`, the first `k` of a partial Fisher-Yates shuffle.
fn choose(rng: &mut Rng, n: usize, k: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    for i in 0..k {
        let j = i + rng.below(n - i);
        v.swap(i, j);
    }
    v.truncate(k);
    v
}

pub fn kid(a: &[Vec<f32>], b: &[Vec<f32>], s: KidSettings) -> Result<Kid> {
    if width(a, "set A")? != width(b, "set B")? {
        return Err(Error::Msg(format!(
            "feature widths differ: {} vs {}",
            a[0].len(),
            b[0].len()
        )));
    }
    if s.subsets == 0 || s.subset_size < 2 {
        return Err(Error::setting(
            "kid",
            "`subsets` must be at least 1 and `subset_size` at least 2",
        ));
    }
    let (na, nb) = (a.len(), b.len());
    if s.subset_size >= na.min(nb) {
        let all = |n| (0..n).collect::<Vec<_>>();
        return Ok(Kid {
            mean: mmd2(&rows_f32(a, &all(na)), &rows_f32(b, &all(nb))),
            std: None,
            subsets: 1,
            subset_size: None,
        });
    }
    let mut rng = Rng::new(s.seed);
    let vals: Vec<f64> = (0..s.subsets)
        .map(|_| {
            let ia = choose(&mut rng, na, s.subset_size);
            let ib = choose(&mut rng, nb, s.subset_size);
            mmd2(&rows_f32(a, &ia), &rows_f32(b, &ib))
        })
        .collect();
    let mean = vals.iter().sum::<f64>() / vals.len() as f64;
    let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / vals.len() as f64;
    Ok(Kid {
        mean,
        std: Some(var.sqrt()),
        subsets: s.subsets,
        subset_size: Some(s.subset_size),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauss(rng: &mut Rng, n: usize, d: usize, shift: f64, scale: f64) -> Vec<Vec<f32>> {
        (0..n)
            .map(|_| {
                (0..d)
                    .map(|j| (rng.normal() * scale * (1.0 + j as f64 / d as f64) + shift) as f32)
                    .collect()
            })
            .collect()
    }

    /// Both trace forms agree (the SVD one for small sets, the eigen one for large), and FID
    /// of a set with itself is 0.
    #[test]
    fn both_trace_forms_agree_and_self_distance_is_zero() {
        let mut rng = Rng::new(1);
        let d = 6;
        let a = gauss(&mut rng, 40, d, 0.0, 1.0);
        let b = gauss(&mut rng, 50, d, 0.3, 1.5);
        // 40, 50 > 6: the eigen form. Against the SVD form computed here directly.
        let f = fid(&a, &b).unwrap();
        let (xa, xb) = (matrix(&a, "a").unwrap(), matrix(&b, "b").unwrap());
        let ((ma, ca), (mb, cb)) = (centred(&xa), centred(&xb));
        let svd = (&ca * cb.transpose()).singular_values().sum();
        let want = (&ma - &mb).norm_squared() + ca.norm_squared() + cb.norm_squared() - 2.0 * svd;
        assert!(
            (f - want).abs() < 1e-9 * want.abs().max(1.0),
            "{f} vs {want}"
        );
        assert!(fid(&a, &a).unwrap().abs() < 1e-9);
    }

    #[test]
    fn kid_is_near_zero_for_one_distribution_and_grows_with_a_shift() {
        let mut rng = Rng::new(2);
        let a = gauss(&mut rng, 300, 8, 0.0, 1.0);
        let b = gauss(&mut rng, 300, 8, 0.0, 1.0);
        let c = gauss(&mut rng, 300, 8, 1.0, 1.0);
        let s = KidSettings {
            subsets: 20,
            subset_size: 100,
            seed: 0,
        };
        let same = kid(&a, &b, s).unwrap();
        let shifted = kid(&a, &c, s).unwrap();
        assert!(same.mean.abs() < 3.0 * same.std.unwrap() + 1e-3, "{same:?}");
        assert!(
            shifted.mean > 10.0 * same.mean.abs().max(1e-3),
            "{shifted:?}"
        );
        let full = kid(&a, &c, KidSettings::default()).unwrap();
        assert!(full.std.is_none() && full.subsets == 1);
    }
}
