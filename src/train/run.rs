//! A training run: the run folder (one trainer at a time), resume from the newest checkpoint,
//! the seeded data order, the loop of [`Step`]s, the log and the checkpoints.

use super::checkpoint::{latest_checkpoint, save_checkpoint, CheckpointState};
use super::diagnostics;
use super::optim::AdamW;
use super::step::Step;
use crate::data::batch::make_batch;
use crate::data::Split;
use crate::error::{Error, Result};
use crate::model::{Autoencoder, Params, RunConfig};
use crate::rng::Rng;
use crate::util::fsx::write_atomic;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Image indices of training step `step`: consecutive slices of per-epoch seeded permutations.
pub fn batch_indices(step: usize, batch: usize, n: usize, seed: u64) -> Vec<usize> {
    let mut out = Vec::with_capacity(batch);
    let mut perm_epoch = usize::MAX;
    let mut perm = Vec::new();
    for k in step * batch..(step + 1) * batch {
        let (epoch, pos) = (k / n, k % n);
        if epoch != perm_epoch {
            perm = Rng::derive(seed, "epoch", epoch as u64).permutation(n);
            perm_epoch = epoch;
        }
        out.push(perm[pos]);
    }
    out
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogLine {
    pub step: usize,
    pub lr: f64,
    pub images_per_s: f64,
    pub grad_norm: f64,
    #[serde(flatten)]
    pub losses: HashMap<String, f64>,
    /// Code usage, encoder scale and held-out reconstruction (`diagnostics`), when logged.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub diag: std::collections::BTreeMap<String, f64>,
}

impl LogLine {
    /// The progress bar's message: losses, codes, held-out error, speed.
    fn summary(&self) -> String {
        format!(
            "loss {:.4} mse {:.4}{} {:.1} img/s",
            self.losses["loss"],
            self.losses["recon_mse"],
            match (
                self.diag.get("codes_distinct"),
                self.diag.get("heldout_mse_mask0")
            ) {
                (Some(c), Some(m)) => format!(" codes {c} held-out mse {m:.4}"),
                _ => String::new(),
            },
            self.images_per_s
        )
    }
}

pub struct TrainOptions {
    pub resume: bool,
    /// Stop (after checkpointing) once this step is reached, as if interrupted.
    pub stop_at: Option<usize>,
    pub progress: bool,
}

pub struct TrainOutcome {
    pub step: usize,
    pub first: Option<LogLine>,
    pub last: Option<LogLine>,
    pub seconds: f64,
    pub out_dir: PathBuf,
}

/// Dead-code restart of a VQ-VAE: which codes were chosen since the last restart.
struct DeadCodes {
    used: Vec<bool>,
    every: usize,
}

impl DeadCodes {
    fn new(codes: usize, every: usize) -> Self {
        DeadCodes {
            used: vec![false; codes],
            every,
        }
    }

    /// Count this step's codes; every `every` steps move the unused ones onto encoder outputs
    /// of `images` drawn with a seeded generator, and start counting afresh.
    fn after_step(
        &mut self,
        step: usize,
        model: &Autoencoder,
        params: &Params,
        images: &Tensor,
        ids: &Tensor,
        seed: u64,
    ) -> Result<()> {
        for i in ids.flatten_all()?.to_vec1::<u32>()? {
            self.used[i as usize] = true;
        }
        if !step.is_multiple_of(self.every) {
            return Ok(());
        }
        let dead: Vec<usize> = (0..self.used.len()).filter(|&c| !self.used[c]).collect();
        self.used.iter_mut().for_each(|u| *u = false);
        if dead.is_empty() {
            return Ok(());
        }
        let (z, _) = model.encode_continuous(images)?;
        let (b, t, w) = z.dims3()?;
        let z: Vec<f32> = z.detach().flatten_all()?.to_vec1()?;
        let var = params
            .named_vars()
            .into_iter()
            .find(|(n, _)| n == "quantizer.codebook")
            .map(|(_, v)| v)
            .ok_or_else(|| Error::Msg("the VQ-VAE has no `quantizer.codebook`".into()))?;
        let mut book: Vec<f32> = var.as_tensor().flatten_all()?.to_vec1()?;
        let mut rng = Rng::derive(seed, "dead-codes", step as u64);
        for c in dead {
            let r = rng.below(b * t);
            book[c * w..(c + 1) * w].copy_from_slice(&z[r * w..(r + 1) * w]);
        }
        var.set(&Tensor::from_vec(
            book,
            var.as_tensor().shape(),
            var.as_tensor().device(),
        )?)?;
        Ok(())
    }
}

/// The training log opened for appending, with the lines past `start` dropped (those steps
/// run again on a resume), and its first line.
fn reopen_log(log_path: &Path, start: usize) -> Result<(std::fs::File, Option<LogLine>)> {
    let mut first = None;
    if let Ok(text) = std::fs::read_to_string(log_path) {
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| {
                serde_json::from_str::<LogLine>(l)
                    .map(|x| x.step <= start)
                    .unwrap_or(false)
            })
            .collect();
        first = kept.first().and_then(|l| serde_json::from_str(l).ok());
        let mut s = kept.join("\n");
        if !s.is_empty() {
            s.push('\n');
        }
        write_atomic(log_path, s.as_bytes())?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(|e| Error::file(log_path, e.to_string()))?;
    Ok((log, first))
}

/// The step a run continues from: 0 for a new run folder, else the newest checkpoint's (with
/// weights and optimiser state loaded), which needs `--resume` and the same configuration.
fn resume(
    out: &Path,
    opts: &TrainOptions,
    cfg_json: &str,
    params: &Params,
    opt: &mut AdamW,
    device: &Device,
) -> Result<usize> {
    let Some(ck) = latest_checkpoint(out)? else {
        return Ok(0);
    };
    if !opts.resume {
        return Err(Error::file(
            out,
            "holds a run already: pass --resume to continue it, or choose another --out",
        ));
    }
    let state: CheckpointState = serde_json::from_slice(
        &std::fs::read(ck.join("state.json")).map_err(|e| Error::file(&ck, e.to_string()))?,
    )
    .map_err(|e| Error::file(ck.join("state.json"), e.to_string()))?;
    if serde_json::to_string_pretty(&state.config)? != cfg_json {
        return Err(Error::file(&ck, "was written with a different configuration; resume with the same config and --set values"));
    }
    let now = device.is_cpu().then(crate::kernels::blas::backend_name);
    if state.blas.is_some() && state.blas != now {
        eprintln!(
            "note: {} was trained with the products on {}, this run has {}: the resumed run is valid but not bit-identical to an uninterrupted one",
            ck.display(),
            state.blas.as_deref().unwrap_or("?"),
            now.as_deref().unwrap_or("the GPU")
        );
    }
    params
        .load(&ck.join("model.safetensors"))
        .map_err(|e| Error::file(ck.join("model.safetensors"), e.to_string()))?;
    opt.load(&ck.join("optimizer.safetensors"), device)?;
    opt.t = state.optimizer_t;
    Ok(state.step)
}

/// Train `cfg` into `out`. With `resume`, continue from the newest checkpoint there (the
/// configuration must be the same).
pub fn train(
    cfg: &RunConfig,
    out: &Path,
    device: &Device,
    opts: &TrainOptions,
) -> Result<TrainOutcome> {
    std::fs::create_dir_all(out).map_err(|e| Error::file(out, e.to_string()))?;
    let _lock = lock_run_folder(out)?;
    let t = &cfg.train;
    let data = crate::data::load(&cfg.data, Split::Train)?;
    if data.is_empty() {
        return Err(Error::setting("data", "the training set is empty"));
    }
    let mut s = Step::new(cfg, device)?;
    let cfg_json = serde_json::to_string_pretty(cfg)?;
    let start = resume(out, opts, &cfg_json, &s.params, &mut s.opt, device)?;
    s.step = start;
    write_atomic(&out.join("run.json"), cfg_json.as_bytes())?;
    let log_path = out.join("log.jsonl");
    let (mut log, mut first) = reopen_log(&log_path, start)?;
    let size = cfg.model.image_size as u32;
    let mut restarts = dead_codes(&s.model, cfg)?;
    let held_out = if t.diagnostics {
        let test = crate::data::load(&cfg.data, Split::Test)?;
        let idx: Vec<usize> = (0..diagnostics::HELD_OUT.min(test.len())).collect();
        Some(make_batch(&test, &idx, size, None, device)?)
    } else {
        None
    };
    let pb = progress_bar(opts.progress, t.steps, start);
    let t0 = Instant::now();
    let mut last = None;
    let mut window = (Instant::now(), 0usize);
    while s.step < t.steps {
        if opts.stop_at.is_some_and(|stop| s.step >= stop) {
            break;
        }
        let idx = batch_indices(s.step, t.batch_size, data.len(), t.seed);
        let mut aug = Rng::derive(t.seed, "augment", s.step as u64);
        let augment = cfg.data.augment.then_some(&mut aug);
        let images = make_batch(&data, &idx, size, augment, device)?;
        let o = s.run(&images)?;
        let step = s.step;
        if let Some(r) = restarts.as_mut() {
            r.after_step(step, &s.model, &s.params, &images, &o.forward.ids, t.seed)?;
        }
        window.1 += t.batch_size;
        if step % t.log_every == 0 || step == t.steps || step == start + 1 {
            let ips = window.1 as f64 / window.0.elapsed().as_secs_f64().max(1e-9);
            window = (Instant::now(), 0);
            let diag = match &held_out {
                Some(h) => diagnostics::diagnostics(&s.model, &o.forward.ids, h, t.seed)?,
                None => Default::default(),
            };
            let line = LogLine {
                step,
                lr: o.lr,
                images_per_s: ips,
                grad_norm: o.grad_norm,
                losses: o
                    .forward
                    .losses
                    .scalars()?
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
                diag,
            };
            let text = serde_json::to_string(&line)? + "\n";
            log.write_all(text.as_bytes())
                .and_then(|_| log.flush())
                .map_err(|e| Error::file(&log_path, e.to_string()))?;
            pb.set_message(line.summary());
            first.get_or_insert_with(|| line.clone());
            last = Some(line);
        }
        pb.set_position(step as u64);
        if step % t.ckpt_every == 0 || step == t.steps || opts.stop_at == Some(step) {
            let state = CheckpointState {
                step,
                optimizer_t: s.opt.t,
                config: cfg.clone(),
                crate_version: env!("CARGO_PKG_VERSION").into(),
                blas: device.is_cpu().then(crate::kernels::blas::backend_name),
            };
            save_checkpoint(out, &s.params, &s.opt, &state)?;
        }
    }
    pb.finish_and_clear();
    Ok(TrainOutcome {
        step: s.step,
        first,
        last,
        seconds: t0.elapsed().as_secs_f64(),
        out_dir: out.to_path_buf(),
    })
}

/// One trainer per run folder: a second one would interleave checkpoints and the log. The
/// lock dies with its holder, so a killed trainer never blocks the resume.
fn lock_run_folder(out: &Path) -> Result<std::fs::File> {
    let lock_path = out.join(".train.lock");
    let lock =
        std::fs::File::create(&lock_path).map_err(|e| Error::file(&lock_path, e.to_string()))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::file(
            out,
            "another process is training into this run folder now; wait for it to finish (then --resume is a no-op) or choose another --out",
        )),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(Error::file(&lock_path, format!("cannot lock: {e}")))
        }
    }
}

/// The dead-code restart of a VQ-VAE whose configuration asks for it.
fn dead_codes(model: &Autoencoder, cfg: &RunConfig) -> Result<Option<DeadCodes>> {
    Ok(match (model, cfg.model.restart_dead_codes_every) {
        (Autoencoder::Vqvae(m), Some(every)) => {
            if every == 0 || !cfg.train.ckpt_every.is_multiple_of(every) {
                return Err(Error::setting("model.restart_dead_codes_every", format!("{every} must be positive and divide train.ckpt_every ({}), so that a resumed run restarts the same codes", cfg.train.ckpt_every)));
            }
            Some(DeadCodes::new(m.codebook_size(), every))
        }
        _ => None,
    })
}

fn progress_bar(show: bool, steps: usize, start: usize) -> indicatif::ProgressBar {
    let pb = if show {
        indicatif::ProgressBar::new(steps as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    pb.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed}<{eta}]")
            .expect("template"),
    );
    pb.set_position(start as u64);
    pb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_epoch_visits_every_image_once() {
        let (n, b) = (10, 4);
        let seen: Vec<usize> = (0..5).flat_map(|s| batch_indices(s, b, n, 7)).collect(); // 2 epochs
        for epoch in seen.chunks(n) {
            let mut e = epoch.to_vec();
            e.sort();
            assert_eq!(e, (0..n).collect::<Vec<_>>());
        }
        assert_ne!(&seen[..n], &seen[n..], "epochs are shuffled differently");
        assert_eq!(batch_indices(3, b, n, 7), batch_indices(3, b, n, 7));
    }
}
