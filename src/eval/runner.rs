//! The runner: suites by name (or file), groups expanded, each run through its kind, and the
//! run folder written by one writer (extra files first, `result.json` last).

use super::kinds;
use super::results::{self, ResultFile};
use super::suite::{self, Suite};
use super::suite_file;
use super::suite_kind::{Ctx, Progress};
use super::zoo::Zoo;
use crate::error::Result;
use candle_core::Device;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What one suite run left behind.
pub struct Ran {
    pub suite: String,
    pub dir: PathBuf,
    pub result: ResultFile,
    /// Files rendered from the result (e.g. `index.html`), in the run folder.
    pub pages: Vec<PathBuf>,
    /// The run's own table, if it has one (few-shot).
    pub table: Option<String>,
}

/// How suites are run: where their folders go, progress, and whether this is a dry run.
pub struct RunOptions<'a> {
    pub results_root: &'a Path,
    pub progress: &'a dyn Progress,
    /// `--dry-run`: kinds that send paid requests count and price them and send nothing;
    /// the others are not run; no result is written.
    pub dry_run: bool,
}

/// Run one loaded suite and write its folder under `results_root`.
pub fn run_suite(suite: &Suite, device: &Device, zoo: &Zoo, o: &RunOptions) -> Result<Ran> {
    let (results_root, progress, dry_run) = (o.results_root, o.progress, o.dry_run);
    let t0 = Instant::now();
    results::check_writable(&results_root.join(&suite.name))?;
    let cx = Ctx {
        suite: &suite.id,
        device,
        zoo,
        progress,
        dry_run,
    };
    if dry_run && !kinds::dry_runs(&suite.settings) {
        return Err(crate::Error::Stopped {
            msg: format!(
                "dry run: `{}` ({}) sends no paid requests; not run",
                suite.name, suite.kind
            ),
            partial: serde_json::Value::Null,
        });
    }
    let mut outcome = match kinds::run(&suite.settings, &cx) {
        Ok(o) => o,
        // A budget stop leaves a folder marked partial (no result.json: `report` refuses it);
        // what it got is in its caches, and a rerun resumes.
        Err(crate::Error::Stopped { msg, partial }) if !dry_run => {
            let dir = results_root
                .join(&suite.name)
                .join(crate::util::provenance::run_id(None));
            std::fs::create_dir_all(&dir).map_err(|e| crate::Error::file(&dir, e.to_string()))?;
            let record = serde_json::json!({"stopped": msg, "partial": partial});
            crate::util::fsx::write_atomic(
                &dir.join(results::PARTIAL_FILE),
                &serde_json::to_vec_pretty(&record)?,
            )?;
            return Err(crate::Error::Stopped {
                msg: format!("{msg}\nmarked partial in {}", dir.display()),
                partial,
            });
        }
        Err(e) => return Err(e),
    };
    let result = ResultFile::finish(&suite.id, device, t0, outcome.measured)?;
    let mut pages = Vec::new();
    for (name, render) in &outcome.pages {
        outcome
            .files
            .push((name.clone(), render(&result).into_bytes()));
        pages.push(name.clone());
    }
    let dir = results::write_run_files(
        results_root,
        &result,
        &outcome.samples,
        &outcome.per_image,
        &outcome.files,
    )?;
    Ok(Ran {
        suite: suite.name.clone(),
        pages: pages.iter().map(|p| dir.join(p)).collect(),
        dir,
        result,
        table: outcome.table,
    })
}

/// Every suite named (a name under suites/ or a suite file; groups expanded, no repeats).
pub fn resolve(names: &[String], overrides: &[String]) -> Result<Vec<Suite>> {
    let mut all: Vec<Suite> = Vec::new();
    for n in names {
        let (dir, name) = suite_file::locate(n);
        for s in suite::expand(&dir, &[name], overrides)? {
            if !all.iter().any(|o| o.name == s.name) {
                all.push(s);
            }
        }
    }
    Ok(all)
}

/// Run the suites in order; `started` is told of each before it runs, `finished` after.
pub fn run_suites(
    suites: &[Suite],
    device: &Device,
    o: &RunOptions,
    started: &mut dyn FnMut(&Suite),
    finished: &mut dyn FnMut(&Ran),
) -> Result<Vec<Ran>> {
    let zoo = Zoo::new(device, o.progress.enabled());
    let mut out = Vec::new();
    for s in suites {
        started(s);
        match run_suite(s, device, &zoo, o) {
            Ok(ran) => {
                finished(&ran);
                out.push(ran);
            }
            // A dry run estimates every suite in turn.
            Err(crate::Error::Stopped { msg, .. }) if o.dry_run => {
                o.progress.line(&msg);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The summary table of runs: one row per metric.
pub fn summary_markdown(runs: &[Ran]) -> String {
    let mut s = String::from("| suite | metric | value | 95% CI | n |\n|---|---|---|---|---|\n");
    for r in runs {
        for (k, m) in &r.result.metrics {
            s.push_str(&format!(
                "| {} | {k} | {:.4} | [{:.4}, {:.4}] | {} |\n",
                r.suite, m.value, m.ci95[0], m.ci95[1], m.n
            ));
        }
    }
    s
}

/// What `report` found: the suite both results belong to, the Markdown and the rows.
pub struct Report {
    pub suite: String,
    pub markdown: String,
    pub rows: Vec<results::Comparison>,
}

/// The run of a baseline folder that `current` is compared with. For a kind whose metrics
/// measure the machine (speeds), the folder may hold a run per machine kind: the newest (by
/// `created_unix`, not by file times, which a fresh clone sets in checkout order) from the
/// current run's machine kind where there is one, else the newest of the same vector width and
/// thread count ([`provenance::machine_likeness`]), else the newest. For every other kind the
/// folder itself (its newest run, as [`results::read_result`] picks).
///
/// [`provenance::machine_likeness`]: crate::util::provenance::machine_likeness
pub fn baseline_run(baseline: &Path, current: &ResultFile) -> PathBuf {
    if !baseline.is_dir() || !kinds::machine_dependent(&current.kind) {
        return baseline.to_path_buf();
    }
    let (found, _) = results::find_runs(baseline, None);
    found
        .iter()
        .filter_map(|f| {
            let (r, _) = results::read_result(f).ok()?;
            let likeness = crate::util::provenance::machine_likeness(
                &r.extra["machine"],
                &current.extra["machine"],
            );
            let run = f.parent()?.to_path_buf();
            (r.suite == current.suite).then_some((likeness, r.created_unix, run))
        })
        .max()
        .map(|(_, _, run)| run)
        .unwrap_or_else(|| baseline.to_path_buf())
}

/// `report`: compare a current result with a baseline (files, or folders meaning their newest
/// `result.json`), with paired tests where both scored the same examples.
pub fn report(baseline: &Path, current: &Path) -> Result<Report> {
    let (c, cs) = results::read_result(current)?;
    let baseline = &baseline_run(baseline, &c);
    let (b, bs) = results::read_result(baseline)?;
    if b.suite != c.suite {
        return Err(crate::Error::Msg(format!(
            "the baseline is suite `{}` but the current result is `{}`",
            b.suite, c.suite
        )));
    }
    // Per-image values (reconstruction suites) allow a paired t-test.
    let (bv, cv) = (
        results::read_per_image(baseline)?,
        results::read_per_image(current)?,
    );
    let rows = kinds::compare(
        &b,
        bs.as_deref(),
        bv.as_deref(),
        &c,
        cs.as_deref(),
        cv.as_deref(),
    );
    let md = results::markdown(
        &rows,
        &baseline.display().to_string(),
        &current.display().to_string(),
    );
    // Runs that scored precomputed tokens (`tokens.file`) say whose.
    let tokens = |r: &ResultFile| {
        r.extra["tokens_file"]["tokenizer"].as_str().map(|t| {
            format!(
                "`{t}` (tokens.file {})",
                r.extra["tokens_file"]["sha256"].as_str().unwrap_or("?")
            )
        })
    };
    // What each kind says beyond its metrics (a few-shot judge that cannot read, ...).
    let mut notes = provenance_notes(&b, &c);
    for (who, r) in [("baseline", &b), ("current", &c)] {
        for n in kinds::report_notes(r) {
            notes.push_str(&format!("- {who}: {n}\n"));
        }
    }
    let md = if notes.is_empty() {
        md
    } else {
        format!("{md}\n{notes}")
    };
    let md = match (tokens(&b), tokens(&c)) {
        (None, None) => md,
        (x, y) => {
            let own = || "the model's own".to_string();
            format!(
                "Tokens: baseline {}, current {}\n{md}",
                x.unwrap_or_else(own),
                y.unwrap_or_else(own)
            )
        }
    };
    Ok(Report {
        suite: c.suite,
        markdown: md,
        rows,
    })
}

/// Where baseline and current were computed differently (BLAS, CPU, threads, code), one line
/// each: what to suspect first when a metric moves.
fn provenance_notes(b: &ResultFile, c: &ResultFile) -> String {
    let machine = |r: &ResultFile, k: &str| match &r.extra["machine"][k] {
        serde_json::Value::Null => "not recorded".to_string(),
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    let mut out = String::new();
    let mut differ = |what: &str, x: String, y: String| {
        if x != y {
            out.push_str(&format!("- {what} differs: baseline {x}, current {y}\n"));
        }
    };
    let or_unknown = |s: &str| {
        if s.is_empty() {
            "not recorded".to_string()
        } else {
            s.to_string()
        }
    };
    differ("BLAS", or_unknown(&b.blas), or_unknown(&c.blas));
    differ("CPU", machine(b, "cpu"), machine(c, "cpu"));
    differ("AVX-512", machine(b, "avx512"), machine(c, "avx512"));
    differ("threads", machine(b, "threads"), machine(c, "threads"));
    differ("device", b.device.clone(), c.device.clone());
    // By characters: the commit comes from a result file, which may hold any text.
    let code = |r: &ResultFile| {
        let commit: String = r.git_commit.chars().take(12).collect();
        format!("{} ({commit})", r.crate_version)
    };
    differ("code", code(b), code(c));
    out
}

/// One suite run quietly with a zoo of its own (tests, library users): its folder and result.
pub fn run_one(
    suite: &Suite,
    device: &Device,
    results_root: &Path,
) -> Result<(PathBuf, ResultFile)> {
    let zoo = Zoo::new(device, false);
    let o = RunOptions {
        results_root,
        progress: &super::Quiet,
        dry_run: false,
    };
    let ran = run_suite(suite, device, &zoo, &o)?;
    Ok((ran.dir, ran.result))
}
