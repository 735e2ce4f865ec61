//! Reading result files and the per-image values beside them.

use super::{ImageScore, ResultFile, Sample, PER_IMAGE_FILE, SCHEMA};
use crate::error::{Error, Result};
use crate::util::untrusted;
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
    let r: ResultFile = serde_json::from_slice(&untrusted::read_bounded(
        &file,
        untrusted::MAX_RESULT_BYTES,
        "result file",
    )?)
    .map_err(|e| Error::file(&file, format!("not a {SCHEMA} result: {e}")))?;
    if r.schema != SCHEMA {
        return Err(Error::file(
            &file,
            format!("schema `{}`, this build reads `{SCHEMA}`", r.schema),
        ));
    }
    check_values(&file, &r)?;
    let samples = json_lines_beside::<Sample>(&file.with_file_name("samples.jsonl"))?;
    Ok((r, samples))
}

/// Every number a report compares is one a measurement can give: finite and of a plausible
/// size (a forged `1e308` would turn a difference into infinity and a verdict into nonsense).
fn check_values(file: &Path, r: &ResultFile) -> Result<()> {
    for (name, m) in &r.metrics {
        let numbers = [m.value, m.se, m.ci95[0], m.ci95[1], m.tolerance];
        if !numbers.iter().all(|x| untrusted::plausible(*x)) {
            return Err(Error::file(
                file,
                format!(
                    "metric `{}` holds a value that is not finite or larger than {:e} in size; not a measurement",
                    name.escape_debug(),
                    untrusted::MAX_METRIC_MAGNITUDE
                ),
            ));
        }
    }
    let names = [
        ("suite", &r.suite),
        ("kind", &r.kind),
        ("run_id", &r.run_id),
        ("git_commit", &r.git_commit),
        ("device", &r.device),
        ("blas", &r.blas),
        ("crate_version", &r.crate_version),
    ];
    let long = names
        .iter()
        .map(|(k, v)| (*k, v.len()))
        .chain(r.metrics.keys().map(|k| ("a metric name", k.len())));
    for (field, len) in long {
        if len > MAX_FIELD_BYTES {
            return Err(Error::file(
                file,
                format!("{field} is {len} bytes long, more than the {MAX_FIELD_BYTES} a result's names and provenance may be; not a result this project wrote"),
            ));
        }
    }
    if !untrusted::plausible(r.wall_time_s) {
        return Err(Error::file(file, "`wall_time_s` is not a plausible number"));
    }
    Ok(())
}

/// Longest name or provenance string in a result (a suite, a metric, a commit, a CPU).
const MAX_FIELD_BYTES: usize = 4096;

/// The JSON lines of a file beside a result (samples, per-image values), read within
/// [`untrusted::MAX_SAMPLES_BYTES`]; `None` when there is no such file.
fn json_lines_beside<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<Vec<T>>> {
    match std::fs::symlink_metadata(path) {
        Err(_) => return Ok(None),
        // Beside a result found in a folder: not through a link out of it.
        Ok(m) if m.file_type().is_symlink() => {
            return Err(Error::file(
                path,
                "is a symbolic link; files beside a result are read only from its folder",
            ))
        }
        Ok(_) => {}
    }
    let bytes = untrusted::read_bounded(path, untrusted::MAX_SAMPLES_BYTES, "samples file")?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| Error::file(path, format!("is not UTF-8 text: {e}")))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| Error::file(path, format!("line {}: {e}", i + 1)))
        })
        .collect::<Result<Vec<T>>>()
        .map(Some)
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
    collect_skipping(dir, skip, 0, &mut found, &mut interrupted);
    found.sort();
    interrupted.sort();
    (found, interrupted)
}

fn collect(dir: &Path, results: &mut Vec<PathBuf>, interrupted: &mut Vec<PathBuf>) {
    collect_skipping(dir, None, 0, results, interrupted)
}

fn collect_skipping(
    dir: &Path,
    skip: Option<&Path>,
    depth: usize,
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
    if depth > MAX_DEPTH {
        return;
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            // The entry's own type: links are not followed, out of the folder or round a loop.
            let Ok(kind) = e.file_type() else { continue };
            if kind.is_dir() {
                collect_skipping(&p, skip, depth + 1, results, interrupted);
            } else if kind.is_file() && p.file_name().is_some_and(|n| n == "result.json") {
                results.push(p);
            }
        }
    }
}

/// How deep under a results folder runs are looked for (`<suite>/<run>` is 2; a sweep of
/// folders of results a few more).
const MAX_DEPTH: usize = 12;

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
    let scores = json_lines_beside::<ImageScore>(&p)?;
    if let Some(bad) = scores
        .iter()
        .flatten()
        .find(|s| !s.values.values().all(|x| untrusted::plausible(*x)))
    {
        return Err(Error::file(
            &p,
            format!(
                "image {} holds a value that is not finite or of implausible size",
                bad.index
            ),
        ));
    }
    Ok(scores)
}
