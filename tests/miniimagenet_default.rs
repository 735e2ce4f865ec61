//! The mini-ImageNet suites score a model for natural images, never a Fashion-MNIST one by
//! accident: the shipped `configs/lqae-miniimagenet.toml` is what they name, a configuration
//! without a data folder is trained once on the suite's `data.path` train split (after saying
//! what that costs) and cached, and a model trained on another data set is an error naming both
//! unless `data.allow_other_models` is set.
//!
//! Run through the CLI on a mini-ImageNet-layout fixture this test writes, with the project's
//! own suite files and a tiny stand-in for `configs/lqae-miniimagenet.toml` (same data settings,
//! a model small enough to train in seconds).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_lqae-eval");
const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// `root/images/*` and `root/{train,test}.csv` for three real mini-ImageNet classes: colour
/// images of several sizes, PNG and JPEG, whose hue and stripe direction follow the class.
fn write_fixture(root: &Path) {
    let images = root.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let classes = ["n01532829", "n01558993", "n01704323"];
    for (split, per_class) in [("train", 12), ("test", 6)] {
        let mut csv = String::from("filename,label\n");
        for (c, wnid) in classes.iter().enumerate() {
            for k in 0..per_class {
                let (w, h) = [(84, 84), (100, 80), (90, 120)][k % 3];
                let img = image::RgbImage::from_fn(w, h, |x, y| {
                    let stripe = match c {
                        0 => x / 6 % 2,
                        1 => y / 6 % 2,
                        _ => (x + y) / 8 % 2,
                    } as u8;
                    let base = [[200u8, 60, 40], [40, 180, 70], [50, 70, 200]][c];
                    let j = (k * 7 % 30) as u8;
                    image::Rgb(base.map(|v| v.saturating_sub(stripe * 90).saturating_add(j)))
                });
                let name = format!(
                    "{wnid}_{split}{k}.{}",
                    if k % 2 == 0 { "png" } else { "jpg" }
                );
                img.save(images.join(&name)).unwrap();
                csv += &format!("{name},{wnid}\n");
            }
        }
        std::fs::write(root.join(format!("{split}.csv")), csv).unwrap();
    }
}

/// A project layout in `dir`: the real suite files, the real shipped models, and a tiny
/// `configs/lqae-miniimagenet.toml` with the real one's data settings.
fn layout(dir: &Path) -> PathBuf {
    let suites = dir.join("suites");
    std::fs::create_dir_all(&suites).unwrap();
    for f in std::fs::read_dir(Path::new(REPO).join("suites")).unwrap() {
        let p = f.unwrap().path();
        std::fs::copy(&p, suites.join(p.file_name().unwrap())).unwrap();
    }
    std::os::unix::fs::symlink(Path::new(REPO).join("models"), dir.join("models")).unwrap();
    let configs = dir.join("configs");
    std::fs::create_dir_all(&configs).unwrap();
    let tiny = common::tiny_lqae_config(dir, 12, 6)
        .replace("name = \"tiny\"", "name = \"lqae-miniimagenet\"")
        .replace(
            &format!(
                "dataset = \"idx\"\npath = \"{}\"",
                dir.join("data").display()
            ),
            "dataset = \"mini-imagenet\"",
        );
    assert!(
        tiny.contains("dataset = \"mini-imagenet\"\naugment = true"),
        "{tiny}"
    );
    std::fs::write(configs.join("lqae-miniimagenet.toml"), tiny).unwrap();
    suites
}

fn lqae_eval(suites: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .env("LQAE_SUITES", suites)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_shipped_config_is_a_natural_image_model_and_the_suites_name_it() {
    let cfg = lqae::model::RunConfig::from_file(
        &Path::new(REPO).join("configs/lqae-miniimagenet.toml"),
        &[],
    )
    .unwrap();
    assert_eq!(cfg.data.dataset, "mini-imagenet");
    assert_eq!(cfg.data.path, None, "trained on the suite's data.path");
    assert!(cfg.data.augment);
    assert_eq!(cfg.model.channels, 3);
    assert!((84..=128).contains(&cfg.model.image_size));
    assert!((49..=144).contains(&cfg.tokens_per_image()));
    let suites = Path::new(REPO).join("suites");
    let d = tempfile::tempdir().unwrap();
    let data = format!("data.path=\"{}\"", d.path().display());
    for name in [
        "linear-miniimagenet",
        "fewshot-miniimagenet",
        "recon-miniimagenet",
    ] {
        let s = lqae::eval::suite::load(&suites, name, std::slice::from_ref(&data)).unwrap();
        let t = &s.resolved;
        let named: Vec<&str> = match t.get("models") {
            Some(m) => m
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect(),
            None => vec![t["model"].as_str().unwrap()],
        };
        assert_eq!(named, ["lqae-miniimagenet"], "{name}");
        let text = toml::to_string(t).unwrap();
        let bl = t
            .get("baselines")
            .map(|b| b.to_string())
            .unwrap_or_default();
        assert!(
            !bl.contains("vqvae"),
            "{name}: a Fashion-MNIST VQ-VAE baseline: {bl}"
        );
        assert!(s.description.contains("mini-ImageNet"), "{name}: {text}");
    }
}

#[test]
fn mini_imagenet_suites_train_their_model_once_on_the_users_folder_and_refuse_others() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = dir.path().join("mini");
    write_fixture(&fixture);
    let suites = layout(dir.path());
    let results = dir.path().join("results");
    let data = format!("data.path={}", fixture.display());
    let res = results.display().to_string();
    let probe = |extra: &[&str]| {
        let mut a = vec![
            "--suite",
            "linear-miniimagenet",
            "--results",
            &res,
            "--set",
            &data,
            "--set",
            "data.train_limit=36",
            "--set",
            "data.test_limit=18",
            "--set",
            "probe.max_iterations=30",
        ];
        for e in extra {
            a.extend(["--set", e]);
        }
        lqae_eval(&suites, &a)
    };

    // First run: the default model is trained on the fixture, its cost said first.
    let (ok, log) = probe(&[]);
    assert!(ok, "{log}");
    let line = log
        .lines()
        .find(|l| l.starts_with("training lqae-miniimagenet once into "))
        .unwrap_or_else(|| panic!("no training line: {log}"));
    let run_dir = PathBuf::from(
        line.trim_start_matches("training lqae-miniimagenet once into ")
            .split(" (cached")
            .next()
            .unwrap(),
    );
    let cost = log
        .lines()
        .find(|l| l.contains("cost: 12 steps of batch 4"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        cost.contains("s/step on this CPU") && cost.contains("on a GPU about"),
        "{cost}"
    );
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(cfg["data"]["dataset"], "mini-imagenet");
    assert_eq!(
        cfg["data"]["path"],
        std::fs::canonicalize(&fixture)
            .unwrap()
            .display()
            .to_string(),
        "trained on the suite's folder"
    );

    // Another mini-ImageNet suite on the same folder: the cached model, no training.
    let (ok, log2) = lqae_eval(
        &suites,
        &[
            "--suite",
            "recon-miniimagenet",
            "--results",
            &res,
            "--set",
            &data,
            "--set",
            "data.test_limit=9",
            "--set",
            "recon.fid=false",
            "--set",
            "recon.lpips=\"none\"",
            "--set",
            "recon.grid_images=4",
        ],
    );
    assert!(ok, "{log2}");
    assert!(!log2.contains("training lqae-miniimagenet"), "{log2}");

    // A Fashion-MNIST model on mini-ImageNet images: refused, naming both, unless told.
    let (ok, err) = probe(&["model=\"lqae-fmnist\""]);
    assert!(!ok, "{err}");
    assert!(
        err.contains("`lqae-fmnist` was trained on fashion-mnist")
            && err.contains("scores mini-imagenet")
            && err.contains("data.allow_other_models"),
        "{err}"
    );
    let (ok, log3) = probe(&["model=\"lqae-fmnist\"", "data.allow_other_models=true"]);
    assert!(ok, "{log3}");
    std::fs::remove_dir_all(&run_dir).ok();
}
