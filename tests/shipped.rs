//! Models shipped under `models/`: they load by name after every hash is checked, a changed
//! or missing file is an error naming it, and each shipped recipe still trains the way its log
//! says (the first 20 steps re-run and compared with the shipped `log.jsonl`).

mod common;

use candle_core::Device;
use lqae::eval::shipped::{self, Manifest};
use lqae::eval::Zoo;
use std::path::Path;

#[test]
fn a_shipped_model_loads_by_name_and_a_changed_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let run = common::train_tiny_lqae(dir.path(), 6);
    let models = dir.path().join("models");
    let out = shipped::ship(&run, "tiny", &models, &Device::Cpu).unwrap();
    let m = shipped::verify(&out).unwrap();
    assert_eq!((m.step, m.images_seen), (6, 24));
    for f in [
        "model.safetensors",
        "state.json",
        "run.toml",
        "log.jsonl",
        "grid.png",
        "manifest.json",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let zoo = Zoo::with_dirs(
        &models,
        &dir.path().join("no-configs"),
        &dir.path().join("cache"),
        &Device::Cpu,
    );
    let t = zoo.load("tiny").unwrap();
    assert_eq!(t.sha256, m.files["model.safetensors"]);
    assert_eq!(t.state.step, 6);
    // The same weights as the run's last checkpoint: identical codes for the same images.
    let (from_run, _, _) = lqae::train::load_model(&run, &Device::Cpu).unwrap();
    let x = lqae::rng::uniform_tensor(&[2, 3, 16, 16], 1, &Device::Cpu)
        .unwrap()
        .affine(1.0, 0.5)
        .unwrap();
    let a: Vec<Vec<u32>> = from_run.encode(&x).unwrap().to_vec2().unwrap();
    let b: Vec<Vec<u32>> = t.model.encode(&x).unwrap().to_vec2().unwrap();
    assert_eq!(a, b);

    // One changed byte: the error names the file and says what to do.
    let grid = out.join("grid.png");
    let mut bytes = std::fs::read(&grid).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&grid, &bytes).unwrap();
    let e = zoo
        .load("tiny")
        .err()
        .expect("a changed file loads")
        .to_string();
    assert!(
        e.contains("grid.png") && e.contains("sha256") && e.contains("git checkout"),
        "{e}"
    );
    std::fs::remove_file(out.join("model.safetensors")).unwrap();
    let e = shipped::verify(&out).unwrap_err().to_string();
    assert!(
        e.contains("model.safetensors") && e.contains("missing"),
        "{e}"
    );
    // A name that is nothing at all.
    let e = zoo.load("no-such-model").err().unwrap().to_string();
    assert!(e.contains("shipped under models/"), "{e}");
}

/// The log lines of `steps` of a recipe re-run here, against the shipped ones: exact on the CPU
/// kind that trained it, within `1e-4` (relative) elsewhere.
fn reproduces(dir: &Path, m: &Manifest, steps: usize) {
    // The recipe is re-run on the backend of the kernels' products that trained it (a manifest
    // without `blas` was trained on the gemm crate): another backend rounds differently.
    let trained_on = m.machine["blas"].as_str().unwrap_or("gemm crate");
    if trained_on.starts_with("gemm") {
        lqae::kernels::blas::set_enabled(false);
    }
    assert!(
        lqae::kernels::blas::backend_name().split(' ').next() == trained_on.split(' ').next(),
        "{}: trained on {trained_on}, here {}",
        m.name,
        lqae::kernels::blas::backend_name()
    );
    let cfg = lqae::model::RunConfig::from_file(&dir.join("run.toml"), &[]).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    lqae::train::train(
        &cfg,
        tmp.path(),
        &Device::Cpu,
        &lqae::train::TrainOptions {
            resume: false,
            stop_at: Some(steps),
            progress: false,
        },
    )
    .unwrap();
    let read = |p: &Path| -> Vec<lqae::train::LogLine> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let here = read(&tmp.path().join("log.jsonl"));
    let shipped_log = read(&dir.join("log.jsonl"));
    let me = lqae::util::provenance::machine();
    // Thread counts do not change the bits (the kernels split work by rows), CPU kinds may.
    let same_machine = me["cpu"] == m.machine["cpu"] && me["avx512"] == m.machine["avx512"];
    let mut compared = 0;
    for l in &here {
        let Some(s) = shipped_log.iter().find(|s| s.step == l.step) else {
            continue;
        };
        let mut values: Vec<(String, f64, f64)> =
            vec![("grad_norm".into(), l.grad_norm, s.grad_norm)];
        for (k, v) in &l.losses {
            values.push((k.clone(), *v, s.losses[k]));
        }
        for (k, a, b) in values {
            let ok = if same_machine {
                a == b
            } else {
                (a - b).abs() <= 1e-4 * b.abs().max(1e-12)
            };
            assert!(
                ok,
                "{}: step {} {k}: {a} here, {b} shipped (same machine: {same_machine})",
                m.name, l.step
            );
        }
        compared += 1;
    }
    assert!(
        compared >= 2,
        "{}: only {compared} logged steps in the first {steps} to compare",
        m.name
    );
}

#[test]
fn shipped_recipes_reproduce_their_first_20_logged_steps() {
    // Where the CLI trains: on the kernels' thread pool (`kernels::on_pool`), which must not
    // change the bits.
    lqae::kernels::tune_threads();
    lqae::kernels::on_pool(shipped_recipes_reproduce);
}

fn shipped_recipes_reproduce() {
    assert!(rayon::current_thread_index().is_some(), "not on the pool");
    let models = shipped::models_dir();
    let mut names = Vec::new();
    for e in std::fs::read_dir(&models).unwrap() {
        let dir = e.unwrap().path();
        if dir.join(shipped::MANIFEST).is_file() {
            let m = shipped::verify(&dir).unwrap();
            reproduces(&dir, &m, 20);
            names.push(m.name);
        }
    }
    names.sort();
    assert_eq!(names, ["lqae-fmnist", "vqvae-fmnist"], "the shipped models");
}
