//! Image-quality metrics with stated conventions, on pixel values in [0, 1]:
//! - MSE and PSNR (`10 log10(1 / MSE)`; identical images have infinite PSNR, reported as such);
//! - SSIM of Wang et al. (2004) as scikit-image computes it with `gaussian_weights=True,
//!   sigma=1.5, use_sample_covariance=False, data_range=1`: an 11x11 Gaussian window
//!   (truncate 3.5), K1 0.01, K2 0.03, symmetric ("reflect") borders, the map cropped by the
//!   window radius, per channel then averaged;
//! - LPIPS (`crate::lpips`), AlexNet or VGG16, for image files via [`lpips_files`].

use crate::error::{Error, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// An image as `channels` planes of `h x w` values in [0, 1].
#[derive(Debug, Clone)]
pub struct Planes {
    pub h: usize,
    pub w: usize,
    pub channels: usize,
    pub data: Vec<f64>,
}

impl Planes {
    /// Checks shape and range: values outside [0, 1] (e.g. 0-255 data) are an error, not a score.
    pub fn new(h: usize, w: usize, channels: usize, data: Vec<f64>, what: &str) -> Result<Self> {
        if data.len() != h * w * channels {
            return Err(Error::Msg(format!(
                "{what}: {} values for {channels} x {h} x {w}",
                data.len()
            )));
        }
        if let Some(v) = data.iter().find(|v| !(0.0..=1.0).contains(*v)) {
            return Err(Error::Msg(format!(
                "{what}: value {v} is outside [0, 1]; scale 0-255 data by 1/255 first"
            )));
        }
        Ok(Self {
            h,
            w,
            channels,
            data,
        })
    }

    fn plane(&self, c: usize) -> &[f64] {
        &self.data[c * self.h * self.w..(c + 1) * self.h * self.w]
    }

    /// Read a PNG/JPEG file (grey stays one channel, anything else becomes RGB).
    pub fn read(path: &Path) -> Result<Self> {
        let img =
            image::open(path).map_err(|e| Error::file(path, format!("cannot read image: {e}")))?;
        let (w, h) = (img.width() as usize, img.height() as usize);
        let grey = matches!(img.color(), image::ColorType::L8 | image::ColorType::L16);
        let data: Vec<f64> = if grey {
            img.to_luma8()
                .pixels()
                .map(|p| p.0[0] as f64 / 255.0)
                .collect()
        } else {
            let rgb = img.to_rgb8();
            (0..3)
                .flat_map(|c| {
                    rgb.pixels()
                        .map(move |p| p.0[c] as f64 / 255.0)
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        Self::new(
            h,
            w,
            if grey { 1 } else { 3 },
            data,
            &path.display().to_string(),
        )
    }

    /// Repeat a grey image over three channels.
    pub fn to_rgb(&self) -> Self {
        if self.channels == 3 {
            return self.clone();
        }
        Self {
            h: self.h,
            w: self.w,
            channels: 3,
            data: self.data.repeat(3),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Scores {
    pub mse: f64,
    /// `None` when the images are identical (infinite PSNR).
    pub psnr: Option<f64>,
    pub ssim: f64,
}

pub fn mse(a: &Planes, b: &Planes) -> f64 {
    a.data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        / a.data.len().max(1) as f64
}

/// PSNR in dB for data range 1; `None` for identical images.
pub fn psnr_from_mse(mse: f64) -> Option<f64> {
    (mse > 0.0).then(|| -10.0 * mse.log10())
}

/// PSNR in dB for data range 1, capped at 100 dB (MSE floored at 1e-10), as suites average it.
pub fn psnr_capped(mse: f64) -> f64 {
    -10.0 * mse.max(1e-10).log10()
}

const SIGMA: f64 = 1.5;
const RADIUS: usize = 5; // int(3.5 * 1.5 + 0.5)

/// How SSIM is computed: the window, the covariance normalisation and the data range (the
/// constants are `(0.01 R)^2`, `(0.03 R)^2`). Borders are scipy's "reflect" and the map is
/// cropped by the window radius before averaging, as scikit-image does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SsimParams {
    /// Gaussian window of sigma 1.5 (11x11, truncate 3.5) when true, else a uniform
    /// `win_size x win_size` one.
    pub gaussian: bool,
    pub win_size: usize,
    /// Sample covariance (`NP / (NP - 1)`, scikit-image's default) or population covariance.
    pub sample_covariance: bool,
    pub data_range: f64,
}

impl SsimParams {
    /// lqae's convention (Wang et al. 2004): `structural_similarity(gaussian_weights=True,
    /// sigma=1.5, use_sample_covariance=False, data_range=1)`.
    pub const WANG: SsimParams = SsimParams {
        gaussian: true,
        win_size: 2 * RADIUS + 1,
        sample_covariance: false,
        data_range: 1.0,
    };

    fn radius(&self) -> usize {
        if self.gaussian {
            RADIUS
        } else {
            (self.win_size - 1) / 2
        }
    }

    fn kernel(&self) -> Vec<f64> {
        if !self.gaussian {
            return vec![1.0 / self.win_size as f64; self.win_size];
        }
        let mut k: Vec<f64> = (0..2 * RADIUS + 1)
            .map(|i| {
                let x = i as f64 - RADIUS as f64;
                (-0.5 * x * x / (SIGMA * SIGMA)).exp()
            })
            .collect();
        let s: f64 = k.iter().sum();
        k.iter_mut().for_each(|v| *v /= s);
        k
    }
}

/// Half-sample symmetric index (scipy's "reflect": d c b a | a b c d | d c b a).
fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    let period = 2 * n;
    let mut m = i.rem_euclid(period);
    if m >= n {
        m = period - 1 - m;
    }
    m as usize
}

fn blur(x: &[f64], h: usize, w: usize, k: &[f64]) -> Vec<f64> {
    let r = (k.len() / 2) as isize;
    let mut tmp = vec![0.0; h * w];
    for y in 0..h {
        for xx in 0..w {
            tmp[y * w + xx] = (-r..=r)
                .map(|d| k[(d + r) as usize] * x[y * w + reflect(xx as isize + d, w)])
                .sum();
        }
    }
    let mut out = vec![0.0; h * w];
    for y in 0..h {
        for xx in 0..w {
            out[y * w + xx] = (-r..=r)
                .map(|d| k[(d + r) as usize] * tmp[reflect(y as isize + d, h) * w + xx])
                .sum();
        }
    }
    out
}

fn ssim_plane(a: &[f64], b: &[f64], h: usize, w: usize, p: &SsimParams) -> f64 {
    let k = p.kernel();
    let radius = p.radius();
    let (c1, c2) = ((0.01 * p.data_range).powi(2), (0.03 * p.data_range).powi(2));
    let np = (k.len() * k.len()) as f64;
    let cov_norm = if p.sample_covariance {
        np / (np - 1.0)
    } else {
        1.0
    };
    let prod = |p: &[f64], q: &[f64]| p.iter().zip(q).map(|(x, y)| x * y).collect::<Vec<_>>();
    let (ux, uy) = (blur(a, h, w, &k), blur(b, h, w, &k));
    let (uxx, uyy, uxy) = (
        blur(&prod(a, a), h, w, &k),
        blur(&prod(b, b), h, w, &k),
        blur(&prod(a, b), h, w, &k),
    );
    let mut sum = 0.0;
    let mut n = 0usize;
    for y in radius..h - radius {
        for x in radius..w - radius {
            let i = y * w + x;
            let (vx, vy, vxy) = (
                cov_norm * (uxx[i] - ux[i] * ux[i]),
                cov_norm * (uyy[i] - uy[i] * uy[i]),
                cov_norm * (uxy[i] - ux[i] * uy[i]),
            );
            let s = ((2.0 * ux[i] * uy[i] + c1) * (2.0 * vxy + c2))
                / ((ux[i] * ux[i] + uy[i] * uy[i] + c1) * (vx + vy + c2));
            sum += s;
            n += 1;
        }
    }
    sum / n as f64
}

/// SSIM of two images of the same shape under `p`, per channel then averaged.
pub fn ssim_with(a: &Planes, b: &Planes, p: &SsimParams) -> Result<f64> {
    if (a.h, a.w, a.channels) != (b.h, b.w, b.channels) {
        return Err(Error::Msg(format!(
            "shapes differ: {}x{}x{} vs {}x{}x{}",
            a.channels, a.h, a.w, b.channels, b.h, b.w
        )));
    }
    let side = 2 * p.radius() + 1;
    if a.h < side || a.w < side {
        return Err(Error::Msg(format!(
            "SSIM needs images of at least {side}x{side} pixels, got {}x{}",
            a.h, a.w
        )));
    }
    Ok((0..a.channels)
        .map(|c| ssim_plane(a.plane(c), b.plane(c), a.h, a.w, p))
        .sum::<f64>()
        / a.channels as f64)
}

/// Another codebase's PSNR / SSIM, so lqae's figures can be set beside a published table.
/// Each is golden-tested against scikit-image called as that code calls it
/// (`tests/data/conventions_golden.py`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Convention {
    /// LlamaGen (`tokenizer/tokenizer_image/reconstruction_vq_ddp.py`): the input as float,
    /// the reconstruction rounded half up to uint8 (`clamp(127.5 x + 128, 0, 255)` on [-1, 1]
    /// outputs); per-image `peak_signal_noise_ratio` (data range 1, inferred from float) and
    /// `structural_similarity(data_range=2.0, channel_axis=-1)` on [0, 1] data (its constants
    /// 4x the usual), scikit-image's 7x7 uniform window and sample covariance.
    LlamaGen,
    /// Open-MAGVIT2 (`evaluation.py`): both images truncated to uint8 (`(x * 255).to(uint8)`),
    /// SSIM `data_range=1.0` with the 7x7 uniform window and sample covariance; PSNR of each
    /// batch of 4 images' pooled MSE (its loop scores the whole batch once per image), averaged
    /// over batches.
    OpenMagvit2,
}

impl Convention {
    pub const ALL: [Convention; 2] = [Convention::LlamaGen, Convention::OpenMagvit2];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == s)
    }

    pub fn name(self) -> &'static str {
        match self {
            Convention::LlamaGen => "llamagen",
            Convention::OpenMagvit2 => "open-magvit2",
        }
    }

    /// The names of its PSNR and SSIM metrics.
    pub fn metric_names(self) -> (&'static str, &'static str) {
        match self {
            Convention::LlamaGen => ("psnr_llamagen", "ssim_llamagen"),
            Convention::OpenMagvit2 => ("psnr_omg2", "ssim_omg2"),
        }
    }

    pub fn ssim_params(self) -> SsimParams {
        SsimParams {
            gaussian: false,
            win_size: 7,
            sample_covariance: true,
            data_range: match self {
                Convention::LlamaGen => 2.0,
                Convention::OpenMagvit2 => 1.0,
            },
        }
    }

    pub fn describe(self) -> String {
        match self {
            Convention::LlamaGen => "LlamaGen reconstruction_vq_ddp.py: input float in [0, 1], reconstruction rounded half up to uint8 / 255; per-image skimage PSNR (data range 1) and SSIM(data_range=2.0, 7x7 uniform window, sample covariance, per channel), averaged over images".into(),
            Convention::OpenMagvit2 => "Open-MAGVIT2 evaluation.py: input and reconstruction truncated to uint8 / 255; skimage SSIM(data_range=1.0, 7x7 uniform window, sample covariance, per channel) per image; PSNR of each batch of 4 images' pooled MSE (data range 1), the batch value given to each of its images, averaged".into(),
        }
    }

    /// Per-image PSNR and SSIM of `inputs` against `recons` (values in [0, 1]) under this
    /// convention; Open-MAGVIT2's PSNR is per batch of 4 consecutive images (each image of a
    /// batch gets the batch's value; the last batch may be smaller).
    pub fn scores(self, inputs: &[Planes], recons: &[Planes]) -> Result<(Vec<f64>, Vec<f64>)> {
        let quant = |p: &Planes, f: fn(f64) -> f64| Planes {
            data: p.data.iter().map(|&v| f(v.clamp(0.0, 1.0))).collect(),
            ..p.clone()
        };
        let round_half_up = |v: f64| ((255.0 * v + 0.5).floor()).min(255.0) / 255.0;
        let trunc = |v: f64| ((v as f32 * 255.0).floor() as f64) / 255.0;
        let pairs: Vec<(Planes, Planes)> = inputs
            .iter()
            .zip(recons)
            .map(|(a, b)| match self {
                Convention::LlamaGen => (a.clone(), quant(b, round_half_up)),
                Convention::OpenMagvit2 => (quant(a, trunc), quant(b, trunc)),
            })
            .collect();
        let p = self.ssim_params();
        let ssim = pairs
            .iter()
            .map(|(a, b)| ssim_with(a, b, &p))
            .collect::<Result<Vec<_>>>()?;
        let psnr = match self {
            Convention::LlamaGen => pairs.iter().map(|(a, b)| psnr_capped(mse(a, b))).collect(),
            Convention::OpenMagvit2 => pairs
                .chunks(4)
                .flat_map(|batch| {
                    let m = batch.iter().map(|(a, b)| mse(a, b)).sum::<f64>() / batch.len() as f64;
                    vec![psnr_capped(m); batch.len()]
                })
                .collect(),
        };
        Ok((psnr, ssim))
    }
}

/// MSE, PSNR and SSIM of two images of the same shape.
pub fn compare(a: &Planes, b: &Planes) -> Result<Scores> {
    if (a.h, a.w, a.channels) != (b.h, b.w, b.channels) {
        return Err(Error::Msg(format!(
            "shapes differ: {}x{}x{} vs {}x{}x{}",
            a.channels, a.h, a.w, b.channels, b.h, b.w
        )));
    }
    let ssim = ssim_with(a, b, &SsimParams::WANG)?;
    let m = mse(a, b);
    Ok(Scores {
        mse: m,
        psnr: psnr_from_mse(m),
        ssim,
    })
}

/// A `.png`, `.jpg` or `.jpeg` file name (any case).
pub fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

/// Pairs of files to compare: two files, or two folders paired by file name.
pub fn pair_paths(a: &Path, b: &Path) -> Result<Vec<(String, PathBuf, PathBuf)>> {
    if a.is_file() && b.is_file() {
        let name = a
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        return Ok(vec![(name, a.to_path_buf(), b.to_path_buf())]);
    }
    if !(a.is_dir() && b.is_dir()) {
        return Err(Error::Msg(format!(
            "{} and {} must be two image files or two folders",
            a.display(),
            b.display()
        )));
    }
    let names = |d: &Path| -> Result<Vec<String>> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .map_err(|e| Error::file(d, e.to_string()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_image(p))
            .map(|p| {
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        v.sort();
        Ok(v)
    };
    let (na, nb) = (names(a)?, names(b)?);
    let missing: Vec<&String> = na
        .iter()
        .filter(|n| !nb.contains(n))
        .chain(nb.iter().filter(|n| !na.contains(n)))
        .collect();
    if !missing.is_empty() {
        return Err(Error::Msg(format!(
            "images without a counterpart of the same name: {}",
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if na.is_empty() {
        return Err(Error::file(a, "holds no PNG/JPEG images"));
    }
    Ok(na
        .into_iter()
        .map(|n| (n.clone(), a.join(&n), b.join(&n)))
        .collect())
}

/// Read and compare two image files (grey against RGB compares in RGB).
pub fn compare_files(a: &Path, b: &Path) -> Result<Scores> {
    let (mut pa, mut pb) = (Planes::read(a)?, Planes::read(b)?);
    if (pa.h, pa.w) != (pb.h, pb.w) {
        return Err(Error::Msg(format!(
            "{} is {}x{} but {} is {}x{}",
            a.display(),
            pa.w,
            pa.h,
            b.display(),
            pb.w,
            pb.h
        )));
    }
    if pa.channels != pb.channels {
        pa = pa.to_rgb();
        pb = pb.to_rgb();
    }
    compare(&pa, &pb).map_err(|e| Error::Msg(format!("{} vs {}: {e}", a.display(), b.display())))
}

impl Planes {
    /// A `(1, 3, h, w)` f32 tensor (grey repeated over three channels), for LPIPS.
    pub fn to_rgb_tensor(&self, device: &candle_core::Device) -> Result<candle_core::Tensor> {
        let rgb = self.to_rgb();
        let v: Vec<f32> = rgb.data.iter().map(|&x| x as f32).collect();
        Ok(candle_core::Tensor::from_vec(
            v,
            (1, 3, self.h, self.w),
            device,
        )?)
    }
}

/// LPIPS of two image files (grey compared as RGB); the error names both files.
pub fn lpips_files(lp: &crate::lpips::Lpips, a: &Path, b: &Path) -> Result<f64> {
    let (pa, pb) = (Planes::read(a)?, Planes::read(b)?);
    let both = |e: Error| Error::Msg(format!("{} vs {}: {e}", a.display(), b.display()));
    if (pa.h, pa.w) != (pb.h, pb.w) {
        return Err(both(Error::Msg(format!(
            "sizes differ: {}x{} vs {}x{}",
            pa.w, pa.h, pb.w, pb.h
        ))));
    }
    let dev = candle_core::Device::Cpu;
    let d = lp
        .forward(&pa.to_rgb_tensor(&dev)?, &pb.to_rgb_tensor(&dev)?)
        .map_err(both)?;
    let v: Vec<f32> = d.to_vec1().map_err(|e| both(e.into()))?;
    Ok(v[0] as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_matches_scipy() {
        let idx: Vec<usize> = (-3..7).map(|i| reflect(i, 4)).collect();
        assert_eq!(idx, vec![2, 1, 0, 0, 1, 2, 3, 3, 2, 1]);
        assert!((SsimParams::WANG.kernel().iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn identical_images_have_ssim_one_and_infinite_psnr() {
        let data: Vec<f64> = (0..3 * 16 * 12).map(|i| (i % 17) as f64 / 16.0).collect();
        let a = Planes::new(16, 12, 3, data, "a").unwrap();
        let s = compare(&a, &a).unwrap();
        assert_eq!(s.mse, 0.0);
        assert_eq!(s.psnr, None);
        assert!((s.ssim - 1.0).abs() < 1e-12);
        let e = Planes::new(2, 2, 1, vec![0.0, 255.0, 3.0, 1.0], "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("outside [0, 1]") && e.contains("1/255"), "{e}");
        let small = Planes::new(8, 8, 1, vec![0.5; 64], "s").unwrap();
        assert!(compare(&small, &small)
            .unwrap_err()
            .to_string()
            .contains("11x11"));
    }
}

/// What the tokens of a set of images look like.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenStats {
    pub images: usize,
    pub tokens: usize,
    /// Distinct ids used.
    pub distinct: usize,
    /// `distinct / vocabulary size`.
    pub usage: f64,
    /// `exp(entropy)` of the pooled id distribution (natural log).
    pub perplexity: f64,
    /// Mean over images of the entropy (nats) of each image's own id distribution.
    pub mean_image_entropy: f64,
    /// The most used ids with their count, most frequent first (ties: lower id first).
    pub top: Vec<(u32, usize)>,
    /// Share of tokens that are special tokens / word-continuation pieces.
    pub special_share: f64,
    pub subword_share: f64,
}

fn entropy(counts: impl Iterator<Item = usize>, total: usize) -> f64 {
    counts
        .filter(|&c| c > 0)
        .map(|c| c as f64 / total as f64)
        .map(|p| -p * p.ln())
        .sum()
}

/// Token statistics of per-image id lists. `is_special` / `is_subword` classify ids (for a
/// learned VQ codebook, pass `|_| false`).
pub fn token_stats(
    per_image: &[Vec<u32>],
    vocab_size: usize,
    top_k: usize,
    is_special: impl Fn(u32) -> bool,
    is_subword: impl Fn(u32) -> bool,
) -> TokenStats {
    let mut counts = std::collections::BTreeMap::<u32, usize>::new();
    let mut image_entropy = 0.0;
    for ids in per_image {
        let mut own = std::collections::BTreeMap::<u32, usize>::new();
        for &i in ids {
            *counts.entry(i).or_default() += 1;
            *own.entry(i).or_default() += 1;
        }
        image_entropy += entropy(own.into_values(), ids.len());
    }
    let tokens: usize = counts.values().sum();
    let mut top: Vec<(u32, usize)> = counts.iter().map(|(&i, &c)| (i, c)).collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    top.truncate(top_k);
    let share = |f: &dyn Fn(u32) -> bool| {
        counts
            .iter()
            .filter(|(&i, _)| f(i))
            .map(|(_, &c)| c)
            .sum::<usize>() as f64
            / tokens.max(1) as f64
    };
    TokenStats {
        images: per_image.len(),
        tokens,
        distinct: counts.len(),
        usage: counts.len() as f64 / vocab_size.max(1) as f64,
        perplexity: entropy(counts.values().copied(), tokens.max(1)).exp(),
        mean_image_entropy: image_entropy / per_image.len().max(1) as f64,
        top,
        special_share: share(&is_special),
        subword_share: share(&is_subword),
    }
}

#[cfg(test)]
mod token_tests {
    use super::*;

    #[test]
    fn token_stats_by_hand() {
        // Image 0 uses ids 5,5,7,9; image 1 uses 5,5,5,5.
        let s = token_stats(
            &[vec![5, 5, 7, 9], vec![5, 5, 5, 5]],
            100,
            2,
            |i| i == 9,
            |i| i == 7,
        );
        assert_eq!((s.images, s.tokens, s.distinct), (2, 8, 3));
        assert!((s.usage - 0.03).abs() < 1e-12);
        // Pooled: p = 6/8, 1/8, 1/8.
        let h = -(0.75f64 * 0.75f64.ln() + 2.0 * 0.125 * 0.125f64.ln());
        assert!((s.perplexity - h.exp()).abs() < 1e-12);
        // Image 0: p = 1/2, 1/4, 1/4 -> 1.5 ln 2; image 1: 0.
        assert!((s.mean_image_entropy - 0.75 * 2f64.ln()).abs() < 1e-12);
        assert_eq!(s.top, vec![(5, 6), (7, 1)]);
        assert!((s.special_share - 0.125).abs() < 1e-12 && (s.subword_share - 0.125).abs() < 1e-12);
    }
}

/// Scores of image pairs (`lqae-eval metrics`): each pair's MSE, PSNR, SSIM and LPIPS, and
/// the means (PSNR averaged per image; None when any pair is identical).
pub struct PairsReport {
    pub rows: Vec<(String, Scores, Option<f64>)>,
    pub mean_mse: f64,
    pub mean_ssim: f64,
    pub mean_psnr: Option<f64>,
    pub mean_lpips: Option<f64>,
}

/// Score two images, or two folders paired by file name, with LPIPS `lp` if given.
pub fn score_pairs(a: &Path, b: &Path, lp: Option<&crate::lpips::Lpips>) -> Result<PairsReport> {
    let pairs = pair_paths(a, b)?;
    let mut rows = Vec::new();
    for (name, pa, pb) in &pairs {
        let s = compare_files(pa, pb)?;
        let l = match lp {
            Some(lp) => Some(
                lpips_files(lp, pa, pb)
                    .map_err(|e| Error::Msg(format!("{e} (or pass --lpips none)")))?,
            ),
            None => None,
        };
        rows.push((name.clone(), s, l));
    }
    let n = rows.len() as f64;
    Ok(PairsReport {
        mean_mse: rows.iter().map(|r| r.1.mse).sum::<f64>() / n,
        mean_ssim: rows.iter().map(|r| r.1.ssim).sum::<f64>() / n,
        mean_psnr: rows
            .iter()
            .map(|r| r.1.psnr)
            .try_fold(0.0, |acc, p| p.map(|p| acc + p))
            .map(|s| s / n),
        mean_lpips: lp.map(|_| rows.iter().filter_map(|r| r.2).sum::<f64>() / n),
        rows,
    })
}
