//! The model zoo: what a suite's `model = "..."` names, resolved to a trained model.
//!
//! A name is a model shipped under `models/` (sha256-verified, never retrained; see
//! [`super::shipped`]), a run configuration under `configs/` (trained once into
//! `$LQAE_CACHE/runs/<name>-<config hash>`, resumed if interrupted, one trainer per run folder
//! across processes) or a run folder with a checkpoint. The zoo loads the model, hashes its
//! checkpoint for the result's `inputs_sha256`, and caches features computed from it.

use crate::data::SuiteData;
use crate::error::{Error, Result};
use crate::model::{Autoencoder, Lqae, RunConfig, Vqvae};
use crate::train::CheckpointState;
use candle_core::Device;
use std::path::{Path, PathBuf};

/// The sustained matmul rate a training-cost estimate assumes for a GPU (TFLOP/s): under half an
/// H100's f32 (non-tensor-core) peak of 67, as candle's f32 matmuls run. Not measured here.
pub const GPU_TFLOPS: f64 = 30.0;

/// Row-major `n x d` features.
#[derive(Debug, Clone)]
pub struct Features {
    pub x: Vec<f32>,
    pub n: usize,
    pub d: usize,
}

/// A trained model with where it came from.
pub struct Trained {
    /// The name it was asked for (a configuration or a run folder).
    pub name: String,
    pub model: Autoencoder,
    pub state: CheckpointState,
    pub run_dir: PathBuf,
    /// sha256 of the checkpoint's `model.safetensors`.
    pub sha256: String,
}

impl Trained {
    /// The LQAE, or an error naming the setting `key` that asked for one.
    pub fn lqae(&self, key: &str, why: &str) -> Result<&Lqae> {
        match &self.model {
            Autoencoder::Lqae(m) => Ok(m),
            _ => Err(Error::setting(
                key,
                format!("`{}` is not an LQAE{why}", self.name),
            )),
        }
    }
    /// The VQ-VAE, or an error naming the setting `key`.
    pub fn vqvae(&self, key: &str) -> Result<&Vqvae> {
        match &self.model {
            Autoencoder::Vqvae(m) => Ok(m),
            _ => Err(Error::setting(
                key,
                format!("`{}` is not a VQ-VAE", self.name),
            )),
        }
    }
}

pub struct Zoo {
    models: PathBuf,
    configs: PathBuf,
    cache: PathBuf,
    device: Device,
    progress: bool,
}

impl Zoo {
    /// Shipped models from `models/`, configurations from `configs/` (both beside the suites),
    /// trained models and features cached in `$LQAE_CACHE`.
    pub fn new(device: &Device, progress: bool) -> Self {
        Zoo {
            models: super::shipped::models_dir(),
            configs: crate::eval::suite_file::configs_dir(),
            cache: crate::assets::cache_dir(),
            device: device.clone(),
            progress,
        }
    }

    /// The device models are loaded on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `configs/<name>.toml` beside the suites, else in the source tree.
    fn config_path(&self, name: &str) -> PathBuf {
        let p = self.configs.join(format!("{name}.toml"));
        if p.is_file() {
            return p;
        }
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/configs")).join(format!("{name}.toml"))
    }

    /// A zoo over other folders (tests).
    pub fn with_dirs(models: &Path, configs: &Path, cache: &Path, device: &Device) -> Self {
        Zoo {
            models: models.to_path_buf(),
            configs: configs.to_path_buf(),
            cache: cache.to_path_buf(),
            device: device.clone(),
            progress: false,
        }
    }

    /// The folder and verified manifest of a model shipped under `models/`, if `name` names one.
    fn shipped(&self, name: &str) -> Result<Option<(PathBuf, super::shipped::Manifest)>> {
        let dir = self.models.join(name);
        if name.contains('/') || !dir.join(super::shipped::MANIFEST).is_file() {
            return Ok(None);
        }
        let m = super::shipped::verify(&dir)?;
        Ok(Some((dir, m)))
    }

    /// A trained model by name, loaded, with its checkpoint hash (a shipped model's from its
    /// manifest, which `verify` has just checked against the file).
    pub fn load(&self, name: &str) -> Result<Trained> {
        self.load_with(name, None)
    }

    /// The model a suite scoring `data` names under `key`: as [`Zoo::load`], except that a
    /// configuration naming the suite's data set without a folder is trained on the suite's
    /// `data.path` (cached per folder), and a model trained on another data set is an error
    /// naming both unless `data.allow_other_models` is set.
    pub fn load_for(&self, name: &str, data: &SuiteData, key: &str) -> Result<Trained> {
        let t = self.load_with(name, Some(data))?;
        let trained_on = &t.state.config.data.dataset;
        if *trained_on != data.dataset && !data.allow_other_models {
            return Err(Error::setting(
                key,
                format!(
                    "`{name}` was trained on {trained_on} ({}x{} images) but this suite scores {}; name a model trained on {} (for mini-ImageNet: `lqae-miniimagenet`, trained on your data.path), or set data.allow_other_models = true to score it anyway",
                    t.state.config.model.image_size,
                    t.state.config.model.image_size,
                    data.dataset,
                    data.dataset
                ),
            ));
        }
        Ok(t)
    }

    fn load_with(&self, name: &str, data: Option<&SuiteData>) -> Result<Trained> {
        let (run_dir, sha256) = match self.shipped(name)? {
            Some((dir, m)) => (dir, m.files["model.safetensors"].clone()),
            None => {
                let dir = self.run_dir_for(name, data)?;
                let sha = checkpoint_sha(&dir)?;
                (dir, sha)
            }
        };
        let (model, _, state) = crate::train::load_model(&run_dir, &self.device)?;
        Ok(Trained {
            name: name.to_string(),
            model,
            state,
            run_dir,
            sha256,
        })
    }

    /// The run folder of a model named in a suite: a configs/<name>.toml is trained once into
    /// `$LQAE_CACHE/runs/<name>-<config hash>` (resumed if interrupted); anything else is a run folder.
    pub fn run_dir(&self, name: &str) -> Result<PathBuf> {
        self.run_dir_for(name, None)
    }

    fn run_dir_for(&self, name: &str, data: Option<&SuiteData>) -> Result<PathBuf> {
        if let Some((dir, _)) = self.shipped(name)? {
            return Ok(dir);
        }
        let (device, progress) = (&self.device, self.progress);
        let cfg_path = self.config_path(name);
        if !cfg_path.is_file() {
            let p = PathBuf::from(name);
            return if crate::train::latest_checkpoint(&p)?.is_some() {
                Ok(p)
            } else {
                Err(Error::setting("model", format!("`{name}` is neither a model shipped under models/, nor a configuration under configs/, nor a run folder with a checkpoint")))
            };
        }
        let mut cfg = RunConfig::from_file(&cfg_path, &[])?;
        // A configuration for a data set "wherever the suite has it" trains on the suite's folder.
        if let Some(d) = data.filter(|d| d.dataset == cfg.data.dataset && cfg.data.path.is_none()) {
            cfg.data.path = d.path.as_deref().map(|p| {
                std::fs::canonicalize(p)
                    .map(|c| c.display().to_string())
                    .unwrap_or_else(|_| p.to_string())
            });
        }
        let blas = crate::kernels::blas::active().map(|b| b.name.as_str());
        let hash = run_key(&serde_json::to_string(&cfg)?, crate::train::NUMERICS, blas);
        let out = self
            .cache
            .join("runs")
            .join(format!("{}-{}", cfg.name, &hash[..12]));
        let is_done = || -> Result<bool> { Ok(checkpoint_step(&out)? >= cfg.train.steps) };
        if is_done()? {
            return Ok(out);
        }
        // One trainer per run folder: suites started together wait for the first one.
        let runs = out.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(runs).map_err(|e| Error::file(runs, e.to_string()))?;
        let lock_path = runs.join(format!(".{}-{}.lock", cfg.name, &hash[..12]));
        let _lock = crate::util::fsx::lock_exclusive(&lock_path)?;
        if !is_done()? {
            eprintln!(
                "training {} once into {} (cached by its configuration hash)",
                cfg.name,
                out.display()
            );
            eprintln!("{}", self.cost(&cfg, &out)?);
            crate::train::train(
                &cfg,
                &out,
                device,
                &crate::train::TrainOptions {
                    resume: true,
                    stop_at: None,
                    progress,
                },
            )?;
        }
        Ok(out)
    }

    /// What training `cfg` costs, said before it starts: its steps, the time per step measured
    /// here (two steps after two warm-up steps, kept: the run resumes from them), and the time
    /// expected on a GPU from the step's matmul FLOPs at [`GPU_TFLOPS`] (an assumption, named).
    fn cost(&self, cfg: &RunConfig, out: &Path) -> Result<String> {
        let t = &cfg.train;
        let mut s = format!(
            "  cost: {} steps of batch {} ({} x {} images, {} tokens each)",
            t.steps,
            t.batch_size,
            cfg.model.image_size,
            cfg.model.image_size,
            cfg.tokens_per_image()
        );
        if checkpoint_step(out)? == 0 && t.steps >= 8 {
            let go = |stop| {
                crate::train::train(
                    cfg,
                    out,
                    &self.device,
                    &crate::train::TrainOptions {
                        resume: true,
                        stop_at: Some(stop),
                        progress: false,
                    },
                )
            };
            go(2)?;
            let timed = go(4)?;
            let per_step = timed.seconds / 2.0;
            let hours = per_step * t.steps as f64 / 3600.0;
            s += &format!(
                "; measured {per_step:.2} s/step on this {} ({} threads): about {hours:.1} h",
                self.device_name(),
                rayon::current_num_threads()
            );
        }
        if cfg.model.kind == crate::model::ModelKind::Lqae {
            let dir = crate::model::resolve_lm_dir(&cfg.model.lm_name())?;
            let lm = crate::lm::LmConfig::from_file(&dir.join("config.json"))?;
            let flop = crate::bench::step::flop_per_image(cfg, &lm) * t.batch_size as f64;
            let gpu_h = flop * t.steps as f64 / (GPU_TFLOPS * 1e12) / 3600.0;
            s += &format!(
                "; on a GPU about {:.2} h ({:.2} TFLOP per step at an assumed {GPU_TFLOPS} TFLOP/s sustained, not measured here)",
                gpu_h,
                flop / 1e12
            );
        }
        s += "; interrupting keeps the checkpoints, the next run resumes";
        Ok(s)
    }

    fn device_name(&self) -> &'static str {
        if self.device.is_cpu() {
            "CPU"
        } else {
            "GPU"
        }
    }

    pub fn features<F: FnOnce() -> Result<Features>>(
        &self,
        key: &str,
        make: F,
    ) -> Result<Features> {
        let dir = self.cache.join("features");
        let path = dir.join(format!("{key}.f32"));
        let read = || -> Option<Features> {
            let bytes = std::fs::read(&path).ok()?;
            if bytes.len() < 16 {
                return None;
            }
            let n = u64::from_le_bytes(bytes[0..8].try_into().unwrap()) as usize;
            let d = u64::from_le_bytes(bytes[8..16].try_into().unwrap()) as usize;
            (bytes.len() == 16 + 4 * n * d).then(|| Features {
                x: bytes[16..]
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
                n,
                d,
            })
        };
        if let Some(f) = read() {
            return Ok(f);
        }
        // One process computes a key; others started together wait for it and read its file
        // (the lock dies with its holder, so a killed one leaves nothing to wait for).
        std::fs::create_dir_all(&dir).map_err(|e| Error::file(&dir, e.to_string()))?;
        let lock_path = dir.join(format!(".{key}.lock"));
        let _lock = crate::util::fsx::lock_exclusive(&lock_path)?;
        if let Some(f) = read() {
            return Ok(f);
        }
        let f = make()?;
        let mut bytes = Vec::with_capacity(16 + 4 * f.x.len());
        bytes.extend((f.n as u64).to_le_bytes());
        bytes.extend((f.d as u64).to_le_bytes());
        for v in &f.x {
            bytes.extend(v.to_le_bytes());
        }
        crate::util::fsx::write_atomic(&path, &bytes)?;
        // Safe to remove while held: a waiter that then takes it finds the file and reads it.
        let _ = std::fs::remove_file(&lock_path);
        Ok(f)
    }
}

/// The cache key of a model a suite trains from a configuration: the resolved configuration
/// (data folder included), the numerics generation (a change that moves training's float
/// rounding, e.g. fused kernels, gives a different, equally valid model, and cached models from
/// older code must not be mixed with baselines made by newer code) and the BLAS (the products'
/// rounding differs between backends; the gemm crate keeps the older keys).
fn run_key(config_json: &str, numerics: u32, blas: Option<&str>) -> String {
    crate::util::fsx::sha256_hex(
        format!(
            "{config_json}\nnumerics {numerics}{}",
            blas.map(|b| format!("\nblas {b}")).unwrap_or_default()
        )
        .as_bytes(),
    )
}

/// The step of a run folder's newest readable checkpoint; 0 when it has none.
fn checkpoint_step(run: &Path) -> Result<usize> {
    Ok(crate::train::latest_checkpoint(run)?
        .and_then(|ck| std::fs::read(ck.join("state.json")).ok())
        .and_then(|b| serde_json::from_slice::<CheckpointState>(&b).ok())
        .map_or(0, |st| st.step))
}

/// sha256 of the newest checkpoint's weights in a run folder.
pub fn checkpoint_sha(run: &Path) -> Result<String> {
    if run.join("state.json").is_file() {
        return crate::util::fsx::sha256_file(&run.join("model.safetensors"));
    }
    let ck =
        crate::train::latest_checkpoint(run)?.ok_or_else(|| Error::file(run, "no checkpoint"))?;
    crate::util::fsx::sha256_file(&ck.join("model.safetensors"))
}

#[cfg(test)]
mod tests {
    use super::run_key;

    /// Each input of a suite-trained model changes its cache key; the gemm crate's key is the
    /// one older code wrote (`config`, then `numerics N`).
    #[test]
    fn every_input_of_a_trained_model_is_in_its_key() {
        let base = run_key("{\"steps\":10}", 4, None);
        assert_eq!(
            base,
            crate::util::fsx::sha256_hex(b"{\"steps\":10}\nnumerics 4")
        );
        for other in [
            run_key("{\"steps\":11}", 4, None),
            run_key("{\"steps\":10}", 3, None),
            run_key("{\"steps\":10}", 4, Some("mkl 2026.2.1")),
            run_key("{\"steps\":10}", 4, Some("openblas 0.3.34")),
        ] {
            assert_ne!(base, other);
        }
    }
}
