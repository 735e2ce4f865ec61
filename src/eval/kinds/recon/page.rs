//! The run's page, `index.html`: metrics, tokens, the grid and the conventions.

use crate::error::Result;
use crate::eval::results::ResultFile;
use std::path::{Path, PathBuf};

pub use crate::util::html::esc;

/// The run's page: metrics table, token table, the grid and the conventions, from the result
/// file alone (`extra.grid`, `extra.tokens`, `extra.conventions`, `extra.models`).
pub fn page_html(r: &ResultFile) -> String {
    let x = &r.extra;
    let mut reps: Vec<String> = x["models"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if reps.is_empty() {
        reps = r
            .metrics
            .keys()
            .filter_map(|k| k.rsplit_once('/').map(|(a, _)| a.to_string()))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
    }
    let columns: Vec<(&str, &str, usize)> = [
        ("mse", "MSE &darr;", 5),
        ("psnr", "PSNR (dB) &uarr;", 2),
        ("ssim", "SSIM &uarr;", 4),
        ("lpips_alex", "LPIPS alex &darr;", 4),
        ("lpips_vgg16", "LPIPS vgg16 &darr;", 4),
        ("psnr_llamagen", "PSNR LlamaGen &uarr;", 2),
        ("ssim_llamagen", "SSIM LlamaGen &uarr;", 4),
        ("psnr_omg2", "PSNR Open-MAGVIT2 &uarr;", 2),
        ("ssim_omg2", "SSIM Open-MAGVIT2 &uarr;", 4),
        ("rfid", "rFID &darr;", 2),
        ("kid", "KID &darr;", 4),
    ]
    .into_iter()
    .filter(|(m, _, _)| {
        reps.iter()
            .any(|rep| r.metrics.contains_key(&format!("{rep}/{m}")))
    })
    .collect();
    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    h.push_str(&format!(
        "<title>{} &middot; {}</title>\n",
        esc(&r.suite),
        esc(&r.run_id)
    ));
    h.push_str("<style>\nbody{font-family:'DejaVu Sans',Arial,sans-serif;margin:24px;color:#111;background:#fff;max-width:1400px}\n\
table{border-collapse:collapse;margin:8px 0 16px}th,td{border:1px solid #bbb;padding:4px 8px;text-align:right;vertical-align:top}\n\
th{background:#e8eef7}td.l,th.l{text-align:left}.ci{color:#555;font-size:85%}.meta{color:#444}\n\
code{background:#f3f3f3;padding:0 3px}img.grid{image-rendering:pixelated;border:1px solid #ccc;max-width:100%;height:auto}\n\
ol.rows li{margin:2px 0}dl dt{font-weight:bold;margin-top:6px}dl dd{margin-left:16px}\n</style>\n</head>\n<body>\n");
    h.push_str(&format!("<h1>Reconstruction: {}</h1>\n", esc(&r.suite)));
    let desc = r.config["description"].as_str().unwrap_or("");
    if !desc.is_empty() {
        h.push_str(&format!("<p>{}</p>\n", esc(desc)));
    }
    h.push_str(&format!(
        "<p class=\"meta\">run <code>{}</code> &middot; {} test images of <code>{}</code> &middot; commit <code>{}</code> &middot; {} &middot; {:.0} s</p>\n",
        esc(&r.run_id),
        x["test_n"].as_u64().unwrap_or(0),
        esc(x["dataset"].as_str().unwrap_or("?")),
        esc(r.git_commit.get(..12).unwrap_or(&r.git_commit)),
        esc(&r.device),
        r.wall_time_s
    ));
    h.push_str(&metrics_table(r, &reps, &columns));
    h.push_str(&tokens_table(x, &reps));
    h.push_str(&grid_section(&x["grid"]));
    h.push_str("<h2>Conventions</h2>\n<dl>\n");
    if let Some(c) = x["conventions"].as_object() {
        for (k, v) in c {
            h.push_str(&format!(
                "<dt>{}</dt><dd>{}</dd>\n",
                esc(k),
                esc(v.as_str().unwrap_or(""))
            ));
        }
    }
    h.push_str("</dl>\n</body>\n</html>\n");
    h
}

/// The metrics table: one row per model, one column per metric with its interval.
fn metrics_table(r: &ResultFile, reps: &[String], columns: &[(&str, &str, usize)]) -> String {
    let mut h = String::new();
    h.push_str("<h2>Metrics</h2>\n<table id=\"metrics\">\n<tr><th class=\"l\">model</th>");
    for (_, title, _) in columns {
        h.push_str(&format!("<th>{title}</th>"));
    }
    h.push_str("</tr>\n");
    for rep in reps {
        h.push_str(&format!("<tr><td class=\"l\">{}</td>", esc(rep)));
        for (m, _, digits) in columns {
            match r.metrics.get(&format!("{rep}/{m}")) {
                Some(v) => h.push_str(&format!(
                    "<td>{:.d$}<br><span class=\"ci\">[{:.d$}, {:.d$}]</span></td>",
                    v.value,
                    v.ci95[0],
                    v.ci95[1],
                    d = *digits
                )),
                None => h.push_str("<td>-</td>"),
            }
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n<p class=\"ci\">Mean over images with its 95% t-interval in brackets; &uarr; higher is better, &darr; lower is better.");
    if columns.iter().any(|(m, _, _)| *m == "rfid") {
        h.push_str(" rFID and KID are set statistics (reconstructions against their inputs, all scored images, FID Inception-v3); their brackets are a bootstrap over image pairs, and FID is biased upward at small image counts: compare only runs over the same count. The protocol is under Conventions.");
    }
    h.push_str("</p>\n");

    h
}

/// The tokens table: codes used, perplexity, entropy, special and sub-word shares, top tokens.
fn tokens_table(x: &serde_json::Value, reps: &[String]) -> String {
    let mut h = String::new();
    h.push_str("<h2>Tokens</h2>\n<table id=\"tokens\">\n<tr><th class=\"l\">model</th><th>codes used / vocabulary</th><th>perplexity</th><th>per-image entropy (nats)</th><th>special</th><th>sub-word</th><th class=\"l\">most used (share)</th></tr>\n");
    for rep in reps {
        let t = &x["tokens"][rep];
        if t.is_null() {
            continue;
        }
        let top: Vec<String> = t["top"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        format!(
                            "<code>{}</code> {:.1}%",
                            esc(e["text"].as_str().unwrap_or("?")),
                            100.0 * e["share"].as_f64().unwrap_or(0.0)
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        h.push_str(&format!(
            "<tr><td class=\"l\">{}</td><td>{} / {} ({:.2}%)</td><td>{:.1}</td><td>{:.3}</td><td>{:.1}%</td><td>{:.1}%</td><td class=\"l\">{}</td></tr>\n",
            esc(rep),
            t["codes_used"].as_u64().unwrap_or(0),
            t["vocab"].as_u64().unwrap_or(0),
            100.0 * t["usage"].as_f64().unwrap_or(0.0),
            t["perplexity"].as_f64().unwrap_or(0.0),
            t["mean_image_entropy"].as_f64().unwrap_or(0.0),
            100.0 * t["special_share"].as_f64().unwrap_or(0.0),
            100.0 * t["subword_share"].as_f64().unwrap_or(0.0),
            top.join(", ")
        ));
    }
    h.push_str("</table>\n");

    h
}

/// The grid's section: its rows, the error scale and the image.
fn grid_section(g: &serde_json::Value) -> String {
    let mut h = String::new();
    if let Some(file) = g["file"].as_str() {
        h.push_str("<h2>Originals, reconstructions and error</h2>\n<p>Rows, top to bottom:</p>\n<ol class=\"rows\">\n");
        for l in g["rows"].as_array().into_iter().flatten() {
            h.push_str(&format!("<li>{}</li>\n", esc(l.as_str().unwrap_or(""))));
        }
        h.push_str(&format!(
            "</ol>\n<p>Error rows: mean absolute error over the three channels per pixel, black = 0, red, yellow, white = {} or more. Images magnified {}x (nearest neighbour).</p>\n",
            g["error_scale"].as_f64().unwrap_or(0.0),
            g["scale"].as_u64().unwrap_or(1)
        ));
        h.push_str(&format!(
            "<img class=\"grid\" src=\"{}\" alt=\"originals, reconstructions and per-pixel error of the first test images\">\n",
            esc(file)
        ));
    }
    h
}

/// Write `index.html` for a result into its run folder.
pub fn write_page(dir: &Path, r: &ResultFile) -> Result<PathBuf> {
    let p = dir.join("index.html");
    crate::util::fsx::write_atomic(&p, page_html(r).as_bytes())?;
    Ok(p)
}
