//! `lqae-eval step-bench`: full training steps of a run configuration (the paper's, by
//! default) at the largest batch that fits, ours and the PyTorch peer's on the same device in
//! the same run, with step time, images/s, model FLOP/s and peak memory.
//!
//! Batches are tried from the largest down: the first that completes a step is the largest
//! that fits (a device out-of-memory error on the way is expected and only moves to the next
//! batch). Then each side is also timed at the smaller of the two largest batches, so the
//! ratio ours/PyTorch compares the same work.
//!
//! Memory is sampled every ~50 ms while a side runs (see [`MemWatch`]): on CUDA with
//! `nvidia-smi` (the process's own figure when `nvidia-smi` lists it, and the rise of the
//! device's used memory over the phase), on the CPU the process's resident set. The peer also
//! reports torch's `max_memory_allocated` / `max_memory_reserved`.

use super::peer::{Peer, PeerStepTimes};
use super::{images, median};
use crate::error::{Error, Result};
use crate::model::{Autoencoder, RunConfig};
use crate::train::Step;
use candle_core::{Device, Tensor};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Peaks since the last reset.
#[derive(Default)]
struct Peaks {
    per_pid: HashMap<u32, f64>,
    device_start: Option<f64>,
    device_max: Option<f64>,
}

/// A sampler thread for memory use, in MiB. On a GPU: `nvidia-smi`'s per-process figures and
/// the device's used memory. On the CPU: each watched process's resident set (`VmRSS`).
pub struct MemWatch {
    stop: Arc<AtomicBool>,
    pids: Arc<Mutex<Vec<u32>>>,
    peaks: Arc<Mutex<Peaks>>,
    handle: Option<JoinHandle<()>>,
    gpu: bool,
}

fn nvidia_smi(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("nvidia-smi")
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `pid, MiB` lines of `nvidia-smi --query-compute-apps`.
pub fn parse_compute_apps(text: &str) -> HashMap<u32, f64> {
    text.lines()
        .filter_map(|l| {
            let (p, m) = l.split_once(',')?;
            Some((p.trim().parse().ok()?, m.trim().parse().ok()?))
        })
        .collect()
}

/// The device's used memory (MiB) of GPU 0.
fn device_used() -> Option<f64> {
    nvidia_smi(&[
        "--query-gpu=memory.used",
        "--format=csv,noheader,nounits",
        "-i",
        "0",
    ])?
    .lines()
    .next()?
    .trim()
    .parse()
    .ok()
}

/// Resident set of `pid` in MiB (Linux `/proc`).
pub fn rss_mib(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

impl MemWatch {
    pub fn start(gpu: bool) -> MemWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let pids: Arc<Mutex<Vec<u32>>> = Arc::new(Mutex::new(vec![std::process::id()]));
        let peaks = Arc::new(Mutex::new(Peaks::default()));
        let (s, p, k) = (stop.clone(), pids.clone(), peaks.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let watched = p.lock().expect("pids").clone();
                let (per_pid, dev) = if gpu {
                    let apps = nvidia_smi(&[
                        "--query-compute-apps=pid,used_memory",
                        "--format=csv,noheader,nounits",
                    ])
                    .map(|t| parse_compute_apps(&t))
                    .unwrap_or_default();
                    (apps, device_used())
                } else {
                    let m = watched
                        .iter()
                        .filter_map(|&pid| Some((pid, rss_mib(pid)?)))
                        .collect();
                    (m, None)
                };
                {
                    let mut k = k.lock().expect("peaks");
                    for (pid, mib) in per_pid {
                        if watched.contains(&pid) {
                            let e = k.per_pid.entry(pid).or_insert(0.0);
                            *e = e.max(mib);
                        }
                    }
                    if let Some(d) = dev {
                        k.device_start.get_or_insert(d);
                        k.device_max = Some(k.device_max.unwrap_or(d).max(d));
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        MemWatch {
            stop,
            pids,
            peaks,
            handle: Some(handle),
            gpu,
        }
    }

    /// Also watch process `pid`.
    pub fn watch(&self, pid: u32) {
        self.pids.lock().expect("pids").push(pid);
    }

    /// Forget the peaks so far; the device's used memory now is the new phase's start.
    pub fn reset(&self) {
        let mut k = self.peaks.lock().expect("peaks");
        *k = Peaks::default();
        if self.gpu {
            k.device_start = device_used();
        }
    }

    /// Peak of `pid` since the last reset (after one more sample), and the rise of the device's
    /// used memory over the same time (GPU only).
    pub fn peaks(&self, pid: u32) -> (Option<f64>, Option<f64>) {
        std::thread::sleep(Duration::from_millis(120));
        let k = self.peaks.lock().expect("peaks");
        let dev = match (k.device_start, k.device_max) {
            (Some(a), Some(b)) => Some((b - a).max(0.0)),
            _ => None,
        };
        (k.per_pid.get(&pid).copied(), dev)
    }
}

impl Drop for MemWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A device out-of-memory error (CUDA driver, cuBLAS, or an allocator's message).
pub fn is_oom(e: &Error) -> bool {
    let s = format!("{e} {e:?}").to_lowercase();
    [
        "out_of_memory",
        "out of memory",
        "alloc_failed",
        "outofmemory",
    ]
    .iter()
    .any(|p| s.contains(p))
}

/// One side's timed steps at one batch.
#[derive(Debug, Clone, Serialize)]
pub struct StepTiming {
    /// `lqae` or `pytorch`.
    pub side: String,
    pub batch: usize,
    /// Seconds of each timed step.
    pub times_s: Vec<f64>,
    pub median_s: f64,
    pub images_per_s: f64,
    /// Model matmul FLOPs per step over the median time.
    pub tflops: f64,
    /// Peak memory of the process (MiB): `nvidia-smi`'s per-process figure on a GPU (with the
    /// CUDA context), the resident set on the CPU. `None` where it could not be read.
    pub peak_process_mib: Option<f64>,
    /// Rise of the GPU's used memory over the phase (MiB), GPU only.
    pub peak_device_rise_mib: Option<f64>,
    /// torch's `max_memory_allocated` / `max_memory_reserved` (MiB), the peer on CUDA only.
    pub torch_max_allocated_mib: Option<f64>,
    pub torch_max_reserved_mib: Option<f64>,
}

/// Everything a step bench measured.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub config: String,
    pub lm_dir: String,
    pub tokens_per_image: usize,
    pub flop_per_image: f64,
    /// Batches tried, largest first.
    pub batches: Vec<usize>,
    pub ours_largest: usize,
    pub peer_largest: Option<usize>,
    /// Losses, gradient norms and code agreement of two steps on both sides from the same
    /// weights (the same-work check), at `check_batch`.
    pub check_batch: Option<usize>,
    pub check_losses: Vec<(f64, f64)>,
    pub check_grad_norms: Vec<(f64, f64)>,
    pub check_code_agreement: Option<f64>,
    pub rows: Vec<StepTiming>,
    /// Batch at which both sides were timed, and ours/PyTorch median step time there.
    pub common_batch: Option<usize>,
    pub ratio: Option<f64>,
}

/// Matmul FLOPs of one training step per image (model count, [`super::train_step_flop`]).
pub fn flop_per_image(cfg: &RunConfig, lm: &crate::lm::LmConfig) -> f64 {
    super::train_step_flop(
        cfg,
        lm.hidden_size,
        lm.intermediate_size,
        lm.num_hidden_layers,
        lm.vocab_size,
        1,
    )
}

fn timing(side: &str, batch: usize, times: Vec<f64>, flop_per_image: f64) -> StepTiming {
    let m = median(&times);
    StepTiming {
        side: side.into(),
        batch,
        median_s: m,
        images_per_s: batch as f64 / m,
        tflops: flop_per_image * batch as f64 / m / 1e12,
        times_s: times,
        peak_process_mib: None,
        peak_device_rise_mib: None,
        torch_max_allocated_mib: None,
        torch_max_reserved_mib: None,
    }
}

/// Our steps at batch `b` on the images `x` (narrowed to `b`): `None` when a step ran out of
/// device memory.
#[allow(clippy::too_many_arguments)]
fn ours_at(
    ts: &mut Step,
    x: &Tensor,
    b: usize,
    device: &Device,
    steps: usize,
    budget_s: f64,
    watch: &MemWatch,
    flop_per_image: f64,
    simulated_oom_above: Option<usize>,
) -> Result<Option<StepTiming>> {
    if simulated_oom_above.is_some_and(|lim| b > lim) {
        eprintln!("step-bench: ours at batch {b}: out of memory (simulated)");
        return Ok(None);
    }
    let xb = x.narrow(0, 0, b)?.contiguous()?;
    watch.reset();
    // One untimed step (the first to run out of memory if the batch does not fit), then up to
    // `steps` timed, at least two, stopping once `budget_s` has passed.
    let max = steps.max(1);
    let times = match super::time_calls(device, budget_s, max.min(2), max, || ts.run(&xb).map(drop))
    {
        Err(e) if is_oom(&e) => {
            eprintln!("step-bench: ours at batch {b}: out of device memory");
            return Ok(None);
        }
        r => r?,
    };
    let mut row = timing("lqae", b, times, flop_per_image);
    (row.peak_process_mib, row.peak_device_rise_mib) = watch.peaks(std::process::id());
    eprintln!(
        "step-bench: ours at batch {b}: {:.1} ms/step, {:.1} images/s",
        row.median_s * 1e3,
        row.images_per_s
    );
    Ok(Some(row))
}

fn peer_at(
    peer: &mut Peer,
    b: usize,
    steps: usize,
    budget_s: f64,
    watch: &MemWatch,
    flop_per_image: f64,
) -> Result<Option<StepTiming>> {
    watch.reset();
    let Some(PeerStepTimes {
        times,
        max_allocated_bytes,
        max_reserved_bytes,
    }) = peer.time_step(b, steps, budget_s)?
    else {
        eprintln!("step-bench: PyTorch at batch {b}: out of device memory");
        return Ok(None);
    };
    let mut row = timing("pytorch", b, times, flop_per_image);
    (row.peak_process_mib, row.peak_device_rise_mib) = watch.peaks(peer.pid());
    row.torch_max_allocated_mib = max_allocated_bytes.map(|x| x / 1048576.0);
    row.torch_max_reserved_mib = max_reserved_bytes.map(|x| x / 1048576.0);
    eprintln!(
        "step-bench: PyTorch at batch {b}: {:.1} ms/step, {:.1} images/s",
        row.median_s * 1e3,
        row.images_per_s
    );
    Ok(Some(row))
}

/// The timing at the first of `batches` (largest first) that fits: `time_at` gives `None`
/// for a batch that ran out of memory.
fn first_fit(
    batches: &[usize],
    mut time_at: impl FnMut(usize) -> Result<Option<StepTiming>>,
) -> Result<Option<StepTiming>> {
    for &b in batches {
        if let Some(row) = time_at(b)? {
            return Ok(Some(row));
        }
    }
    Ok(None)
}

/// Settings of a step bench.
pub struct StepBench<'a> {
    pub cfg: RunConfig,
    pub device: Device,
    /// Batches to try; sorted largest first here.
    pub batches: Vec<usize>,
    /// Timed steps per side and batch (at most; at least two).
    pub steps: usize,
    /// Seconds after which a side stops timing a batch (once two steps are timed).
    pub budget_s: f64,
    pub peer: Option<&'a mut Peer>,
    /// Batch of the same-work check (two steps on both sides from the same weights); `None`
    /// skips it.
    pub check_batch: Option<usize>,
    /// Scratch folder of the check's weights file.
    pub work: std::path::PathBuf,
    /// Treat our batches above this as out of memory without running them: the tests' stand-in
    /// for a device that runs out (a CPU does not fail that way). `None` in real runs.
    pub simulated_oom_above: Option<usize>,
}

impl StepBench<'_> {
    pub fn run(mut self) -> Result<StepReport> {
        if self.batches.is_empty() || self.batches.contains(&0) {
            return Err(Error::setting(
                "--batches",
                "give one or more batch sizes above 0",
            ));
        }
        self.batches.sort_unstable_by(|a, b| b.cmp(a));
        self.batches.dedup();
        let cfg = self.cfg.clone();
        let watch = MemWatch::start(!self.device.is_cpu());
        let mut report = StepReport {
            config: cfg.name.clone(),
            lm_dir: String::new(),
            tokens_per_image: cfg.tokens_per_image(),
            flop_per_image: 0.0,
            batches: self.batches.clone(),
            ours_largest: 0,
            peer_largest: None,
            check_batch: None,
            check_losses: Vec::new(),
            check_grad_norms: Vec::new(),
            check_code_agreement: None,
            rows: Vec::new(),
            common_batch: None,
            ratio: None,
        };
        if let (Some(p), Some(b)) = (self.peer.as_deref_mut(), self.check_batch) {
            eprintln!("step-bench: same-work check, two steps at batch {b} on both sides");
            let a = super::peer::train_same_work(p, &cfg, b, &self.device, &self.work)?;
            for (i, ((x, y), (gx, gy))) in a.losses.iter().zip(&a.grad_norms).enumerate() {
                eprintln!("check step {i}: loss ours {x:.6}, PyTorch {y:.6}; gradient norm ours {gx:.6}, PyTorch {gy:.6}");
            }
            report.check_batch = Some(b);
            report.check_code_agreement = Some(a.code_agreement);
            (report.check_losses, report.check_grad_norms) = (a.losses, a.grad_norms);
        }
        let mut ts = Step::new(&cfg, &self.device)?;
        let lm_cfg = match &ts.model {
            Autoencoder::Lqae(m) => {
                report.lm_dir = m.lm().dir().display().to_string();
                m.lm().config().clone()
            }
            Autoencoder::Vqvae(_) => {
                return Err(Error::setting(
                    "--config",
                    format!(
                        "`{}` is a VQ-VAE; the step bench times LQAE configurations",
                        cfg.name
                    ),
                ))
            }
        };
        let fpi = flop_per_image(&cfg, &lm_cfg);
        report.flop_per_image = fpi;
        let x = images(&cfg, self.batches[0], 9, &self.device)?;
        let (device, steps, budget, sim) = (
            self.device.clone(),
            self.steps,
            self.budget_s,
            self.simulated_oom_above,
        );
        let mut ours = |b: usize| ours_at(&mut ts, &x, b, &device, steps, budget, &watch, fpi, sim);
        let Some(ours_row) = first_fit(&self.batches, &mut ours)? else {
            return Err(Error::setting(
                "--batches",
                format!(
                    "not even batch {} fits in the memory of {}; try smaller batches",
                    self.batches.last().expect("non-empty"),
                    crate::device::device_name(&self.device)
                ),
            ));
        };
        report.ours_largest = ours_row.batch;
        report.rows.push(ours_row.clone());
        let Some(peer) = self.peer else {
            return Ok(report);
        };
        watch.watch(peer.pid());
        let Some(peer_row) = first_fit(&self.batches, |b| {
            peer_at(peer, b, self.steps, self.budget_s, &watch, fpi)
        })?
        else {
            eprintln!("step-bench: no batch fits the PyTorch peer");
            return Ok(report);
        };
        report.peer_largest = Some(peer_row.batch);
        report.rows.push(peer_row.clone());
        let common = report.ours_largest.min(peer_row.batch);
        let ours_c = if ours_row.batch == common {
            Some(ours_row)
        } else {
            ours(common)?
        };
        let peer_c = if peer_row.batch == common {
            Some(peer_row)
        } else {
            peer_at(peer, common, self.steps, self.budget_s, &watch, fpi)?
        };
        if let (Some(o), Some(p)) = (ours_c, peer_c) {
            report.common_batch = Some(common);
            report.ratio = Some(o.median_s / p.median_s);
            for r in [o, p] {
                if !report
                    .rows
                    .iter()
                    .any(|x| x.side == r.side && x.batch == r.batch)
                {
                    report.rows.push(r);
                }
            }
        }
        Ok(report)
    }
}

/// The report as Markdown.
pub fn markdown(r: &StepReport, device: &str) -> String {
    let f = |v: Option<f64>| v.map(|x| format!("{x:.0}")).unwrap_or_else(|| "-".into());
    let mut s = format!(
        "Training step of `{}` on {device}: {} tokens per image, {:.1} GFLOP per image (model matmul count); LM `{}`.\n\n",
        r.config,
        r.tokens_per_image,
        r.flop_per_image / 1e9,
        r.lm_dir
    );
    s.push_str("| side | batch | ms/step (median) | min-max ms | images/s | TFLOP/s | peak MiB (process) | device memory rise MiB | torch max allocated / reserved MiB |\n|---|---|---|---|---|---|---|---|---|\n");
    for row in &r.rows {
        let lo = row.times_s.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = row.times_s.iter().copied().fold(0.0, f64::max);
        s.push_str(&format!(
            "| {} | {} | {:.1} | {:.1}-{:.1} | {:.2} | {:.3} | {} | {} | {} / {} |\n",
            if row.side == "lqae" {
                "lqae (ours)"
            } else {
                "PyTorch"
            },
            row.batch,
            row.median_s * 1e3,
            lo * 1e3,
            hi * 1e3,
            row.images_per_s,
            row.tflops,
            f(row.peak_process_mib),
            f(row.peak_device_rise_mib),
            f(row.torch_max_allocated_mib),
            f(row.torch_max_reserved_mib),
        ));
    }
    let list = r
        .batches
        .iter()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    s.push_str(&format!(
        "\nLargest batch that fits (of {list}): ours {}, PyTorch {}.\n",
        r.ours_largest,
        r.peer_largest
            .map(|b| b.to_string())
            .unwrap_or_else(|| "-".into())
    ));
    if let (Some(b), Some(x)) = (r.common_batch, r.ratio) {
        s.push_str(&format!(
            "At batch {b}: ours/PyTorch step time = **{x:.2}** (below 1: we are faster).\n"
        ));
    }
    if let (Some(b), Some(a)) = (r.check_batch, r.check_code_agreement) {
        let l: Vec<String> = r
            .check_losses
            .iter()
            .map(|(x, y)| format!("{x:.6} / {y:.6}"))
            .collect();
        s.push_str(&format!(
            "Same work (two steps at batch {b} from the same weights, images and masks): losses ours / PyTorch {}; the same code for {:.2}% of tokens.\n",
            l.join(", "),
            100.0 * a
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compute_apps_lines_parse_and_junk_is_skipped() {
        let m = parse_compute_apps("1234, 5678\n99, [N/A]\n\n42,10\n");
        assert_eq!(m.get(&1234), Some(&5678.0));
        assert_eq!(m.get(&42), Some(&10.0));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn out_of_memory_errors_are_told_apart() {
        assert!(is_oom(&Error::Msg(
            "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")".into()
        )));
        assert!(is_oom(&Error::Msg("CUBLAS_STATUS_ALLOC_FAILED".into())));
        assert!(!is_oom(&Error::Msg("shape mismatch in matmul".into())));
    }

    #[test]
    fn our_resident_set_is_read() {
        let a = rss_mib(std::process::id()).expect("VmRSS");
        assert!(a > 1.0, "{a}");
    }
}
