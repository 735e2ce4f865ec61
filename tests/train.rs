//! The LQAE model and its training: the frozen LM stays frozen, gradients reach the encoder
//! through the straight-through estimator and the LM, masking behaves, training lowers the
//! reconstruction error on real data, and an interrupted run resumes exactly.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use lqae::model::{Autoencoder, RunConfig};
use lqae::rng::Rng;
use lqae::train::{self, load_model, TrainOptions};
use std::path::Path;
use std::process::Command;

fn tiny(dir: &Path, steps: usize, ckpt_every: usize) -> (RunConfig, std::path::PathBuf) {
    let text = common::tiny_lqae_config(dir, steps, ckpt_every);
    let path = dir.join("tiny.toml");
    std::fs::write(&path, &text).unwrap();
    (RunConfig::from_toml_str(&text, &path, &[]).unwrap(), path)
}

fn lqae(m: &Autoencoder) -> &lqae::model::Lqae {
    match m {
        Autoencoder::Lqae(m) => m,
        _ => panic!("not an LQAE"),
    }
}

fn quiet() -> TrainOptions {
    TrainOptions {
        resume: false,
        stop_at: None,
        progress: false,
    }
}

#[test]
fn frozen_lm_does_not_change_and_is_not_trainable() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _) = tiny(dir.path(), 4, 4);
    let (model, params) = Autoencoder::build(&cfg.model, cfg.train.seed, &Device::Cpu).unwrap();
    let m = lqae(&model);
    // No LM tensor is among the optimiser's variables.
    let lm_names: Vec<String> =
        candle_core::safetensors::load(dir.path().join("lm/model.safetensors"), &Device::Cpu)
            .unwrap()
            .into_keys()
            .collect();
    for (name, _) in params.named_vars() {
        assert!(
            !lm_names.contains(&name),
            "{name} is a trainable copy of an LM tensor"
        );
        assert!(
            !name.contains("embeddings.") && !name.contains("roberta"),
            "{name}"
        );
    }
    let probe = common::randn(
        &mut rand::SeedableRng::seed_from_u64(1),
        &[2, 16, common::TINY_HIDDEN],
        1.0,
    );
    let before: Vec<Tensor> = m.lm().forward_embeds(&probe, None).unwrap();
    let fp_before = train::fingerprint(&[m.lm().word_embeddings()]).unwrap();
    // A few real optimiser steps on this very model.
    let mut opt = train::AdamW::new(&params, &cfg.train).unwrap();
    let data = lqae::data::load(&cfg.data, lqae::data::Split::Train).unwrap();
    for step in 0..3 {
        let idx = train::batch_indices(step, 4, data.len(), 1);
        let images = lqae::data::batch::make_batch(&data, &idx, 16, None, &Device::Cpu).unwrap();
        let fwd = model
            .forward(&images, Some(&mut Rng::new(step as u64)))
            .unwrap();
        assert!(
            fwd.losses.mlm.is_some(),
            "tied MLM loss is on in this config"
        );
        let grads = fwd.losses.total.backward().unwrap();
        opt.step(&grads, 1e-2, 1.0).unwrap();
        // Optimiser state must not keep the step's graph alive (that leaked ~100 MB a step).
        assert!(opt.state_is_detached());
    }
    assert_eq!(
        train::fingerprint(&[m.lm().word_embeddings()]).unwrap(),
        fp_before
    );
    let after = m.lm().forward_embeds(&probe, None).unwrap();
    for (a, b) in before.iter().zip(&after) {
        assert_eq!(common::max_abs_diff(a, b), 0.0, "the LM function changed");
    }
    // ...while the trainable weights did move.
    let patch = params
        .named_vars()
        .into_iter()
        .find(|(n, _)| n == "encoder.patch_embeds")
        .unwrap()
        .1;
    let fresh = Autoencoder::build(&cfg.model, cfg.train.seed, &Device::Cpu)
        .unwrap()
        .1;
    let patch0 = fresh
        .named_vars()
        .into_iter()
        .find(|(n, _)| n == "encoder.patch_embeds")
        .unwrap()
        .1;
    assert!(common::max_abs_diff(patch.as_tensor(), patch0.as_tensor()) > 0.0);
}

#[test]
fn encoder_gradient_crosses_quantizer_and_lm_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _) = tiny(dir.path(), 4, 4);
    let (model, params) = Autoencoder::build(&cfg.model, cfg.train.seed, &Device::Cpu).unwrap();
    let m = lqae(&model);
    let data = lqae::data::load(&cfg.data, lqae::data::Split::Train).unwrap();
    let images = lqae::data::batch::make_batch(&data, &[0, 1], 16, None, &Device::Cpu).unwrap();

    // Full loss: encoder weights get a non-zero gradient.
    let fwd = model.forward(&images, Some(&mut Rng::new(3))).unwrap();
    let g = fwd.losses.total.backward().unwrap();
    for (name, v) in params.named_vars() {
        if name.starts_with("encoder.") && !name.ends_with("bias") {
            let n = g
                .get(v.as_tensor())
                .map(|t| {
                    t.sqr()
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap()
                })
                .unwrap_or(0.0);
            assert!(n > 0.0, "no gradient reached {name}");
        }
    }

    // Straight-through: d recon_loss / d z equals d recon_loss / d codes, checked by finite
    // differences on the codes through the frozen LM and the decoder.
    let (z, _) = m.encode_continuous(&images).unwrap();
    let z = Var::from_tensor(&z.detach()).unwrap();
    let q = m.quantizer().quantize(z.as_tensor()).unwrap();
    let no_mask = Tensor::zeros((2, 16), DType::F32, &Device::Cpu).unwrap();
    let loss_of = |lm_in: &Tensor| {
        let (recon, _) = m.decode_lm_input(lm_in).unwrap();
        (recon - &images)
            .unwrap()
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap()
    };
    let gz = loss_of(&m.mask_inputs(&q.straight_through, &no_mask).unwrap())
        .backward()
        .unwrap()
        .remove(z.as_tensor())
        .unwrap();
    let eps = 1e-2f32;
    common::check_gradient(
        &loss_of,
        &q.codes,
        &gz,
        &[(0, 0, 0), (0, 7, 13), (1, 15, 31), (1, 4, 2)],
        eps,
        0.05,
        1e-3,
    );
}

#[test]
fn masking_ratio_and_mask_token_for_both_families() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _) = tiny(dir.path(), 4, 4);
    let (model, _) = Autoencoder::build(&cfg.model, cfg.train.seed, &Device::Cpu).unwrap();
    let m = lqae(&model);
    // Tiny RoBERTa: the mask row is <mask> = 263.
    assert_eq!(m.lm().mask_id(), 263);
    assert_eq!(
        common::max_abs_diff(
            m.mask_embedding(),
            &m.lm().word_embeddings().get(263).unwrap()
        ),
        0.0
    );
    let mask = lqae::model::Lqae::sample_mask(64, 64, 0.5, &mut Rng::new(9), &Device::Cpu).unwrap();
    let ratio = mask.mean_all().unwrap().to_scalar::<f32>().unwrap();
    assert!((ratio - 0.5).abs() < 0.03, "empirical mask ratio {ratio}");
    // Masked positions carry exactly the mask embedding, the others their codes.
    let codes = common::randn(
        &mut rand::SeedableRng::seed_from_u64(2),
        &[64, 64, common::TINY_HIDDEN],
        1.0,
    );
    let lm_in = m.mask_inputs(&codes, &mask).unwrap();
    let mv: Vec<Vec<f32>> = mask.to_vec2().unwrap();
    for (b, t) in [(0usize, 0usize), (3, 9), (63, 63), (10, 20)] {
        let want = if mv[b][t] > 0.5 {
            m.mask_embedding().clone()
        } else {
            codes.get(b).unwrap().get(t).unwrap()
        };
        assert_eq!(
            common::max_abs_diff(&lm_in.get(b).unwrap().get(t).unwrap(), &want),
            0.0
        );
    }
    // Evaluation masks nothing; training masks about half.
    let data = lqae::data::load(&cfg.data, lqae::data::Split::Test).unwrap();
    let images =
        lqae::data::batch::make_batch(&data, &(0..8).collect::<Vec<_>>(), 16, None, &Device::Cpu)
            .unwrap();
    let eval = model.forward(&images, None).unwrap();
    // Decoding the ids of an unmasked encoding reproduces the evaluation pass.
    let redecoded = model.decode_ids(&model.encode(&images).unwrap()).unwrap();
    assert!(common::max_abs_diff(&redecoded, &eval.recon) < 1e-5);
    assert_eq!(
        eval.mask
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        0.0
    );
    let tr = model
        .forward(&images, Some(&mut Rng::new(4)))
        .unwrap()
        .mask
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(tr > 0.3 && tr < 0.7, "{tr}");
    // MiniLM: [MASK] = 103.
    let minilm = lqae::lm::FrozenLm::load(&common::minilm_dir(), &Device::Cpu).unwrap();
    assert_eq!(minilm.mask_id(), 103);
    assert_eq!(minilm.vocab().piece(103), "[MASK]");
}

fn final_weights(run: &Path) -> std::collections::HashMap<String, Tensor> {
    let ck = train::latest_checkpoint(run).unwrap().unwrap();
    candle_core::safetensors::load(ck.join("model.safetensors"), &Device::Cpu).unwrap()
}

fn assert_same_weights(a: &Path, b: &Path) {
    let (wa, wb) = (final_weights(a), final_weights(b));
    assert_eq!(wa.len(), wb.len());
    for (k, ta) in &wa {
        assert_eq!(common::max_abs_diff(ta, &wb[k]), 0.0, "{k} differs");
    }
}

fn losses(run: &Path) -> Vec<(usize, String)> {
    std::fs::read_to_string(run.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["step"].as_u64().unwrap() as usize,
                format!("{} {}", v["loss"], v["recon_mse"]),
            )
        })
        .collect()
}

#[test]
fn stop_and_resume_equals_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _) = tiny(dir.path(), 7, 2);
    let full = dir.path().join("full");
    let o = train::train(&cfg, &full, &Device::Cpu, &quiet()).unwrap();
    assert_eq!(o.step, 7);
    let part = dir.path().join("part");
    let o = train::train(
        &cfg,
        &part,
        &Device::Cpu,
        &TrainOptions {
            stop_at: Some(3),
            ..quiet()
        },
    )
    .unwrap();
    assert_eq!(o.step, 3);
    // Without --resume an existing run is not overwritten.
    let e = train::train(&cfg, &part, &Device::Cpu, &quiet())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("--resume"), "{e}");
    // A different configuration cannot resume it.
    let mut other = cfg.clone();
    other.train.lr *= 2.0;
    let e = train::train(
        &other,
        &part,
        &Device::Cpu,
        &TrainOptions {
            resume: true,
            ..quiet()
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("different configuration"), "{e}");
    let o = train::train(
        &cfg,
        &part,
        &Device::Cpu,
        &TrainOptions {
            resume: true,
            ..quiet()
        },
    )
    .unwrap();
    assert_eq!(o.step, 7);
    assert_same_weights(&full, &part);
    assert_eq!(losses(&full), losses(&part));
    // The model loads back from the run folder, and the CLI encodes and reconstructs with it.
    let (_m, _p, state) = load_model(&part, &Device::Cpu).unwrap();
    assert_eq!(state.step, 7);
    let bin = env!("CARGO_BIN_EXE_lqae-eval");
    let out = Command::new(bin)
        .args(["encode", "--n", "2", "--ckpt"])
        .arg(&part)
        .output()
        .unwrap();
    let so = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && so.contains("tiny at step 7: 16 tokens per image")
            && so.contains("#1"),
        "{so}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let grid = dir.path().join("grid.png");
    let out = Command::new(bin)
        .args(["reconstruct", "--n", "4", "--ckpt"])
        .arg(&part)
        .arg("--out")
        .arg(&grid)
        .output()
        .unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("recon MSE"));
    assert_eq!(image::image_dimensions(&grid).unwrap(), (64, 34));
    let out = Command::new(bin)
        .args(["encode", "--ckpt"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no checkpoint here"));
}

#[test]
fn sigkill_mid_run_then_resume_equals_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let (_cfg, cfg_path) = tiny(dir.path(), 60, 1);
    let bin = env!("CARGO_BIN_EXE_lqae-eval");
    let run = |out: &Path, resume: bool| {
        let mut c = Command::new(bin);
        c.args(["train", "--config"])
            .arg(&cfg_path)
            .arg("--out")
            .arg(out);
        if resume {
            c.arg("--resume");
        }
        c
    };
    let full = dir.path().join("full");
    assert!(run(&full, false).output().unwrap().status.success());
    let killed = dir.path().join("killed");
    let mut child = run(&killed, false)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it (SIGKILL) as soon as it has checkpointed a few steps.
    let t0 = std::time::Instant::now();
    loop {
        if let Ok(Some(ck)) = train::latest_checkpoint(&killed) {
            if ck.file_name().unwrap().to_string_lossy().as_ref() >= "step-00000005" {
                break;
            }
        }
        assert!(t0.elapsed().as_secs() < 120, "no checkpoint appeared");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let at_kill = train::latest_checkpoint(&killed).unwrap().unwrap();
    let resumed = run(&killed, true).output().unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    eprintln!("killed at {}, resumed to the end", at_kill.display());
    assert_same_weights(&full, &killed);
    assert_eq!(losses(&full), losses(&killed));
}

#[test]
fn training_lqae_small_lowers_reconstruction_error_on_fashion_mnist() {
    let cfg_path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/configs/lqae-small.toml"
    ));
    let overrides: Vec<String> = [
        "train.steps=12",
        "train.batch_size=8",
        "train.warmup_steps=2",
        "train.lr=2e-3",
        "data.limit=512",
        "train.ckpt_every=12",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let cfg = RunConfig::from_file(cfg_path, &overrides).unwrap();
    let test = lqae::data::load(&cfg.data, lqae::data::Split::Test).unwrap();
    let images =
        lqae::data::batch::make_batch(&test, &(0..32).collect::<Vec<_>>(), 32, None, &Device::Cpu)
            .unwrap();
    let mse = |m: &Autoencoder| {
        m.forward(&images, None)
            .unwrap()
            .losses
            .recon
            .to_scalar::<f32>()
            .unwrap()
    };
    let (init, _) = Autoencoder::build(&cfg.model, cfg.train.seed, &Device::Cpu).unwrap();
    let before = mse(&init);
    let dir = tempfile::tempdir().unwrap();
    train::train(&cfg, dir.path(), &Device::Cpu, &quiet()).unwrap();
    let (trained, _, _) = load_model(dir.path(), &Device::Cpu).unwrap();
    let after = mse(&trained);
    eprintln!("lqae-small, 12 steps of 8 images: test MSE {before:.4} -> {after:.4}");
    assert!(after < 0.6 * before, "test MSE {before} -> {after}");
}

/// The recipe settings of `docs/ablations.md` do what their names say, and leave a
/// configuration that does not use them as it was.
#[test]
fn recipe_settings_change_only_what_they_name() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _) = tiny(dir.path(), 4, 4);
    let build = |edit: &dyn Fn(&mut lqae::model::ModelConfig)| {
        let mut m = cfg.model.clone();
        edit(&mut m);
        Autoencoder::build(&m, cfg.train.seed, &Device::Cpu).unwrap()
    };
    let var = |p: &lqae::model::Params, name: &str| -> Vec<f32> {
        p.named_vars()
            .into_iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no parameter {name}"))
            .1
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let (_, p0) = build(&|_| {});
    let (_, p1) = build(&|m| m.attn_ln_init = Some(0.0));
    let ln = p0
        .named_vars()
        .into_iter()
        .map(|(n, _)| n)
        .find(|n| n.starts_with("encoder") && n.ends_with("ln_post.scale"))
        .expect("an encoder block's post-attention LayerNorm");
    let (a, b) = (var(&p0, &ln), var(&p1, &ln));
    assert!(
        a.iter().all(|&x| x == 1.0) && b.iter().all(|&x| x == 0.0),
        "{a:?} {b:?}"
    );
    // Every other parameter is drawn exactly as before (same names, same values).
    for (n, v) in p0.named_vars() {
        if !n.ends_with("ln_post.scale") {
            assert_eq!(
                var(&p1, &n),
                v.as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
                "{n}"
            );
        }
    }
    // The projection's init scale (the tiny ViT is narrower than its LM).
    let (_, p2) = build(&|m| m.proj_init_std = Some(0.5));
    let w = var(&p2, "proj_in");
    let sd = (w.iter().map(|x| (x * x) as f64).sum::<f64>() / w.len() as f64).sqrt();
    assert!((sd - 0.5).abs() < 0.1, "proj_in std {sd}");

    // Per-example mask ratios from [0, 0.5]: rows spread from almost none to about half.
    let mut rng = Rng::new(3);
    let m =
        lqae::model::Lqae::sample_ratio_mask(400, 64, (0.0, 0.5), &mut rng, &Device::Cpu).unwrap();
    let rows: Vec<f32> = m.mean(1).unwrap().to_vec1().unwrap();
    let mean = rows.iter().sum::<f32>() / rows.len() as f32;
    assert!((mean - 0.25).abs() < 0.02, "mean ratio {mean}");
    assert!(
        rows.iter().any(|&r| r < 0.05) && rows.iter().any(|&r| r > 0.45),
        "{rows:?}"
    );

    // The entropy loss: logged, finite, and it moves the encoder's gradient.
    let images = Tensor::rand(0f32, 1f32, (2, 3, 16, 16), &Device::Cpu).unwrap();
    let enc_grad = |weight: Option<f64>| {
        let (model, params) = build(&|m| m.entropy_weight = weight);
        let out = model.forward(&images, Some(&mut Rng::new(5))).unwrap();
        let e = out
            .losses
            .entropy
            .as_ref()
            .map(|e| e.to_scalar::<f32>().unwrap());
        let grads = out.losses.total.backward().unwrap();
        let (_, v) = params
            .named_vars()
            .into_iter()
            .find(|(n, _)| n.starts_with("encoder.") && n.ends_with("patch_embedding"))
            .or_else(|| {
                params
                    .named_vars()
                    .into_iter()
                    .find(|(n, _)| n.starts_with("encoder."))
            })
            .unwrap();
        let g: Vec<f32> = grads
            .get(v.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        (e, g)
    };
    let (e0, g0) = enc_grad(None);
    let (e1, g1) = enc_grad(Some(0.5));
    assert!(e0.is_none());
    let e1 = e1.expect("entropy term logged");
    assert!(e1.is_finite(), "{e1}");
    assert!(
        g0.iter().zip(&g1).any(|(a, b)| (a - b).abs() > 1e-9),
        "the entropy term has no gradient"
    );
}

/// The entropy loss formed over blocks of tokens (to keep its `tokens x codes` temporaries small)
/// equals the whole-batch form, value and gradient; and a golden by hand on a tiny case.
#[test]
fn blocked_entropy_loss_equals_the_whole_batch_form() {
    use candle_core::Var;
    use lqae::model::lqae::entropy_loss_blocked;
    let dev = Device::Cpu;
    let codes = Tensor::rand(-1f32, 1f32, (300, 24), &dev).unwrap();
    let normed = lqae::quantizer::l2_normalize_rows(&codes).unwrap();
    let z0 = Tensor::rand(-1f32, 1f32, (3, 11, 24), &dev).unwrap();
    let run = |rows: usize| {
        let z = Var::from_tensor(&z0).unwrap();
        let l = entropy_loss_blocked(z.as_tensor(), &normed, 0.05, rows).unwrap();
        let g = l.backward().unwrap();
        let g: Vec<f32> = g
            .get(z.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        (l.to_scalar::<f32>().unwrap(), g)
    };
    let (whole, gw) = run(33);
    for rows in [1, 7, 32] {
        let (v, g) = run(rows);
        assert!((v - whole).abs() < 1e-5, "{rows} rows: {v} vs {whole}");
        let d = g
            .iter()
            .zip(&gw)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(d < 1e-6, "{rows} rows: gradient differs by {d}");
    }
    // By hand: two codes, e0 = (1, 0) and e1 = (0, 1), T = 1, tokens along e0 and e1: each
    // token's logits are 2 cos = (2, 0) or (0, 2), p = (s, 1 - s) with s = e^2 / (e^2 + 1);
    // the per-token entropy H(s), and the mean distribution is (1/2, 1/2) (entropy ln 2 up to
    // the 1e-5 inside the log).
    let normed = Tensor::new(&[[1f32, 0.], [0., 1.]], &dev).unwrap();
    let z = Tensor::new(&[[[3f32, 0.], [0., 0.5]]], &dev).unwrap();
    let s = (2f64.exp()) / (2f64.exp() + 1.0);
    let h = -(s * s.ln() + (1.0 - s) * (1.0 - s).ln());
    let avg = -(2.0 * 0.5 * (0.5f64 + 1e-5).ln());
    for rows in [1, 2] {
        let v = entropy_loss_blocked(&z, &normed, 1.0, rows)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        assert!((v - (h - avg)).abs() < 1e-5, "{rows}: {v} vs {}", h - avg);
    }
}
