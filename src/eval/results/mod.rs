//! Result files and regression reports.
//!
//! A run writes `results/<suite>/<run-id>/result.json` and `samples.jsonl`. Schema
//! `lqae-result/1` (see README): the resolved suite, seeds, crate version, git commit, device,
//! wall time, the sha256 of checkpoints and data, the hash of all per-sample inputs, and each
//! metric with its standard error and 95% interval. `samples.jsonl` has one record per scored
//! example and representation, so two runs can be compared example by example.
//!
//! - [`writer`]: a run folder is written extra files first and `result.json` last, so a
//!   folder with a `result.json` is complete and one without is an interrupted run;
//! - [`read`]: result files and the per-image values beside them;
//! - [`compare`]: the regression report.

pub mod compare;
pub mod read;
pub mod writer;

pub use super::stats::Metric;
pub use crate::util::fsx::check_writable;
pub use compare::{compare, compare_paired, markdown, Comparison, Verdict};
pub use read::{find_runs, read_per_image, read_result};
pub use writer::{write_per_image, write_run, write_run_files};

use crate::error::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const SCHEMA: &str = "lqae-result/1";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Sample {
    /// Representation scored (`lqae`, `pixels`, ...).
    pub rep: String,
    pub index: usize,
    pub input_sha256: String,
    pub label: u32,
    pub pred: u32,
    pub correct: bool,
    pub top5: bool,
}

/// Per-image values of continuous metrics (`per_image.jsonl`, one record per representation
/// and image), for paired tests between runs that scored the same images.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageScore {
    pub rep: String,
    pub index: usize,
    pub input_sha256: String,
    /// Metric name (as in `<rep>/<metric>`) -> this image's value.
    pub values: BTreeMap<String, f64>,
}

pub const PER_IMAGE_FILE: &str = "per_image.jsonl";
/// The mark of a run stopped by a budget cap: how far it got (never with a `result.json`).
pub const PARTIAL_FILE: &str = "partial.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResultFile {
    pub schema: String,
    pub suite: String,
    pub kind: String,
    pub run_id: String,
    pub created_unix: u64,
    pub config: serde_json::Value,
    pub seeds: BTreeMap<String, u64>,
    pub crate_version: String,
    pub git_commit: String,
    pub device: String,
    /// What computed the CPU kernels' matrix products (`openblas 0.3.34 (SkylakeX)`, `gemm
    /// crate 0.19`); empty in results written before it was recorded.
    #[serde(default)]
    pub blas: String,
    pub wall_time_s: f64,
    /// Name -> sha256 of checkpoints and data files.
    pub inputs_sha256: BTreeMap<String, String>,
    /// sha256 over the ordered per-sample input hashes.
    pub samples_sha256: String,
    pub metrics: BTreeMap<String, Metric>,
    pub extra: serde_json::Value,
}

/// What a suite run measured, before the identity and provenance are filled in.
pub struct Measured {
    pub seeds: BTreeMap<String, u64>,
    pub inputs_sha256: BTreeMap<String, String>,
    pub samples_sha256: String,
    pub metrics: BTreeMap<String, Metric>,
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl ResultFile {
    /// The result of a run of `suite` that started at `t0` and ends now: schema, run id
    /// (`<unix s>-<ns>-<samples hash>`), resolved configuration, crate version, git commit,
    /// device and wall time filled in.
    pub fn finish(
        suite: &crate::eval::suite_file::SuiteId,
        device: &candle_core::Device,
        t0: std::time::Instant,
        m: Measured,
    ) -> Result<Self> {
        let now = crate::util::provenance::now();
        let mut extra = m.extra;
        // Where it ran (CPU model, threads, AVX-512), for `report`'s provenance lines.
        extra
            .entry("machine")
            .or_insert_with(crate::kernels::machine);
        // How tokens were chosen (the code search's tie rule and margin).
        extra
            .entry("code_search")
            .or_insert_with(crate::quantizer::search_rule);
        Ok(ResultFile {
            schema: SCHEMA.into(),
            suite: suite.name.clone(),
            kind: suite.kind.clone(),
            run_id: crate::util::provenance::run_id(Some(
                &m.samples_sha256[..8.min(m.samples_sha256.len())],
            )),
            created_unix: now.as_secs(),
            config: serde_json::to_value(&suite.resolved)?,
            seeds: m.seeds,
            crate_version: env!("CARGO_PKG_VERSION").into(),
            git_commit: crate::util::provenance::git_commit(),
            device: crate::device::device_name(device),
            blas: if device.is_cpu() {
                crate::kernels::blas::backend_name()
            } else {
                "cuBLAS (candle)".into()
            },
            wall_time_s: t0.elapsed().as_secs_f64(),
            inputs_sha256: m.inputs_sha256,
            samples_sha256: m.samples_sha256,
            metrics: m.metrics,
            extra: serde_json::Value::Object(extra),
        })
    }
}
