//! The reconstruction page as a person sees it: `index.html` + `grid.png` written by the
//! library, loaded from a local file in headless Chromium, screenshotted, and the screenshot
//! checked (a real PNG of the window's size, not one colour, the grid's colours present).
//! Chromium is required: when it is missing the test runs `scripts/install-chromium.sh`, and
//! fails with that script's output if it still is.

mod common;

use common::browser::screenshot;
use lqae::eval::kinds::recon::{page_html, write_grid, write_page, GridRow};
use lqae::eval::results::ResultFile;
use std::collections::BTreeMap;

/// Images `(3, s, s)`: a smooth pattern per index, and a noisier copy as the "reconstruction".
fn images(n: usize, s: usize, noise: f32) -> Vec<Vec<f32>> {
    (0..n)
        .map(|i| {
            (0..3 * s * s)
                .map(|k| {
                    let (c, y, x) = (k / (s * s), (k / s) % s, k % s);
                    let v = 0.5
                        + 0.4 * ((x as f32 / (3.0 + c as f32)) + (y as f32 / 5.0) + i as f32).sin();
                    let jitter = noise * (((k * 7919 + i * 104729) % 97) as f32 / 97.0 - 0.5);
                    (v + jitter).clamp(0.0, 1.0)
                })
                .collect()
        })
        .collect()
}

fn result() -> ResultFile {
    let mut metrics = BTreeMap::new();
    for (rep, shift) in [("lqae-small", 0.0), ("vqvae-small", 0.01)] {
        metrics.insert(
            format!("{rep}/mse"),
            lqae::eval::stats::mean_t_interval(&[0.02 + shift, 0.03 + shift, 0.025], 0.002, false),
        );
        metrics.insert(
            format!("{rep}/psnr"),
            lqae::eval::stats::mean_t_interval(&[17.0, 16.0, 18.5 - 10.0 * shift], 0.5, true),
        );
        metrics.insert(
            format!("{rep}/ssim"),
            lqae::eval::stats::mean_t_interval(&[0.6, 0.7, 0.65 - shift], 0.02, true),
        );
        metrics.insert(
            format!("{rep}/lpips_alex"),
            lqae::eval::stats::mean_t_interval(&[0.1, 0.12 + shift, 0.11], 0.02, false),
        );
    }
    let mut r = common::result_file(
        "recon-page-test",
        "reconstruction",
        "0-000000000-test",
        serde_json::json!({"description": "A page made by the test <with> & escapes"}),
        metrics,
    );
    r.created_unix = 0;
    r.samples_sha256 = "x".into();
    r.extra = serde_json::json!({
        "models": ["lqae-small", "vqvae-small"],
        "dataset": "fashion-mnist",
        "test_n": 3,
        "conventions": lqae::eval::kinds::recon::conventions(Some(lqae::lpips::LpipsNet::Alex), true),
        "tokens": {
            "lqae-small": {"codes_used": 812, "vocab": 30522, "usage": 0.0266, "perplexity": 301.5,
                "mean_image_entropy": 3.2, "special_share": 0.01, "subword_share": 0.4,
                "top": [{"id": 1, "text": "##ing", "count": 10, "share": 0.1}, {"id": 2, "text": "<unk>", "count": 5, "share": 0.05}]},
            "vqvae-small": {"codes_used": 200, "vocab": 1024, "usage": 0.195, "perplexity": 90.0,
                "mean_image_entropy": 2.9, "special_share": 0.0, "subword_share": 0.0,
                "top": [{"id": 7, "text": "#7", "count": 9, "share": 0.09}]}
        },
        "grid": {"file": "grid.png", "rows": ["originals (32x32)", "lqae-small: reconstruction", "lqae-small: per-pixel error"],
                 "scale": 4, "error_scale": 0.25}
    });
    r
}

#[test]
fn page_renders_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let (n, s) = (8, 32);
    let orig = images(n, s, 0.0);
    let rec = images(n, s, 0.6);
    let rows = vec![
        GridRow::Images {
            label: "originals".into(),
            size: s,
            images: orig.clone(),
        },
        GridRow::Images {
            label: "reconstruction".into(),
            size: s,
            images: rec.clone(),
        },
        GridRow::Error {
            label: "error".into(),
            size: s,
            originals: orig,
            recons: rec,
            scale: 0.25,
        },
    ];
    write_grid(&rows, 4, &dir.path().join("grid.png")).unwrap();
    let grid = image::open(dir.path().join("grid.png")).unwrap().to_rgb8();
    // 8 cells of 128 px with 2 px gaps; 3 rows of 128 px with 6 px gaps.
    assert_eq!(grid.dimensions(), (8 * 130 - 2, 3 * 134 - 6));
    let r = result();
    let page = write_page(dir.path(), &r).unwrap();
    let html = std::fs::read_to_string(&page).unwrap();
    assert_eq!(html, page_html(&r));
    assert!(html.contains("<img class=\"grid\" src=\"grid.png\""));
    assert!(
        html.contains("&lt;with&gt; &amp; escapes") && html.contains("<code>&lt;unk&gt;</code>")
    );
    assert!(html.contains("812 / 30522"));

    let shot = dir.path().join("shot.png");
    screenshot(&page, &shot, (1280, 1600));
    let bytes = std::fs::metadata(&shot).unwrap().len();
    assert!(bytes > 20_000, "screenshot is only {bytes} bytes");
    let img = image::open(&shot).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (1280, 1600));
    let mut colours = std::collections::HashSet::new();
    for p in img.pixels() {
        colours.insert(p.0);
    }
    assert!(
        colours.len() > 200,
        "only {} colours: blank page?",
        colours.len()
    );
    // The table header colour (#e8eef7) and the error map's red-to-yellow show the page's
    // CSS and the grid image were both rendered.
    assert!(
        colours.contains(&[0xe8, 0xee, 0xf7]),
        "table header colour missing"
    );
    let warm = img.pixels().filter(|p| p.0[0] > 150 && p.0[2] < 60).count();
    assert!(
        warm > 5000,
        "the error rows are not visible: {warm} red-to-yellow pixels"
    );
}
