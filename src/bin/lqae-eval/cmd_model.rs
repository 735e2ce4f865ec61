//! `tokens`, `train`, `encode`, `reconstruct`, `metrics`.

use super::cmd_assets::ensure;
use anyhow::Result;
use candle_core::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use lqae::assets;
use lqae::data::{self, Split, FASHION_MNIST_CLASSES};
use lqae::device::{device_name, parse_device};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub fn tokens(
    n: usize,
    lm_dir: Option<PathBuf>,
    device: &str,
    patch: usize,
    seed: u64,
) -> Result<()> {
    let device: Device = parse_device(device)?;
    let t0 = Instant::now();
    let lm_dir = match lm_dir {
        Some(d) => d,
        None => ensure(&assets::MINILM, false)?,
    };
    let data_dir = ensure(&assets::FASHION_MNIST, false)?;
    let r = lqae::tools::tokens::tokens(n, &lm_dir, &data_dir, patch, seed, &device)?;
    for l in r.header.iter().chain(&r.lines) {
        println!("{l}");
    }
    println!(
        "{} distinct tokens over {} images; {:.1} s",
        r.distinct,
        r.lines.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

pub fn train(
    config: &Path,
    set: &[String],
    out: Option<PathBuf>,
    resume: bool,
    stop_at: Option<usize>,
    device: &str,
) -> Result<()> {
    let device = parse_device(device)?;
    let cfg = lqae::model::RunConfig::from_file(config, set)?;
    let out = out.unwrap_or_else(|| PathBuf::from("runs").join(&cfg.name));
    println!(
        "training {} ({}) on {} -> {}",
        cfg.name,
        config.display(),
        device_name(&device),
        out.display()
    );
    let o = lqae::train::train(
        &cfg,
        &out,
        &device,
        &lqae::train::TrainOptions {
            resume,
            stop_at,
            progress: true,
        },
    )?;
    let fmt = |l: &Option<lqae::train::LogLine>| {
        l.as_ref()
            .map(|l| {
                format!(
                    "step {} loss {:.5} recon MSE {:.5}",
                    l.step, l.losses["loss"], l.losses["recon_mse"]
                )
            })
            .unwrap_or_else(|| "-".into())
    };
    println!("first logged: {}", fmt(&o.first));
    println!("last logged:  {}", fmt(&o.last));
    if let Some(l) = &o.last {
        println!("{:.1} images/s at the end", l.images_per_s);
    }
    println!(
        "stopped at step {} after {:.1} s; checkpoints in {}",
        o.step,
        o.seconds,
        out.join("checkpoints").display()
    );
    Ok(())
}

fn test_batch(n: usize, size: usize, device: &Device) -> Result<(Tensor, data::LabelledImages)> {
    let dir = ensure(&assets::FASHION_MNIST, false)?;
    let test = data::load_mnist_like(&dir, Split::Test, &FASHION_MNIST_CLASSES)?;
    let idx: Vec<usize> = (0..n.min(test.len())).collect();
    Ok((
        data::batch::make_batch(&test, &idx, size as u32, None, device)?,
        test,
    ))
}

pub fn ship(run: &Path, name: &str, out: &Path) -> Result<()> {
    let dir = lqae::eval::shipped::ship(run, name, out, &Device::Cpu)?;
    let m = lqae::eval::shipped::verify(&dir)?;
    println!(
        "{}: step {}, {} images, {:.0} s of training; model.safetensors sha256 {}",
        dir.display(),
        m.step,
        m.images_seen,
        m.train_seconds,
        m.files["model.safetensors"]
    );
    Ok(())
}

pub fn encode(ckpt: &Path, n: usize, show: usize, device: &str) -> Result<()> {
    let device = parse_device(device)?;
    let (model, _p, state) = lqae::train::load_model(ckpt, &device)?;
    let (images, test) = test_batch(n, state.config.model.image_size, &device)?;
    let ids: Vec<Vec<u32>> = model.encode(&images)?.to_vec2()?;
    println!(
        "{} at step {}: {} tokens per image",
        state.config.name,
        state.step,
        ids.first().map_or(0, Vec::len)
    );
    let vocab_size = model.codebook_len();
    let stats = model.token_stats(&ids, 10);
    let text = |t: u32| model.token_text(t).unwrap_or_else(|| t.to_string());
    for (i, row) in ids.iter().enumerate().take(12) {
        let words: Vec<String> = row.iter().take(show).map(|&t| text(t)).collect();
        println!("#{i:<3} {:12} {}", test.class_name(i), words.join(" "));
    }
    println!(
        "{} images: {} distinct of {vocab_size} codes ({:.2}%), perplexity {:.1}, mean per-image entropy {:.2} nats, special {:.1}%, sub-word {:.1}%",
        stats.images,
        stats.distinct,
        100.0 * stats.usage,
        stats.perplexity,
        stats.mean_image_entropy,
        100.0 * stats.special_share,
        100.0 * stats.subword_share
    );
    let top: Vec<String> = stats
        .top
        .iter()
        .map(|&(t, c)| format!("{} ({c})", text(t)))
        .collect();
    println!("most used: {}", top.join(", "));
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub fn encode_file(
    model: String,
    images: Option<PathBuf>,
    data: Option<String>,
    data_path: Option<String>,
    split: &str,
    out: PathBuf,
    shard: Option<String>,
    skip_bad: bool,
    batch: usize,
    device: &str,
) -> Result<()> {
    use lqae::eval::codec::{self, EncodeArgs, Images};
    let device = parse_device(device)?;
    let split = match split {
        "train" => Split::Train,
        "test" => Split::Test,
        s => anyhow::bail!("setting `--split`: `{s}`: use train or test"),
    };
    let images = match (images, data) {
        (Some(dir), None) => Images::Folder(dir),
        (None, Some(dataset)) => Images::Data(
            data::DataConfig {
                dataset,
                path: data_path,
                limit: None,
                augment: false,
            },
            split,
        ),
        _ => anyhow::bail!("encode: give exactly one of `--images DIR` and `--data NAME`"),
    };
    let shard = shard.map(|s| codec::parse_shard(&s)).transpose()?;
    let zoo = lqae::eval::Zoo::new(&device, true);
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("encoding {bar:30} {pos}/{len} images, {per_sec}, {eta} left")
            .expect("template"),
    );
    let t0 = Instant::now();
    let s = codec::encode(
        &zoo,
        &EncodeArgs {
            model,
            images,
            out: out.clone(),
            shard,
            skip_bad,
            batch,
        },
        &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )?;
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "{} images{}: {} encoded ({:.1} images/s), {} skipped{} -> {}",
        s.images,
        shard
            .map(|(k, n)| format!(" (shard {k}/{n})"))
            .unwrap_or_default(),
        s.encoded,
        s.encoded as f64 / secs.max(1e-9),
        s.skipped,
        if s.resumed_after > 0 {
            format!(", resumed after {}", s.resumed_after)
        } else {
            String::new()
        },
        out.display()
    );
    Ok(())
}

pub fn decode_file(
    tokens: &Path,
    model: &str,
    out: &Path,
    batch: usize,
    device: &str,
) -> Result<()> {
    let device = parse_device(device)?;
    let zoo = lqae::eval::Zoo::new(&device, true);
    let n = lqae::eval::codec::decode(&zoo, model, tokens, out, batch)?;
    println!("{n} images decoded into {}", out.display());
    Ok(())
}

pub fn reconstruct(ckpt: &Path, n: usize, out: &Path, device: &str) -> Result<()> {
    let device = parse_device(device)?;
    let (model, _p, state) = lqae::train::load_model(ckpt, &device)?;
    let (images, _test) = test_batch(n, state.config.model.image_size, &device)?;
    let fwd = model.forward(&images, None)?;
    lqae::data::batch::write_grid(&[&images, &fwd.recon], 16, out)?;
    println!(
        "{} at step {}: recon MSE {:.5} over {} test images; grid written to {}",
        state.config.name,
        state.step,
        fwd.losses.recon.to_scalar::<f32>()?,
        images.dim(0)?,
        out.display()
    );
    Ok(())
}

pub fn fid(a: &Path, b: &Path, json: bool, kid: lqae::fid::KidSettings, cache: bool) -> Result<()> {
    let (ia, ib) = (lqae::fid::read_folder(a)?, lqae::fid::read_folder(b)?);
    // Fetched here first for the progress output; `Features::load` then finds it in place.
    ensure(&assets::INCEPTION_FID, true)?;
    let net = lqae::fid::Features::load(&Device::Cpu, cache)?;
    let mut feats = Vec::new();
    for (dir, imgs) in [(a, &ia), (b, &ib)] {
        let bar = ProgressBar::new(imgs.len() as u64).with_style(
            ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} images, {eta} left")
                .expect("template"),
        );
        bar.set_message(format!("Inception features of {}", dir.display()));
        feats.push(net.of(imgs, &mut |done, _| bar.set_position(done as u64))?);
        bar.finish_and_clear();
    }
    let r = lqae::fid::report(&feats[0], &feats[1], kid, net.weights_sha256())?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "FID {:.4}   KID {:.6}{}   ({} vs {} images)",
            r.fid,
            r.kid,
            match (r.kid_std, r.kid_subset_size) {
                (Some(s), Some(size)) =>
                    format!(" +- {s:.6} over {} subsets of {size}", r.kid_subsets),
                _ => " (one full-set estimate)".into(),
            },
            r.n_a,
            r.n_b
        );
        if r.n_a.min(r.n_b) < 2048 {
            println!("note: FID is biased upward below about 2,048 images; compare only figures over equal image counts");
        }
        for (k, v) in &r.conventions {
            println!("  {k}: {v}");
        }
    }
    Ok(())
}

pub fn metrics(a: &Path, b: &Path, json: bool, lpips: &str) -> Result<()> {
    let net = lqae::eval::kinds::recon::lpips_setting(lpips)
        .map_err(|_| anyhow::anyhow!("setting `--lpips`: `{lpips}`: use alex, vgg16 or none"))?;
    let lp = match net {
        Some(n) => {
            ensure(&assets::LPIPS, true)?;
            Some(lqae::lpips::Lpips::load(n, &Device::Cpu)?)
        }
        None => None,
    };
    let r = lqae::metrics::score_pairs(a, b, lp.as_ref())?;
    let net_name = net.map(|n| n.name()).unwrap_or("none");
    let psnr_json = |p: Option<f64>| {
        p.map(serde_json::Value::from)
            .unwrap_or(serde_json::Value::Null)
    };
    let psnr_text = |p: Option<f64>| {
        p.map(|p| format!("{p:.3}"))
            .unwrap_or_else(|| "inf (identical)".into())
    };
    if json {
        for (name, s, l) in &r.rows {
            println!(
                "{}",
                serde_json::json!({"pair": name, "mse": s.mse, "psnr": psnr_json(s.psnr), "psnr_infinite": s.psnr.is_none(), "ssim": s.ssim, "lpips": l, "lpips_net": net_name})
            );
        }
        println!(
            "{}",
            serde_json::json!({"pair": "mean", "n": r.rows.len(), "mse": r.mean_mse, "psnr": psnr_json(r.mean_psnr), "psnr_infinite": r.mean_psnr.is_none(), "ssim": r.mean_ssim, "lpips": r.mean_lpips, "lpips_net": net_name})
        );
    } else {
        let lp_text = |l: Option<f64>| l.map(|l| format!("{l:.4}")).unwrap_or_else(|| "-".into());
        println!("| pair | MSE | PSNR (dB) | SSIM | LPIPS ({net_name}) |\n|---|---|---|---|---|");
        for (name, s, l) in &r.rows {
            println!(
                "| {name} | {:.6} | {} | {:.4} | {} |",
                s.mse,
                psnr_text(s.psnr),
                s.ssim,
                lp_text(*l)
            );
        }
        println!(
            "| mean of {} | {:.6} | {} | {:.4} | {} |",
            r.rows.len(),
            r.mean_mse,
            psnr_text(r.mean_psnr),
            r.mean_ssim,
            lp_text(r.mean_lpips)
        );
    }
    Ok(())
}
