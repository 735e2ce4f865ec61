//! The benchmark commands as library calls: `bench [--peer]`, `step-bench [--peer]` and
//! `gpu-check`, each timing, printing nothing, and writing its record (`<stem>.json` and its
//! table `<stem>.md`) into a new run folder.

use super::{peer, step};
use crate::device::device_name;
use crate::error::{Error, Result};
use crate::kernels::machine;
use crate::lm::FrozenLm;
use crate::util::fsx::write_atomic;
use crate::util::provenance::{git_commit, run_folder};
use candle_core::Device;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What a benchmark command produced: its table and the folder of its record.
pub struct Recorded {
    pub markdown: String,
    pub dir: PathBuf,
    /// Lines about the same-work checks and the peer, for the terminal.
    pub notes: Vec<String>,
}

/// `<stem>.json` (the record) and `<stem>.md` (its table) in `run_dir`, atomically.
pub fn write_record(
    run_dir: &Path,
    stem: &str,
    record: &serde_json::Value,
    md: &str,
) -> Result<()> {
    std::fs::create_dir_all(run_dir).map_err(|e| Error::file(run_dir, e.to_string()))?;
    write_atomic(&run_dir.join(format!("{stem}.md")), md.as_bytes())?;
    // The record last: a folder with its `.json` is complete.
    write_atomic(
        &run_dir.join(format!("{stem}.json")),
        serde_json::to_string_pretty(record)?.as_bytes(),
    )?;
    Ok(())
}

/// `gpu-check` on `device`; the checks that failed are an error, after the record is written.
pub fn gpu_check(device: &Device, budget: f64, out: &Path) -> Result<Recorded> {
    let device = device.clone();
    let t0 = Instant::now();
    let (checks, notes) = super::gpu::run(&device, budget)?;
    let md = super::gpu::markdown(&checks, &notes);
    crate::util::fsx::check_writable(out)?;
    let run_dir = run_folder(out);
    let record = serde_json::json!({
        "schema": "lqae-gpu-check/1",
        "crate_version": env!("CARGO_PKG_VERSION"),
        "git_commit": git_commit(),
        "device": device_name(&device),
        "machine": machine(),
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
        return Err(Error::Msg(format!(
            "{} on {} differs from the CPU: {} (record in {})",
            failed.len(),
            device_name(&device),
            failed.join(", "),
            run_dir.display()
        )));
    }
    Ok(Recorded {
        markdown: md,
        dir: run_dir,
        notes: Vec::new(),
    })
}

/// The settings of `step-bench`.
pub struct StepBenchArgs {
    pub config: PathBuf,
    pub set: Vec<String>,
    /// As given (`cpu`, `cuda:0`): the peer's torch device.
    pub device: String,
    pub batches: Vec<usize>,
    pub steps: usize,
    pub budget: f64,
    pub peer: bool,
    pub check_batch: usize,
    pub out: PathBuf,
}

/// `step-bench`: full training steps at the largest batch that fits, with the peer.
pub fn step_bench(a: &StepBenchArgs) -> Result<Recorded> {
    let (config, set, device_s) = (&a.config, &a.set, a.device.as_str());
    let (batches, steps, budget, with_peer, check_batch, out) = (
        a.batches.clone(),
        a.steps,
        a.budget,
        a.peer,
        a.check_batch,
        &a.out,
    );
    let cfg = crate::model::RunConfig::from_file(config, set)?;
    let device = crate::device::parse_device(device_s)?;
    let mut notes = Vec::new();
    let t0 = Instant::now();
    crate::util::fsx::check_writable(out)?;
    let run_dir = run_folder(out);
    let mut peer_proc = None;
    if with_peer {
        let lm_dir = crate::model::resolve_lm_dir(cfg.model.lm.as_deref().unwrap_or("minilm"))?;
        let mask_id = FrozenLm::load(&lm_dir, &Device::Cpu)?.mask_id();
        let torch_device = if device.is_cpu() { "cpu" } else { device_s };
        let p = peer::Peer::start(&peer::python()?, &lm_dir, &cfg, mask_id, torch_device)?;
        notes.push(format!("peer: {}", p.info));
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
    let record = serde_json::json!({
        "schema": "lqae-step-bench/1",
        "crate_version": env!("CARGO_PKG_VERSION"),
        "git_commit": git_commit(),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "device": device_name(&device),
        "machine": machine(),
        "peer": info,
        "wall_time_s": t0.elapsed().as_secs_f64(),
        "report": report,
    });
    write_record(&run_dir, "step-bench", &record, &md)?;
    Ok(Recorded {
        markdown: md,
        dir: run_dir,
        notes,
    })
}

/// The settings of `bench`.
pub struct BenchArgs {
    pub peer: bool,
    pub rounds: usize,
    pub budget: f64,
    pub quick: bool,
    pub filters: Vec<String>,
    pub out: PathBuf,
    pub device: Device,
}

/// `bench [--peer]`: every selected kernel side by side with the PyTorch peer, after the
/// same-work checks.
pub fn bench(a: &BenchArgs) -> Result<Recorded> {
    let (with_peer, rounds, budget, quick, filters, out, device) = (
        a.peer,
        a.rounds,
        a.budget,
        a.quick,
        &a.filters,
        &a.out,
        a.device.clone(),
    );
    if rounds == 0 {
        return Err(Error::setting("--rounds", "at least 1"));
    }
    let mut notes = Vec::new();
    let t0 = Instant::now();
    let mut kernels = super::selected(&device, quick, filters)?;
    if kernels.is_empty() {
        return Err(Error::Msg(format!("no kernel matches {filters:?}; names: sgemm, search/minilm, search/roberta, lm-forward, vit-block, train-step, probe-features, ssim, lpips-alex, lpips-vgg16, inception-fid")));
    }
    // The sgemm rate is the yardstick of every share: always time it.
    if !kernels
        .iter()
        .any(|k| matches!(k.id, crate::bench::KernelId::Sgemm { .. }))
    {
        kernels.insert(0, super::sgemm(&device)?);
    }
    crate::util::fsx::check_writable(out)?;
    let run_dir = run_folder(out);
    let mut peer_proc = None;
    let mut checks = None;
    if with_peer {
        if !device.is_cpu() {
            return Err(Error::setting(
                "--peer",
                "the PyTorch peer runs on the CPU; use --device cpu",
            ));
        }
        let python = peer::python()?;
        let cfg = super::lqae_small()?;
        let lm_dir = crate::model::resolve_lm_dir(cfg.model.lm.as_deref().unwrap_or("minilm"))?;
        let mask_id = FrozenLm::load(&lm_dir, &device)?.mask_id();
        let mut p = peer::Peer::start(&python, &lm_dir, &cfg, mask_id, "cpu")?;
        notes.push(format!("peer: {}", p.info));
        let c = peer::check_same_work(&mut p, &kernels, &device, &run_dir)?;
        for (k, a) in &c.search_agreement {
            notes.push(format!(
                "check {k}: the same code for {:.3}% of tokens",
                100.0 * a
            ));
        }
        for (i, ((a, b), (ga, gb))) in c.train_losses.iter().zip(&c.train_grad_norms).enumerate() {
            notes.push(format!("check train step {i}: loss ours {a:.6}, PyTorch {b:.6}; gradient norm ours {ga:.6}, PyTorch {gb:.6}"));
        }
        if !c.train_losses.is_empty() {
            notes.push(format!(
                "check train steps: the same code for {:.2}% of tokens",
                100.0 * c.train_code_agreement
            ));
        }
        checks = Some(c);
        peer_proc = Some(p);
    }
    let rows = peer::side_by_side(&mut kernels, peer_proc.as_mut(), rounds, budget, true)?;
    let md = peer::markdown(&rows);
    let record = serde_json::json!({
        "schema": "lqae-bench/1",
        "crate_version": env!("CARGO_PKG_VERSION"),
        "git_commit": git_commit(),
        "device": device_name(&device),
        "machine": machine(),
        "peer": peer_proc.as_ref().map(|p| p.info.clone()),
        "blas": crate::kernels::blas::backend_name(),
        "checks": checks,
        "rounds": rounds,
        "budget_s": budget,
        "quick": quick,
        "wall_time_s": t0.elapsed().as_secs_f64(),
        "rows": rows,
    });
    write_record(&run_dir, "bench", &record, &md)?;
    Ok(Recorded {
        markdown: md,
        dir: run_dir,
        notes,
    })
}
