//! The `throughput` suite: a result file with raw and sgemm-normalised rates that agree with
//! the recorded call times and yardstick readings, a report that passes a run against itself and catches an injected
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
    let (run_dir, r) = {
        let _alone = measuring();
        lqae::eval::runner::run_one(&suite, &Device::Cpu, dir.path()).unwrap()
    };
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
        // Each call is paired with a reading of its yardstick (sgemm's rate; the FMA peak's
        // for sgemm) right after it, in GFLOP/s: the normalised metric is the median of the
        // per-call ratios, recomputed here from the recorded times and readings.
        let yard: Vec<f64> = serde_json::from_value(k["yardstick_gflops"].clone()).unwrap();
        let median = |mut v: Vec<f64>| {
            v.sort_by(|a, b| a.total_cmp(b));
            let n = v.len();
            0.5 * (v[(n - 1) / 2] + v[n / 2])
        };
        let ratio = |per_call: f64| {
            median(
                times
                    .iter()
                    .zip(&yard)
                    .map(|(t, y)| per_call / t / y)
                    .collect(),
            )
        };
        let close = |got: f64, want: f64| (got - want).abs() <= 1e-9 * want.abs().max(1.0);
        if name.starts_with("sgemm/") {
            if lqae::bench::peak::fma_path() != "none" {
                assert_eq!(yard.len(), times.len(), "{name}: a peak reading per call");
                let want = ratio(k["flop_per_call"].as_f64().unwrap() / 1e9);
                let share = r.metrics[&format!("{name}/peak_share")].value;
                assert!(close(share, want), "{name}: {share} vs {want}");
                assert!(
                    share > 0.05 && share < 1.5,
                    "sgemm at {share} of the FMA peak"
                );
            }
            continue;
        }
        assert_eq!(yard.len(), times.len(), "{name}: an sgemm reading per call");
        // The readings are sgemm's rate at other moments of the same run.
        let m = median(yard.clone());
        assert!(
            m > 0.2 * sgemm_gflops && m < 5.0 * sgemm_gflops,
            "{name}: sgemm read at {m} GFLOP/s, timed alone at {sgemm_gflops}"
        );
        if let Some(flop) = k["flop_per_call"].as_f64() {
            let share = r.metrics[&format!("{name}/sgemm_share")].value;
            let want = ratio(flop / 1e9);
            assert!(close(share, want), "{name}: {share} vs {want}");
            assert!(share > 0.05 && share < 3.0, "{name}: share {share}");
        } else {
            let norm = r.metrics[&format!("{name}/per_sgemm_gflop")].value;
            let want = ratio(items);
            assert!(close(norm, want), "{name}: {norm} vs {want}");
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

    // sgemm's own yardstick: its share of the FMA peak, where the CPU has an FMA vector path.
    if lqae::bench::peak::fma_path() != "none" {
        let share = r.metrics["sgemm/2048/peak_share"].value;
        let peak = r.extra["fma_peak"]["gflops"].as_f64().unwrap();
        assert!(
            share > 0.05 && share < 1.5,
            "sgemm at {share} of the FMA peak"
        );
        // Each share pairs a call with its own reading of the peak; their median is near the
        // ratio of the medians (within the noise of a busy host).
        let ratio = sgemm_gflops / peak;
        assert!(
            share / ratio > 0.5 && share / ratio < 2.0,
            "{share} vs {ratio}"
        );
    }
}

/// Raw rates measure the machine: against a baseline from another machine kind a significant
/// drop is said (`slower, other machine`), not gated, while the same drop on the same machine
/// kind, and any drop of a share, is a regression; the report and the board agree.
#[test]
fn raw_rates_gate_only_on_the_same_machine_kind() {
    let base = minilm_run();
    let scale = |r: &mut lqae::eval::results::ResultFile, metric: &str, by: f64| {
        let m = r.metrics.get_mut(metric).unwrap();
        m.value /= by;
        m.se /= by;
        m.ci95 = [m.ci95[0] / by, m.ci95[1] / by];
    };
    // Every raw rate 5x slower (beyond the 75% tolerance): a machine 5x slower.
    let mut slow = base.clone();
    for name in ["sgemm/2048/per_s", "search/minilm/256/per_s"] {
        scale(&mut slow, name, 5.0);
    }
    let verdict =
        |b: &lqae::eval::results::ResultFile, c: &lqae::eval::results::ResultFile, metric: &str| {
            let from_report = write_pair(b, c);
            let rows = lqae::eval::kinds::compare(b, None, None, c, None, None);
            let row = rows.iter().find(|r| r.metric == metric).unwrap();
            let in_report = from_report
                .iter()
                .find(|r| r.metric == metric)
                .unwrap()
                .verdict;
            assert_eq!(
                row.verdict, in_report,
                "{metric}: compare and report differ"
            );
            row.verdict.as_str().to_string()
        };
    // Same machine kind (the run's own record): the drop is a regression.
    assert_eq!(verdict(&base, &slow, "sgemm/2048/per_s"), "REGRESSION");
    assert_eq!(
        verdict(&base, &slow, "search/minilm/256/per_s"),
        "REGRESSION"
    );
    // Another machine kind: said, not gated; shares are untouched and stay the same.
    let mut elsewhere = slow.clone();
    elsewhere.extra["machine"]["cpu"] = "Some Other CPU".into();
    for m in ["sgemm/2048/per_s", "search/minilm/256/per_s"] {
        assert_eq!(verdict(&base, &elsewhere, m), "slower, other machine");
    }
    assert_eq!(
        verdict(&base, &elsewhere, "search/minilm/256/sgemm_share"),
        "same"
    );
    // The board says the same of the kernel's row.
    {
        let d = tempfile::tempdir().unwrap();
        write_result(&d.path().join("baselines/throughput/1"), &base);
        write_result(&d.path().join("runs/throughput/2"), &elsewhere);
        let board =
            lqae::eval::board::collect(&d.path().join("runs"), Some(&d.path().join("baselines")))
                .unwrap();
        let row = board
            .rows
            .iter()
            .find(|r| r.model == "search/minilm/256")
            .unwrap();
        assert_eq!(row.verdict, "slower, other machine (1)");
    }
    // A machine record that is missing is not the same kind either.
    let mut unrecorded = slow.clone();
    unrecorded.extra["machine"] = serde_json::Value::Null;
    assert_eq!(
        verdict(&base, &unrecorded, "sgemm/2048/per_s"),
        "slower, other machine"
    );
    // A share that drops 3x is a regression on any machine.
    if lqae::bench::peak::fma_path() != "none" {
        scale(&mut elsewhere, "sgemm/2048/peak_share", 3.0);
        assert_eq!(
            verdict(&base, &elsewhere, "sgemm/2048/peak_share"),
            "REGRESSION"
        );
    }
    let report = {
        let d = tempfile::tempdir().unwrap();
        let (b, c) = (d.path().join("b"), d.path().join("c"));
        write_result(&b, &base);
        write_result(&c, &elsewhere);
        lqae::eval::ci::report_one(&b, &c)
    };
    let failing: Vec<&str> = report
        .failing(false)
        .iter()
        .map(|r| r.metric.as_str())
        .collect();
    let want: &[&str] = if lqae::bench::peak::fma_path() != "none" {
        &["sgemm/2048/peak_share"]
    } else {
        &[]
    };
    assert_eq!(failing, want, "only the share fails the gate");
}

/// A baselines folder may hold a throughput run per machine kind: the report and the board
/// compare with the newest run from the current run's kind, else with the newest of its vector
/// width, else with the newest run.
#[test]
fn speeds_are_compared_with_the_baseline_of_their_machine_kind() {
    let here = minilm_run();
    // A newer baseline from another machine kind, every raw rate 5x this one's.
    let mut fast = here.clone();
    fast.created_unix += 10;
    fast.run_id = "fast".into();
    fast.extra["machine"]["cpu"] = "A Faster CPU".into();
    for (_, m) in fast
        .metrics
        .iter_mut()
        .filter(|(k, _)| k.ends_with("/per_s"))
    {
        m.value *= 5.0;
        m.se *= 5.0;
        m.ci95 = [m.ci95[0] * 5.0, m.ci95[1] * 5.0];
        m.tolerance *= 5.0;
    }
    let d = tempfile::tempdir().unwrap();
    let baselines = d.path().join("baselines");
    // The newer run written first: file times say the opposite of `created_unix`, as a fresh
    // clone's checkout order may.
    write_result(&baselines.join("throughput/b-fast"), &fast);
    std::thread::sleep(std::time::Duration::from_millis(20));
    write_result(&baselines.join("throughput/a-here"), &here);
    let verdict_of = |current: &lqae::eval::results::ResultFile| {
        let cur = d.path().join(format!("runs/throughput/{}", current.run_id));
        write_result(&cur, current);
        let report = lqae::eval::runner::report(&baselines.join("throughput"), &cur).unwrap();
        let row = report
            .rows
            .iter()
            .find(|r| r.metric == "sgemm/2048/per_s")
            .unwrap()
            .clone();
        row.verdict.as_str().to_string()
    };
    // This machine kind: its own baseline, the older run (against the fast one it would be
    // 5x slower).
    assert_eq!(verdict_of(&here), "same");
    // A third kind: the newest run by `created_unix`, the fast one.
    let mut third = here.clone();
    third.run_id = "third".into();
    third.extra["machine"]["cpu"] = "A Third CPU".into();
    assert_eq!(verdict_of(&third), "slower, other machine");
    // The board picks the same baselines, run by run.
    let board = lqae::eval::board::collect(&d.path().join("runs"), Some(&baselines)).unwrap();
    let verdicts: Vec<(&str, &str)> = board
        .rows
        .iter()
        .filter(|r| r.model == "sgemm/2048")
        .map(|r| (r.run_id.as_str(), r.verdict.as_str()))
        .collect();
    assert_eq!(verdicts.len(), 2, "{verdicts:?}");
    for (run, v) in verdicts {
        let want = if run == "third" {
            "slower, other machine (1)"
        } else {
            "same"
        };
        assert_eq!(v, want, "run {run}");
    }
    // The vector width before age: a newest baseline of the other width (rates as this
    // machine's) is passed over for the fast run of this width, and chosen by a machine of its
    // own width.
    let flip = |r: &mut lqae::eval::results::ResultFile| {
        let wide = r.extra["machine"]["avx512"].as_bool() != Some(true);
        r.extra["machine"]["avx512"] = wide.into();
    };
    let mut wide = here.clone();
    wide.created_unix += 20;
    wide.run_id = "wide".into();
    wide.extra["machine"]["cpu"] = "A CPU of the other width".into();
    flip(&mut wide);
    write_result(&baselines.join("throughput/c-wide"), &wide);
    third.run_id = "third-again".into();
    assert_eq!(verdict_of(&third), "slower, other machine");
    let mut fourth = here.clone();
    fourth.run_id = "fourth".into();
    fourth.extra["machine"]["cpu"] = "A Fourth CPU".into();
    flip(&mut fourth);
    assert_eq!(verdict_of(&fourth), "same");
}

/// A short throughput run of one kernel (and sgemm, always timed).
fn minilm_run() -> lqae::eval::results::ResultFile {
    let dir = tempfile::tempdir().unwrap();
    let set = [
        "throughput.kernels=[\"search/minilm/256\"]".to_string(),
        "throughput.budget_s=0.2".to_string(),
        "throughput.min_reps=5".to_string(),
        "throughput.max_reps=7".to_string(),
    ];
    let suite = lqae::eval::suite::load(&suites_dir(), "throughput", &set).unwrap();
    let _alone = measuring();
    lqae::eval::runner::run_one(&suite, &Device::Cpu, dir.path())
        .unwrap()
        .1
}

/// The tests of this file run in parallel; one suite run at a time measures (two runs at once
/// on two cores read each other's load as noise).
fn measuring() -> std::sync::MutexGuard<'static, ()> {
    static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ALONE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Write `r` as a run folder's `result.json`.
fn write_result(dir: &std::path::Path, r: &lqae::eval::results::ResultFile) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("result.json"),
        serde_json::to_vec_pretty(r).unwrap(),
    )
    .unwrap();
}

/// The rows `lqae-eval report` gives for the pair, through files as a CI reads them.
fn write_pair(
    b: &lqae::eval::results::ResultFile,
    c: &lqae::eval::results::ResultFile,
) -> Vec<lqae::eval::results::Comparison> {
    let d = tempfile::tempdir().unwrap();
    let (bp, cp) = (d.path().join("b"), d.path().join("c"));
    write_result(&bp, b);
    write_result(&cp, c);
    lqae::eval::runner::report(&bp, &cp).unwrap().rows
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
