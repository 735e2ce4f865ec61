//! The `nearest-support` suite: how much class signal a tokenizer's words carry, with no LLM.
//! Few-shot episodes are drawn exactly as the few-shot suite draws them (same pool, sampler
//! and seed), each image is written as the few-shot suite writes it (the same token selection
//! and text rule), and the query takes the label of the most similar support image under the
//! few-shot suite's own no-LLM reference rule ([`reference::RULE`]: cosine of word counts).
//! Beside the model's tokens, on the same episodes: raw pixels under the same nearest-support
//! rule (cosine of the grey values as stored for IDX data, at the model's input size for image
//! files), and optionally the VQ-VAE's codes as words under the same selection. It is the yardstick the tokenizer ablations
//! (`docs/ablations.md`) score recipes with: a judge can only read what these words carry.

use super::fewshot::{
    reference, sources::Inputs, task::Task, text_words, CheckedFewshot, Column, Episode,
    EpisodeSettings, FewshotSpec, TokenSettings,
};
use crate::data::SuiteData;
use crate::error::Result;
use crate::eval::results::{Measured, Sample};
use crate::eval::stats::{proportion, Metric};
use crate::eval::suite_kind::{Ctx, Outcome, SuiteKind};
use crate::util::fsx::sha256_hex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

fn d_ways() -> Vec<usize> {
    vec![2, 5]
}
fn d_shots() -> Vec<usize> {
    vec![1]
}
fn d_tol() -> f64 {
    0.03
}

/// `[episodes]` of a nearest-support suite.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NearestEpisodes {
    #[serde(default = "d_ways")]
    pub ways: Vec<usize>,
    /// Support images per class (one column each).
    #[serde(default = "d_shots")]
    pub shots: Vec<usize>,
    /// Episodes per cell (way x shots).
    pub count: usize,
    #[serde(default)]
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NearestSpec {
    /// The LQAE whose tokens are scored (as in a few-shot suite).
    pub model: String,
    /// The VQ-VAE whose codes are scored as words beside them (with `baselines = ["vqvae"]`).
    #[serde(default)]
    pub vqvae: Option<String>,
    pub data: SuiteData,
    /// Which tokens an image is written as: the few-shot suite's `[tokens]` (a list of
    /// `per_image` or `select` values is a sweep; calibration rows are not scored here).
    #[serde(default)]
    pub tokens: TokenSettings,
    pub episodes: NearestEpisodes,
    /// Scored beside the tokens on the same episodes: `pixels`, `vqvae`.
    #[serde(default)]
    pub baselines: Vec<String>,
    /// An accuracy may drop by this much (absolute) before the report calls it a regression.
    #[serde(default = "d_tol")]
    pub tolerance: f64,
}

/// A checked nearest-support suite: the few-shot form it runs through, and its baselines.
#[derive(Debug, Clone)]
pub struct CheckedNearest {
    pub fewshot: CheckedFewshot,
    pub vqvae: Option<String>,
    pub pixels: bool,
    pub tolerance: f64,
}

impl NearestSpec {
    pub fn check(self) -> std::result::Result<CheckedNearest, Vec<String>> {
        let mut out = Vec::new();
        let mut pixels = false;
        let mut vq = false;
        for b in &self.baselines {
            match b.as_str() {
                "pixels" => pixels = true,
                "vqvae" => vq = true,
                other => out.push(format!(
                    "`baselines`: `{other}` is not one of pixels, vqvae"
                )),
            }
        }
        if vq && self.vqvae.is_none() {
            out.push("`baselines`: `vqvae` needs `vqvae = \"<model>\"`".into());
        }
        if self.episodes.shots.contains(&0) {
            out.push("`episodes.shots`: a cell needs at least one support image per class".into());
        }
        let mut tokens = self.tokens;
        // Unset, `[tokens]` carries the few-shot suites' default calibration rows: dropped here.
        if !tokens.calibration.is_empty()
            && tokens.calibration != super::fewshot::calibration::default_names()
        {
            out.push(
                "`tokens.calibration`: calibration rows are not scored by a nearest-support suite (remove the key)"
                    .into(),
            );
        }
        tokens.calibration = Vec::new();
        let fs = FewshotSpec {
            model: self.model,
            data: self.data,
            llm: Default::default(),
            tokens,
            episodes: EpisodeSettings {
                ways: self.episodes.ways,
                columns: self
                    .episodes
                    .shots
                    .iter()
                    .map(|&shots| Column {
                        induction: false,
                        shots,
                        repeats: 0,
                    })
                    .collect(),
                count: self.episodes.count,
                seed: self.episodes.seed,
                file: None,
                names: "real".into(),
                induction_template: super::fewshot::spec::d_induction(),
                example_template: super::fewshot::spec::d_example(),
            },
            scoring: Default::default(),
            tolerance: self.tolerance,
        };
        let checked = fs.check();
        if let Err(e) = &checked {
            out.extend(e.iter().cloned());
        }
        if !out.is_empty() {
            return Err(out);
        }
        Ok(CheckedNearest {
            fewshot: checked.expect("no problems"),
            vqvae: self.vqvae.filter(|_| vq),
            pixels,
            tolerance: self.tolerance,
        })
    }
}

pub struct NearestSupport;

impl SuiteKind for NearestSupport {
    const NAME: &'static str = "nearest-support";
    type Spec = NearestSpec;
    type Checked = CheckedNearest;
    fn check(spec: NearestSpec) -> std::result::Result<CheckedNearest, Vec<String>> {
        spec.check()
    }
    fn run(spec: &CheckedNearest, cx: &Ctx) -> Result<Outcome> {
        run(spec, cx)
    }
}

/// The label the nearest support (cosine of dense vectors) gives the query, under the word
/// rule's tie-break ([`reference::nearest_by`]).
fn nearest_dense(e: &Episode, v: &HashMap<String, Vec<f64>>) -> String {
    let cos = |a: &[f64], b: &[f64]| {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
        let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
        if na == 0.0 || nb == 0.0 {
            0.0
        } else {
            dot / (na * nb)
        }
    };
    let q = &v[&e.query.image];
    reference::nearest_by(e, |support| cos(q, &v[support]))
}

/// Each representation's name and its prediction per episode, in episode order.
type Predictions = Vec<(String, Vec<String>)>;

fn run(spec: &CheckedNearest, cx: &Ctx) -> Result<Outcome> {
    let fs = &spec.fewshot;
    let inputs = Inputs::load(fs, cx)?;
    let task = Task::build(fs, &inputs)?;
    let mut inputs_sha = BTreeMap::new();
    inputs_sha.insert("lqae".to_string(), inputs.trained.sha256.clone());
    let mut reps: Predictions = task
        .rows
        .iter()
        .map(|row| {
            let p = task
                .episodes
                .iter()
                .map(|e| reference::predict(e, &row.words));
            (rep_name("lqae", &row.name), p.collect())
        })
        .collect();
    if let Some(name) = &spec.vqvae {
        let t = cx.zoo.load_for(name, &fs.data, "vqvae")?;
        inputs_sha.insert("vqvae".to_string(), t.sha256.clone());
        reps.extend(vqvae_predictions(fs, &t, &inputs, task.episodes, cx)?);
    }
    let idx: Vec<usize> = inputs.shown.iter().map(|x| x.1).collect();
    if spec.pixels {
        let size = inputs.trained.state.config.model.image_size as u32;
        let v = raw_pixels(&inputs, &idx, size)?;
        let p = task.episodes.iter().map(|e| nearest_dense(e, &v));
        reps.push(("pixels".into(), p.collect()));
    }
    let hashes = crate::data::input_hashes(&inputs.set, &idx)?;
    inputs_sha.insert("data".to_string(), sha256_hex(hashes.join(",").as_bytes()));
    let hash_of: HashMap<&str, &String> = inputs
        .shown
        .iter()
        .map(|(k, _)| k.as_str())
        .zip(&hashes)
        .collect();
    let (metrics, samples, table) = score(spec, &inputs, task.episodes, &reps, &hash_of);
    // The episodes, so that the figures can be recomputed outside (tests/data/nearest/golden.py
    // does) and replayed by a few-shot suite (`episodes.file`); their hash says which examples
    // were scored (equal in two runs: their samples pair up).
    let mut episodes = String::new();
    for e in task.episodes {
        episodes.push_str(&serde_json::to_string(e)?);
        episodes.push('\n');
    }
    let mut seeds = BTreeMap::new();
    seeds.insert("episodes".to_string(), fs.episodes.seed);
    Ok(Outcome {
        measured: Measured {
            seeds,
            inputs_sha256: inputs_sha,
            samples_sha256: sha256_hex(episodes.as_bytes()),
            metrics,
            extra: extra(fs, &inputs, &task),
        },
        samples,
        per_image: Vec::new(),
        files: vec![("episodes.jsonl".to_string(), episodes.into_bytes())],
        pages: Vec::new(),
        table: Some(table),
    })
}

/// The VQ-VAE's code ids as words (`c<id>`), written at each point as a tokens file's words
/// are, and the nearest support under them.
fn vqvae_predictions(
    fs: &CheckedFewshot,
    t: &crate::eval::zoo::Trained,
    inputs: &Inputs,
    eps: &[Episode],
    cx: &Ctx,
) -> Result<Predictions> {
    let vq = t.vqvae("vqvae")?;
    let size = t.state.config.model.image_size as u32;
    let mut raw: HashMap<String, Vec<String>> = HashMap::new();
    for chunk in inputs.shown.chunks(64) {
        let ix: Vec<usize> = chunk.iter().map(|x| x.1).collect();
        let batch = crate::data::batch::make_batch(&inputs.set, &ix, size, None, cx.device)?;
        let ids: Vec<Vec<u32>> = vq.encode(&batch)?.to_vec2()?;
        for ((k, _), row) in chunk.iter().zip(ids) {
            raw.insert(k.clone(), row.iter().map(|c| format!("c{c}")).collect());
        }
    }
    Ok(fs
        .points
        .iter()
        .map(|point| {
            let words: HashMap<String, Vec<String>> = raw
                .iter()
                .map(|(k, w)| (k.clone(), text_words(w, point)))
                .collect();
            let p = eps.iter().map(|e| reference::predict(e, &words));
            (rep_name("vqvae", &point.name), p.collect())
        })
        .collect())
}

/// Each representation's accuracy per cell (Wilson intervals), one sample per episode (the
/// query's hash, label and predicted label), and the table shown at the end.
fn score(
    spec: &CheckedNearest,
    inputs: &Inputs,
    eps: &[Episode],
    reps: &Predictions,
    hash_of: &HashMap<&str, &String>,
) -> (BTreeMap<String, Metric>, Vec<Sample>, String) {
    let class_of: HashMap<&str, u32> = inputs
        .set
        .class_names
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i as u32))
        .collect();
    let mut metrics = BTreeMap::new();
    let mut samples = Vec::new();
    let mut table =
        String::from("| representation | cell | nearest support | n |\n|---|---|---|---|\n");
    for (rep, preds) in reps {
        let mut cells: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for (i, (e, p)) in eps.iter().zip(preds).enumerate() {
            let ok = *p == e.query.label;
            let c = cells.entry(cell_name(e)).or_insert((0, 0));
            c.0 += ok as usize;
            c.1 += 1;
            samples.push(Sample {
                rep: format!("{rep}/{}", cell_name(e)),
                index: i,
                input_sha256: hash_of[e.query.image.as_str()].clone(),
                label: class_of[e.query.label.as_str()],
                pred: class_of.get(p.as_str()).copied().unwrap_or(u32::MAX),
                correct: ok,
                // One answer per episode: top-5 is top-1.
                top5: ok,
            });
        }
        for (cell, (k, n)) in cells {
            let m = proportion(k, n, spec.tolerance);
            table.push_str(&format!(
                "| {rep} | {cell} | {:.1}% [{:.1}, {:.1}] | {n} |\n",
                100.0 * m.value,
                100.0 * m.ci95[0],
                100.0 * m.ci95[1]
            ));
            metrics.insert(format!("{rep}/{cell}"), m);
        }
    }
    (metrics, samples, table)
}

/// The rules, the token settings and how many words each row wrote per image.
fn extra(
    fs: &CheckedFewshot,
    inputs: &Inputs,
    task: &Task,
) -> serde_json::Map<String, serde_json::Value> {
    let mut extra = serde_json::Map::new();
    extra.insert("rule".into(), reference::RULE.into());
    extra.insert(
        "pixels_rule".into(),
        "nearest support: cosine of the pixel values (an IDX data set's grey bytes / 255 as stored, image files at the model's input size), ties to the support shown first".into(),
    );
    extra.insert("tokens".into(), fs.tokens_written.clone());
    extra.insert("tokens_per_image".into(), inputs.tokens_per_image.into());
    let written: serde_json::Map<String, serde_json::Value> = task
        .rows
        .iter()
        .map(|r| (rep_name("lqae", &r.name), r.written.into()))
        .collect();
    extra.insert("written_per_image".into(), written.into());
    extra.insert("episodes".into(), task.episodes.len().into());
    extra
}

/// Every shown image's pixels as the pixel rule compares them: the grey values of an IDX data
/// set as stored (0-255 as 0-1, no resize), other images at the model's input size.
/// `idx`: the shown images' indices, in `inputs.shown` order.
fn raw_pixels(inputs: &Inputs, idx: &[usize], size: u32) -> Result<HashMap<String, Vec<f64>>> {
    if let crate::data::ImageSource::Grey(im) = &inputs.set.source {
        return Ok(inputs
            .shown
            .iter()
            .map(|(k, i)| {
                (
                    k.clone(),
                    im.image(*i).iter().map(|&b| b as f64 / 255.0).collect(),
                )
            })
            .collect());
    }
    let f = super::probe::pixel_features(&inputs.set, idx, size)?;
    Ok(inputs
        .shown
        .iter()
        .enumerate()
        .map(|(r, (k, _))| {
            let row = &f.x[r * f.d..(r + 1) * f.d];
            (k.clone(), row.iter().map(|&x| x as f64).collect())
        })
        .collect())
}

/// `lqae`, or `lqae/per_image-16` at a point of a sweep.
fn rep_name(rep: &str, point: &str) -> String {
    if point.is_empty() {
        rep.to_string()
    } else {
        format!("{rep}/{point}")
    }
}

/// `2-way-1-shot`.
fn cell_name(e: &Episode) -> String {
    format!("{}-way-{}-shot", e.ways, e.shots)
}
