//! The board: runs of three kinds written by the library's own writer into a results folder
//! with baselines (one regressed, one the same), a sweep's per-point rows, a budget-stopped
//! folder; the Markdown checked against values computed here, every link resolved, and the
//! HTML rendered in headless Chromium with the screenshot checked.

mod common;

use lqae::eval::results::{self, Metric, ResultFile, Sample};
use lqae::eval::stats::{mean_t_interval, proportion};
use std::collections::BTreeMap;
use std::path::Path;

fn result(
    suite: &str,
    kind: &str,
    run_id: &str,
    config: serde_json::Value,
    metrics: BTreeMap<String, Metric>,
    extra: serde_json::Value,
) -> ResultFile {
    let mut r = common::result_file(suite, kind, run_id, config, metrics);
    r.extra = extra;
    r
}

fn write(root: &Path, r: &ResultFile, files: &[(String, Vec<u8>)]) -> std::path::PathBuf {
    results::write_run_files(root, r, &[] as &[Sample], &[], files).unwrap()
}

/// Wilson 95% interval, written out here.
fn wilson(k: f64, n: f64) -> (f64, f64) {
    let z = 1.959964f64;
    let p = k / n;
    let c = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let h = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / (1.0 + z * z / n);
    (c - h, c + h)
}

#[test]
fn the_board_shows_every_run_with_verdicts_and_renders_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let res = dir.path().join("results");
    let base = res.join("baselines");

    // A linear probe: lqae regressed (95% -> 80% of 400), pixels the same.
    let linear = |run: &str, lqae_k: usize| {
        let mut m = BTreeMap::new();
        m.insert("lqae/top1".to_string(), proportion(lqae_k, 400, 0.05));
        m.insert("lqae/top5".to_string(), proportion(399, 400, 0.05));
        m.insert("pixels/top1".to_string(), proportion(300, 400, 0.05));
        m.insert("pixels/loss".to_string(), proportion(1, 400, 0.05));
        result(
            "linear-x",
            "linear-probe",
            run,
            serde_json::json!({"model": "lqae-fmnist"}),
            m,
            serde_json::json!({}),
        )
    };
    write(&base, &linear("1-0-base", 380), &[]);
    let linear_dir = write(&res, &linear("2-0-cur", 320), &[]);

    // A reconstruction run without a baseline.
    let mut m = BTreeMap::new();
    m.insert(
        "lqae-fmnist/psnr".to_string(),
        mean_t_interval(&[17.0, 18.0, 19.0], 0.5, true),
    );
    m.insert(
        "lqae-fmnist/rfid".to_string(),
        mean_t_interval(&[40.0, 42.0], 5.0, false),
    );
    m.insert(
        "lqae-fmnist/mse".to_string(),
        mean_t_interval(&[0.01, 0.02], 0.01, false),
    );
    let recon = result(
        "recon-x",
        "reconstruction",
        "3-0-rec",
        serde_json::json!({"models": ["lqae-fmnist"]}),
        m,
        serde_json::json!({}),
    );
    let recon_dir = write(
        &res,
        &recon,
        &[("index.html".into(), b"<html>recon</html>".to_vec())],
    );

    // A few-shot sweep (two points), its baseline identical.
    let mut m = BTreeMap::new();
    for (point, ks) in [
        ("per_image-4", [3usize, 1, 2, 0]),
        ("per_image-16", [4, 2, 3, 1]),
    ] {
        for ((way, col), k) in [
            ("2-way", "induction-no/shots-1/repeats-0"),
            ("2-way", "induction-yes/shots-1/repeats-0"),
            ("5-way", "induction-no/shots-1/repeats-0"),
            ("5-way", "induction-yes/shots-1/repeats-0"),
        ]
        .iter()
        .zip(ks)
        {
            m.insert(format!("{point}/{way}/{col}/top1"), proportion(k, 4, 0.1));
        }
    }
    let fs = |run: &str| {
        result(
            "fs-x",
            "fewshot",
            run,
            serde_json::json!({"model": "lqae-fmnist"}),
            m.clone(),
            // A judge that reads (its calibration says so): the verdict is about the tokens.
            serde_json::json!({"llm_model": "smollm2", "server": "llama-server b1 SmolLM2-135M",
                "calibration": {"judges": {"smollm2": {"calibrated": true, "unreadable": [], "cells": {}}}}}),
        )
    };
    write(&base, &fs("4-0-fsbase"), &[]);
    let fs_dir = write(
        &res,
        &fs("5-0-fs"),
        &[("index.html".into(), b"<html>fs</html>".to_vec())],
    );
    // A run stopped by its budget cap.
    let stopped = res.join("fs-x").join("6-0");
    std::fs::create_dir_all(&stopped).unwrap();
    std::fs::write(
        stopped.join(results::PARTIAL_FILE),
        br#"{"stopped": "llm.max_cost reached: 0.0151 spent, cap 0.015", "partial": {}}"#,
    )
    .unwrap();

    let out = dir.path().join("site").join("board.html");
    let bin = env!("CARGO_BIN_EXE_lqae-eval");
    let o = std::process::Command::new(bin)
        .arg("board")
        .arg(&res)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains("1 incomplete") && said.contains("REGRESSED"),
        "{said}"
    );
    let md = std::fs::read_to_string(out.with_extension("md")).unwrap();
    let html = std::fs::read_to_string(&out).unwrap();
    let line = |needle: &str| -> String {
        md.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no row with {needle}:\n{md}"))
            .to_string()
    };
    // Linear: the regressed row and the unchanged one; only headline metrics (no `loss`).
    let l = line("| lqae (lqae-fmnist) |");
    assert!(l.contains("REGRESSION (1)") && l.contains("80.0 ["), "{l}");
    let l = line("| pixels |");
    assert!(l.contains("| same |") && l.contains("75.0 ["), "{l}");
    assert!(!md.contains("loss"), "{md}");
    // Few-shot: one row per point, 2-way pooled over the columns (per_image-4: 4 of 8).
    let l = line("lqae-fmnist @ per_image-4");
    let (lo, hi) = wilson(4.0, 8.0);
    assert!(
        l.contains(&format!("50.0 [{:.1}, {:.1}] n=8", 100.0 * lo, 100.0 * hi)),
        "{l}"
    );
    assert!(l.contains("| same |") && l.contains("smollm2"), "{l}");
    let l = line("lqae-fmnist @ per_image-16");
    let (lo, hi) = wilson(6.0, 8.0);
    assert!(
        l.contains(&format!("75.0 [{:.1}, {:.1}] n=8", 100.0 * lo, 100.0 * hi)),
        "{l}"
    );
    // Reconstruction: no baseline, its page linked.
    let l = line("| recon-x |");
    assert!(l.contains("| - |") && l.contains("18.00 ["), "{l}");
    assert!(md.contains("llm.max_cost reached"), "{md}");
    // Every link of the page resolves from the board's folder to the run's page or result.
    let site = out.parent().unwrap();
    let mut links = Vec::new();
    for part in html.split("href=\"").skip(1) {
        links.push(part[..part.find('"').unwrap()].to_string());
    }
    assert_eq!(links.len(), 5, "{links:?}");
    for l in &links {
        assert!(site.join(l).is_file(), "{l} does not resolve");
    }
    let target = |d: &Path, f: &str| std::fs::canonicalize(d.join(f)).unwrap();
    let resolved: Vec<_> = links
        .iter()
        .map(|l| std::fs::canonicalize(site.join(l)).unwrap())
        .collect();
    assert!(resolved.contains(&target(&linear_dir, "result.json")));
    assert!(resolved.contains(&target(&recon_dir, "index.html")));
    assert!(resolved.contains(&target(&fs_dir, "index.html")));
    // The baselines are not runs of the board.
    assert!(
        !md.contains("1-0-base") && !md.contains("4-0-fsbase"),
        "{md}"
    );

    let shot = dir.path().join("board.png");
    common::browser::screenshot(&out, &shot, (1400, 1000));
    let (colours, img) = common::browser::colours(&shot);
    assert_eq!(img.dimensions(), (1400, 1000));
    assert!(colours.contains(&[0xe8, 0xee, 0xf7]), "table header colour");
    let red = img.pixels().filter(|p| p.0 == [0xf8, 0xd0, 0xd0]).count();
    assert!(red > 1000, "the regression cell is not drawn: {red} pixels");
}
