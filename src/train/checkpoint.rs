//! Checkpoints: `checkpoints/step-NNNNNNNN/{model,optimizer}.safetensors` + `state.json`,
//! written into a temporary folder, synced and renamed into place, `checkpoints/latest` naming
//! the newest complete one (the last two are kept); and a model rebuilt from one.

use super::optim::AdamW;
use crate::error::{Error, Result};
use crate::model::{Autoencoder, Params, RunConfig};
use crate::util::fsx::write_atomic;
use candle_core::Device;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

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

pub(super) fn save_checkpoint(
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
        .save(&tmp.path().join("model.safetensors"))
        .map_err(|e| Error::file(tmp.path(), e.to_string()))?;
    candle_core::safetensors::save(&opt.tensors()?, tmp.path().join("optimizer.safetensors"))
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
    let weights = ck.join("model.safetensors");
    params
        .load(&weights)
        .map_err(|e| Error::file(&weights, crate::error::strip_backtrace(e).to_string()))?;
    Ok((model, params, state))
}
