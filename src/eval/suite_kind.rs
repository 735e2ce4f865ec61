//! The interface of a suite kind, and what a run hands back to the runner.
//!
//! A kind parses its settings (`Spec`, the TOML as written, strings and all), checks them once
//! into a `Checked` form that holds enums and resolved values (linfa's checked/unchecked
//! parameters), and runs a checked spec. It never writes the run folder: the runner does
//! (`super::runner`), extra files first and `result.json` last.

use super::results::{ImageScore, Measured, ResultFile, Sample};
use super::stats::Metric;
use super::suite_file::SuiteId;
use super::zoo::Zoo;
use crate::error::Result;
pub use crate::util::progress::{Progress, Quiet, Stderr};
use candle_core::Device;
use serde::de::DeserializeOwned;

pub trait SuiteKind {
    /// The `kind = "..."` of its suite files.
    const NAME: &'static str;
    type Spec: DeserializeOwned;
    type Checked;
    /// Every setting that parses but cannot work, each naming its key.
    fn check(spec: Self::Spec) -> std::result::Result<Self::Checked, Vec<String>>;
    fn run(spec: &Self::Checked, cx: &Ctx) -> Result<Outcome>;
    /// Whether `--dry-run` means anything to this kind (it sends paid requests, and can
    /// count and price them without sending); the others are not run in a dry run.
    const DRY_RUNS: bool = false;
    /// Whether the metrics measure the machine (speeds) rather than the code: a run better than
    /// its baseline is then `improved`, not a stale baseline.
    const MACHINE_DEPENDENT: bool = false;
    /// Whether `metric` measures the machine itself (a raw speed, which moves 4x between these
    /// CPU kinds and 3x on one box between a quiet and a busy day): against a baseline from
    /// another machine kind (CPU model, AVX-512, threads) a significant drop is said, not gated.
    fn machine_bound(_metric: &str) -> bool {
        false
    }
    /// The metrics the board shows for each representation (`rep/<name>`), in this order.
    const HEADLINE: &'static [&'static str] = &[];

    /// The board's rows for a result of this kind: by default one per representation (the
    /// metric prefix before the last `/`) with its [`Self::HEADLINE`] metrics.
    fn board_rows(r: &ResultFile) -> Vec<BoardEntry> {
        rows_by_rep(r, Self::HEADLINE)
    }

    /// What `report` says of a result of this kind beyond its metrics (e.g. a few-shot judge
    /// that cannot read the tokens), one line each.
    fn report_notes(_r: &ResultFile) -> Vec<String> {
        Vec::new()
    }
}

/// One row of the board: what was scored, its headline metrics, the metrics its verdict
/// against the baseline covers, and a gate that replaces the verdict when the comparison
/// would say nothing about what was scored.
#[derive(Debug, Clone)]
pub struct BoardEntry {
    pub model: String,
    pub metrics: Vec<(String, Metric)>,
    /// Full names of the metrics whose comparison decides the verdict.
    pub covers: Vec<String>,
    pub gate: Option<String>,
}

/// The default board rows: one per representation, `lqae (model)` for the suite's LQAE.
pub fn rows_by_rep(r: &ResultFile, headline: &[&str]) -> Vec<BoardEntry> {
    let model_name = r.config["model"].as_str().unwrap_or("");
    let mut reps: std::collections::BTreeMap<String, BoardEntry> = Default::default();
    for (name, m) in &r.metrics {
        let Some((rep, metric)) = name.rsplit_once('/') else {
            continue;
        };
        let e = reps.entry(rep.to_string()).or_insert_with(|| BoardEntry {
            model: if rep == "lqae" && !model_name.is_empty() {
                format!("lqae ({model_name})")
            } else {
                rep.to_string()
            },
            metrics: Vec::new(),
            covers: Vec::new(),
            gate: None,
        });
        e.covers.push(name.clone());
        if headline.is_empty() || headline.contains(&metric) {
            e.metrics.push((metric.to_string(), m.clone()));
        }
    }
    reps.into_values()
        .filter(|e| !e.metrics.is_empty())
        .map(|mut e| {
            e.metrics
                .sort_by_key(|(n, _)| headline.iter().position(|x| x == n));
            e
        })
        .collect()
}

/// What every kind's run is given.
pub struct Ctx<'a> {
    pub suite: &'a SuiteId,
    pub device: &'a Device,
    pub zoo: &'a Zoo,
    pub progress: &'a dyn Progress,
    /// `--dry-run`: build and count what would be sent, send nothing, write no result.
    pub dry_run: bool,
}

/// A page rendered from the finished result (it shows the run id and wall time), with what
/// the run captured for it.
pub type Render = Box<dyn Fn(&ResultFile) -> String>;

/// What a run measured, and the files that go beside `result.json`.
pub struct Outcome {
    pub measured: Measured,
    pub samples: Vec<Sample>,
    pub per_image: Vec<ImageScore>,
    /// Extra files of the run folder, (name, bytes).
    pub files: Vec<(String, Vec<u8>)>,
    /// Files rendered from the finished result, (name, render).
    pub pages: Vec<(String, Render)>,
    /// A table to show when the run ends (Markdown).
    pub table: Option<String>,
}

impl Outcome {
    pub fn new(measured: Measured) -> Self {
        Outcome {
            measured,
            samples: Vec::new(),
            per_image: Vec::new(),
            files: Vec::new(),
            pages: Vec::new(),
            table: None,
        }
    }
}
