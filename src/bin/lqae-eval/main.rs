//! `lqae-eval`: fetch assets, list and run suites, and turn images into text tokens.

//!
//! This file only parses arguments and dispatches: each command is one library call in the
//! `cmd_*` file beside it, which prints what the call returns.

mod cmd_assets;
mod cmd_bench;
mod cmd_model;
mod cmd_suites;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

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
    /// Build and count every prompt of the few-shot suites and print requests, prompt tokens
    /// and the estimated cost (`llm.price_*`); send nothing, write no result.
    #[arg(long)]
    dry_run: bool,
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
    /// FID and KID between two folders of images (any sizes; counts >= 2), the FID
    /// Inception-v3 in candle (weights fetched once as the `inception-fid` asset). FID is biased
    /// upward below about 2,048 images: only figures over equal image counts compare.
    Fid {
        a: PathBuf,
        b: PathBuf,
        /// Print one JSON object: fid, kid, kid_std, n_a, n_b, conventions.
        #[arg(long)]
        json: bool,
        /// KID: random subsets averaged (torch-fidelity's default).
        #[arg(long, default_value_t = 100)]
        kid_subsets: usize,
        /// KID: images per subset; at or above the smaller set's count, one full-set estimate.
        #[arg(long, default_value_t = 1000)]
        kid_subset_size: usize,
        /// KID: seed of the subsets.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Do not read or write the per-image feature cache.
        #[arg(long)]
        no_cache: bool,
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
        /// Do not fail when a metric of the baseline is absent from the current run (it is
        /// still listed as MISSING).
        #[arg(long)]
        allow_missing: bool,
    },
    /// Every run under a results folder on one page: headline metrics with 95% intervals by
    /// suite, model (tokenizer) and LLM, links to the run pages, and the verdict against each
    /// suite's baseline (`--baselines`, default `RESULTS_DIR/baselines`); writes `--out` (HTML)
    /// and its Markdown twin beside it (`.md`).
    Board {
        #[arg(default_value = "results")]
        results_dir: PathBuf,
        #[arg(long, default_value = "board.html")]
        out: PathBuf,
        /// Folder of baselines, `<suite>/<run>/result.json`; left out of the board's runs.
        #[arg(long)]
        baselines: Option<PathBuf>,
    },
    /// Fetch, verify and cache assets (all when none is named); `llama-server` builds the
    /// embedded LLM server from its pinned source (once, about 13 minutes on 2 cores).
    Fetch {
        names: Vec<String>,
        /// Print only the asset folders, one per line.
        #[arg(long)]
        quiet: bool,
    },
    /// Turn Fashion-MNIST images into text tokens of the frozen LM through a seeded random
    /// (untrained) patch projection; `encode` shows a trained model's tokens.
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
    /// Ship a finished run as `models/<name>/`: final weights, state, recipe, log, a
    /// reconstruction grid and a sha256 manifest (what the suites load by name).
    Ship {
        /// The run folder (its newest checkpoint is shipped).
        #[arg(long)]
        run: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "models")]
        out: PathBuf,
    },
    /// Encode Fashion-MNIST test images with a trained model and print their tokens.
    Encode {
        /// A model by name (shipped, a configuration, or a run folder): encode `--images` or
        /// `--data` into the JSONL tokens file `--out`.
        #[arg(long, conflicts_with = "ckpt")]
        model: Option<String>,
        /// A folder of PNG/JPEG images (searched recursively), any sizes.
        #[arg(long, conflicts_with = "data")]
        images: Option<PathBuf>,
        /// A data set as suites name it (fashion-mnist, mnist-5k, idx, image-folder,
        /// mini-imagenet); `--data-path` for those that need a folder.
        #[arg(long)]
        data: Option<String>,
        #[arg(long)]
        data_path: Option<String>,
        /// Split of `--data`: train or test.
        #[arg(long, default_value = "test")]
        split: String,
        #[arg(long, default_value = "tokens.jsonl")]
        out: PathBuf,
        /// The K-th of N contiguous shares of the images (job arrays); 1-based.
        #[arg(long)]
        shard: Option<String>,
        /// Record an unreadable image as skipped instead of stopping.
        #[arg(long)]
        skip_bad: bool,
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Preview instead: print the token text of `--n` Fashion-MNIST test images for this
        /// run or checkpoint folder.
        #[arg(long)]
        ckpt: Option<PathBuf>,
        #[arg(long, default_value_t = 6)]
        n: usize,
        /// Preview: print at most this many tokens per image.
        #[arg(long, default_value_t = 32)]
        show: usize,
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Decode a tokens file (`encode`'s output) into one PNG per image with the model that
    /// encoded it (ids through the frozen LM and the decoder).
    Decode {
        tokens: PathBuf,
        #[arg(long)]
        model: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 64)]
        batch: usize,
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
    ///
    /// With `--model`: encode `--images DIR` or `--data NAME` into `--out DIR/tokens.jsonl`
    /// and decode it into one PNG per image under `--out DIR` (encode + decode; resumable).
    Reconstruct {
        #[arg(long)]
        model: Option<String>,
        #[arg(long, conflicts_with = "data", requires = "model")]
        images: Option<PathBuf>,
        #[arg(long, requires = "model")]
        data: Option<String>,
        #[arg(long)]
        data_path: Option<String>,
        #[arg(long, default_value = "test")]
        split: String,
        #[arg(long)]
        skip_bad: bool,
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// The grid form: a run or checkpoint folder, `--n` Fashion-MNIST test images, `--out`
        /// the PNG grid.
        #[arg(long, conflicts_with = "model")]
        ckpt: Option<PathBuf>,
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
        return cmd_suites::run(&cli.suite, &cli.set, &cli.device, &cli.results, cli.dry_run);
    }
    let Some(cmd) = cli.command else {
        use clap::CommandFactory;
        Cli::command().print_help()?;
        return Ok(());
    };
    match cmd {
        Cmd::Ls => cmd_suites::ls(),
        Cmd::Metrics { a, b, json, lpips } => cmd_model::metrics(&a, &b, json, &lpips),
        Cmd::Fid {
            a,
            b,
            json,
            kid_subsets,
            kid_subset_size,
            seed,
            no_cache,
        } => cmd_model::fid(
            &a,
            &b,
            json,
            lqae::fid::KidSettings {
                subsets: kid_subsets,
                subset_size: kid_subset_size,
                seed,
            },
            !no_cache,
        ),
        Cmd::Validate { suite, set } => cmd_suites::validate(&suite, &set),
        Cmd::Report {
            baseline,
            current,
            out,
            allow_missing,
        } => cmd_suites::report(&baseline, &current, out.as_deref(), allow_missing),
        Cmd::Board {
            results_dir,
            out,
            baselines,
        } => cmd_suites::board(&results_dir, baselines.as_deref(), &out),
        Cmd::Fetch { names, quiet } => cmd_assets::fetch(&names, quiet),
        Cmd::Tokens {
            n,
            lm,
            device,
            patch,
            seed,
        } => cmd_model::tokens(n, lm, &device, patch, seed),
        Cmd::Train {
            config,
            set,
            out,
            resume,
            stop_at,
            device,
        } => cmd_model::train(&config, &set, out, resume, stop_at, &device),
        Cmd::Ship { run, name, out } => cmd_model::ship(&run, &name, &out),
        Cmd::Encode {
            model,
            images,
            data,
            data_path,
            split,
            out,
            shard,
            skip_bad,
            batch,
            ckpt,
            n,
            show,
            device,
        } => match (ckpt, model) {
            (Some(ckpt), _) => cmd_model::encode(&ckpt, n, show, &device),
            (None, Some(model)) => cmd_model::encode_file(
                model, images, data, data_path, &split, out, shard, skip_bad, batch, &device,
            ),
            (None, None) => Err(anyhow::anyhow!(
                "encode: name a model (`--model NAME`) with `--images DIR` or `--data NAME`, or preview a run with `--ckpt DIR`"
            )),
        },
        Cmd::Decode {
            tokens,
            model,
            out,
            batch,
            device,
        } => cmd_model::decode_file(&tokens, &model, &out, batch, &device),
        Cmd::Reconstruct {
            model,
            images,
            data,
            data_path,
            split,
            skip_bad,
            batch,
            ckpt,
            n,
            out,
            device,
        } => match (ckpt, model) {
            (Some(ckpt), _) => cmd_model::reconstruct(&ckpt, n, &out, &device),
            (None, Some(model)) => {
                let tokens = out.join("tokens.jsonl");
                std::fs::create_dir_all(&out)?;
                cmd_model::encode_file(
                    model.clone(),
                    images,
                    data,
                    data_path,
                    &split,
                    tokens.clone(),
                    None,
                    skip_bad,
                    batch,
                    &device,
                )?;
                cmd_model::decode_file(&tokens, &model, &out, batch, &device)
            }
            (None, None) => Err(anyhow::anyhow!(
                "reconstruct: name a model (`--model NAME`) with `--images DIR` or `--data NAME`, or a run folder with `--ckpt DIR` for a grid"
            )),
        },
        Cmd::Bench {
            peer,
            rounds,
            budget,
            quick,
            filters,
            out,
            device,
        } => cmd_bench::bench(lqae::bench::runs::BenchArgs {
            peer,
            rounds,
            budget,
            quick,
            filters,
            out,
            device: lqae::device::parse_device(&device)?,
        }),
        Cmd::GpuCheck {
            device,
            budget,
            out,
        } => cmd_bench::gpu_check(&device, budget, &out),
        Cmd::StepBench {
            config,
            set,
            device,
            batches,
            steps,
            budget,
            peer,
            check_batch,
            out,
        } => cmd_bench::step_bench(lqae::bench::runs::StepBenchArgs {
            config,
            set,
            device,
            batches,
            steps,
            budget,
            peer,
            check_batch,
            out,
        }),
        Cmd::RandomLm {
            shape,
            set,
            seed,
            out,
        } => cmd_bench::random_lm(&shape, &set, seed, &out),
    }
}
