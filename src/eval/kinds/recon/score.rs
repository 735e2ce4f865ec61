//! Scoring one model over the test subset: per-image MSE, PSNR, SSIM and LPIPS, the ids of
//! its tokens, and what those tokens look like.

use super::spec::ReconSettings;
use crate::data::batch::make_batch;
use crate::data::LabelledImages;
use crate::error::Result;
use crate::eval::stats::mean_t_interval;
use crate::lpips::{Lpips, LpipsNet};
use crate::metrics::{self, Planes};
use crate::model::Autoencoder;
use crate::util::progress::Progress;
use candle_core::Device;
use std::collections::BTreeMap;
use std::time::Instant;

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
pub struct ModelRun {
    pub rep: String,
    pub size: usize,
    pub values: BTreeMap<&'static str, Vec<f64>>,
    pub token_entropy: Vec<f64>,
    pub ids: Vec<Vec<u32>>,
    /// Grid images: originals and reconstructions, `(3, s, s)` each, row-major f32.
    pub grid_originals: Vec<Vec<f32>>,
    pub grid_recons: Vec<Vec<f32>>,
    /// With `recon.fid`: every scored input and its reconstruction as uint8 RGB.
    pub fid_inputs: Vec<crate::fid::Rgb8>,
    pub fid_recons: Vec<crate::fid::Rgb8>,
}

fn image_entropy(ids: &[u32]) -> f64 {
    metrics::token_stats(&[ids.to_vec()], 1, 0, |_| false, |_| false).mean_image_entropy
}

#[allow(clippy::too_many_arguments)]
pub fn score_model(
    rep: &str,
    model: &Autoencoder,
    size: usize,
    set: &LabelledImages,
    idx: &[usize],
    lpips: Option<&Lpips>,
    settings: &ReconSettings,
    conventions: &[metrics::Convention],
    device: &Device,
    progress: &dyn Progress,
) -> Result<ModelRun> {
    let mut kept: Vec<(Planes, Planes)> = Vec::new();
    let mut values: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    let mut out = ModelRun {
        rep: rep.to_string(),
        size,
        values: BTreeMap::new(),
        token_entropy: Vec::new(),
        ids: Vec::new(),
        grid_originals: Vec::new(),
        grid_recons: Vec::new(),
        fid_inputs: Vec::new(),
        fid_recons: Vec::new(),
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
            let (pa, pb) = (
                planes(&a, j, size, size, &what)?,
                planes(&b, j, size, size, &what)?,
            );
            let s = metrics::compare(&pa, &pb)?;
            if !conventions.is_empty() {
                kept.push((pa, pb));
            }
            values.entry("mse").or_default().push(s.mse);
            values
                .entry("psnr")
                .or_default()
                .push(metrics::psnr_capped(s.mse));
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
        if settings.fid {
            for j in 0..chunk.len() {
                let rgb =
                    |v: &[f32]| crate::fid::Rgb8::from_unit(size, size, 3, &v[j * n..(j + 1) * n]);
                out.fid_inputs.push(rgb(&a)?);
                out.fid_recons.push(rgb(&b)?);
            }
        }
        for j in 0..chunk.len() {
            if out.grid_originals.len() < settings.grid_images {
                out.grid_originals.push(a[j * n..(j + 1) * n].to_vec());
                out.grid_recons.push(b[j * n..(j + 1) * n].to_vec());
            }
        }
        out.token_entropy
            .extend(ids.iter().map(|row| image_entropy(row)));
        out.ids.extend(ids);
        progress.partial(&format!(
            "  {rep}: {}/{} images, {:.0} s",
            (start + chunk.len()),
            idx.len(),
            t0.elapsed().as_secs_f64()
        ));
    }
    progress.line("");
    if !conventions.is_empty() {
        let (ins, recs): (Vec<Planes>, Vec<Planes>) = kept.into_iter().unzip();
        for c in conventions {
            let (psnr, ssim) = c.scores(&ins, &recs)?;
            let (np, ns) = c.metric_names();
            values.insert(np, psnr);
            values.insert(ns, ssim);
        }
    }
    out.values = values;
    Ok(out)
}

/// What the tokens of one model look like, for `extra.tokens`.
pub fn token_summary(model: &Autoencoder, run: &ModelRun, top_k: usize) -> serde_json::Value {
    let vocab = model.codebook_len();
    let stats = model.token_stats(&run.ids, top_k);
    let text = |t: u32| model.token_text(t).unwrap_or_else(|| format!("#{t}"));
    let entropy = mean_t_interval(&run.token_entropy, 0.0, true);
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
