//! `lqae-eval`: fetch assets, list and run suites, and turn images into text tokens.

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use lqae::assets;
use lqae::data::{self, Split, FASHION_MNIST_CLASSES};
use lqae::device::{device_name, parse_device};
use lqae::lm::FrozenLm;
use lqae::quantizer::{Quantizer, QuantizerConfig};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "lqae-eval",
    version,
    about = "Language-Quantized AutoEncoder: evaluation suites and tools"
)]
struct Cli {
    /// Run the named suite(s) from suites/.
    #[arg(long, num_args = 1..)]
    suite: Vec<String>,
    /// Override a suite setting, `key=value` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Device for suite runs: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Where suite results go.
    #[arg(long, default_value = "results")]
    results: PathBuf,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// List the suites under suites/ with a one-line description.
    Ls,
    /// MSE, PSNR, SSIM and LPIPS of two images, or of two folders paired by file name.
    Metrics {
        a: PathBuf,
        b: PathBuf,
        /// One JSON object per pair, then the mean.
        #[arg(long)]
        json: bool,
        /// LPIPS network: alex, vgg16 or none (weights fetched once as the `lpips` asset).
        #[arg(long, default_value = "alex")]
        lpips: String,
    },
    /// Check a suite file (or name) and report every problem with its key.
    Validate {
        suite: String,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Compare two results (files or folders; a folder means its newest result.json): a
    /// Markdown table, exit 1 when a metric regressed beyond its tolerance significantly.
    Report {
        #[arg(long)]
        baseline: PathBuf,
        #[arg(long)]
        current: PathBuf,
        /// Also write the table to this file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Fetch, verify and cache assets (all when none is named); `llama-server` builds the
    /// embedded LLM server from its pinned source (once, about 13 minutes on 2 cores).
    Fetch {
        names: Vec<String>,
        /// Print only the asset folders, one per line.
        #[arg(long)]
        quiet: bool,
    },
    /// Turn Fashion-MNIST images into text tokens of the frozen LM and print them. Until a
    /// trained LQAE encoder exists, patches go through a seeded random (untrained) projection.
    Tokens {
        /// How many test images.
        #[arg(long, default_value_t = 6)]
        n: usize,
        /// Language model folder (config.json, model.safetensors, tokenizer.json); default: the fetched MiniLM.
        #[arg(long)]
        lm: Option<PathBuf>,
        /// cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Patch side in pixels (28 must be divisible by it).
        #[arg(long, default_value_t = 4)]
        patch: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Train an LQAE or VQ-VAE from a run configuration (configs/*.toml).
    Train {
        #[arg(long)]
        config: PathBuf,
        /// Override a configuration key, `section.key=value` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Run folder (default runs/<name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue from the newest checkpoint in the run folder.
        #[arg(long)]
        resume: bool,
        /// Stop after this step (checkpointed), as an interruption would.
        #[arg(long)]
        stop_at: Option<usize>,
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Encode Fashion-MNIST test images with a trained model and print their tokens.
    Encode {
        /// Run folder or checkpoint folder.
        #[arg(long)]
        ckpt: PathBuf,
        #[arg(long, default_value_t = 6)]
        n: usize,
        /// Print at most this many tokens per image.
        #[arg(long, default_value_t = 32)]
        show: usize,
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Time the hot kernels (nearest-code search, LM forward, ViT block, lqae-small training
    /// step, probe features, SSIM, LPIPS, sgemm), with `--peer` side by side with the PyTorch
    /// peer of benches/peer/ in the same run: medians, ratio ours/PyTorch, share of sgemm.
    Bench {
        /// Also run the PyTorch (CPU) peer (its venv is built once by scripts/peer-venv.sh).
        #[arg(long)]
        peer: bool,
        /// Rounds; each times every kernel on both sides. Ratios are medians over rounds.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Seconds per kernel per side per round (at least one call).
        #[arg(long, default_value_t = 1.0)]
        budget: f64,
        /// Smaller batches for the per-image kernels.
        #[arg(long)]
        quick: bool,
        /// Only kernels whose name contains one of these (e.g. search train-step).
        filters: Vec<String>,
        /// Folder for `<run-id>/bench.json` and `bench.md`.
        #[arg(long, default_value = "results/bench")]
        out: PathBuf,
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Run the quantizer, a frozen-LM forward and training steps on the CPU and on `--device`
    /// (a GPU), compare the results and time them there (seeded random inputs and weights: no
    /// downloaded asset needed). Exits 1 when a comparison fails.
    GpuCheck {
        #[arg(long, default_value = "cuda")]
        device: String,
        /// Seconds of timing per check and device (at least 3 calls).
        #[arg(long, default_value_t = 1.0)]
        budget: f64,
        /// Folder for `<run-id>/gpu-check.json` and `gpu-check.md`.
        #[arg(long, default_value = "results/gpu")]
        out: PathBuf,
    },
    /// Full training steps of a configuration (the paper's by default) at the largest batch
    /// that fits the device, with `--peer` the same step in PyTorch on the same device in the
    /// same run: ms/step, images/s, TFLOP/s, peak memory, ratio ours/PyTorch.
    StepBench {
        #[arg(long, default_value = "configs/lqae-paper.toml")]
        config: PathBuf,
        /// Override a configuration key, `section.key=value` (e.g. model.lm=/tmp/roberta-random).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Batches to try, largest first; the first that completes a step is timed.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "512,384,256,192,128,96,64,48,32,16,8"
        )]
        batches: Vec<usize>,
        /// Timed steps per side and batch (at most).
        #[arg(long, default_value_t = 5)]
        steps: usize,
        /// Seconds after which a side stops timing a batch (once two steps are timed).
        #[arg(long, default_value_t = 20.0)]
        budget: f64,
        /// Also time the PyTorch peer (benches/peer/peer.py) on the same device; its python is
        /// $LQAE_PEER_PYTHON or the venv of scripts/peer-venv.sh.
        #[arg(long)]
        peer: bool,
        /// Batch of the same-work check before timing (two steps on both sides from the same
        /// weights; with --peer); 0 skips it.
        #[arg(long, default_value_t = 2)]
        check_batch: usize,
        /// Folder for `<run-id>/step-bench.json` and `step-bench.md`.
        #[arg(long, default_value = "results/gpu")]
        out: PathBuf,
    },
    /// Write a language-model folder of a real checkpoint's shape with seeded random weights
    /// (config.json, model.safetensors, a word-level tokenizer.json with the family's special
    /// tokens), for timing where the real weights are not on disk.
    RandomLm {
        /// `roberta-base` (the paper's LM) or `minilm`.
        #[arg(long, default_value = "roberta-base")]
        shape: String,
        /// Override a config.json field, `key=value` (e.g. num_hidden_layers=2).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Reconstruct test images with a trained model and write a PNG grid (originals above
    /// reconstructions).
    Reconstruct {
        #[arg(long)]
        ckpt: PathBuf,
        #[arg(long, default_value_t = 16)]
        n: usize,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "cpu")]
        device: String,
    },
}

fn main() {
    lqae::kernels::tune_threads();
    lqae::kernels::tune_allocator();
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    if !cli.suite.is_empty() {
        return run_suites(&cli.suite, &cli.set, &cli.device, &cli.results);
    }
    match cli.command {
        None if cli.suite.is_empty() => {
            use clap::CommandFactory;
            Cli::command().print_help()?;
            Ok(())
        }
        None => Ok(()),
        Some(Cmd::Ls) => ls(),
        Some(Cmd::Metrics { a, b, json, lpips }) => metrics(&a, &b, json, &lpips),
        Some(Cmd::Validate { suite, set }) => validate(&suite, &set),
        Some(Cmd::Report {
            baseline,
            current,
            out,
        }) => report(&baseline, &current, out.as_deref()),
        Some(Cmd::Fetch { names, quiet }) => fetch(&names, quiet),
        Some(Cmd::Tokens {
            n,
            lm,
            device,
            patch,
            seed,
        }) => tokens(n, lm, &device, patch, seed),
        Some(Cmd::Train {
            config,
            set,
            out,
            resume,
            stop_at,
            device,
        }) => train(&config, &set, out, resume, stop_at, &device),
        Some(Cmd::Encode {
            ckpt,
            n,
            show,
            device,
        }) => encode(&ckpt, n, show, &device),
        Some(Cmd::Reconstruct {
            ckpt,
            n,
            out,
            device,
        }) => reconstruct(&ckpt, n, &out, &device),
        Some(Cmd::Bench {
            peer,
            rounds,
            budget,
            quick,
            filters,
            out,
            device,
        }) => bench(peer, rounds, budget, quick, &filters, &out, &device),
        Some(Cmd::GpuCheck {
            device,
            budget,
            out,
        }) => gpu_check(&device, budget, &out),
        Some(Cmd::StepBench {
            config,
            set,
            device,
            batches,
            steps,
            budget,
            peer,
            check_batch,
            out,
        }) => step_bench(
            &config,
            &set,
            &device,
            batches,
            steps,
            budget,
            peer,
            check_batch,
            &out,
        ),
        Some(Cmd::RandomLm {
            shape,
            set,
            seed,
            out,
        }) => random_lm(&shape, &set, seed, &out),
    }
}

/// `<stem>.json` (the record) and `<stem>.md` (its table) in `run_dir`, atomically.
fn write_record(
    run_dir: &std::path::Path,
    stem: &str,
    record: &serde_json::Value,
    md: &str,
) -> Result<()> {
    std::fs::create_dir_all(run_dir)?;
    assets::write_atomic(
        &run_dir.join(format!("{stem}.json")),
        serde_json::to_string_pretty(record)?.as_bytes(),
    )?;
    assets::write_atomic(&run_dir.join(format!("{stem}.md")), md.as_bytes())?;
    println!("written to {}", run_dir.display());
    Ok(())
}

/// `out/<seconds>-<nanoseconds>`: a new run folder of a bench or a GPU check.
fn timestamped(out: &std::path::Path) -> PathBuf {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    out.join(format!("{}-{:09}", now.as_secs(), now.subsec_nanos()))
}

fn gpu_check(device: &str, budget: f64, out: &std::path::Path) -> Result<()> {
    let device = parse_device(device)?;
    let t0 = Instant::now();
    let (checks, notes) = lqae::bench::gpu::run(&device, budget)?;
    let md = lqae::bench::gpu::markdown(&checks, &notes);
    println!("{md}");
    let run_dir = timestamped(out);
    let record = serde_json::json!({
        "schema": "lqae-gpu-check/1",
        "crate_version": env!("CARGO_PKG_VERSION"),
        "git_commit": lqae::results::git_commit(),
        "device": device_name(&device),
        "machine": lqae::bench::peer::machine(),
        "budget_s": budget,
        "wall_time_s": t0.elapsed().as_secs_f64(),
        "checks": checks,
        "notes": notes,
    });
    write_record(&run_dir, "gpu-check", &record, &md)?;
    let failed: Vec<_> = checks
        .iter()
        .filter(|c| !c.pass)
        .map(|c| c.name.as_str())
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} on {} differs from the CPU: {}",
            failed.len(),
            device_name(&device),
            failed.join(", ")
        );
    }
    Ok(())
}

fn random_lm(shape: &str, set: &[String], seed: u64, out: &std::path::Path) -> Result<()> {
    use lqae::lm::random;
    let cfg = random::with_overrides(&random::shape(shape)?, set)?;
    let t0 = Instant::now();
    random::write_checkpoint(out, &cfg, seed)?;
    println!(
        "{}: random {} ({} layers, width {}, vocabulary {}), seed {seed}, in {:.1} s",
        out.display(),
        cfg.model_type,
        cfg.num_hidden_layers,
        cfg.hidden_size,
        cfg.vocab_size,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn step_bench(
    config: &std::path::Path,
    set: &[String],
    device: &str,
    batches: Vec<usize>,
    steps: usize,
    budget: f64,
    with_peer: bool,
    check_batch: usize,
    out: &std::path::Path,
) -> Result<()> {
    use lqae::bench::{peer, step};
    let cfg = lqae::model::RunConfig::from_file(config, set)?;
    let device_s = device;
    let device = parse_device(device)?;
    let t0 = Instant::now();
    let run_dir = timestamped(out);
    let mut peer_proc = None;
    if with_peer {
        let lm_dir = lqae::model::resolve_lm_dir(cfg.model.lm.as_deref().unwrap_or("minilm"))?;
        let mask_id = FrozenLm::load(&lm_dir, &Device::Cpu)?.mask_id();
        let torch_device = if device.is_cpu() { "cpu" } else { device_s };
        let p = peer::Peer::start(&peer::python()?, &lm_dir, &cfg, mask_id, torch_device)?;
        eprintln!("peer: {}", p.info);
        peer_proc = Some(p);
    }
    let info = peer_proc.as_ref().map(|p| p.info.clone());
    let report = step::StepBench {
        cfg,
        device: device.clone(),
        batches,
        steps,
        budget_s: budget,
        check_batch: (check_batch > 0).then_some(check_batch),
        peer: peer_proc.as_mut(),
        work: run_dir.clone(),
        simulated_oom_above: None,
    }
    .run()?;
    let md = step::markdown(&report, &device_name(&device));
    println!("{md}");
    let record = serde_json::json!({
        "schema": "lqae-step-bench/1",
        "crate_version": env!("CARGO_PKG_VERSION"),
        "git_commit": lqae::results::git_commit(),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "device": device_name(&device),
        "machine": peer::machine(),
        "peer": info,
        "wall_time_s": t0.elapsed().as_secs_f64(),
        "report": report,
    });
    write_record(&run_dir, "step-bench", &record, &md)?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn bench(
    with_peer: bool,
    rounds: usize,
    budget: f64,
    quick: bool,
    filters: &[String],
    out: &std::path::Path,
    device: &str,
) -> Result<()> {
    use lqae::bench::{self, peer};
    if rounds == 0 {
        bail!("setting `--rounds`: at least 1");
    }
    let device = parse_device(device)?;
    let t0 = Instant::now();
    let mut kernels = bench::selected(&device, quick, filters)?;
    if kernels.is_empty() {
        bail!("no kernel matches {filters:?}; names: sgemm, search/minilm, search/roberta, lm-forward, vit-block, train-step, probe-features, ssim, lpips-alex");
    }
    // The sgemm rate is the yardstick of every share: always time it.
    if !kernels.iter().any(|k| k.name.starts_with("sgemm/")) {
        kernels.insert(0, bench::sgemm(&device)?);
    }
    let run_dir = timestamped(out);
    let mut peer_proc = None;
    let mut checks = None;
    if with_peer {
        if !device.is_cpu() {
            bail!("setting `--peer`: the PyTorch peer runs on the CPU; use --device cpu");
        }
        let python = peer::python()?;
        let cfg = bench::lqae_small()?;
        let lm_dir = lqae::model::resolve_lm_dir(cfg.model.lm.as_deref().unwrap_or("minilm"))?;
        let mask_id = FrozenLm::load(&lm_dir, &device)?.mask_id();
        let mut p = peer::Peer::start(&python, &lm_dir, &cfg, mask_id, "cpu")?;
        eprintln!("peer: {}", p.info);
        let c = peer::check_same_work(&mut p, &kernels, &device, &run_dir)?;
        for (k, a) in &c.search_agreement {
            eprintln!("check {k}: the same code for {:.3}% of tokens", 100.0 * a);
        }
        for (i, ((a, b), (ga, gb))) in c.train_losses.iter().zip(&c.train_grad_norms).enumerate() {
            eprintln!("check train step {i}: loss ours {a:.6}, PyTorch {b:.6}; gradient norm ours {ga:.6}, PyTorch {gb:.6}");
        }
        if !c.train_losses.is_empty() {
            eprintln!(
                "check train steps: the same code for {:.2}% of tokens",
                100.0 * c.train_code_agreement
            );
        }
        checks = Some(c);
        peer_proc = Some(p);
    }
    let rows = peer::side_by_side(&mut kernels, peer_proc.as_mut(), rounds, budget, true)?;
    let md = peer::markdown(&rows);
    println!("{md}");
    let record = serde_json::json!({
        "schema": "lqae-bench/1",
        "crate_version": env!("CARGO_PKG_VERSION"),
        "git_commit": lqae::results::git_commit(),
        "device": device_name(&device),
        "machine": peer::machine(),
        "peer": peer_proc.as_ref().map(|p| p.info.clone()),
        "checks": checks,
        "rounds": rounds,
        "budget_s": budget,
        "quick": quick,
        "wall_time_s": t0.elapsed().as_secs_f64(),
        "rows": rows,
    });
    write_record(&run_dir, "bench", &record, &md)?;
    Ok(())
}

fn ls() -> Result<()> {
    let dir = lqae::suites::suites_dir();
    let all = lqae::suites::list(&dir)?;
    if all.is_empty() {
        println!("no suites in {}", dir.display());
    }
    let w = all.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for s in all {
        println!("{:w$}  {}", s.name, s.description);
    }
    Ok(())
}

fn spinner(msg: String) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}").unwrap());
    pb.enable_steady_tick(std::time::Duration::from_millis(200));
    pb.set_message(msg);
    pb
}

fn ensure(asset: &assets::Asset, quiet: bool) -> Result<PathBuf> {
    let pb = if quiet {
        ProgressBar::hidden()
    } else {
        spinner(format!("{}: checking", asset.name))
    };
    let dir = assets::ensure_in(asset, &assets::cache_dir(), &mut |m| {
        pb.set_message(format!("{}: {m}", asset.name))
    })?;
    pb.finish_and_clear();
    Ok(dir)
}

fn fetch(names: &[String], quiet: bool) -> Result<()> {
    let server = names.is_empty() || names.iter().any(|n| n == "llama-server");
    let list: Vec<&assets::Asset> = if names.is_empty() {
        assets::ALL.to_vec()
    } else {
        names
            .iter()
            .filter(|n| *n != "llama-server")
            .map(|n| assets::by_name(n))
            .collect::<lqae::Result<_>>()?
    };
    if server {
        let bin = lqae::llm::server::ensure_llama_server(&assets::cache_dir())?;
        if quiet {
            println!("{}", bin.display());
        } else {
            println!(
                "{:14} {}  (llama.cpp server built from {})",
                "llama-server",
                bin.display(),
                lqae::llm::server::SERVER_SOURCE
            );
        }
    }
    for a in list {
        let dir = ensure(a, quiet)?;
        if quiet {
            println!("{}", dir.display());
        } else {
            println!("{:14} {}  ({})", a.name, dir.display(), a.description);
        }
    }
    Ok(())
}

/// Deterministic N(0, 1) numbers (SplitMix64 + Box-Muller), independent of any RNG crate.
fn gaussian(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed;
    let mut next = move || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u1, u2) = (next().max(1e-300), next());
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
        })
        .collect()
}

fn tokens(n: usize, lm_dir: Option<PathBuf>, device: &str, patch: usize, seed: u64) -> Result<()> {
    let device: Device = parse_device(device)?;
    let t0 = Instant::now();
    let lm_dir = match lm_dir {
        Some(d) => d,
        None => ensure(&assets::MINILM, false)?,
    };
    let data_dir = ensure(&assets::FASHION_MNIST, false)?;
    let lm = FrozenLm::load(&lm_dir, &device)?;
    let test = data::load_mnist_like(&data_dir, Split::Test, &FASHION_MNIST_CLASSES)?;
    let data::ImageSource::Grey(im) = &test.source else {
        bail!("Fashion-MNIST is loaded as grey images")
    };
    if patch == 0 || im.rows % patch != 0 || im.cols % patch != 0 {
        bail!(
            "setting `--patch`: {patch} does not divide the {}x{} images",
            im.rows,
            im.cols
        );
    }
    let n = n.min(im.n);
    let (gh, gw, pd, h) = (
        im.rows / patch,
        im.cols / patch,
        patch * patch,
        lm.hidden_size(),
    );
    println!(
        "LM {} ({:?}, {} layers, width {h}, vocab {}), device {}, {n} Fashion-MNIST test images -> {}x{} = {} tokens each",
        lm_dir.display(),
        lm.family(),
        lm.config().num_hidden_layers,
        lm.config().vocab_size,
        device_name(&device),
        gh,
        gw,
        gh * gw
    );
    println!("encoder: untrained random patch projection (seed {seed}); a trained LQAE encoder replaces it");
    let proj = Tensor::from_vec(gaussian(seed, pd * h), (pd, h), &device)?;
    let bias = Tensor::from_vec(gaussian(seed ^ 0xB1A5, h), h, &device)?;
    let quantizer = Quantizer::new(lm.word_embeddings(), QuantizerConfig::default())?;

    let pb = ProgressBar::new(n as u64);
    pb.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} images {elapsed}").unwrap());
    let mut distinct = std::collections::BTreeSet::new();
    let mut lines = Vec::new();
    for i in 0..n {
        let img = im.image(i);
        let mut patches = Vec::with_capacity(gh * gw * pd);
        for gy in 0..gh {
            for gx in 0..gw {
                for y in 0..patch {
                    for x in 0..patch {
                        patches
                            .push(img[(gy * patch + y) * im.cols + gx * patch + x] as f32 / 255.0);
                    }
                }
            }
        }
        let x = Tensor::from_vec(patches, (gh * gw, pd), &device)?;
        let z = x.matmul(&proj)?.broadcast_add(&bias)?;
        let ids: Vec<u32> = quantizer.nearest(&z)?.to_vec1()?;
        distinct.extend(ids.iter().copied());
        let text: Vec<String> = ids
            .iter()
            .take(24)
            .map(|&t| lm.vocab().token_text(t).text)
            .collect();
        lines.push(format!(
            "#{i:<3} {:12} {}{}",
            test.class_name(i),
            text.join(" "),
            if ids.len() > 24 { " ..." } else { "" }
        ));
        pb.inc(1);
    }
    pb.finish_and_clear();
    for l in lines {
        println!("{l}");
    }
    println!(
        "{} distinct tokens over {n} images; {:.1} s",
        distinct.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

fn train(
    config: &std::path::Path,
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

fn encode(ckpt: &std::path::Path, n: usize, show: usize, device: &str) -> Result<()> {
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
    let (vocab_size, stats) = match &model {
        lqae::model::Autoencoder::Lqae(m) => {
            let v = m.lm().vocab();
            (
                v.len(),
                lqae::metrics::token_stats(
                    &ids,
                    v.len(),
                    10,
                    |t| v.is_special(t),
                    |t| !v.token_text(t).starts_word,
                ),
            )
        }
        lqae::model::Autoencoder::Vqvae(m) => (
            m.codebook_size(),
            lqae::metrics::token_stats(&ids, m.codebook_size(), 10, |_| false, |_| false),
        ),
    };
    for (i, row) in ids.iter().enumerate().take(12) {
        let text: Vec<String> = match &model {
            lqae::model::Autoencoder::Lqae(m) => row
                .iter()
                .take(show)
                .map(|&t| m.lm().vocab().token_text(t).text)
                .collect(),
            lqae::model::Autoencoder::Vqvae(_) => {
                row.iter().take(show).map(|t| t.to_string()).collect()
            }
        };
        println!("#{i:<3} {:12} {}", test.class_name(i), text.join(" "));
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
        .map(|&(t, c)| match &model {
            lqae::model::Autoencoder::Lqae(m) => {
                format!("{} ({c})", m.lm().vocab().token_text(t).text)
            }
            lqae::model::Autoencoder::Vqvae(_) => format!("{t} ({c})"),
        })
        .collect();
    println!("most used: {}", top.join(", "));
    Ok(())
}

fn reconstruct(
    ckpt: &std::path::Path,
    n: usize,
    out: &std::path::Path,
    device: &str,
) -> Result<()> {
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

/// A suite argument may be a name under suites/ or a path to a suite file.
fn suite_location(arg: &str) -> (PathBuf, String) {
    let p = std::path::Path::new(arg);
    if p.extension().is_some_and(|e| e == "toml") && p.is_file() {
        let dir = p
            .parent()
            .map(|d| {
                if d.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    d.to_path_buf()
                }
            })
            .unwrap_or_default();
        (
            dir,
            p.file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
        )
    } else {
        (lqae::suites::suites_dir(), arg.to_string())
    }
}

fn validate(arg: &str, set: &[String]) -> Result<()> {
    let (dir, name) = suite_location(arg);
    let (path, mut table) = lqae::suites::resolve_table(&dir, &name, &mut Vec::new())?;
    for o in set {
        lqae::model::config::apply_override(&mut table, o)?;
    }
    let problems = lqae::suites::problems(&table);
    if problems.is_empty() {
        println!("{}: ok", path.display());
        Ok(())
    } else {
        for p in &problems {
            println!("{}: {p}", path.display());
        }
        bail!("{} problem(s) in {}", problems.len(), path.display())
    }
}

fn run_suites(
    names: &[String],
    set: &[String],
    device: &str,
    results_root: &std::path::Path,
) -> Result<()> {
    let device = parse_device(device)?;
    let mut all = Vec::new();
    for n in names {
        let (dir, name) = suite_location(n);
        all.extend(lqae::suites::expand(&dir, &[name], set)?);
    }
    let mut summary = Vec::new();
    for s in &all {
        println!("== suite {} ({}): {}", s.name, s.kind, s.description);
        match &s.spec {
            lqae::suites::SuiteSpec::LinearProbe(spec) => {
                let (dir, r) = lqae::probe::run(s, spec, &device, results_root, true)?;
                for (k, m) in &r.metrics {
                    summary.push(format!(
                        "| {} | {k} | {:.4} | [{:.4}, {:.4}] | {} |",
                        s.name, m.value, m.ci95[0], m.ci95[1], m.n
                    ));
                }
                println!("results in {} ({:.0} s)", dir.display(), r.wall_time_s);
            }
            lqae::suites::SuiteSpec::Fewshot(spec) => {
                let (dir, r) = lqae::fewshot::run(s, spec, &device, results_root, true)?;
                for (k, m) in &r.metrics {
                    summary.push(format!(
                        "| {} | {k} | {:.4} | [{:.4}, {:.4}] | {} |",
                        s.name, m.value, m.ci95[0], m.ci95[1], m.n
                    ));
                }
                println!("results in {} ({:.0} s)", dir.display(), r.wall_time_s);
            }
            lqae::suites::SuiteSpec::Reconstruction(spec) => {
                let (dir, r) = lqae::recon::run(s, spec, &device, results_root, true)?;
                for (k, m) in &r.metrics {
                    summary.push(format!(
                        "| {} | {k} | {:.4} | [{:.4}, {:.4}] | {} |",
                        s.name, m.value, m.ci95[0], m.ci95[1], m.n
                    ));
                }
                println!(
                    "results in {} ({:.0} s); page: {}",
                    dir.display(),
                    r.wall_time_s,
                    dir.join("index.html").display()
                );
            }
            lqae::suites::SuiteSpec::Throughput(spec) => {
                let (dir, r) = lqae::bench::suite::run(s, spec, &device, results_root, true)?;
                for (k, m) in &r.metrics {
                    summary.push(format!(
                        "| {} | {k} | {:.4} | [{:.4}, {:.4}] | {} |",
                        s.name, m.value, m.ci95[0], m.ci95[1], m.n
                    ));
                }
                println!("results in {} ({:.0} s)", dir.display(), r.wall_time_s);
            }
            lqae::suites::SuiteSpec::Group(_) => unreachable!("groups are expanded"),
        }
    }
    println!("\n| suite | metric | value | 95% CI | n |\n|---|---|---|---|---|");
    for l in summary {
        println!("{l}");
    }
    println!("\nresults under {}", results_root.display());
    Ok(())
}

fn report(
    baseline: &std::path::Path,
    current: &std::path::Path,
    out: Option<&std::path::Path>,
) -> Result<()> {
    let (b, bs) = lqae::results::read_result(baseline)?;
    let (c, cs) = lqae::results::read_result(current)?;
    if b.suite != c.suite {
        bail!(
            "the baseline is suite `{}` but the current result is `{}`",
            b.suite,
            c.suite
        );
    }
    // Per-image values (reconstruction suites) allow a paired t-test.
    let (bv, cv) = (
        lqae::results::read_per_image(baseline)?,
        lqae::results::read_per_image(current)?,
    );
    let rows = lqae::results::compare_paired(
        &b,
        bs.as_deref(),
        bv.as_deref(),
        &c,
        cs.as_deref(),
        cv.as_deref(),
    );
    let md = lqae::results::markdown(
        &rows,
        &baseline.display().to_string(),
        &current.display().to_string(),
    );
    print!("{md}");
    if let Some(o) = out {
        lqae::assets::write_atomic(o, md.as_bytes())?;
    }
    let bad: Vec<&str> = rows
        .iter()
        .filter(|r| r.verdict == "REGRESSION")
        .map(|r| r.metric.as_str())
        .collect();
    if !bad.is_empty() {
        bail!("regression in {}", bad.join(", "));
    }
    Ok(())
}

fn metrics(a: &std::path::Path, b: &std::path::Path, json: bool, lpips: &str) -> Result<()> {
    let net = lqae::recon::lpips_setting(lpips)
        .map_err(|_| anyhow::anyhow!("setting `--lpips`: `{lpips}`: use alex, vgg16 or none"))?;
    let pairs = lqae::metrics::pair_paths(a, b)?;
    let mut rows = Vec::new();
    for (name, pa, pb) in &pairs {
        rows.push((name.clone(), lqae::metrics::compare_files(pa, pb)?));
    }
    let lp = match net {
        Some(n) => {
            ensure(&assets::LPIPS, true)?;
            Some(lqae::lpips::Lpips::load(n, &Device::Cpu)?)
        }
        None => None,
    };
    let mut lpips_values: Vec<Option<f64>> = Vec::new();
    for (_, pa, pb) in &pairs {
        lpips_values.push(match &lp {
            Some(lp) => Some(
                lqae::metrics::lpips_files(lp, pa, pb)
                    .map_err(|e| anyhow::anyhow!("{e} (or pass --lpips none)"))?,
            ),
            None => None,
        });
    }
    let n = rows.len() as f64;
    let mean_lpips = lp
        .as_ref()
        .map(|_| lpips_values.iter().flatten().sum::<f64>() / n);
    let net_name = net.map(|n| n.name()).unwrap_or("none");
    let mean_mse = rows.iter().map(|(_, s)| s.mse).sum::<f64>() / n;
    let mean_ssim = rows.iter().map(|(_, s)| s.ssim).sum::<f64>() / n;
    // PSNR averaged per image; any identical pair makes the mean infinite.
    let mean_psnr = rows
        .iter()
        .map(|(_, s)| s.psnr)
        .try_fold(0.0, |acc, p| p.map(|p| acc + p))
        .map(|s| s / n);
    let psnr_json = |p: Option<f64>| {
        p.map(serde_json::Value::from)
            .unwrap_or(serde_json::Value::Null)
    };
    let psnr_text = |p: Option<f64>| {
        p.map(|p| format!("{p:.3}"))
            .unwrap_or_else(|| "inf (identical)".into())
    };
    if json {
        for ((name, s), l) in rows.iter().zip(&lpips_values) {
            println!(
                "{}",
                serde_json::json!({"pair": name, "mse": s.mse, "psnr": psnr_json(s.psnr), "psnr_infinite": s.psnr.is_none(), "ssim": s.ssim, "lpips": l, "lpips_net": net_name})
            );
        }
        println!(
            "{}",
            serde_json::json!({"pair": "mean", "n": rows.len(), "mse": mean_mse, "psnr": psnr_json(mean_psnr), "psnr_infinite": mean_psnr.is_none(), "ssim": mean_ssim, "lpips": mean_lpips, "lpips_net": net_name})
        );
    } else {
        let lp_text = |l: Option<f64>| l.map(|l| format!("{l:.4}")).unwrap_or_else(|| "-".into());
        println!("| pair | MSE | PSNR (dB) | SSIM | LPIPS ({net_name}) |\n|---|---|---|---|---|");
        for ((name, s), l) in rows.iter().zip(&lpips_values) {
            println!(
                "| {name} | {:.6} | {} | {:.4} | {} |",
                s.mse,
                psnr_text(s.psnr),
                s.ssim,
                lp_text(*l)
            );
        }
        println!(
            "| mean of {} | {mean_mse:.6} | {} | {mean_ssim:.4} | {} |",
            rows.len(),
            psnr_text(mean_psnr),
            lp_text(mean_lpips)
        );
    }
    Ok(())
}
