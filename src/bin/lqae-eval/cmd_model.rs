//! `tokens`, `train`, `ship`, `encode`, `decode`, `reconstruct`, `fid`, `metrics`: each parses
//! its arguments, calls the library and prints what it returns.

use super::cmd_assets::ensure;
use anyhow::Result;
use candle_core::Device;
use indicatif::{ProgressBar, ProgressStyle};
use lqae::assets;
use lqae::data::{self, Split};
use lqae::device::{device_name, parse_device};
use lqae::tools::preview::Preview;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub fn tokens(a: TokensArgs) -> Result<()> {
    let TokensArgs {
        n,
        lm,
        device,
        patch,
        seed,
    } = a;
    let device: Device = parse_device(&device)?;
    let t0 = Instant::now();
    let lm_dir = match lm {
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

pub fn train(a: TrainArgs) -> Result<()> {
    let TrainArgs {
        config,
        set,
        out,
        resume,
        stop_at,
        device,
    } = a;
    let device = parse_device(&device)?;
    let cfg = lqae::model::RunConfig::from_file(&config, &set)?;
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

pub fn ship(a: ShipArgs) -> Result<()> {
    let dir = lqae::eval::shipped::ship(&a.run, &a.name, &a.out, &Device::Cpu)?;
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

pub fn encode(a: EncodeArgs) -> Result<()> {
    match (&a.ckpt, &a.model) {
        (Some(ckpt), _) => preview_tokens(ckpt, a.n, a.show, &a.device),
        (None, Some(model)) => encode_file(&FileArgs {
            model: model.clone(),
            images: a.images,
            data: a.data,
            data_path: a.data_path,
            split: a.split,
            out: a.out,
            shard: a.shard,
            skip_bad: a.skip_bad,
            batch: a.batch,
            device: a.device,
        }),
        (None, None) => Err(anyhow::anyhow!(
            "encode: name a model (`--model NAME`) with `--images DIR` or `--data NAME`, or preview a run with `--ckpt DIR`"
        )),
    }
}

/// `encode --ckpt`: the token text of the first test images of the run's data set.
fn preview_tokens(ckpt: &Path, n: usize, show: usize, device: &str) -> Result<()> {
    let device = parse_device(device)?;
    let p = Preview::load(ckpt, n, &device)?;
    let t = p.tokens(show)?;
    let (rows, stats, per_image) = (t.rows, t.stats, t.per_image);
    println!(
        "{} at step {}: {per_image} tokens per image ({} test images of {})",
        p.state.config.name,
        p.state.step,
        rows.len(),
        p.state.config.data.dataset
    );
    for (i, (class, words)) in rows.iter().enumerate().take(12) {
        println!("#{i:<3} {class:12} {}", words.join(" "));
    }
    println!(
        "{} images: {} distinct of {} codes ({:.2}%), perplexity {:.1}, mean per-image entropy {:.2} nats, special {:.1}%, sub-word {:.1}%",
        stats.images,
        stats.distinct,
        p.model.codebook_len(),
        100.0 * stats.usage,
        stats.perplexity,
        stats.mean_image_entropy,
        100.0 * stats.special_share,
        100.0 * stats.subword_share
    );
    let text = |t: u32| p.model.token_text(t).unwrap_or_else(|| t.to_string());
    let top: Vec<String> = stats
        .top
        .iter()
        .map(|&(t, c)| format!("{} ({c})", text(t)))
        .collect();
    println!("most used: {}", top.join(", "));
    Ok(())
}

/// What `encode --model` and `reconstruct --model` encode, and where.
struct FileArgs {
    model: String,
    images: Option<PathBuf>,
    data: Option<String>,
    data_path: Option<String>,
    split: String,
    out: PathBuf,
    shard: Option<String>,
    skip_bad: bool,
    batch: usize,
    device: String,
}

fn encode_file(a: &FileArgs) -> Result<()> {
    use lqae::eval::codec::{self, Images};
    let device = parse_device(&a.device)?;
    let split = match a.split.as_str() {
        "train" => Split::Train,
        "test" => Split::Test,
        s => anyhow::bail!("setting `--split`: `{s}`: use train or test"),
    };
    let images = match (&a.images, &a.data) {
        (Some(dir), None) => Images::Folder(dir.clone()),
        (None, Some(dataset)) => Images::Data(
            data::DataConfig {
                dataset: dataset.clone(),
                path: a.data_path.clone(),
                limit: None,
                augment: false,
            },
            split,
        ),
        _ => anyhow::bail!("encode: give exactly one of `--images DIR` and `--data NAME`"),
    };
    let shard = a.shard.as_deref().map(codec::parse_shard).transpose()?;
    let zoo = lqae::eval::Zoo::new(&device, true);
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("encoding {bar:30} {pos}/{len} images, {per_sec}, {eta} left")
            .expect("template"),
    );
    let t0 = Instant::now();
    let s = codec::encode(
        &zoo,
        &codec::EncodeArgs {
            model: a.model.clone(),
            images,
            out: a.out.clone(),
            shard,
            skip_bad: a.skip_bad,
            batch: a.batch,
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
        a.out.display()
    );
    Ok(())
}

pub fn decode(a: DecodeArgs) -> Result<()> {
    decode_file(&a.tokens, &a.model, &a.out, a.batch, &a.device)
}

fn decode_file(tokens: &Path, model: &str, out: &Path, batch: usize, device: &str) -> Result<()> {
    let device = parse_device(device)?;
    let zoo = lqae::eval::Zoo::new(&device, true);
    let n = lqae::eval::codec::decode(&zoo, model, tokens, out, batch)?;
    println!("{n} images decoded into {}", out.display());
    Ok(())
}

pub fn reconstruct(a: ReconstructArgs) -> Result<()> {
    match (&a.ckpt, &a.model) {
        (Some(ckpt), _) => {
            let device = parse_device(&a.device)?;
            let p = Preview::load(ckpt, a.n, &device)?;
            let mse = p.grid(&a.out)?;
            println!(
                "{} at step {}: recon MSE {mse:.5} over {} test images of {}; grid written to {}",
                p.state.config.name,
                p.state.step,
                p.images.dim(0)?,
                p.state.config.data.dataset,
                a.out.display()
            );
            Ok(())
        }
        (None, Some(model)) => {
            let tokens = a.out.join("tokens.jsonl");
            std::fs::create_dir_all(&a.out)?;
            encode_file(&FileArgs {
                model: model.clone(),
                images: a.images,
                data: a.data,
                data_path: a.data_path,
                split: a.split,
                out: tokens.clone(),
                shard: None,
                skip_bad: a.skip_bad,
                batch: a.batch,
                device: a.device.clone(),
            })?;
            decode_file(&tokens, model, &a.out, a.batch, &a.device)
        }
        (None, None) => Err(anyhow::anyhow!(
            "reconstruct: name a model (`--model NAME`) with `--images DIR` or `--data NAME`, or a run folder with `--ckpt DIR` for a grid"
        )),
    }
}

pub fn fid(args: FidArgs) -> Result<()> {
    let (a, b, json, cache) = (&args.a, &args.b, args.json, !args.no_cache);
    let kid = lqae::fid::KidSettings {
        subsets: args.kid_subsets,
        subset_size: args.kid_subset_size,
        seed: args.seed,
    };
    let (ia, ib) = (lqae::fid::read_folder(a)?, lqae::fid::read_folder(b)?);
    // Fetched here first for the progress output; `FeatureNet::load` then finds it in place.
    ensure(&assets::INCEPTION_FID, true)?;
    let net = lqae::fid::FeatureNet::load(&Device::Cpu, cache)?;
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

pub fn metrics(args: MetricsArgs) -> Result<()> {
    let (a, b, json, lpips) = (&args.a, &args.b, args.json, args.lpips.as_str());
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

/// The arguments of `metrics`.
#[derive(clap::Args)]
pub struct MetricsArgs {
    pub a: PathBuf,
    pub b: PathBuf,
    /// One JSON object per pair, then the mean.
    #[arg(long)]
    pub json: bool,
    /// LPIPS network: alex, vgg16 or none (weights fetched once as the `lpips` asset).
    #[arg(long, default_value = "alex")]
    pub lpips: String,
}

/// The arguments of `fid`.
#[derive(clap::Args)]
pub struct FidArgs {
    pub a: PathBuf,
    pub b: PathBuf,
    /// Print one JSON object: fid, kid, kid_std, n_a, n_b, conventions.
    #[arg(long)]
    pub json: bool,
    /// KID: random subsets averaged (torch-fidelity's default).
    #[arg(long, default_value_t = 100)]
    pub kid_subsets: usize,
    /// KID: images per subset; at or above the smaller set's count, one full-set estimate.
    #[arg(long, default_value_t = 1000)]
    pub kid_subset_size: usize,
    /// KID: seed of the subsets.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Do not read or write the per-image feature cache.
    #[arg(long)]
    pub no_cache: bool,
}

/// The arguments of `tokens`.
#[derive(clap::Args)]
pub struct TokensArgs {
    /// How many test images.
    #[arg(long, default_value_t = 6)]
    pub n: usize,
    /// Language model folder (config.json, model.safetensors, tokenizer.json); default: the fetched MiniLM.
    #[arg(long)]
    pub lm: Option<PathBuf>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Patch side in pixels (28 must be divisible by it).
    #[arg(long, default_value_t = 4)]
    pub patch: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// The arguments of `train`.
#[derive(clap::Args)]
pub struct TrainArgs {
    #[arg(long)]
    pub config: PathBuf,
    /// Override a configuration key, `section.key=value` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Run folder (default runs/<name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue from the newest checkpoint in the run folder.
    #[arg(long)]
    pub resume: bool,
    /// Stop after this step (checkpointed), as an interruption would.
    #[arg(long)]
    pub stop_at: Option<usize>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// The arguments of `ship`.
#[derive(clap::Args)]
pub struct ShipArgs {
    /// The run folder (its newest checkpoint is shipped).
    #[arg(long)]
    pub run: PathBuf,
    #[arg(long)]
    pub name: String,
    #[arg(long, default_value = "models")]
    pub out: PathBuf,
}

/// The arguments of `encode`.
#[derive(clap::Args)]
pub struct EncodeArgs {
    /// A model by name (shipped, a configuration, or a run folder): encode `--images` or
    /// `--data` into the JSONL tokens file `--out`.
    #[arg(long, conflicts_with = "ckpt")]
    pub model: Option<String>,
    /// A folder of PNG/JPEG images (searched recursively), any sizes.
    #[arg(long, conflicts_with = "data")]
    pub images: Option<PathBuf>,
    /// A data set as suites name it (fashion-mnist, mnist-5k, idx, image-folder,
    /// mini-imagenet); `--data-path` for those that need a folder.
    #[arg(long)]
    pub data: Option<String>,
    #[arg(long)]
    pub data_path: Option<String>,
    /// Split of `--data`: train or test.
    #[arg(long, default_value = "test")]
    pub split: String,
    #[arg(long, default_value = "tokens.jsonl")]
    pub out: PathBuf,
    /// The K-th of N contiguous shares of the images (job arrays); 1-based.
    #[arg(long)]
    pub shard: Option<String>,
    /// Record an unreadable image as skipped instead of stopping.
    #[arg(long)]
    pub skip_bad: bool,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Preview instead: print the token text of the first `--n` test images of the data
    /// set this run (or checkpoint folder) was trained on.
    #[arg(long)]
    pub ckpt: Option<PathBuf>,
    #[arg(long, default_value_t = 6)]
    pub n: usize,
    /// Preview: print at most this many tokens per image.
    #[arg(long, default_value_t = 32)]
    pub show: usize,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// The arguments of `decode`.
#[derive(clap::Args)]
pub struct DecodeArgs {
    pub tokens: PathBuf,
    #[arg(long)]
    pub model: String,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// The arguments of `reconstruct`.
#[derive(clap::Args)]
pub struct ReconstructArgs {
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long, conflicts_with = "data", requires = "model")]
    pub images: Option<PathBuf>,
    #[arg(long, requires = "model")]
    pub data: Option<String>,
    #[arg(long)]
    pub data_path: Option<String>,
    #[arg(long, default_value = "test")]
    pub split: String,
    #[arg(long)]
    pub skip_bad: bool,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// The grid form: a run or checkpoint folder, the first `--n` test images of the data set
    /// it was trained on, `--out` the PNG grid.
    #[arg(long, conflicts_with = "model")]
    pub ckpt: Option<PathBuf>,
    #[arg(long, default_value_t = 16)]
    pub n: usize,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}
