//! PSNR / SSIM / MSE against scikit-image (tests/data/metrics_golden.py wrote the images and
//! the expected values), and the `metrics` command.

use lqae::metrics::{compare_files, pair_paths};
use std::path::Path;
use std::process::Command;

fn data() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/metrics"))
}

#[test]
fn matches_scikit_image() {
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data().join("expected.json")).unwrap())
            .unwrap();
    let pairs = pair_paths(&data().join("a"), &data().join("b")).unwrap();
    assert_eq!(pairs.len(), 4);
    for (name, a, b) in pairs {
        let want = &expected[name.trim_end_matches(".png")];
        let got = compare_files(&a, &b).unwrap();
        for (k, v) in [
            ("mse", got.mse),
            ("psnr", got.psnr.unwrap()),
            ("ssim", got.ssim),
        ] {
            let w = want[k].as_f64().unwrap();
            assert!(
                (v - w).abs() < 1e-4,
                "{name} {k}: ours {v}, scikit-image {w}"
            );
        }
    }
}

/// HWC nested JSON lists of f32 values -> planar `Planes`.
fn planes(v: &serde_json::Value) -> lqae::metrics::Planes {
    let rows = v.as_array().unwrap();
    let (h, w) = (rows.len(), rows[0].as_array().unwrap().len());
    let mut data = vec![0.0; 3 * h * w];
    for (y, row) in rows.iter().enumerate() {
        for (x, px) in row.as_array().unwrap().iter().enumerate() {
            for c in 0..3 {
                // The golden values are float32; decoder outputs may leave [0, 1] (clamped here
                // as the suite clamps them).
                let f = px[c].as_f64().unwrap() as f32 as f64;
                data[c * h * w + y * w + x] = f.clamp(0.0, 1.0);
            }
        }
    }
    lqae::metrics::Planes::new(h, w, 3, data, "golden").unwrap()
}

/// LlamaGen's and Open-MAGVIT2's PSNR / SSIM against scikit-image called as their evaluation
/// scripts call it (tests/data/conventions_golden.py).
#[test]
fn other_codebases_conventions_match_their_scikit_image_calls() {
    let e: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/conventions/expected.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let inputs: Vec<_> = e["inputs"].as_array().unwrap().iter().map(planes).collect();
    let recons: Vec<_> = e["recons"].as_array().unwrap().iter().map(planes).collect();
    for c in lqae::metrics::Convention::ALL {
        let (psnr, ssim) = c.scores(&inputs, &recons).unwrap();
        let want = &e[c.name()];
        for (m, got) in [("psnr", &psnr), ("ssim", &ssim)] {
            let w: Vec<f64> = want[m]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_eq!(got.len(), w.len());
            for (i, (g, w)) in got.iter().zip(&w).enumerate() {
                // scikit-image computes SSIM of float32 inputs in float32.
                assert!(
                    (g - w).abs() < 1e-5 * w.abs().max(1.0),
                    "{} {m} image {i}: ours {g}, scikit-image {w}",
                    c.name()
                );
            }
        }
        // And they differ from lqae's own (Wang et al.) SSIM, or the setting would be moot.
        let own = lqae::metrics::compare(&inputs[0], &recons[0]).unwrap().ssim;
        assert!(
            (own - ssim[0]).abs() > 1e-3,
            "{}: {own} vs {}",
            c.name(),
            ssim[0]
        );
    }
}

#[test]
fn metrics_command_tables_json_and_errors() {
    let bin = env!("CARGO_BIN_EXE_lqae-eval");
    let out = Command::new(bin)
        .arg("metrics")
        .arg(data().join("a"))
        .arg(data().join("b"))
        .arg("--json")
        // Two of the pairs are smaller than AlexNet LPIPS accepts (tests/lpips.rs covers it).
        .args(["--lpips", "none"])
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
    assert_eq!(lines.len(), 5, "four pairs and the mean");
    assert!(lines
        .iter()
        .all(|l| l["psnr"].is_number() && l["ssim"].is_number() && l["mse"].is_number()));
    assert_eq!(lines[4]["pair"], "mean");
    // Identical images: infinite PSNR said explicitly.
    let a = data().join("a/grey_noise.png");
    let out = Command::new(bin)
        .arg("metrics")
        .arg(&a)
        .arg(&a)
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && s.contains("inf") && s.contains("1.0000"),
        "{s}"
    );
    // Differing sizes name both files.
    let out = Command::new(bin)
        .arg("metrics")
        .arg(data().join("a/grey_noise.png"))
        .arg(data().join("a/rgb_shift.png"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("grey_noise.png is 32x32") && e.contains("rgb_shift.png is 20x24"),
        "{e}"
    );
}
