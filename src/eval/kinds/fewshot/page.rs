//! The few-shot run's page, `index.html`: the table (and the sweep's plot), then every
//! episode as sent and answered: support images as thumbnails with their token text and
//! label, the query, the prompt as sent, the answer, right or wrong; filterable by cell and
//! outcome (`index.html#cell=2-way/induction-yes/shots-1/repeats-0&outcome=wrong` opens
//! filtered).

use super::episodes::{Episode, Shot};
use super::scoring::Answer;
use crate::data::LabelledImages;
use crate::error::{Error, Result};
use crate::eval::results::ResultFile;
use crate::util::html::esc;
use std::collections::HashMap;

pub const PAGE_FILE: &str = "index.html";
/// The judges' calibration curves.
pub const CALIBRATION_PLOT: &str = "calibration.png";
/// Thumbnails are at most this many pixels a side.
const THUMB: u32 = 64;

/// What the page shows besides the result: the episodes, every answer (judge-major, then row,
/// then episode), every row's token text per image, the thumbnails' files.
pub struct PageData {
    pub episodes: Vec<Episode>,
    pub answers: Vec<Answer>,
    /// (row name, image key -> token text), in row order (the same for every judge).
    pub texts: Vec<(String, HashMap<String, String>)>,
    /// Image key -> thumbnail file (relative to the run folder).
    pub images: HashMap<String, String>,
    /// The sweep's plot file, when there is one.
    pub plot: Option<String>,
    /// The judges' calibration plot, when there is one.
    pub calibration_plot: Option<String>,
}

/// A PNG thumbnail of every image shown, `(key, images/<index>.png, bytes)`.
pub fn thumbnails(
    set: &LabelledImages,
    shown: &[(String, usize)],
) -> Result<Vec<(String, String, Vec<u8>)>> {
    shown
        .iter()
        .map(|(k, i)| {
            let img = crate::data::batch::rgb(set, *i)?;
            let (w, h) = img.dimensions();
            let img = if w.max(h) > THUMB {
                let s = THUMB as f64 / w.max(h) as f64;
                image::imageops::resize(
                    &img,
                    ((w as f64 * s).round() as u32).max(1),
                    ((h as f64 * s).round() as u32).max(1),
                    image::imageops::FilterType::Triangle,
                )
            } else {
                img
            };
            let rgb = image::DynamicImage::ImageRgb32F(img).to_rgb8();
            let mut png = Vec::new();
            rgb.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                .map_err(|e| Error::Msg(format!("cannot encode the thumbnail of {k}: {e}")))?;
            Ok((k.clone(), format!("images/{i}.png"), png))
        })
        .collect()
}

/// Escaped text with `**bold**` spans as `<b>`.
fn markdown_bold(s: &str) -> String {
    let mut out = String::new();
    for (i, part) in esc(s).split("**").enumerate() {
        if i % 2 == 1 {
            out.push_str(&format!("<b>{part}</b>"));
        } else {
            out.push_str(part);
        }
    }
    out
}

/// A Markdown table (and `**bold**` or `### heading` lines) as HTML; other lines as
/// paragraphs.
pub fn markdown_html(md: &str) -> String {
    let mut h = String::new();
    let mut in_table = false;
    let mut header = true;
    let bold = markdown_bold;
    for line in md.lines() {
        let t = line.trim();
        if t.starts_with('|') {
            let cells: Vec<&str> = t.trim_matches('|').split('|').map(str::trim).collect();
            if cells
                .iter()
                .all(|c| c.chars().all(|ch| ch == '-' || ch == ':'))
            {
                continue;
            }
            if !in_table {
                h.push_str("<table class=\"md\">\n");
                in_table = true;
                header = true;
            }
            let tag = if header { "th" } else { "td" };
            h.push_str("<tr>");
            for (i, c) in cells.iter().enumerate() {
                let class = if i == 0 { " class=\"l\"" } else { "" };
                h.push_str(&format!("<{tag}{class}>{}</{tag}>", bold(c)));
            }
            h.push_str("</tr>\n");
            header = false;
            continue;
        }
        if in_table {
            h.push_str("</table>\n");
            in_table = false;
        }
        if let Some(x) = t.strip_prefix("### ") {
            h.push_str(&format!("<h3>{}</h3>\n", bold(x)));
        } else if !t.is_empty() {
            h.push_str(&format!("<p>{}</p>\n", bold(t)));
        }
    }
    if in_table {
        h.push_str("</table>\n");
    }
    h
}

const STYLE: &str = "body{font-family:'DejaVu Sans',Arial,sans-serif;margin:24px;color:#111;background:#fff;max-width:1400px}
table{border-collapse:collapse;margin:8px 0 16px}th,td{border:1px solid #bbb;padding:4px 8px;text-align:right;vertical-align:top}
th{background:#e8eef7}td.l,th.l{text-align:left}.meta{color:#444}code{background:#f3f3f3;padding:0 3px}
#filters{position:sticky;top:0;background:#fafafa;border:1px solid #ccc;padding:8px;margin:12px 0;z-index:1}
section.ep{border:1px solid #ccc;border-left:6px solid #999;margin:10px 0;padding:6px 10px}
section.ep.right{border-left-color:#2e8b3a}section.ep.wrong{border-left-color:#c62828}
section.ep h3{margin:4px 0 8px;font-size:16px}.badge{display:inline-block;padding:1px 8px;border-radius:3px;color:#fff;font-size:13px}
.right .badge{background:#2e8b3a}.wrong .badge{background:#c62828}
table.shots td{text-align:left}table.shots img{width:56px;height:56px;image-rendering:pixelated;border:1px solid #ccc}
td.tok{font-family:'DejaVu Sans Mono',monospace;font-size:12px;max-width:900px;word-break:break-word}
tr.query td{background:#fff8e1}pre{white-space:pre-wrap;word-break:break-word;background:#f6f6f6;padding:6px;font-size:12px;max-height:320px;overflow:auto}
img.plot{max-width:100%;border:1px solid #ccc}
.gate{border:1px solid #9c9;background:#f1faf1;padding:4px 12px;margin:12px 0}.gate.bad{border-color:#c62828;background:#fdecea}";

const SCRIPT: &str = "function applyFilter(){var c=document.getElementById('cell').value,o=document.getElementById('outcome').value,n=0,all=document.querySelectorAll('section.ep');
all.forEach(function(s){var show=(c===''||s.dataset.cell===c)&&(o===''||s.dataset.outcome===o);s.style.display=show?'':'none';if(show)n++;});
document.getElementById('shown').textContent=n+' of '+all.length+' episodes shown';
var h=[];if(c)h.push('cell='+encodeURIComponent(c));if(o)h.push('outcome='+o);history.replaceState(null,'',h.length?'#'+h.join('&'):location.pathname);}
function fromHash(){var p=new URLSearchParams(location.hash.slice(1));if(p.has('cell'))document.getElementById('cell').value=p.get('cell');if(p.has('outcome'))document.getElementById('outcome').value=p.get('outcome');applyFilter();}
document.getElementById('cell').addEventListener('change',applyFilter);document.getElementById('outcome').addEventListener('change',applyFilter);fromHash();";

/// A JSON value as text: strings without their quotes, lists with theirs.
fn plain(v: &serde_json::Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), String::from)
}

/// One episode as sent and answered: its support images with their token text, the query,
/// the answer, and the prompt (folded).
fn episode_section(
    a: &Answer,
    e: &Episode,
    texts: &HashMap<String, String>,
    images: &HashMap<String, String>,
) -> String {
    let mut h = String::new();
    let outcome = if a.correct { "right" } else { "wrong" };
    h.push_str(&format!(
        "<section class=\"ep {outcome}\" data-cell=\"{}\" data-outcome=\"{outcome}\">\n<h3><span class=\"badge\">{outcome}</span> {} #{}</h3>\n",
        esc(&a.cell),
        esc(&a.cell),
        a.index
    ));
    if let Some(real) = &e.names {
        let pairs: Vec<String> = e
            .classes
            .iter()
            .zip(real)
            .map(|(n, r)| format!("<code>{}</code> = {}", esc(n), esc(r)))
            .collect();
        h.push_str(&format!(
            "<p class=\"meta\">nonsense names: {}</p>\n",
            pairs.join(", ")
        ));
    }
    h.push_str("<table class=\"shots\">\n<tr><th class=\"l\">image</th><th class=\"l\">label</th><th class=\"l\">token text</th></tr>\n");
    let row = |s: &Shot, query: bool| {
        let img = images.get(&s.image).map_or(String::new(), |f| {
            format!("<img src=\"{}\" alt=\"{}\">", esc(f), esc(&s.image))
        });
        format!(
            "<tr{}><td>{img}<br><span class=\"meta\">{}{}</span></td><td>{}</td><td class=\"tok\">{}</td></tr>\n",
            if query { " class=\"query\"" } else { "" },
            if query { "query " } else { "" },
            esc(&s.image),
            esc(&s.label),
            esc(texts.get(&s.image).map_or("", String::as_str))
        )
    };
    for s in &e.support {
        h.push_str(&row(s, false));
    }
    h.push_str(&row(&e.query, true));
    h.push_str("</table>\n");
    h.push_str(&format!(
        "<p>answer <code>{}</code> &rarr; predicted <b>{}</b>, true <b>{}</b></p>\n",
        esc(a.answer.trim()),
        esc(a.predicted.as_deref().unwrap_or("(no class)")),
        esc(&a.label)
    ));
    h.push_str(&format!(
        "<details><summary>prompt as sent{}</summary><pre>{}</pre></details>\n</section>\n",
        a.prompt_tokens
            .map_or(String::new(), |t| format!(" ({t} tokens)")),
        esc(&a.prompt)
    ));
    h
}

/// The page: from the result (table, settings, provenance) and what the run captured.
pub fn page_html(r: &ResultFile, d: &PageData) -> String {
    let x = &r.extra;
    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    h.push_str(&format!(
        "<title>{} &middot; {}</title>\n<style>\n{STYLE}\n</style>\n</head>\n<body>\n",
        esc(&r.suite),
        esc(&r.run_id)
    ));
    h.push_str(&format!("<h1>Few-shot: {}</h1>\n", esc(&r.suite)));
    if let Some(desc) = r.config["description"].as_str().filter(|s| !s.is_empty()) {
        h.push_str(&format!("<p>{}</p>\n", esc(desc)));
    }
    let tokens = &x["tokens"];
    h.push_str(&format!(
        "<p class=\"meta\">run <code>{}</code> &middot; model <code>{}</code> &middot; LLM <code>{}</code> ({}) &middot; scoring <code>{}</code> &middot; tokens per image <code>{}</code>, select <code>{}</code> &middot; names <code>{}</code> &middot; commit <code>{}</code> &middot; {} &middot; {:.0} s</p>\n",
        esc(&r.run_id),
        esc(r.config["model"].as_str().unwrap_or("?")),
        esc(x["llm_model"].as_str().unwrap_or("?")),
        esc(x["server"].as_str().unwrap_or("?")),
        esc(x["strategy"].as_str().unwrap_or("?")),
        esc(&plain(&tokens["per_image"])),
        esc(&plain(&tokens["select"])),
        esc(r.config["episodes"]["names"].as_str().unwrap_or("real")),
        esc(r.git_commit.get(..12).unwrap_or(&r.git_commit)),
        esc(&r.device),
        r.wall_time_s
    ));
    // The judge's calibration first: whether it reads these tokens at all.
    let notes = super::gate::report_notes(r);
    if !notes.is_empty() {
        let bad = notes
            .iter()
            .any(|n| n.contains(&super::summary::UNREADABLE.to_uppercase()));
        h.push_str(&format!(
            "<div id=\"gate\" class=\"{}\"><ul>\n",
            if bad { "gate bad" } else { "gate" }
        ));
        for n in &notes {
            h.push_str(&format!("<li>{}</li>\n", markdown_bold(n)));
        }
        h.push_str("</ul></div>\n");
    }
    if let Some(plot) = &d.calibration_plot {
        h.push_str(&format!(
            "<h2>Calibration</h2>\n<img class=\"plot\" src=\"{}\" alt=\"judge top-1 against the share of class words\">\n",
            esc(plot)
        ));
    }
    if let Some(plot) = &d.plot {
        h.push_str(&format!(
            "<h2>Sweep</h2>\n<img class=\"plot\" src=\"{}\" alt=\"top-1 against tokens per image\">\n",
            esc(plot)
        ));
    }

    h.push_str("<h2>Table</h2>\n<div id=\"table\">\n");
    h.push_str(&markdown_html(x["table"].as_str().unwrap_or("")));
    h.push_str("</div>\n<p class=\"meta\">Top-1 accuracy (%) with its 95% Wilson interval and the number of episodes; the answer is right when it matches the query's class name exactly (after normalisation).</p>\n");
    let mut cells: Vec<&str> = d.answers.iter().map(|a| a.cell.as_str()).collect();
    cells.sort();
    cells.dedup();
    h.push_str("<h2>Episodes</h2>\n<div id=\"filters\">cell <select id=\"cell\"><option value=\"\">all cells</option>");
    for c in &cells {
        h.push_str(&format!("<option value=\"{0}\">{0}</option>", esc(c)));
    }
    h.push_str("</select> &nbsp; outcome <select id=\"outcome\"><option value=\"\">all</option><option value=\"right\">right</option><option value=\"wrong\">wrong</option></select> &nbsp; <span id=\"shown\"></span></div>\n");

    let n = d.episodes.len().max(1);
    let empty = HashMap::new();
    for (j, a) in d.answers.iter().enumerate() {
        let texts = d
            .texts
            .get((j / n) % d.texts.len().max(1))
            .map_or(&empty, |t| &t.1);
        h.push_str(&episode_section(a, &d.episodes[j % n], texts, &d.images));
    }
    h.push_str(&format!(
        "<script>\n{SCRIPT}\n</script>\n</body>\n</html>\n"
    ));
    h
}
