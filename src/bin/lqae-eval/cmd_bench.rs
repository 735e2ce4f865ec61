//! `bench`, `step-bench`, `gpu-check`, `random-lm`.

use anyhow::Result;
use lqae::bench::runs::{self, Recorded};
use std::path::PathBuf;
use std::time::Instant;

fn show(r: &Recorded) {
    for n in &r.notes {
        eprintln!("{n}");
    }
    println!("{}", r.markdown);
    println!("written to {}", r.dir.display());
}

pub fn bench(a: BenchArgs) -> Result<()> {
    show(&runs::bench(&runs::BenchArgs {
        peer: a.peer,
        rounds: a.rounds,
        budget: a.budget,
        quick: a.quick,
        filters: a.filters,
        out: a.out,
        device: lqae::device::parse_device(&a.device)?,
    })?);
    Ok(())
}

pub fn step_bench(a: StepBenchArgs) -> Result<()> {
    show(&runs::step_bench(&runs::StepBenchArgs {
        config: a.config,
        set: a.set,
        device: a.device,
        batches: a.batches,
        steps: a.steps,
        budget: a.budget,
        peer: a.peer,
        check_batch: a.check_batch,
        out: a.out,
    })?);
    Ok(())
}

pub fn gpu_check(a: GpuCheckArgs) -> Result<()> {
    let device = lqae::device::parse_device(&a.device)?;
    show(&runs::gpu_check(&device, a.budget, &a.out)?);
    Ok(())
}

pub fn random_lm(a: RandomLmArgs) -> Result<()> {
    use lqae::lm::random;
    let cfg = random::with_overrides(&random::shape(&a.shape)?, &a.set)?;
    let t0 = Instant::now();
    let (out, seed) = (&a.out, a.seed);
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

/// The arguments of `bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Also run the PyTorch (CPU) peer (its venv is built once by scripts/peer-venv.sh).
    #[arg(long)]
    pub peer: bool,
    /// Rounds; each times every kernel on both sides. Ratios are medians over rounds.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Seconds per kernel per side per round (at least one call).
    #[arg(long, default_value_t = 1.0)]
    pub budget: f64,
    /// Smaller batches for the per-image kernels.
    #[arg(long)]
    pub quick: bool,
    /// Only kernels whose name contains one of these (e.g. search train-step).
    pub filters: Vec<String>,
    /// Folder for `<run-id>/bench.json` and `bench.md`.
    #[arg(long, default_value = "results/bench")]
    pub out: PathBuf,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// The arguments of `gpu-check`.
#[derive(clap::Args)]
pub struct GpuCheckArgs {
    #[arg(long, default_value = "cuda")]
    pub device: String,
    /// Seconds of timing per check and device (at least 3 calls).
    #[arg(long, default_value_t = 1.0)]
    pub budget: f64,
    /// Folder for `<run-id>/gpu-check.json` and `gpu-check.md`.
    #[arg(long, default_value = "results/gpu")]
    pub out: PathBuf,
}

/// The arguments of `step-bench`.
#[derive(clap::Args)]
pub struct StepBenchArgs {
    #[arg(long, default_value = "configs/lqae-paper.toml")]
    pub config: PathBuf,
    /// Override a configuration key, `section.key=value` (e.g. model.lm=/tmp/roberta-random).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Batches to try, largest first; the first that completes a step is timed.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "512,384,256,192,128,96,64,48,32,16,8"
    )]
    pub batches: Vec<usize>,
    /// Timed steps per side and batch (at most).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Seconds after which a side stops timing a batch (once two steps are timed).
    #[arg(long, default_value_t = 20.0)]
    pub budget: f64,
    /// Also time the PyTorch peer (benches/peer/peer.py) on the same device; its python is
    /// $LQAE_PEER_PYTHON or the venv of scripts/peer-venv.sh.
    #[arg(long)]
    pub peer: bool,
    /// Batch of the same-work check before timing (two steps on both sides from the same
    /// weights; with --peer); 0 skips it.
    #[arg(long, default_value_t = 2)]
    pub check_batch: usize,
    /// Folder for `<run-id>/step-bench.json` and `step-bench.md`.
    #[arg(long, default_value = "results/gpu")]
    pub out: PathBuf,
}

/// The arguments of `random-lm`.
#[derive(clap::Args)]
pub struct RandomLmArgs {
    /// `roberta-base` (the paper's LM) or `minilm`.
    #[arg(long, default_value = "roberta-base")]
    pub shape: String,
    /// Override a config.json field, `key=value` (e.g. num_hidden_layers=2).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long)]
    pub out: PathBuf,
}
