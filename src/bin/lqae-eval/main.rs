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
    Metrics(cmd_model::MetricsArgs),
    /// FID and KID between two folders of images (any sizes; counts >= 2), the FID
    /// Inception-v3 in candle (weights fetched once as the `inception-fid` asset). FID is biased
    /// upward below about 2,048 images: only figures over equal image counts compare.
    Fid(cmd_model::FidArgs),
    /// Check a suite file (or name) and report every problem with its key.
    Validate(cmd_suites::ValidateArgs),
    /// Compare two results (files or folders; a folder means its newest result.json): a
    /// Markdown table, exit 1 when a metric regressed beyond its tolerance significantly.
    Report(cmd_suites::ReportArgs),
    /// Every run under a results folder on one page: headline metrics with 95% intervals by
    /// suite, model (tokenizer) and LLM, links to the run pages, and the verdict against each
    /// suite's baseline (`--baselines`, default `RESULTS_DIR/baselines`); writes `--out` (HTML)
    /// and its Markdown twin beside it (`.md`).
    Board(cmd_suites::BoardArgs),
    /// Fetch, verify and cache assets (all when none is named); `llama-server` builds the
    /// embedded LLM server from its pinned source (once, about 13 minutes on 2 cores).
    Fetch(cmd_assets::FetchArgs),
    /// Turn Fashion-MNIST images into text tokens of the frozen LM through a seeded random
    /// (untrained) patch projection; `encode` shows a trained model's tokens.
    Tokens(cmd_model::TokensArgs),
    /// Train an LQAE or VQ-VAE from a run configuration (configs/*.toml).
    Train(cmd_model::TrainArgs),
    /// Ship a finished run as `models/<name>/`: final weights, state, recipe, log, a
    /// reconstruction grid and a sha256 manifest (what the suites load by name).
    Ship(cmd_model::ShipArgs),
    /// Encode images (a folder or a data set split) into a tokens file with a trained model;
    /// `--ckpt` previews a run's tokens instead.
    Encode(cmd_model::EncodeArgs),
    /// Decode a tokens file (`encode`'s output) into one PNG per image with the model that
    /// encoded it (ids through the frozen LM and the decoder).
    Decode(cmd_model::DecodeArgs),
    /// Time the hot kernels (nearest-code search, LM forward, ViT block, lqae-small training
    /// step, probe features, SSIM, LPIPS, sgemm), with `--peer` side by side with the PyTorch
    /// peer of benches/peer/ in the same run: medians, ratio ours/PyTorch, share of sgemm.
    Bench(cmd_bench::BenchArgs),
    /// Run the quantizer, a frozen-LM forward and training steps on the CPU and on `--device`
    /// (a GPU), compare the results and time them there (seeded random inputs and weights: no
    /// downloaded asset needed). Exits 1 when a comparison fails.
    GpuCheck(cmd_bench::GpuCheckArgs),
    /// Full training steps of a configuration (the paper's by default) at the largest batch
    /// that fits the device, with `--peer` the same step in PyTorch on the same device in the
    /// same run: ms/step, images/s, TFLOP/s, peak memory, ratio ours/PyTorch.
    StepBench(cmd_bench::StepBenchArgs),
    /// Write a language-model folder of a real checkpoint's shape with seeded random weights
    /// (config.json, model.safetensors, a word-level tokenizer.json with the family's special
    /// tokens), for timing where the real weights are not on disk.
    RandomLm(cmd_bench::RandomLmArgs),
    /// Reconstruct test images with a trained model and write a PNG grid (originals above
    /// reconstructions).
    ///
    /// With `--model`: encode `--images DIR` or `--data NAME` into `--out DIR/tokens.jsonl`
    /// and decode it into one PNG per image under `--out DIR` (encode + decode; resumable).
    Reconstruct(cmd_model::ReconstructArgs),
}

fn main() {
    lqae::kernels::tune_threads();
    lqae::kernels::tune_allocator();
    let cli = Cli::parse();
    // On the kernels' own thread pool (`kernels::on_pool`: fewer wake-ups per parallel op).
    if let Err(e) = lqae::kernels::on_pool(|| run(cli)) {
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
        Cmd::Metrics(a) => cmd_model::metrics(a),
        Cmd::Fid(a) => cmd_model::fid(a),
        Cmd::Validate(a) => cmd_suites::validate(a),
        Cmd::Report(a) => cmd_suites::report(a),
        Cmd::Board(a) => cmd_suites::board(a),
        Cmd::Fetch(a) => cmd_assets::fetch(a),
        Cmd::Tokens(a) => cmd_model::tokens(a),
        Cmd::Train(a) => cmd_model::train(a),
        Cmd::Ship(a) => cmd_model::ship(a),
        Cmd::Encode(a) => cmd_model::encode(a),
        Cmd::Decode(a) => cmd_model::decode(a),
        Cmd::Bench(a) => cmd_bench::bench(a),
        Cmd::GpuCheck(a) => cmd_bench::gpu_check(a),
        Cmd::StepBench(a) => cmd_bench::step_bench(a),
        Cmd::RandomLm(a) => cmd_bench::random_lm(a),
        Cmd::Reconstruct(a) => cmd_model::reconstruct(a),
    }
}
