//! Training: AdamW (decoupled weight decay, not on biases or position embeddings), linear
//! warm-up then cosine to 0, optional global-norm clipping, a seeded data order, and
//! checkpoints written atomically so that `--resume` continues exactly where a run stopped.
//!
//! Everything random is a pure function of `(seed, step)` (data order per epoch, crops, the
//! mask), so a resumed run replays the same batches and masks as an uninterrupted one.
//!
//! Layout of a run folder:
//! - `run.json`: the resolved configuration;
//! - `checkpoints/step-NNNNNNNN/{model,optimizer}.safetensors` + `state.json`, and
//!   `checkpoints/latest` naming the newest complete one (the last two are kept);
//! - `log.jsonl`: one line per logged step.

pub mod diagnostics;

use crate::data::batch::make_batch;
use crate::data::Split;
use crate::error::{Error, Result};
use crate::model::{Autoencoder, Params, RunConfig, TrainConfig};
use crate::rng::Rng;
use crate::util::fsx::write_atomic;
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Generation of the training numerics, part of the cache key of suite-trained models.
/// Bump it when a change alters float results of a training step (not only speed): 1 was
/// primitive candle ops; 2 the fused CPU kernels of `crate::kernels`; 3 their row sums in
/// eight lanes (LayerNorm statistics and gradients, softmax).
pub const NUMERICS: u32 = 3;

/// Learning rate at `step` (0-based): linear warm-up to `lr`, then cosine to 0 at `steps`.
pub fn lr_at(step: usize, t: &TrainConfig) -> f64 {
    if step < t.warmup_steps {
        return t.lr * (step + 1) as f64 / t.warmup_steps as f64;
    }
    let span = (t.steps - t.warmup_steps).max(1) as f64;
    let progress = ((step - t.warmup_steps) as f64 / span).min(1.0);
    0.5 * t.lr * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// AdamW with its moments exposed for checkpoints.
pub struct AdamW {
    vars: Vec<(String, Var, bool)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Number of updates done.
    pub t: usize,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    /// Update CPU parameters in one fused pass (`kernels::adamw_update`, the same bits);
    /// off: candle's ops, as on other devices.
    pub fused: bool,
}

fn decays(name: &str) -> bool {
    !(name.ends_with("bias") || name.contains("pos_embedding"))
}

impl AdamW {
    pub fn new(params: &Params, t: &TrainConfig) -> Result<Self> {
        let vars: Vec<(String, Var, bool)> = params
            .named_vars()
            .into_iter()
            .map(|(n, v)| {
                let d = decays(&n);
                (n, v, d)
            })
            .collect();
        let zeros = |v: &Var| v.as_tensor().zeros_like();
        let m = vars
            .iter()
            .map(|(_, v, _)| zeros(v))
            .collect::<candle_core::Result<_>>()?;
        let vv = vars
            .iter()
            .map(|(_, v, _)| zeros(v))
            .collect::<candle_core::Result<_>>()?;
        Ok(Self {
            vars,
            m,
            v: vv,
            t: 0,
            beta1: t.beta1,
            beta2: t.beta2,
            eps: t.eps,
            weight_decay: t.weight_decay,
            fused: true,
        })
    }

    /// Global L2 norm of the gradients.
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        let mut s = 0f64;
        for (_, var, _) in &self.vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                s += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            }
        }
        Ok(s.sqrt())
    }

    /// One update with learning rate `lr`, gradients scaled by `grad_scale` (for clipping).
    pub fn step(&mut self, grads: &GradStore, lr: f64, grad_scale: f64) -> Result<()> {
        self.t += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let c1 = 1.0 - b1.powi(self.t as i32);
        let c2 = 1.0 - b2.powi(self.t as i32);
        for (i, (_, var, decay)) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            // Gradients carry the graph they were computed through: detach, or each step's
            // moments would keep the previous step's whole graph alive.
            let g = g.detach();
            let theta = &var.as_tensor().detach();
            if self.fused {
                let k = crate::kernels::AdamWConsts {
                    b1: b1 as f32,
                    one_minus_b1: (1.0 - b1) as f32,
                    b2: b2 as f32,
                    one_minus_b2: (1.0 - b2) as f32,
                    inv_c1: (1.0 / c1) as f32,
                    inv_c2: (1.0 / c2) as f32,
                    eps: self.eps as f32,
                    lr: lr as f32,
                    lr_decay: (*decay && self.weight_decay > 0.0)
                        .then_some((lr * self.weight_decay) as f32),
                    grad_scale: (grad_scale != 1.0).then_some(grad_scale as f32),
                };
                if let Some((next, m, v)) =
                    crate::kernels::adamw_update(theta, &self.m[i], &self.v[i], &g, &k)?
                {
                    var.set(&next)?;
                    self.m[i] = m;
                    self.v[i] = v;
                    continue;
                }
            }
            let g = if grad_scale != 1.0 {
                (g * grad_scale)?
            } else {
                g
            };
            let m = ((&self.m[i] * b1)? + (&g * (1.0 - b1))?)?;
            let v = ((&self.v[i] * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let update = ((&m / c1)? / ((&v / c2)?.sqrt()? + self.eps)?)?;
            let mut next = (theta - (update * lr)?)?;
            if *decay && self.weight_decay > 0.0 {
                next = (next - (theta * (lr * self.weight_decay))?)?;
            }
            var.set(&next)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// True when no moment tensor holds on to a computation graph (no leak across steps).
    pub fn state_is_detached(&self) -> bool {
        self.m.iter().chain(&self.v).all(|t| !t.track_op())
    }

    fn tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (i, (n, _, _)) in self.vars.iter().enumerate() {
            out.insert(format!("m.{n}"), self.m[i].clone());
            out.insert(format!("v.{n}"), self.v[i].clone());
        }
        out
    }

    fn load(&mut self, path: &Path, device: &Device) -> Result<()> {
        let mut t = candle_core::safetensors::load(path, device)
            .map_err(|e| Error::file(path, e.to_string()))?;
        for (i, (n, var, _)) in self.vars.iter().enumerate() {
            let take = |t: &mut HashMap<String, Tensor>, k: String| {
                t.remove(&k)
                    .ok_or_else(|| Error::file(path, format!("optimizer state lacks `{k}`")))
            };
            let (m, v) = (
                take(&mut t, format!("m.{n}"))?,
                take(&mut t, format!("v.{n}"))?,
            );
            if m.dims() != var.dims() || v.dims() != var.dims() {
                return Err(Error::file(
                    path,
                    format!(
                        "optimizer state for `{n}` has shape {:?}, the parameter {:?}",
                        m.dims(),
                        var.dims()
                    ),
                ));
            }
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointState {
    pub step: usize,
    pub optimizer_t: usize,
    pub config: RunConfig,
    pub crate_version: String,
    /// What computed the kernels' products (`crate::kernels::blas::backend_name`); absent in
    /// checkpoints written before it was recorded (the gemm crate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blas: Option<String>,
}

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

fn ckpt_dir(out: &Path) -> PathBuf {
    out.join("checkpoints")
}

/// The newest complete checkpoint of a run folder, if any.
pub fn latest_checkpoint(out: &Path) -> Result<Option<PathBuf>> {
    let latest = ckpt_dir(out).join("latest");
    match std::fs::read_to_string(&latest) {
        Ok(name) => {
            let p = ckpt_dir(out).join(name.trim());
            if p.join("state.json").is_file() {
                Ok(Some(p))
            } else {
                Err(Error::file(
                    &latest,
                    format!("names {} which is incomplete or missing", p.display()),
                ))
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::file(&latest, e.to_string())),
    }
}

fn save_checkpoint(
    out: &Path,
    params: &Params,
    opt: &AdamW,
    state: &CheckpointState,
) -> Result<PathBuf> {
    let dir = ckpt_dir(out);
    std::fs::create_dir_all(&dir).map_err(|e| Error::file(&dir, e.to_string()))?;
    let name = format!("step-{:08}", state.step);
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempdir_in(&dir)
        .map_err(|e| Error::file(&dir, e.to_string()))?;
    params
        .varmap()
        .save(tmp.path().join("model.safetensors"))
        .map_err(|e| Error::file(tmp.path(), e.to_string()))?;
    candle_core::safetensors::save(&opt.tensors(), tmp.path().join("optimizer.safetensors"))
        .map_err(|e| Error::file(tmp.path(), e.to_string()))?;
    let json = serde_json::to_vec_pretty(state)?;
    std::fs::write(tmp.path().join("state.json"), json)
        .map_err(|e| Error::file(tmp.path(), e.to_string()))?;
    for f in ["model.safetensors", "optimizer.safetensors", "state.json"] {
        std::fs::File::open(tmp.path().join(f))
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::file(tmp.path().join(f), e.to_string()))?;
    }
    let final_dir = dir.join(&name);
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(|e| Error::file(&final_dir, e.to_string()))?;
    }
    std::fs::rename(tmp.keep(), &final_dir).map_err(|e| Error::file(&final_dir, e.to_string()))?;
    write_atomic(&dir.join("latest"), name.as_bytes())?;
    // Keep the newest two complete checkpoints.
    let mut all: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| Error::file(&dir, e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("step-"))
        })
        .collect();
    all.sort();
    for old in all.iter().rev().skip(2) {
        let _ = std::fs::remove_dir_all(old);
    }
    Ok(final_dir)
}

/// Rebuild a model from a run folder's newest checkpoint (or a checkpoint folder itself).
pub fn load_model(path: &Path, device: &Device) -> Result<(Autoencoder, Params, CheckpointState)> {
    let ck = if path.join("state.json").is_file() {
        path.to_path_buf()
    } else {
        latest_checkpoint(path)?.ok_or_else(|| {
            Error::file(
                path,
                "no checkpoint here: train first (lqae-eval train) or point at a run folder",
            )
        })?
    };
    let state_path = ck.join("state.json");
    let state: CheckpointState = serde_json::from_slice(
        &std::fs::read(&state_path).map_err(|e| Error::file(&state_path, e.to_string()))?,
    )
    .map_err(|e| Error::file(&state_path, e.to_string()))?;
    let (model, params) = Autoencoder::build(&state.config.model, state.config.train.seed, device)?;
    let mut vm = params.varmap().clone();
    let weights = ck.join("model.safetensors");
    vm.load(&weights)
        .map_err(|e| Error::file(&weights, crate::error::strip_backtrace(e).to_string()))?;
    Ok((model, params, state))
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

/// Train `cfg` into `out`. With `resume`, continue from the newest checkpoint there (the
/// configuration must be the same).
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
    let mut vm = params.varmap().clone();
    vm.load(ck.join("model.safetensors"))
        .map_err(|e| Error::file(ck.join("model.safetensors"), e.to_string()))?;
    opt.load(&ck.join("optimizer.safetensors"), device)?;
    opt.t = state.optimizer_t;
    Ok(state.step)
}

pub fn train(
    cfg: &RunConfig,
    out: &Path,
    device: &Device,
    opts: &TrainOptions,
) -> Result<TrainOutcome> {
    std::fs::create_dir_all(out).map_err(|e| Error::file(out, e.to_string()))?;
    // One trainer per run folder: a second one would interleave checkpoints and the log. The
    // lock dies with its holder, so a killed trainer never blocks the resume.
    let lock_path = out.join(".train.lock");
    let lock =
        std::fs::File::create(&lock_path).map_err(|e| Error::file(&lock_path, e.to_string()))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(Error::file(
                out,
                "another process is training into this run folder now; wait for it to finish (then --resume is a no-op) or choose another --out",
            ))
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(Error::file(&lock_path, format!("cannot lock: {e}")))
        }
    }
    let t = &cfg.train;
    let data = crate::data::load(&cfg.data, Split::Train)?;
    if data.is_empty() {
        return Err(Error::setting("data", "the training set is empty"));
    }
    let (model, params) = Autoencoder::build(&cfg.model, t.seed, device)?;
    let mut opt = AdamW::new(&params, t)?;
    let run_json = out.join("run.json");
    let cfg_json = serde_json::to_string_pretty(cfg)?;
    let start = resume(out, opts, &cfg_json, &params, &mut opt, device)?;
    write_atomic(&run_json, cfg_json.as_bytes())?;
    let log_path = out.join("log.jsonl");
    let (mut log, mut first) = reopen_log(&log_path, start)?;

    let size = cfg.model.image_size as u32;
    let mut restarts = match (&model, cfg.model.restart_dead_codes_every) {
        (Autoencoder::Vqvae(m), Some(every)) => {
            if every == 0 || !t.ckpt_every.is_multiple_of(every) {
                return Err(Error::setting("model.restart_dead_codes_every", format!("{every} must be positive and divide train.ckpt_every ({}), so that a resumed run restarts the same codes", t.ckpt_every)));
            }
            Some(DeadCodes::new(m.codebook_size(), every))
        }
        _ => None,
    };
    let held_out = if t.diagnostics {
        let test = crate::data::load(&cfg.data, Split::Test)?;
        let idx: Vec<usize> = (0..diagnostics::HELD_OUT.min(test.len())).collect();
        Some(make_batch(&test, &idx, size, None, device)?)
    } else {
        None
    };
    let pb = if opts.progress {
        indicatif::ProgressBar::new(t.steps as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    pb.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed}<{eta}]")
            .expect("template"),
    );
    pb.set_position(start as u64);
    let t0 = Instant::now();
    let mut last = None;
    let mut step = start;
    let mut window = (Instant::now(), 0usize);
    while step < t.steps {
        if opts.stop_at.is_some_and(|s| step >= s) {
            break;
        }
        let idx = batch_indices(step, t.batch_size, data.len(), t.seed);
        let mut aug = Rng::derive(t.seed, "augment", step as u64);
        let images = make_batch(
            &data,
            &idx,
            size,
            cfg.data.augment.then_some(&mut aug),
            device,
        )?;
        let mut mask_rng = Rng::derive(t.seed, "mask", step as u64);
        let fwd = model.forward(&images, Some(&mut mask_rng))?;
        let grads = fwd.losses.total.backward()?;
        let gnorm = opt.grad_norm(&grads)?;
        let scale = match t.grad_clip {
            Some(c) if gnorm > c => c / gnorm,
            _ => 1.0,
        };
        let lr = lr_at(step, t);
        opt.step(&grads, lr, scale)?;
        step += 1;
        if let Some(r) = restarts.as_mut() {
            r.after_step(step, &model, &params, &images, &fwd.ids, t.seed)?;
        }
        window.1 += t.batch_size;
        if step % t.log_every == 0 || step == t.steps || step == start + 1 {
            let ips = window.1 as f64 / window.0.elapsed().as_secs_f64().max(1e-9);
            window = (Instant::now(), 0);
            let losses: HashMap<String, f64> = fwd
                .losses
                .scalars()?
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            let diag = match &held_out {
                Some(h) => diagnostics::diagnostics(&model, &fwd.ids, h, t.seed)?,
                None => Default::default(),
            };
            let line = LogLine {
                step,
                lr,
                images_per_s: ips,
                grad_norm: gnorm,
                losses,
                diag,
            };
            let mut s = serde_json::to_string(&line)?;
            s.push('\n');
            log.write_all(s.as_bytes())
                .and_then(|_| log.flush())
                .map_err(|e| Error::file(&log_path, e.to_string()))?;
            pb.set_message(format!(
                "loss {:.4} mse {:.4}{} {:.1} img/s",
                line.losses["loss"],
                line.losses["recon_mse"],
                match (
                    line.diag.get("codes_distinct"),
                    line.diag.get("heldout_mse_mask0")
                ) {
                    (Some(c), Some(m)) => format!(" codes {c} held-out mse {m:.4}"),
                    _ => String::new(),
                },
                ips
            ));
            if first.is_none() {
                first = Some(line.clone());
            }
            last = Some(line);
        }
        pb.set_position(step as u64);
        if step % t.ckpt_every == 0 || step == t.steps || opts.stop_at == Some(step) {
            let state = CheckpointState {
                step,
                optimizer_t: opt.t,
                config: cfg.clone(),
                crate_version: env!("CARGO_PKG_VERSION").into(),
                blas: device.is_cpu().then(crate::kernels::blas::backend_name),
            };
            save_checkpoint(out, &params, &opt, &state)?;
        }
    }
    pb.finish_and_clear();
    Ok(TrainOutcome {
        step,
        first,
        last,
        seconds: t0.elapsed().as_secs_f64(),
        out_dir: out.to_path_buf(),
    })
}

/// Sum of f32 bits of every tensor: a fingerprint to check that weights did not change.
pub fn fingerprint(ts: &[&Tensor]) -> Result<Vec<u64>> {
    ts.iter()
        .map(|t| {
            let v: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
            Ok(v.iter().fold(0xcbf29ce484222325u64, |h, x| {
                (h ^ x.to_bits() as u64).wrapping_mul(0x100000001b3)
            }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tc(steps: usize, warmup: usize) -> TrainConfig {
        let text = format!("batch_size = 4\nsteps = {steps}\nwarmup_steps = {warmup}\nlr = 1.0\n");
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn warmup_then_cosine_to_zero() {
        let t = tc(110, 10);
        assert!((lr_at(0, &t) - 0.1).abs() < 1e-12);
        assert!((lr_at(9, &t) - 1.0).abs() < 1e-12);
        assert!((lr_at(10, &t) - 1.0).abs() < 1e-12);
        assert!((lr_at(60, &t) - 0.5).abs() < 1e-12);
        assert!(lr_at(109, &t) < 1e-3 && lr_at(109, &t) > 0.0);
        assert!((1..110).all(|s| s <= 10 || lr_at(s, &t) <= lr_at(s - 1, &t)));
    }

    /// The fused AdamW pass and candle's op-by-op update give the same bits: parameters and
    /// both moments, decayed and not, with and without a gradient scale, over several steps
    /// (the cached suite models were trained op by op).
    #[test]
    fn fused_adamw_gives_the_same_bits_as_the_ops() {
        let dev = Device::Cpu;
        let mut t = tc(10, 2);
        t.lr = 3e-3;
        t.weight_decay = 0.05;
        let run = |fused: bool| -> Vec<u32> {
            let p = crate::model::Params::new(3, &dev);
            let w = p.normal("w", (37, 1000), 1.0).unwrap();
            let b = p.normal("b.bias", 1000, 0.1).unwrap();
            let pos = p.normal("pos_embedding", (5, 7), 0.5).unwrap();
            let mut opt = AdamW::new(&p, &t).unwrap();
            opt.fused = fused;
            let x = crate::rng::uniform_tensor(&[4, 37], 5, &dev).unwrap();
            for step in 0..4 {
                let y = x.matmul(&w).unwrap().broadcast_add(&b).unwrap();
                let loss = (y.sqr().unwrap().mean_all().unwrap()
                    + pos.sqr().unwrap().sum_all().unwrap())
                .unwrap();
                let grads = loss.backward().unwrap();
                let scale = if step == 2 { 0.37 } else { 1.0 };
                opt.step(&grads, lr_at(step, &t), scale).unwrap();
            }
            let mut bits = Vec::new();
            for tensor in [w, b, pos].iter().chain(&opt.m).chain(&opt.v) {
                let v: Vec<f32> = tensor.flatten_all().unwrap().to_vec1().unwrap();
                bits.extend(v.iter().map(|x| x.to_bits()));
            }
            bits
        };
        // The fused pass really runs on CPU f32 (else both runs above would be the ops).
        let t1 = crate::rng::uniform_tensor(&[3, 5], 1, &dev).unwrap();
        let k = crate::kernels::AdamWConsts {
            b1: 0.9,
            one_minus_b1: 0.1,
            b2: 0.95,
            one_minus_b2: 0.05,
            inv_c1: 10.0,
            inv_c2: 20.0,
            eps: 1e-8,
            lr: 1e-3,
            lr_decay: None,
            grad_scale: None,
        };
        assert!(crate::kernels::adamw_update(
            &t1,
            &t1.zeros_like().unwrap(),
            &t1.zeros_like().unwrap(),
            &t1,
            &k
        )
        .unwrap()
        .is_some());
        let (fused, ops) = (run(true), run(false));
        assert_eq!(fused.len(), 3 * (37_000 + 1000 + 35));
        let differ = fused.iter().zip(&ops).filter(|(a, b)| a != b).count();
        assert_eq!(differ, 0, "{differ} of {} values differ", fused.len());
        assert_ne!(&fused[..10], &run_untouched()[..10], "the parameters moved");
    }

    fn run_untouched() -> Vec<u32> {
        let p = crate::model::Params::new(3, &Device::Cpu);
        let w = p.normal("w", (37, 1000), 1.0).unwrap();
        w.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect()
    }

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
