//! The `throughput` suite: a result file with raw and sgemm-normalised rates that agree with
//! the recorded call times, a report that passes a run against itself and catches an injected
//! slowdown of the normalised rate, and settings checked by `validate`.

use candle_core::Device;
use lqae::eval::results::{compare, read_result};
use lqae::eval::KindSettings;

fn suites_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/suites"))
}

#[test]
fn throughput_suite_writes_consistent_rates_and_the_report_catches_a_slowdown() {
    let dir = tempfile::tempdir().unwrap();
    let set = [
        "throughput.kernels=[\"ssim\", \"search/minilm/256\"]".to_string(),
        "throughput.budget_s=0.2".to_string(),
        "throughput.min_reps=3".to_string(),
        "throughput.max_reps=5".to_string(),
    ];
    let suite = lqae::eval::suite::load(&suites_dir(), "throughput", &set).unwrap();
    let KindSettings::Throughput(_) = &suite.settings else {
        panic!("not a throughput suite")
    };
    let (run_dir, r) = lqae::eval::runner::run_one(&suite, &Device::Cpu, dir.path()).unwrap();
    let (back, _) = read_result(&run_dir).unwrap();
    assert_eq!(back, r);
    // sgemm is always timed: it is the yardstick of the normalised rates.
    let names: Vec<&str> = r.metrics.keys().map(|k| k.as_str()).collect();
    for want in [
        "sgemm/2048/per_s",
        "search/minilm/256/per_s",
        "search/minilm/256/sgemm_share",
        "ssim/32px/50/per_s",
        "ssim/32px/50/per_sgemm_gflop",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let sgemm_gflops = r.extra["sgemm_gflops"].as_f64().unwrap();
    let kernels = r.extra["kernels"].as_array().unwrap();
    for k in kernels {
        let name = k["kernel"].as_str().unwrap();
        let times: Vec<f64> = serde_json::from_value(k["times_s"].clone()).unwrap();
        assert!(
            (3..=5).contains(&times.len()),
            "{name}: {} calls",
            times.len()
        );
        assert!(times.iter().all(|t| *t > 0.0));
        let items = k["items_per_call"].as_f64().unwrap();
        let per_s = r.metrics[&format!("{name}/per_s")].value;
        // The median rate is items over the median time (odd number of calls) or between
        // the two middle rates.
        let mut rates: Vec<f64> = times.iter().map(|t| items / t).collect();
        rates.sort_by(|a, b| a.total_cmp(b));
        assert!(
            per_s >= rates[(rates.len() - 1) / 2] - 1e-9 && per_s <= rates[rates.len() / 2] + 1e-9
        );
        if let Some(flop) = k["flop_per_call"].as_f64() {
            if !name.starts_with("sgemm/") {
                let share = r.metrics[&format!("{name}/sgemm_share")].value;
                let want = per_s * (flop / items) / (sgemm_gflops * 1e9);
                assert!(
                    (share - want).abs() < 1e-9 * want.max(1.0),
                    "{name}: {share} vs {want}"
                );
                assert!(share > 0.05 && share < 3.0, "{name}: share {share}");
            }
        } else {
            let norm = r.metrics[&format!("{name}/per_sgemm_gflop")].value;
            assert!((norm - per_s / sgemm_gflops).abs() < 1e-9 * norm.max(1.0));
        }
    }
    // Against itself: nothing regresses.
    assert!(compare(&r, None, &r, None)
        .iter()
        .all(|row| row.verdict == "same"));
    // A kernel 3x slower relative to sgemm (beyond the 60% tolerance, far outside the noise).
    let mut slow = r.clone();
    let m = slow
        .metrics
        .get_mut("search/minilm/256/sgemm_share")
        .unwrap();
    m.value /= 3.0;
    m.ci95 = [m.ci95[0] / 3.0, m.ci95[1] / 3.0];
    m.se /= 3.0;
    let rows = compare(&r, None, &slow, None);
    let row = rows
        .iter()
        .find(|row| row.metric == "search/minilm/256/sgemm_share")
        .unwrap();
    assert_eq!(row.verdict, "REGRESSION", "{row:?}");
}

#[test]
fn bad_throughput_settings_name_their_key() {
    for (set, key) in [
        ("throughput.budget_s=0", "throughput.budget_s"),
        ("throughput.min_reps=0", "throughput.min_reps"),
        ("tolerance.normalised=2", "tolerance.normalised"),
        ("throughput.repeats=3", "throughput"),
    ] {
        let e = lqae::eval::suite::load(&suites_dir(), "throughput", &[set.to_string()])
            .err()
            .unwrap_or_else(|| panic!("{set} accepted"))
            .to_string();
        assert!(e.contains(key), "{set}: {e}");
    }
    let dir = tempfile::tempdir().unwrap();
    let suite = lqae::eval::suite::load(
        &suites_dir(),
        "throughput",
        &["throughput.kernels=[\"no-such-kernel\"]".to_string()],
    )
    .unwrap();
    let KindSettings::Throughput(_) = &suite.settings else {
        panic!()
    };
    let e = lqae::eval::runner::run_one(&suite, &Device::Cpu, dir.path())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("throughput.kernels") && e.contains("no-such-kernel"),
        "{e}"
    );
}
