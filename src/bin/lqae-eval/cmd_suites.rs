//! `--suite`, `ls`, `validate`, `report`, `board`.

use anyhow::{bail, Result};
use lqae::eval::{runner, suite_file, Stderr};
use std::path::{Path, PathBuf};

pub fn run(
    names: &[String],
    set: &[String],
    device: &str,
    results_root: &Path,
    dry_run: bool,
) -> Result<()> {
    let device = lqae::device::parse_device(device)?;
    let suites = runner::resolve(names, set)?;
    let o = runner::RunOptions {
        results_root,
        progress: &Stderr,
        dry_run,
    };
    let runs = runner::run_suites(
        &suites,
        &device,
        &o,
        &mut |s| println!("== suite {} ({}): {}", s.name, s.kind, s.description),
        &mut |r| {
            if let Some(t) = &r.table {
                println!("{t}");
            }
            let pages: Vec<String> = r.pages.iter().map(|p| p.display().to_string()).collect();
            println!(
                "results in {} ({:.0} s){}",
                r.dir.display(),
                r.result.wall_time_s,
                if pages.is_empty() {
                    String::new()
                } else {
                    format!("; page: {}", pages.join(", "))
                }
            );
        },
    )?;
    println!("\n{}", runner::summary_markdown(&runs));
    println!("results under {}", results_root.display());
    Ok(())
}

pub fn ls() -> Result<()> {
    let dir = suite_file::suites_dir();
    let all = suite_file::list(&dir)?;
    if all.is_empty() {
        println!("no suites in {}", dir.display());
    }
    let w = all.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for s in all {
        println!("{:w$}  {}", s.name, s.description);
    }
    Ok(())
}

pub fn validate(a: ValidateArgs) -> Result<()> {
    let (path, problems) = lqae::eval::suite::validate(&a.suite, &a.set)?;
    if problems.is_empty() {
        println!("{}: ok", path.display());
        return Ok(());
    }
    for p in &problems {
        println!("{}: {p}", path.display());
    }
    bail!("{} problem(s) in {}", problems.len(), path.display())
}

pub fn report(a: ReportArgs) -> Result<()> {
    let (md, rows) = runner::report(&a.baseline, &a.current)?;
    print!("{md}");
    if let Some(o) = &a.out {
        lqae::util::fsx::write_atomic(o, md.as_bytes())?;
    }
    let bad: Vec<&str> = rows
        .iter()
        .filter(|r| r.verdict == lqae::eval::results::Verdict::Regression)
        .map(|r| r.metric.as_str())
        .collect();
    let missing: Vec<&str> = rows
        .iter()
        .filter(|r| r.verdict == lqae::eval::results::Verdict::Missing)
        .map(|r| r.metric.as_str())
        .collect();
    match (bad.is_empty(), missing.is_empty() || a.allow_missing) {
        (true, true) => Ok(()),
        (false, _) => bail!("regression in {}", bad.join(", ")),
        (true, false) => bail!(
            "the current run lacks {} of the baseline's metrics: {} (pass --allow-missing if that is intended)",
            missing.len(),
            missing.join(", ")
        ),
    }
}

pub fn board(a: BoardArgs) -> Result<()> {
    let default = a.results_dir.join("baselines");
    let baselines = a
        .baselines
        .as_deref()
        .or(Some(default.as_path()).filter(|p| p.is_dir()));
    let (b, html, md) = lqae::eval::board::write(&a.results_dir, baselines, &a.out)?;
    let regressions = b
        .rows
        .iter()
        .filter(|r| r.verdict.starts_with("REGRESSION"))
        .count();
    println!(
        "{} rows from {} folder(s) of results ({} incomplete run(s)){}; board: {} and {}",
        b.rows.len(),
        b.rows
            .iter()
            .map(|r| &r.run_id)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        b.incomplete.len(),
        if regressions > 0 {
            format!(", {regressions} row(s) REGRESSED against the baselines")
        } else {
            String::new()
        },
        html.display(),
        md.display()
    );
    Ok(())
}

/// The arguments of `validate`.
#[derive(clap::Args)]
pub struct ValidateArgs {
    pub suite: String,
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// The arguments of `report`.
#[derive(clap::Args)]
pub struct ReportArgs {
    #[arg(long)]
    pub baseline: PathBuf,
    #[arg(long)]
    pub current: PathBuf,
    /// Also write the table to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Do not fail when a metric of the baseline is absent from the current run (it is
    /// still listed as MISSING).
    #[arg(long)]
    pub allow_missing: bool,
}

/// The arguments of `board`.
#[derive(clap::Args)]
pub struct BoardArgs {
    #[arg(default_value = "results")]
    pub results_dir: PathBuf,
    #[arg(long, default_value = "board.html")]
    pub out: PathBuf,
    /// Folder of baselines, `<suite>/<run>/result.json`; left out of the board's runs.
    #[arg(long)]
    pub baselines: Option<PathBuf>,
}
