//! `bench`, `step-bench`, `gpu-check`, `random-lm`.

use anyhow::Result;
use lqae::bench::runs::{self, BenchArgs, Recorded, StepBenchArgs};
use std::path::Path;
use std::time::Instant;

fn show(r: &Recorded) {
    for n in &r.notes {
        eprintln!("{n}");
    }
    println!("{}", r.markdown);
    println!("written to {}", r.dir.display());
}

pub fn bench(a: BenchArgs) -> Result<()> {
    show(&runs::bench(&a)?);
    Ok(())
}

pub fn step_bench(a: StepBenchArgs) -> Result<()> {
    show(&runs::step_bench(&a)?);
    Ok(())
}

pub fn gpu_check(device: &str, budget: f64, out: &Path) -> Result<()> {
    let device = lqae::device::parse_device(device)?;
    show(&runs::gpu_check(&device, budget, out)?);
    Ok(())
}

pub fn random_lm(shape: &str, set: &[String], seed: u64, out: &Path) -> Result<()> {
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
