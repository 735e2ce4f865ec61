//! The paper-configuration step bench and the random-weight LM folders it times with (issue 8):
//! a random checkpoint folder loads like a real one and holds exactly the seeded weights; the
//! step bench finds the largest batch that fits, times it and writes its record. All on the
//! CPU at small shapes; the GPU run is `scripts/gpu-device-run.sh`.

use candle_core::Device;
use lqae::lm::random;
use lqae::lm::{Family, FrozenLm};
use std::path::Path;

fn tiny_roberta(dir: &Path) -> lqae::lm::LmConfig {
    let cfg = random::with_overrides(
        &random::roberta_base_shape(),
        &[
            "hidden_size=32".into(),
            "num_hidden_layers=2".into(),
            "num_attention_heads=2".into(),
            "intermediate_size=64".into(),
            "vocab_size=600".into(),
        ],
    )
    .unwrap();
    random::write_checkpoint(dir, &cfg, 5).unwrap();
    cfg
}

#[test]
fn a_random_checkpoint_loads_like_a_real_one_and_holds_the_seeded_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_roberta(tmp.path());
    let lm = FrozenLm::load(tmp.path(), &Device::Cpu).unwrap();
    assert_eq!(lm.family(), Family::Roberta);
    assert_eq!(lm.config().vocab_size, 600);
    assert_eq!(lm.mask_id(), 599);
    assert_eq!(lm.vocab().special_ids.pad, Some(1));
    assert!(lm.vocab().is_special(0) && !lm.vocab().is_special(4));
    // Placeholder words tokenize to their own ids, specials around them.
    assert_eq!(lm.tokenize("Ġw7 Ġw42", true).unwrap(), vec![0, 7, 42, 2]);
    // The codebook the model quantizes to is the seeded table, bit for bit.
    let want = random::random_weights(&cfg, 5).unwrap();
    let a = lm
        .word_embeddings()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let b = want["embeddings.word_embeddings.weight"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(a, b);
    // A different seed is a different model.
    let other = random::random_weights(&cfg, 6).unwrap();
    let c = other["embeddings.word_embeddings.weight"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_ne!(a, c);
    // The full shape is RoBERTa-base's.
    let rb = random::roberta_base_shape();
    assert_eq!(
        (
            rb.vocab_size,
            rb.hidden_size,
            rb.num_hidden_layers,
            rb.max_position_embeddings
        ),
        (50265, 768, 12, 514)
    );
}

/// `lqae-paper` with everything but its structure shrunk (the LM is the tiny random RoBERTa).
fn tiny_paper(lm: &Path) -> lqae::model::RunConfig {
    let sets: Vec<String> = [
        format!("model.lm={}", lm.display()),
        "model.image_size=32".into(),
        "model.patch_size=8".into(),
        "model.width=32".into(),
        "model.enc_depth=1".into(),
        "model.dec_depth=1".into(),
        "model.heads=2".into(),
        "model.mlp_dim=64".into(),
    ]
    .to_vec();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/lqae-paper.toml");
    lqae::model::RunConfig::from_file(&path, &sets).unwrap()
}

#[test]
fn the_step_bench_times_the_largest_batch_that_fits() {
    let tmp = tempfile::tempdir().unwrap();
    let lm_dir = tmp.path().join("lm");
    let lm = tiny_roberta(&lm_dir);
    let cfg = tiny_paper(&lm_dir);
    assert_eq!(
        cfg.model.mlm,
        lqae::model::MlmMode::Tied,
        "the paper trains with the MLM loss"
    );
    let report = lqae::bench::step::StepBench {
        cfg: cfg.clone(),
        device: Device::Cpu,
        batches: vec![4, 16, 8],
        steps: 2,
        budget_s: 5.0,
        peer: None,
        check_batch: None,
        work: tmp.path().join("work"),
        simulated_oom_above: Some(8),
    }
    .run()
    .unwrap();
    assert_eq!(report.batches, vec![16, 8, 4], "tried largest first");
    assert_eq!(report.ours_largest, 8, "16 ran out of (simulated) memory");
    assert_eq!(report.rows.len(), 1);
    let row = &report.rows[0];
    assert_eq!(
        (row.side.as_str(), row.batch, row.times_s.len()),
        ("lqae", 8, 2)
    );
    assert!(row.median_s > 0.0 && (row.images_per_s - 8.0 / row.median_s).abs() < 1e-9);
    assert!(
        row.peak_process_mib.unwrap() > 1.0,
        "the resident set was sampled"
    );
    assert!(
        row.peak_device_rise_mib.is_none(),
        "no device memory on the CPU"
    );
    // The model FLOP count includes the tied MLM head: 2 x 2 x tokens x mask ratio x V x h
    // per image more than the same model without it.
    let mut off = cfg.clone();
    off.model.mlm = lqae::model::MlmMode::Off;
    let t = cfg.tokens_per_image() as f64;
    let head = 4.0 * t * cfg.model.mask_ratio * lm.vocab_size as f64 * lm.hidden_size as f64;
    let diff = report.flop_per_image - lqae::bench::step::flop_per_image(&off, &lm);
    assert!((diff - head).abs() < 1e-6 * head, "{diff} vs {head}");

    let md = lqae::bench::step::markdown(&report, "cpu");
    assert!(md.contains("| lqae (ours) | 8 |"), "{md}");
    assert!(md.contains("ours 8, PyTorch -"), "{md}");
}

#[test]
fn no_batch_that_fits_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let lm_dir = tmp.path().join("lm");
    tiny_roberta(&lm_dir);
    let err = lqae::bench::step::StepBench {
        cfg: tiny_paper(&lm_dir),
        device: Device::Cpu,
        batches: vec![4, 2],
        steps: 2,
        budget_s: 5.0,
        peer: None,
        check_batch: None,
        work: tmp.path().join("work"),
        simulated_oom_above: Some(1),
    }
    .run()
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("--batches") && err.contains("not even batch 2"),
        "{err}"
    );
}

/// The command line end to end: `random-lm` writes a folder, `step-bench` on it writes a record.
#[test]
fn the_cli_writes_a_random_lm_and_a_step_bench_record() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_lqae-eval");
    let lm = tmp.path().join("lm");
    let st = std::process::Command::new(bin)
        .args(["random-lm", "--out"])
        .arg(&lm)
        .args(["--set", "hidden_size=32", "--set", "num_hidden_layers=1"])
        .args([
            "--set",
            "num_attention_heads=2",
            "--set",
            "intermediate_size=64",
        ])
        .args(["--set", "vocab_size=300"])
        .status()
        .unwrap();
    assert!(st.success());
    let bad = std::process::Command::new(bin)
        .args(["random-lm", "--shape", "gpt2", "--out"])
        .arg(tmp.path().join("x"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("roberta-base"));
    let out = tmp.path().join("out");
    let o = std::process::Command::new(bin)
        .args(["step-bench", "--config"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/lqae-paper.toml"))
        .args(["--set", &format!("model.lm={}", lm.display())])
        .args([
            "--set",
            "model.image_size=16",
            "--set",
            "model.patch_size=8",
        ])
        .args(["--set", "model.width=32", "--set", "model.enc_depth=1"])
        .args(["--set", "model.dec_depth=1", "--set", "model.heads=2"])
        .args([
            "--set",
            "model.mlp_dim=64",
            "--batches",
            "2",
            "--steps",
            "2",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run = std::fs::read_dir(&out)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("step-bench.json")).unwrap()).unwrap();
    assert_eq!(rec["schema"], "lqae-step-bench/1");
    assert_eq!(rec["report"]["ours_largest"], 2);
    assert_eq!(rec["report"]["config"], "lqae-paper");
    assert!(run.join("step-bench.md").is_file());
}
