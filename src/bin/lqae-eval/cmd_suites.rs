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
    use lqae::eval::ci;
    let reports = match (&a.baselines, &a.baseline) {
        (Some(dir), _) => ci::report_all(dir, &a.current)?,
        (None, Some(b)) => {
            let one = ci::report_one(b, &a.current);
            // A single pair that cannot be compared is the command's own error, as before.
            if let Err(e) = &one.outcome {
                bail!("{e}");
            }
            vec![one]
        }
        (None, None) => bail!("give --baseline (one run) or --baselines (a folder of suites)"),
    };
    // One pair prints its report as it always did; a folder of suites, the combined one.
    let md = match (&a.baselines, reports.first().map(|r| &r.outcome)) {
        (None, Some(Ok(report))) => report.markdown.clone(),
        _ => ci::markdown(&reports, a.allow_missing),
    };
    print!("{md}");
    if let Some(o) = &a.out {
        lqae::util::fsx::write_atomic(o, md.as_bytes())?;
    }
    if let Some(j) = &a.junit {
        lqae::util::fsx::write_atomic(j, ci::junit(&reports, a.allow_missing).as_bytes())?;
    }
    if let Some(sm) = &a.summary {
        let dir = sm
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let text = ci::summary(
            &reports,
            a.allow_missing,
            &a.current,
            a.baselines.as_deref(),
            dir,
        )?;
        lqae::util::fsx::write_atomic(sm, text.as_bytes())?;
    }
    let fails = ci::failures(&reports, a.allow_missing);
    match (fails.is_empty(), ci::only_missing(&reports)) {
        (true, _) => Ok(()),
        (false, true) => bail!(
            "the current run lacks {} of the baseline's metrics: {} (pass --allow-missing if that is intended)",
            fails.len(),
            fails.join(", ")
        ),
        (false, false) => bail!("regression report failed: {}", fails.join("; ")),
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
    /// One baseline run (a result file, or a folder meaning its newest result).
    #[arg(
        long,
        conflicts_with = "baselines",
        required_unless_present = "baselines"
    )]
    pub baseline: Option<PathBuf>,
    /// A folder of baselines, `<suite>/<run>/result.json`: every suite in it is compared with
    /// the newest run of that suite under `--current` (a folder of results), one exit code.
    #[arg(long)]
    pub baselines: Option<PathBuf>,
    #[arg(long)]
    pub current: PathBuf,
    /// Also write the Markdown report to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write JUnit XML here: a test case per metric, failing on a regression or a missing
    /// metric, an error for a suite that could not be compared.
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Write a Markdown job summary here (regressions first, then the board's table), e.g.
    /// `--summary "$GITHUB_STEP_SUMMARY"`.
    #[arg(long)]
    pub summary: Option<PathBuf>,
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
