//! Reading result files and the per-image values beside them.

use super::{ImageScore, ResultFile, Sample, PER_IMAGE_FILE, SCHEMA};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// A result file, or the newest `result.json` under a folder.
pub fn read_result(path: &Path) -> Result<(ResultFile, Option<Vec<Sample>>)> {
    let file = if path.is_dir() {
        let (mut found, mut interrupted) = (Vec::new(), Vec::new());
        collect(path, &mut found, &mut interrupted);
        found.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        let newest = found.last().cloned();
        refuse_interrupted(path, newest.as_deref(), &interrupted)?;
        newest.ok_or_else(|| Error::file(path, "holds no result.json"))?
    } else {
        path.to_path_buf()
    };
    let r: ResultFile = serde_json::from_slice(
        &std::fs::read(&file).map_err(|e| Error::file(&file, e.to_string()))?,
    )
    .map_err(|e| Error::file(&file, format!("not a {SCHEMA} result: {e}")))?;
    if r.schema != SCHEMA {
        return Err(Error::file(
            &file,
            format!("schema `{}`, this build reads `{SCHEMA}`", r.schema),
        ));
    }
    let samples_path = file.with_file_name("samples.jsonl");
    let samples = match std::fs::read_to_string(&samples_path) {
        Ok(t) => Some(
            t.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| {
                    serde_json::from_str(l).map_err(|e| Error::file(&samples_path, e.to_string()))
                })
                .collect::<Result<Vec<Sample>>>()?,
        ),
        Err(_) => None,
    };
    Ok((r, samples))
}

/// A suite run's folder without its `result.json`: the writer puts `samples.jsonl` into every
/// run folder before `result.json`.
fn is_interrupted(dir: &Path) -> bool {
    (dir.join("samples.jsonl").is_file() || dir.join(super::PARTIAL_FILE).is_file())
        && !dir.join("result.json").is_file()
}

/// One completeness rule for every run folder: extra files first, `result.json` last, so a run
/// folder without `result.json` is an interrupted run. `report` refuses one given directly, and
/// one newer than the newest complete run under a suite folder (it would otherwise compare a
/// stale run without saying so).
fn refuse_interrupted(path: &Path, newest: Option<&Path>, interrupted: &[PathBuf]) -> Result<()> {
    let refuse = |d: &Path| {
        Error::file(
            d,
            "is an interrupted run (no result.json: a run writes it last); rerun the suite (a few-shot run resumes from its response cache) or name a complete run's folder",
        )
    };
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let newest_time = newest.and_then(modified);
    match interrupted
        .iter()
        .find(|d| d.as_path() == path || newest_time.is_none() || modified(d) > newest_time)
    {
        Some(d) => Err(refuse(d)),
        None => Ok(()),
    }
}

/// Under `dir` (itself included, `skip` and what is under it left out): every `result.json`,
/// and every run folder without one (interrupted or stopped by a budget cap).
pub fn find_runs(dir: &Path, skip: Option<&Path>) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut found, mut interrupted) = (Vec::new(), Vec::new());
    collect_skipping(dir, skip, &mut found, &mut interrupted);
    found.sort();
    interrupted.sort();
    (found, interrupted)
}

fn collect(dir: &Path, results: &mut Vec<PathBuf>, interrupted: &mut Vec<PathBuf>) {
    collect_skipping(dir, None, results, interrupted)
}

fn collect_skipping(
    dir: &Path,
    skip: Option<&Path>,
    results: &mut Vec<PathBuf>,
    interrupted: &mut Vec<PathBuf>,
) {
    if skip.is_some_and(|s| s == dir) {
        return;
    }
    if is_interrupted(dir) {
        interrupted.push(dir.to_path_buf());
        return;
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                collect_skipping(&p, skip, results, interrupted);
            } else if p.file_name().is_some_and(|n| n == "result.json") {
                results.push(p);
            }
        }
    }
}

/// The per-image values beside a result file (or beside the newest `result.json` under a
/// folder), if the run wrote any.
pub fn read_per_image(path: &Path) -> Result<Option<Vec<ImageScore>>> {
    let file = if path.is_dir() {
        let mut found = Vec::new();
        collect(path, &mut found, &mut Vec::new());
        found.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        match found.pop() {
            Some(f) => f,
            None => return Ok(None),
        }
    } else {
        path.to_path_buf()
    };
    let p = file.with_file_name(PER_IMAGE_FILE);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(_) => return Ok(None),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| Error::file(&p, e.to_string())))
        .collect::<Result<Vec<ImageScore>>>()
        .map(Some)
}
