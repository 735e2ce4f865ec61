//! The linear probe, the result files and the regression report.

mod common;

use candle_core::Device;
use lqae::eval::kinds::probe::{fit_probe, score, Features};
use lqae::eval::kinds::probe::{Layers, ProbeSettings};
use lqae::eval::results::{self, read_result};
use lqae::eval::KindSettings;
use lqae::rng::Rng;
use std::path::Path;
use std::process::Command;

fn settings() -> ProbeSettings {
    ProbeSettings {
        layers: Layers::Named("all".into()),
        l2_grid: vec![1e-3, 1e-1],
        val_fraction: 0.2,
        max_iterations: 100,
        seed: 1,
    }
}

/// `n` points in `d` dims around 4 class centres `sep` apart.
fn clusters(n: usize, d: usize, sep: f64, seed: u64) -> (Features, Vec<u32>) {
    let mut r = Rng::new(seed);
    let centres: Vec<Vec<f64>> = (0..4)
        .map(|_| (0..d).map(|_| r.normal() * sep).collect())
        .collect();
    let mut x = Vec::new();
    let mut y = Vec::new();
    for i in 0..n {
        let c = i % 4;
        y.push(c as u32);
        x.extend((0..d).map(|j| (centres[c][j] + r.normal()) as f32));
    }
    (Features { x, n, d }, y)
}

#[test]
fn separable_data_near_perfect_shuffled_labels_near_chance() {
    let (tr, ytr) = clusters(400, 20, 3.0, 1);
    let (te, yte) = clusters(200, 20, 3.0, 1);
    let out = fit_probe(&tr, &ytr, &te, &settings()).unwrap();
    let m = score(&yte, &out, 4, 0.0, 0);
    assert!(m["top1"].value > 0.97, "separable: {}", m["top1"].value);
    assert!(m["balanced"].value > 0.97);
    assert!(
        !m.contains_key("top5"),
        "top-5 only with more than 5 classes"
    );
    // Labels independent of the features: accuracy near 1/4.
    let mut shuffled = ytr.clone();
    let perm = Rng::new(7).permutation(shuffled.len());
    shuffled = perm.iter().map(|&i| ytr[i]).collect();
    let (te2, yte2) = clusters(400, 20, 3.0, 2);
    let out = fit_probe(&tr, &shuffled, &te2, &settings()).unwrap();
    let m = score(&yte2, &out, 4, 0.0, 0);
    assert!(
        (m["top1"].value - 0.25).abs() < 0.1,
        "shuffled labels: {}",
        m["top1"].value
    );
    assert!(m["top1"].ci95[0] < 0.25 + 0.1);
}

fn tiny_suite(dir: &Path) -> std::path::PathBuf {
    let run = common::train_tiny_lqae(dir, 6);
    let suites = dir.join("suites");
    std::fs::create_dir_all(&suites).unwrap();
    std::fs::write(
        suites.join("tiny-probe.toml"),
        format!(
            "kind = \"linear-probe\"\ndescription = \"tiny\"\nmodel = \"{}\"\nbaselines = [\"pixels\", \"random-encoder\"]\n[data]\ndataset = \"idx\"\npath = \"{}\"\ntrain_limit = 48\ntest_limit = 40\n[probe]\nlayers = \"all\"\nl2_grid = [0.01, 1.0]\nmax_iterations = 50\n",
            run.display(),
            dir.join("data").display()
        ),
    )
    .unwrap();
    suites
}

#[test]
fn runs_are_reproducible_round_trip_and_the_report_catches_a_regression() {
    let dir = tempfile::tempdir().unwrap();
    let suites = tiny_suite(dir.path());
    let suite = lqae::eval::suite::load(&suites, "tiny-probe", &[]).unwrap();
    let KindSettings::LinearProbe(_) = &suite.settings else {
        panic!()
    };
    let out = dir.path().join("results");
    let (d1, r1) = lqae::eval::runner::run_one(&suite, &Device::Cpu, &out).unwrap();
    let (d2, r2) = lqae::eval::runner::run_one(&suite, &Device::Cpu, &out).unwrap();
    assert_ne!(d1, d2, "each run gets its own folder");
    assert_eq!(r1.samples_sha256, r2.samples_sha256);
    assert_eq!(r1.metrics, r2.metrics);
    for k in [
        "lqae/top1",
        "lqae/balanced",
        "pixels/top1",
        "random-encoder/top1",
    ] {
        let m = &r1.metrics[k];
        assert!(
            m.ci95[0] <= m.value && m.value <= m.ci95[1] && m.n == 40,
            "{k}: {m:?}"
        );
    }
    assert_eq!(
        r1.inputs_sha256.len(),
        2,
        "data and checkpoint hashes: {:?}",
        r1.inputs_sha256
    );
    // Round trip through the schema.
    let (back, samples) = read_result(&d1.join("result.json")).unwrap();
    assert_eq!(back, r1);
    let samples = samples.unwrap();
    assert_eq!(samples.len(), 3 * 40);
    // Identical rerun: nothing flagged, exit 0.
    let bin = env!("CARGO_BIN_EXE_lqae-eval");
    let rep = Command::new(bin)
        .args(["report", "--baseline"])
        .arg(d1.join("result.json"))
        .arg("--current")
        .arg(&d2)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&rep.stdout);
    assert!(
        rep.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&rep.stderr)
    );
    assert!(
        text.contains("| lqae/top1 |") && !text.contains("REGRESSION"),
        "{text}"
    );
    // Injected regression: the current run gets every pixel-baseline example wrong.
    let d3 = out.join("tiny-probe").join("injected");
    let mut bad = r1.clone();
    bad.run_id = "injected".into();
    bad.metrics.get_mut("pixels/top1").unwrap().value = 0.0;
    let worse: Vec<results::Sample> = samples
        .iter()
        .cloned()
        .map(|mut s| {
            if s.rep == "pixels" {
                s.correct = false;
            }
            s
        })
        .collect();
    results::write_run(&out, &bad, &worse).unwrap();
    let rows = results::compare(&r1, Some(&samples), &bad, Some(&worse));
    let px = rows.iter().find(|r| r.metric == "pixels/top1").unwrap();
    if r1.metrics["pixels/top1"].value > 0.2 {
        assert_eq!(px.verdict, "REGRESSION", "{px:?}");
        let rep = Command::new(bin)
            .args(["report", "--baseline"])
            .arg(&d1)
            .arg("--current")
            .arg(&d3)
            .output()
            .unwrap();
        assert_eq!(rep.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&rep.stdout).contains("REGRESSION"));
        assert!(String::from_utf8_lossy(&rep.stderr).contains("pixels/top1"));
    } else {
        panic!(
            "the pixel baseline should beat 20% on the fixture, got {}",
            r1.metrics["pixels/top1"].value
        );
    }
}
