//! The reconstruction suite end to end on a tiny trained LQAE (tiny RoBERTa, IDX fixture):
//! result files, intervals, per-image values, grid and page, reproducibility, and a report
//! that catches an injected regression with the paired t-test.

mod common;

use candle_core::Device;
use lqae::eval::results::{self, read_per_image, read_result};
use lqae::eval::KindSettings;
use std::path::Path;
use std::process::Command;

fn tiny_suite(dir: &Path, lpips: &str) -> std::path::PathBuf {
    let run = common::train_tiny_lqae(dir, 6);
    let suites = dir.join("suites");
    std::fs::create_dir_all(&suites).unwrap();
    std::fs::write(
        suites.join("tiny-recon.toml"),
        format!(
            "kind = \"reconstruction\"\ndescription = \"tiny\"\nmodels = [\"{}\"]\n[data]\ndataset = \"idx\"\npath = \"{}\"\ntest_limit = 40\n[recon]\nlpips = \"{lpips}\"\ngrid_images = 6\nbatch = 16\nconventions = [\"llamagen\", \"open-magvit2\"]\n",
            run.display(),
            dir.join("data").display()
        ),
    )
    .unwrap();
    suites
}

#[test]
fn recon_suite_writes_results_grid_page_and_report_catches_a_regression() {
    let dir = tempfile::tempdir().unwrap();
    // The fixture's images are 16x16: VGG16 LPIPS accepts them, AlexNet would not.
    let suites = tiny_suite(dir.path(), "vgg16");
    let suite = lqae::eval::suite::load(&suites, "tiny-recon", &[]).unwrap();
    let KindSettings::Reconstruction(spec) = &suite.settings else {
        panic!("not a reconstruction suite")
    };
    let out = dir.path().join("results");
    let (d1, r1) = lqae::eval::runner::run_one(&suite, &Device::Cpu, &out).unwrap();
    let (d2, r2) = lqae::eval::runner::run_one(&suite, &Device::Cpu, &out).unwrap();
    assert_ne!(d1, d2);
    assert_eq!(r1.samples_sha256, r2.samples_sha256);
    assert_eq!(
        r1.metrics, r2.metrics,
        "same model, same images: same scores"
    );
    for m in [
        "mse",
        "psnr",
        "ssim",
        "lpips_vgg16",
        "psnr_llamagen",
        "ssim_llamagen",
        "psnr_omg2",
        "ssim_omg2",
    ] {
        let v = &r1.metrics[&format!("tiny/{m}")];
        assert!(
            v.n == 40 && v.ci95[0] <= v.value && v.value <= v.ci95[1] && v.se > 0.0,
            "{m}: {v:?}"
        );
    }
    // rFID and KID: set statistics with a bootstrap spread over image pairs.
    for m in ["rfid", "kid"] {
        let v = &r1.metrics[&format!("tiny/{m}")];
        assert!(
            v.n == 40
                && !v.higher_is_better
                && v.se > 0.0
                && v.ci95[0] < v.value
                && v.value < v.ci95[1],
            "{m}: {v:?}"
        );
    }
    assert!(r1.metrics["tiny/rfid"].value > 0.0);
    assert_eq!(r1.extra["fid"]["tiny"]["n"], 40);
    assert!(
        r1.extra["fid"]["tiny"]["kid_std"].is_null(),
        "40 < 1000: one full-set KID"
    );
    assert!(r1.inputs_sha256.contains_key("inception_fid"));
    let mse = r1.metrics["tiny/mse"].value;
    let psnr = r1.metrics["tiny/psnr"].value;
    assert!(
        mse > 0.0 && mse < 1.0 && psnr > 0.0,
        "mse {mse} psnr {psnr}"
    );
    assert!(r1.metrics["tiny/psnr"].higher_is_better);
    assert!(!r1.metrics["tiny/lpips_vgg16"].higher_is_better);
    // Conventions and token statistics are in every result.
    let c = &r1.extra["conventions"];
    assert!(c["ssim"]
        .as_str()
        .unwrap()
        .contains("use_sample_covariance=False"));
    assert!(c["lpips"].as_str().unwrap().contains("vgg16"));
    assert!(c["fid_input"].as_str().unwrap().contains("(x - 128) / 128"));
    assert!(c["rfid"].as_str().unwrap().contains("bootstrap"));
    assert!(c["ssim_llamagen"]
        .as_str()
        .unwrap()
        .contains("data_range=2.0"));
    let t = &r1.extra["tokens"]["tiny"];
    assert_eq!(t["vocab"], 264);
    assert_eq!(t["tokens"], 40 * 16);
    let used = t["codes_used"].as_u64().unwrap();
    assert!((1..=264).contains(&used));
    assert!(t["perplexity"].as_f64().unwrap() >= 1.0);
    assert!(!t["top"].as_array().unwrap().is_empty());
    assert!(t["top"][0]["text"].is_string());
    // Files: result, empty samples, per-image values, grid, page.
    let (back, samples) = read_result(&d1.join("result.json")).unwrap();
    assert_eq!(back, r1);
    assert!(samples.unwrap().is_empty());
    let per = read_per_image(&d1).unwrap().unwrap();
    assert_eq!(per.len(), 40);
    assert!(per
        .iter()
        .all(|p| p.values.contains_key("ssim") && p.values.contains_key("lpips_vgg16")));
    let mean_mse = per.iter().map(|p| p.values["mse"]).sum::<f64>() / 40.0;
    assert!((mean_mse - mse).abs() < 1e-12);
    let grid = image::open(d1.join("grid.png")).unwrap().to_rgb8();
    // 6 images of 16 px x4 with 2 px gaps; rows: originals, reconstruction, error.
    assert_eq!(grid.dimensions(), (6 * 66 - 2, 3 * 70 - 6));
    let html = std::fs::read_to_string(d1.join("index.html")).unwrap();
    assert!(html.contains("src=\"grid.png\"") && html.contains("tiny: per-pixel error"));
    assert!(
        html.contains("LPIPS vgg16")
            && html.contains("rFID")
            && html.contains("fid_weights_sha256")
    );

    // Identical rerun: no regression, paired test used (p = 1 on identical values).
    let bin = env!("CARGO_BIN_EXE_lqae-eval");
    let rep = Command::new(bin)
        .args(["report", "--baseline"])
        .arg(&d1)
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
        text.contains("| tiny/ssim |") && !text.contains("REGRESSION"),
        "{text}"
    );

    // Injected regression: every image's SSIM 0.05 lower (beyond the 0.02 tolerance).
    let d3 = out.join("tiny-recon").join("injected");
    let mut bad = r1.clone();
    bad.run_id = "injected".into();
    let worse: Vec<results::ImageScore> = per
        .iter()
        .cloned()
        .map(|mut p| {
            *p.values.get_mut("ssim").unwrap() -= 0.05 + 0.001 * (p.index % 3) as f64;
            p
        })
        .collect();
    let ssims: Vec<f64> = worse.iter().map(|p| p.values["ssim"]).collect();
    bad.metrics.insert(
        "tiny/ssim".into(),
        lqae::eval::stats::mean_t_interval(&ssims, spec.tolerance.ssim, true),
    );
    results::write_run(&out, &bad, &[]).unwrap();
    results::write_per_image(&d3, &worse).unwrap();
    let rows = results::compare_paired(&r1, None, Some(&per), &bad, None, Some(&worse));
    let row = rows.iter().find(|r| r.metric == "tiny/ssim").unwrap();
    assert_eq!(row.verdict, "REGRESSION", "{row:?}");
    assert!(row.p_value.unwrap() < 1e-6, "paired: {row:?}");
    let others = rows.iter().filter(|r| r.metric != "tiny/ssim");
    assert!(others.clone().all(|r| r.verdict == "same"), "{rows:?}");
    let rep = Command::new(bin)
        .args(["report", "--baseline"])
        .arg(&d1)
        .arg("--current")
        .arg(&d3)
        .output()
        .unwrap();
    assert_eq!(rep.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&rep.stdout).contains("REGRESSION"));
    assert!(String::from_utf8_lossy(&rep.stderr).contains("tiny/ssim"));

    // A current run that lost a metric of the baseline fails the gate, naming it, unless
    // --allow-missing is given (the row is listed as MISSING either way).
    let mut dropped = r1.clone();
    dropped.run_id = "dropped".into();
    dropped.metrics.remove("tiny/kid");
    results::write_run(&out, &dropped, &[]).unwrap();
    let d4 = out.join("tiny-recon").join("dropped");
    let report = |extra: &[&str]| {
        Command::new(bin)
            .args(["report", "--baseline"])
            .arg(&d1)
            .arg("--current")
            .arg(&d4)
            .args(extra)
            .output()
            .unwrap()
    };
    let rep = report(&[]);
    assert_eq!(rep.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&rep.stdout).contains("| tiny/kid |"));
    let err = String::from_utf8_lossy(&rep.stderr);
    assert!(
        err.contains("tiny/kid") && err.contains("--allow-missing"),
        "{err}"
    );
    let rep = report(&["--allow-missing"]);
    assert!(rep.status.success());
    assert!(String::from_utf8_lossy(&rep.stdout).contains("MISSING"));

    // An interrupted run (its files, no result.json) is refused, given directly or as the
    // newest run of the suite folder, instead of a stale complete run being compared.
    let cut = out.join("tiny-recon").join("zz-interrupted");
    std::fs::create_dir_all(&cut).unwrap();
    std::fs::write(cut.join("samples.jsonl"), "").unwrap();
    for current in [cut.clone(), out.join("tiny-recon")] {
        let rep = Command::new(bin)
            .args(["report", "--baseline"])
            .arg(&d1)
            .arg("--current")
            .arg(&current)
            .output()
            .unwrap();
        assert_eq!(rep.status.code(), Some(1));
        let err = String::from_utf8_lossy(&rep.stderr);
        assert!(
            err.contains("zz-interrupted") && err.contains("interrupted run"),
            "{err}"
        );
    }
    std::fs::write(
        cut.join("result.json"),
        std::fs::read(d1.join("result.json")).unwrap(),
    )
    .unwrap();
    assert!(lqae::eval::results::read_result(&out.join("tiny-recon")).is_ok());
}

#[test]
fn validation_names_bad_recon_keys() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("r.toml"),
        "kind = \"reconstruction\"\ndescription = \"r\"\nmodels = [\"lqae-small\"]\n[data]\ndataset = \"fashion-mnist\"\n",
    )
    .unwrap();
    let bad = |o: &str| {
        lqae::eval::suite::load(d.path(), "r", &[o.to_string()])
            .unwrap_err()
            .to_string()
    };
    let e = bad("recon.lpips=\"squeeze\"");
    assert!(
        e.contains("`recon.lpips`") && e.contains("alex, vgg16 or none"),
        "{e}"
    );
    let e = bad("recon.conventions=[\"llamagen\", \"dall-e\"]");
    assert!(
        e.contains("`recon.conventions`") && e.contains("`dall-e`") && e.contains("open-magvit2"),
        "{e}"
    );
    let e = bad("recon.grid=3");
    assert!(
        e.contains("unknown field `grid`") && e.contains("`recon.grid`"),
        "{e}"
    );
    let e = bad("data.dataset=\"mini-imagenet\"");
    assert!(
        e.contains("`data.path`") && e.contains("--set data.path"),
        "{e}"
    );
    let ok = lqae::eval::suite::load(d.path(), "r", &[]).unwrap();
    let KindSettings::Reconstruction(spec) = ok.settings else {
        panic!()
    };
    assert_eq!(spec.recon.lpips, "alex");
    assert_eq!(spec.tolerance.psnr, 0.5);
    // The shipped suites validate; mini-ImageNet only with a path.
    let shipped = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/suites"));
    lqae::eval::suite::load(shipped, "recon-fashionmnist", &[]).unwrap();
    let e = lqae::eval::suite::load(shipped, "recon-miniimagenet", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("`data.path`"), "{e}");
    let all = lqae::eval::suite::expand(shipped, &["default".into()], &[]).unwrap();
    assert!(all.iter().any(|s| s.name == "recon-fashionmnist"));
}
