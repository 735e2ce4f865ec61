//! Writing a run folder: extra files first, `result.json` last (each atomically), so a
//! folder with a `result.json` is a complete run.

use super::{ImageScore, ResultFile, Sample, PER_IMAGE_FILE};
use crate::error::{Error, Result};
use crate::util::fsx::{json_lines, write_atomic};
use crate::util::untrusted::join_under;
use std::path::{Path, PathBuf};

/// Write per-image metric values next to a run's `result.json` (atomically).
pub fn write_per_image(dir: &Path, scores: &[ImageScore]) -> Result<()> {
    write_atomic(&dir.join(PER_IMAGE_FILE), json_lines(scores)?.as_bytes())
}

/// Write `result.json` and `samples.jsonl` into a new run folder (atomically, each file).
pub fn write_run(root: &Path, result: &ResultFile, samples: &[Sample]) -> Result<PathBuf> {
    write_run_files(root, result, samples, &[], &[])
}

/// The run folder `root/<suite>/<run id>`: `files` (name, bytes), `per_image.jsonl` (when
/// there are per-image values) and `samples.jsonl` first, then `result.json` last.
pub fn write_run_files(
    root: &Path,
    result: &ResultFile,
    samples: &[Sample],
    per_image: &[ImageScore],
    files: &[(String, Vec<u8>)],
) -> Result<PathBuf> {
    let named = |what: &str, name: &str, under: &Path| {
        join_under(under, name).map_err(|why| {
            Error::Msg(format!(
                "{what} `{}` {why}; no run folder was written",
                name.escape_debug()
            ))
        })
    };
    let suite_dir = named("the suite name", &result.suite, root)?;
    let dir = named("the run id", &result.run_id, &suite_dir)?;
    let paths = files
        .iter()
        .map(|(name, _)| named("the result file", name, &dir))
        .collect::<Result<Vec<_>>>()?;
    let write = || -> Result<()> {
        std::fs::create_dir_all(&dir).map_err(|e| Error::file(&dir, e.to_string()))?;
        for ((_, bytes), path) in files.iter().zip(&paths) {
            // Names may hold a folder (`images/12.png`).
            if let Some(parent) = path.parent().filter(|p| *p != dir) {
                std::fs::create_dir_all(parent).map_err(|e| Error::file(parent, e.to_string()))?;
            }
            write_atomic(path, bytes)?;
        }
        if !per_image.is_empty() {
            write_per_image(&dir, per_image)?;
        }
        write_atomic(&dir.join("samples.jsonl"), json_lines(samples)?.as_bytes())?;
        // result.json last: a folder with a result.json is complete.
        write_atomic(
            &dir.join("result.json"),
            &serde_json::to_vec_pretty(result)?,
        )
    };
    write().map_err(|e| {
        Error::Msg(format!(
            "{e}\nthe run folder {} is incomplete (no result.json: `report` treats it as interrupted); every earlier run is untouched, and the cached models, features and LLM answers make a rerun cheap once the folder can be written",
            dir.display()
        ))
    })?;
    Ok(dir)
}
