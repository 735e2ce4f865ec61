//! What a result records about where it came from: the commit, the machine, run ids.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// The commit of the working tree, or "unknown" outside a git checkout.
pub fn git_commit() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(["-C", dir])
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "HEAD"]) {
        // Tracked files changed since that commit: the figures are not that commit's.
        Some(head)
            if git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty()) =>
        {
            format!("{head}-dirty")
        }
        Some(head) => head,
        None => "unknown".into(),
    }
}

/// The CPU model, the worker threads and whether the CPU has AVX-512.
pub fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    json!({
        "cpu": cpu,
        "threads": candle_core::utils::get_num_threads(),
        "avx512": avx512(),
    })
}

/// Whether two [`machine`] records (of results, so any JSON) name the same machine kind: the
/// same CPU model, AVX-512 or not, and thread count, every one of them recorded.
pub fn same_machine_kind(a: &Value, b: &Value) -> bool {
    recorded_alike(a, b, &["cpu", "avx512", "threads"])
}

/// Whether `a` records every one of `keys` and `b` records the same values.
fn recorded_alike(a: &Value, b: &Value, keys: &[&str]) -> bool {
    keys.iter().all(|k| !a[k].is_null() && a[k] == b[k])
}

/// How near machine `b` is to machine `a`, for choosing a speed baseline: 2 for the same kind
/// ([`same_machine_kind`]), 1 for the same vector width (AVX-512 or not) and thread count on
/// another CPU model (kernels that are not products move by 2x or more between vector widths
/// against the same run's sgemm rate, much less between models of one width), else 0.
pub fn machine_likeness(a: &Value, b: &Value) -> u8 {
    if same_machine_kind(a, b) {
        2
    } else if recorded_alike(a, b, &["avx512", "threads"]) {
        1
    } else {
        0
    }
}

#[cfg(target_arch = "x86_64")]
fn avx512() -> bool {
    std::is_x86_feature_detected!("avx512f")
}
#[cfg(not(target_arch = "x86_64"))]
fn avx512() -> bool {
    false
}

/// Seconds and nanoseconds since the Unix epoch.
pub fn now() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// The one run-id scheme: `<unix s>-<ns>`, with `-<tag>` when a tag is given (a suite run
/// tags its id with the start of its samples hash).
pub fn run_id(tag: Option<&str>) -> String {
    let t = now();
    match tag {
        Some(tag) => format!("{}-{:09}-{tag}", t.as_secs(), t.subsec_nanos()),
        None => format!("{}-{:09}", t.as_secs(), t.subsec_nanos()),
    }
}

/// `out/<run id>`: a new run folder of a bench or a GPU check.
pub fn run_folder(out: &Path) -> PathBuf {
    out.join(run_id(None))
}
