//! The interface of a suite kind, and what a run hands back to the runner.
//!
//! A kind parses its settings (`Spec`, the TOML as written, strings and all), checks them once
//! into a `Checked` form that holds enums and resolved values (linfa's checked/unchecked
//! parameters), and runs a checked spec. It never writes the run folder: the runner does
//! (`super::runner`), extra files first and `result.json` last.

use super::results::{ImageScore, Measured, ResultFile, Sample};
use super::suite_file::Suite;
use super::zoo::Zoo;
use crate::error::Result;
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
}

/// Where progress goes: nowhere (tests, `--quiet`) or standard error.
pub trait Progress: Sync {
    fn enabled(&self) -> bool;
    /// A line of its own.
    fn line(&self, msg: &str);
    /// A line that the next `partial` or `line` overwrites (counters).
    fn partial(&self, msg: &str);
}

pub struct Quiet;

impl Progress for Quiet {
    fn enabled(&self) -> bool {
        false
    }
    fn line(&self, _: &str) {}
    fn partial(&self, _: &str) {}
}

pub struct Stderr;

impl Progress for Stderr {
    fn enabled(&self) -> bool {
        true
    }
    fn line(&self, msg: &str) {
        eprintln!("{msg}");
    }
    fn partial(&self, msg: &str) {
        eprint!("\r{msg}");
    }
}

/// What every kind's run is given.
pub struct Ctx<'a> {
    pub suite: &'a Suite,
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
