//! Models shipped with the project under `models/<name>/`: final weights only, with the
//! recipe that made them, their training log, a reconstruction grid and a manifest of sha256
//! hashes. The zoo loads them by name after checking every hash; they are never retrained, so
//! suite results do not move with training numerics.
//!
//! A folder holds `model.safetensors` and `state.json` (a checkpoint `train::load_model`
//! reads), `run.toml` (the configuration, `lqae-eval train --config run.toml` reproduces it),
//! `log.jsonl`, `grid.png` (test images above their reconstructions) and `manifest.json`.

use crate::data::{self, Split};
use crate::error::{Error, Result};
use crate::train::{self, CheckpointState, LogLine};
use crate::util::fsx::{sha256_file, write_atomic};
use candle_core::Device;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const MANIFEST: &str = "manifest.json";
pub const SCHEMA: &str = "lqae-model/1";
const FILES: [&str; 5] = [
    "model.safetensors",
    "state.json",
    "run.toml",
    "log.jsonl",
    "grid.png",
];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub schema: String,
    pub name: String,
    /// File name -> sha256.
    pub files: BTreeMap<String, String>,
    pub step: usize,
    pub images_seen: usize,
    /// Seconds of training, from the log's throughput (interruptions not counted).
    pub train_seconds: f64,
    /// The CPU it was trained on (`cpu`, `avx512`) and the worker threads.
    pub machine: serde_json::Value,
    pub crate_version: String,
    pub git_commit: String,
    /// The command that reproduces it.
    pub reproduce: String,
}

/// `models/` beside the suites folder, else the source tree's.
pub fn models_dir() -> PathBuf {
    let beside = super::suite_file::suites_dir()
        .parent()
        .map(|p| p.join("models"));
    match beside {
        Some(d) if d.is_dir() => d,
        _ => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/models")),
    }
}

/// The manifest of a shipped model folder, after checking every file it lists against its
/// sha256: a missing or changed file is an error naming it and what to do.
pub fn verify(dir: &Path) -> Result<Manifest> {
    let mp = dir.join(MANIFEST);
    let m: Manifest = serde_json::from_slice(
        &std::fs::read(&mp).map_err(|e| Error::file(&mp, format!("cannot read: {e}")))?,
    )
    .map_err(|e| Error::file(&mp, format!("not a {SCHEMA} manifest: {e}")))?;
    if m.schema != SCHEMA {
        return Err(Error::file(
            &mp,
            format!("schema `{}`, this build reads `{SCHEMA}`", m.schema),
        ));
    }
    for f in FILES {
        let want = m
            .files
            .get(f)
            .ok_or_else(|| Error::file(&mp, format!("lists no sha256 for {f}")))?;
        let p = dir.join(f);
        if !p.is_file() {
            return Err(Error::file(&p, "is missing from the shipped model: restore it from the repository (`git checkout -- models/`), or retrain with its run.toml"));
        }
        let got = sha256_file(&p)?;
        if &got != want {
            return Err(Error::file(&p, format!("sha256 is {got} but the manifest says {want}: the file was changed or is corrupt; restore it from the repository (`git checkout -- models/`, `git lfs pull` if it is a pointer), or retrain with its run.toml")));
        }
    }
    Ok(m)
}

/// Estimated training seconds and images seen, from a log's throughput per logged interval.
fn time_from_log(log: &[LogLine], batch: usize) -> (f64, usize) {
    let mut prev = 0;
    let mut secs = 0.0;
    for l in log {
        secs += (l.step - prev) as f64 * batch as f64 / l.images_per_s.max(1e-9);
        prev = l.step;
    }
    (secs, prev * batch)
}

/// Make `models/<name>/` from the newest checkpoint of a finished run folder: weights, state,
/// recipe, log, a grid of 16 test images and their reconstructions, and the manifest. The
/// folder is written next to its place and renamed into it, so it is whole or absent.
pub fn ship(run: &Path, name: &str, models: &Path, device: &Device) -> Result<PathBuf> {
    let ck = train::latest_checkpoint(run)?
        .ok_or_else(|| Error::file(run, "no checkpoint to ship: train first"))?;
    let state: CheckpointState = serde_json::from_slice(
        &std::fs::read(ck.join("state.json")).map_err(|e| Error::file(&ck, e.to_string()))?,
    )?;
    std::fs::create_dir_all(models).map_err(|e| Error::file(models, e.to_string()))?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}-"))
        .tempdir_in(models)
        .map_err(|e| Error::file(models, e.to_string()))?;
    let copy = |from: &Path, to: &str| -> Result<()> {
        let bytes = std::fs::read(from).map_err(|e| Error::file(from, e.to_string()))?;
        write_atomic(&tmp.path().join(to), &bytes)
    };
    copy(&ck.join("model.safetensors"), "model.safetensors")?;
    copy(&ck.join("state.json"), "state.json")?;
    let recipe = toml::to_string(&state.config)
        .map_err(|e| Error::Msg(format!("cannot write the recipe as TOML: {e}")))?;
    write_atomic(&tmp.path().join("run.toml"), recipe.as_bytes())?;
    // The log up to the shipped step (a resumed run may have logged past it before).
    let text = std::fs::read_to_string(run.join("log.jsonl"))
        .map_err(|e| Error::file(run.join("log.jsonl"), e.to_string()))?;
    let mut log = Vec::new();
    let mut kept = String::new();
    for l in text.lines().filter(|l| !l.trim().is_empty()) {
        let line: LogLine = serde_json::from_str(l)?;
        if line.step <= state.step {
            kept.push_str(l);
            kept.push('\n');
            log.push(line);
        }
    }
    write_atomic(&tmp.path().join("log.jsonl"), kept.as_bytes())?;
    let (model, _, _) = train::load_model(&ck, device)?;
    let test = data::load(&state.config.data, Split::Test)?;
    let idx: Vec<usize> = (0..16.min(test.len())).collect();
    let images = data::batch::make_batch(
        &test,
        &idx,
        state.config.model.image_size as u32,
        None,
        device,
    )?;
    let recon = model.forward(&images, None)?.recon.clamp(0f32, 1f32)?;
    data::batch::write_grid(&[&images, &recon], 16, &tmp.path().join("grid.png"))?;
    let mut files = BTreeMap::new();
    for f in FILES {
        files.insert(f.to_string(), sha256_file(&tmp.path().join(f))?);
    }
    let (train_seconds, images_seen) = time_from_log(&log, state.config.train.batch_size);
    let manifest = Manifest {
        schema: SCHEMA.into(),
        name: name.into(),
        files,
        step: state.step,
        images_seen,
        train_seconds,
        machine: {
            // The machine that ships, and the backend of the products that trained the weights.
            let mut m = crate::kernels::machine();
            m["blas"] = state
                .blas
                .clone()
                .unwrap_or_else(|| "gemm crate".into())
                .into();
            m
        },
        crate_version: env!("CARGO_PKG_VERSION").into(),
        git_commit: crate::util::provenance::git_commit(),
        reproduce: format!(
            "lqae-eval train --config models/{name}/run.toml --out runs/{name} (resumable with --resume); then lqae-eval ship --run runs/{name} --name {name}"
        ),
    };
    write_atomic(
        &tmp.path().join(MANIFEST),
        serde_json::to_string_pretty(&manifest)?.as_bytes(),
    )?;
    let dest = models.join(name);
    if dest.exists() {
        std::fs::remove_dir_all(&dest)
            .map_err(|e| Error::file(&dest, format!("cannot replace: {e}")))?;
    }
    let staged = tmp.keep();
    std::fs::rename(&staged, &dest).map_err(|e| Error::file(&dest, e.to_string()))?;
    verify(&dest)?;
    Ok(dest)
}
