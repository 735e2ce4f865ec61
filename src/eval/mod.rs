//! The evaluation layer: suite files, the model zoo, the suite kinds behind one interface,
//! one runner that writes every run folder, result files and their statistics.
//!
//! Its modules form layers, lowest first (a module uses only those before it;
//! `tests/layering.rs` holds the order):
//! - [`suite_file`]: suite files found and read: `include`, overrides, a suite's identity;
//! - [`stats`]: metrics, intervals, paired tests, power;
//! - [`results`]: the result schema, writer, reader and the regression comparison;
//! - [`tokens_file`]: the tokens-file format, its one reader, and `tokens.file` for suites;
//! - [`shipped`], [`zoo`]: the models shipped under `models/`; names resolved to trained
//!   models (trained once and cached), features cached;
//! - [`codec`]: image folders and data sets to tokens files and back (`encode`, `decode`);
//! - [`suite_kind`]: the `SuiteKind` trait, the run context and what a run hands back;
//! - [`kinds`]: the registry and the kinds (`linear-probe`, `fewshot`, `reconstruction`,
//!   `throughput`);
//! - [`suite`]: a suite file checked by its kind; groups expanded;
//! - [`runner`]: runs suites and writes their folders, the summary, `report`;
//! - [`board`]: every run of a results folder on one page, with verdicts against baselines;
//! - [`ci`]: one regression report over every suite of a baselines folder, JUnit XML and a
//!   job summary.

pub mod board;
pub mod ci;
pub mod codec;
pub mod kinds;
pub mod results;
pub mod runner;
pub mod shipped;
pub mod stats;
pub mod suite;
pub mod suite_file;
pub mod suite_kind;
pub mod tokens_file;
pub mod zoo;

pub use kinds::KindSettings;
pub use runner::{run_suite, run_suites, Ran, RunOptions};
pub use suite::Suite;
pub use suite_kind::{Ctx, Outcome, Progress, Quiet, Stderr, SuiteKind};
pub use zoo::Zoo;
