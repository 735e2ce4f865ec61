//! The evaluation layer: suite files, the model zoo, the suite kinds behind one interface,
//! one runner that writes every run folder, result files and their statistics.
//!
//! - [`suite_file`]: discovery, `include`, overrides, groups;
//! - [`codec`]: image folders and data sets to token files and back (`encode`, `decode`);
//! - [`tokens_file`]: precomputed tokens (`tokens.file`) read and matched to a suite's images;
//! - [`kind`]: the `SuiteKind` trait, the run context and what a run hands back;
//! - [`kinds`]: the registry and the kinds (`linear-probe`, `fewshot`, `reconstruction`,
//!   `throughput`);
//! - [`runner`]: runs suites and writes their folders, the summary, `report`;
//! - [`shipped`]: the models shipped under `models/`, verified by sha256;
//! - [`zoo`]: model names resolved, trained once and cached, loaded, hashed; feature cache;
//! - [`results`], [`stats`]: the result schema, writer, reader, report, intervals and tests;
//! - [`board`]: every run of a results folder on one page, with verdicts against baselines.

pub mod board;
pub mod codec;
pub mod kind;
pub mod kinds;
pub mod results;
pub mod runner;
pub mod shipped;
pub mod stats;
pub mod suite;
pub mod suite_file;
pub mod tokens_file;
pub mod zoo;

pub use kind::{Ctx, Outcome, Progress, Quiet, Stderr, SuiteKind};
pub use kinds::SuiteSpec;
pub use runner::{run_suite, run_suites, Ran, RunOptions};
pub use suite::Suite;
pub use zoo::Zoo;
