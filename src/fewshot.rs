//! Few-shot image classification by a large language model reading LQAE tokens: the protocol
//! of Frozen's Open-Ended miniImageNet as LQAE used it. An N-way episode shows K support
//! images per class (optionally after a task-induction sentence and repeated), each written as
//! the text of its LQAE tokens and followed by its class name, then the query image; the LLM
//! must name the query's class.
//!
//! Everything the paper left unsaid is a recorded setting: how many of an image's tokens are
//! written and which (`tokens`), the prompt templates, and the scoring strategy:
//! - `generate`: greedy generation, exact match of the class name (the paper's protocol);
//! - `loglik`: the log-likelihood of each class name after the prompt (needs a server that
//!   returns prompt log-probabilities, `echo`);
//! - `first-token`: the top log-probabilities of the first answer token, matched to the class
//!   names they begin.
//!
//! A server that cannot give what a strategy needs stops the run with that reason; nothing is
//! ever scored at chance silently. Every answer goes through the response cache first, so a
//! killed run resumes without repeating a request.

use crate::data::{ImageSource, LabelledImages, Split};
use crate::error::{Error, Result};
use crate::llm::{self, ClientSettings, LlmClient, ResponseCache, Secret};
use crate::model::{Autoencoder, DataConfig};
use crate::results::{self, ResultFile, Sample};
use crate::rng::Rng;
use crate::suites::{Suite, SuiteData};
use candle_core::Device;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

// ---------------------------------------------------------------------------------------
// Settings

fn d_tol() -> f64 {
    0.05
}
fn d_model_name() -> String {
    "smollm2".into()
}
fn d_api() -> String {
    "completions".into()
}
fn d_key_env() -> String {
    "OPENAI_API_KEY".into()
}
fn d_one() -> usize {
    1
}
fn d_timeout() -> f64 {
    120.0
}
fn d_retries() -> u32 {
    6
}
fn d_answer_tokens() -> usize {
    8
}
fn d_server_ctx() -> usize {
    4096
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmSettings {
    /// Base URL of an OpenAI-compatible server (`http://host:port` or `.../v1`). Empty or
    /// absent: the embedded llama-server with SmolLM2-135M-Instruct on a free loopback port.
    #[serde(default)]
    pub url: Option<String>,
    /// The `model` field of each request.
    #[serde(default = "d_model_name")]
    pub model: String,
    /// `completions` (`/v1/completions`) or `chat` (`/v1/chat/completions`, one user message).
    #[serde(default = "d_api")]
    pub api: String,
    /// The environment variable holding the API key (`LQAE_LLM_API_KEY` is read first).
    /// The key itself is never written anywhere.
    #[serde(default = "d_key_env")]
    pub api_key_env: String,
    #[serde(default = "d_one")]
    pub concurrency: usize,
    #[serde(default = "d_timeout")]
    pub timeout_s: f64,
    #[serde(default = "d_retries")]
    pub max_retries: u32,
    /// The model's context in tokens (the embedded server's is `server_context`).
    #[serde(default)]
    pub context: Option<usize>,
    /// Tokens generated for an answer (`generate`).
    #[serde(default = "d_answer_tokens")]
    pub max_answer_tokens: usize,
    /// The response cache file; default `$LQAE_CACHE/llm/responses.jsonl`.
    #[serde(default)]
    pub cache: Option<String>,
    /// Prices per million tokens, for the cost line of the result (0: not reported).
    #[serde(default)]
    pub price_prompt_per_million: f64,
    #[serde(default)]
    pub price_completion_per_million: f64,
    /// Extra fields merged into every request body (e.g. `{ top_k = 1 }`).
    #[serde(default)]
    pub extra: toml::Table,
    /// Embedded server: context (`-c`) and threads (`-t`; 1 is steadiest on 2 cores).
    #[serde(default = "d_server_ctx")]
    pub server_context: usize,
    #[serde(default = "d_one")]
    pub server_threads: usize,
}

impl Default for LlmSettings {
    fn default() -> Self {
        toml::from_str("").expect("all fields have defaults")
    }
}

fn d_per_image() -> usize {
    16
}
fn d_select() -> String {
    "stride".into()
}
fn d_true() -> bool {
    true
}
fn d_sep() -> String {
    " ".into()
}

/// How an image becomes text.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    /// Tokens written per image (after filtering); 0 with `select = "all"` writes every one.
    #[serde(default = "d_per_image")]
    pub per_image: usize,
    /// `raster` (the first ones in raster order), `stride` (evenly spaced over the grid),
    /// `frequent` (the image's most frequent distinct tokens, ties by first position), `all`.
    #[serde(default = "d_select")]
    pub select: String,
    /// Keep the LM tokenizer's special tokens (`[CLS]`, `[MASK]`, ...).
    #[serde(default)]
    pub keep_special: bool,
    /// Keep pieces that continue a word (`##ing`), written without their marker.
    #[serde(default = "d_true")]
    pub keep_subword: bool,
    #[serde(default = "d_sep")]
    pub separator: String,
}

impl Default for TokenSettings {
    fn default() -> Self {
        toml::from_str("").expect("all fields have defaults")
    }
}

/// One column of the table: task induction or not, inner shots, repeats of the support set.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    pub induction: bool,
    pub shots: usize,
    #[serde(default)]
    pub repeats: usize,
}

impl Column {
    pub fn name(&self) -> String {
        format!(
            "induction-{}/shots-{}/repeats-{}",
            if self.induction { "yes" } else { "no" },
            self.shots,
            self.repeats
        )
    }
}

/// Frozen's table: no induction; induction with 1, 3, 5 inner shots; 1 shot repeated 1, 3, 5 times.
pub fn paper_columns() -> Vec<Column> {
    let c = |induction, shots, repeats| Column {
        induction,
        shots,
        repeats,
    };
    vec![
        c(false, 1, 0),
        c(true, 1, 0),
        c(true, 3, 0),
        c(true, 5, 0),
        c(true, 1, 1),
        c(true, 1, 3),
        c(true, 1, 5),
    ]
}

fn d_ways() -> Vec<usize> {
    vec![2, 5]
}
fn d_induction() -> String {
    "Classify the context into {labels}.\n".into()
}
fn d_example() -> String {
    "Context: {image}\nClassification: {label}.\n".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpisodeSettings {
    #[serde(default = "d_ways")]
    pub ways: Vec<usize>,
    /// Default: the paper's seven columns.
    #[serde(default = "paper_columns")]
    pub columns: Vec<Column>,
    /// Episodes per cell (way x column).
    pub count: usize,
    #[serde(default)]
    pub seed: u64,
    /// Replay the episodes of this file instead of sampling: JSONL (one episode per line, as
    /// a run writes them into `episodes.jsonl`) or CSV (`episode,role,image,label,induction,
    /// repeats`, one row per image); `ways`, `columns`, `count` are then ignored.
    #[serde(default)]
    pub file: Option<String>,
    /// The task-induction sentence; `{labels}` becomes `"a", "b" or "c"`.
    #[serde(default = "d_induction")]
    pub induction_template: String,
    /// One example; `{image}` is the image's token text, `{label}` its class name. The query
    /// is this template cut just before `{label}` (trailing spaces trimmed).
    #[serde(default = "d_example")]
    pub example_template: String,
}

fn d_strategy() -> String {
    "generate".into()
}
fn d_top() -> usize {
    20
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoringSettings {
    /// `generate`, `loglik` or `first-token`.
    #[serde(default = "d_strategy")]
    pub strategy: String,
    /// Alternatives asked for by `first-token`.
    #[serde(default = "d_top")]
    pub top_logprobs: usize,
}

impl Default for ScoringSettings {
    fn default() -> Self {
        toml::from_str("").expect("all fields have defaults")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FewshotSpec {
    /// The LQAE whose tokens are written: a configuration under configs/ (trained once,
    /// cached) or a run folder.
    pub model: String,
    /// The images episodes are drawn from: the test split (`test_limit` of them).
    pub data: SuiteData,
    #[serde(default)]
    pub llm: LlmSettings,
    #[serde(default)]
    pub tokens: TokenSettings,
    pub episodes: EpisodeSettings,
    #[serde(default)]
    pub scoring: ScoringSettings,
    /// An accuracy may drop by this much (absolute) before the report calls it a regression.
    #[serde(default = "d_tol")]
    pub tolerance: f64,
}

pub const STRATEGIES: &[&str] = &["generate", "loglik", "first-token"];
pub const SELECTIONS: &[&str] = &["raster", "stride", "frequent", "all"];

impl FewshotSpec {
    /// Settings that parse but cannot work, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !STRATEGIES.contains(&self.scoring.strategy.as_str()) {
            out.push(format!(
                "`scoring.strategy`: `{}` is not one of {}",
                self.scoring.strategy,
                STRATEGIES.join(", ")
            ));
        }
        if !SELECTIONS.contains(&self.tokens.select.as_str()) {
            out.push(format!(
                "`tokens.select`: `{}` is not one of {}",
                self.tokens.select,
                SELECTIONS.join(", ")
            ));
        }
        if self.tokens.per_image == 0 && self.tokens.select != "all" {
            out.push(
                "`tokens.per_image`: 0 writes no tokens (use select = \"all\" for every token)"
                    .into(),
            );
        }
        if !matches!(self.llm.api.as_str(), "completions" | "chat") {
            out.push(format!(
                "`llm.api`: `{}` is not `completions` or `chat`",
                self.llm.api
            ));
        }
        if self.scoring.strategy == "loglik" && self.llm.api != "completions" {
            out.push("`scoring.strategy`: `loglik` needs prompt log-probabilities, which only `/v1/completions` with `echo` gives; set llm.api = \"completions\"".into());
        }
        if self.episodes.file.is_none() {
            if self.episodes.count == 0 {
                out.push("`episodes.count`: 0 episodes per cell".into());
            }
            if let Some(w) = self.episodes.ways.iter().find(|&&w| w < 2) {
                out.push(format!("`episodes.ways`: {w}-way is not a classification"));
            }
            if self.episodes.columns.iter().any(|c| c.shots == 0) {
                out.push("`episodes.columns`: shots must be at least 1".into());
            }
        }
        if !self.episodes.example_template.contains("{image}")
            || !self.episodes.example_template.contains("{label}")
        {
            out.push("`episodes.example_template`: needs both `{image}` and `{label}`".into());
        }
        if self.llm.concurrency == 0 {
            out.push("`llm.concurrency`: must be at least 1".into());
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// Episodes

/// One image of an episode: its key in the data set (file name, or index in the test split
/// for IDX data) and its class name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shot {
    pub image: String,
    pub label: String,
}

/// An episode, replayable from its JSON line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Episode {
    pub ways: usize,
    pub induction: bool,
    pub shots: usize,
    pub repeats: usize,
    /// Index within its cell.
    pub index: usize,
    /// The class names, in the order the induction sentence names them.
    pub classes: Vec<String>,
    /// Support examples in prompt order (the whole list is shown 1 + `repeats` times).
    pub support: Vec<Shot>,
    pub query: Shot,
}

impl Episode {
    pub fn column(&self) -> Column {
        Column {
            induction: self.induction,
            shots: self.shots,
            repeats: self.repeats,
        }
    }
    pub fn cell(&self) -> String {
        format!("{}-way/{}", self.ways, self.column().name())
    }
}

/// The key of image `i` of a set: its file name, or its index for in-memory (IDX) images.
pub fn image_key(set: &LabelledImages, i: usize) -> String {
    match &set.source {
        ImageSource::Grey(_) => i.to_string(),
        ImageSource::Files(f) => f[i]
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| f[i].display().to_string()),
    }
}

/// Sample episodes from `pool` (indices into `set`). Episodes with the same ways, shots and
/// index share their images whatever the induction and repeats, so columns are paired.
pub fn sample_episodes(
    set: &LabelledImages,
    pool: &[usize],
    ways: &[usize],
    columns: &[Column],
    count: usize,
    seed: u64,
) -> Result<Vec<Episode>> {
    let n_classes = set.class_names.len();
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); n_classes];
    for &i in pool {
        by_class[set.labels[i] as usize].push(i);
    }
    let mut out = Vec::new();
    for &w in ways {
        for col in columns {
            let usable: Vec<usize> = (0..n_classes)
                .filter(|&c| by_class[c].len() > col.shots)
                .collect();
            if usable.len() < w {
                return Err(Error::setting(
                    "episodes",
                    format!(
                        "{w}-way {}-shot episodes need {w} classes with at least {} images each; the pool has {} such classes (raise data.test_limit)",
                        col.shots,
                        col.shots + 1,
                        usable.len()
                    ),
                ));
            }
            for e in 0..count {
                let mut rng = Rng::derive(seed, &format!("{w}-way/shots-{}", col.shots), e as u64);
                let perm = rng.permutation(usable.len());
                let classes: Vec<usize> = perm[..w].iter().map(|&k| usable[k]).collect();
                let q_class = classes[rng.below(w)];
                let mut support = Vec::new();
                let mut query = None;
                for &c in &classes {
                    let imgs = &by_class[c];
                    let p = rng.permutation(imgs.len());
                    for &k in &p[..col.shots] {
                        support.push(imgs[k]);
                    }
                    if c == q_class {
                        query = Some(imgs[p[col.shots]]);
                    }
                }
                let order = rng.permutation(support.len());
                let shot = |i: usize| Shot {
                    image: image_key(set, i),
                    label: set.class_names[set.labels[i] as usize].clone(),
                };
                out.push(Episode {
                    ways: w,
                    induction: col.induction,
                    shots: col.shots,
                    repeats: col.repeats,
                    index: e,
                    classes: classes
                        .iter()
                        .map(|&c| set.class_names[c].clone())
                        .collect(),
                    support: order.iter().map(|&k| shot(support[k])).collect(),
                    query: shot(query.expect("the query class is one of the classes")),
                });
            }
        }
    }
    Ok(out)
}

/// Episodes from a CSV file in long form, header `episode,role,image,label,induction,repeats`:
/// one row per image, `role` `support` (in prompt order) or `query` (one per episode),
/// `induction` `true`/`false`, `repeats` the extra showings of the support set. The classes
/// are the support labels in order of first appearance; shots = supports / classes. Returns
/// `(line of the episode's first row, episode)`.
pub fn parse_episode_csv(text: &str) -> std::result::Result<Vec<(usize, Episode)>, String> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let want = ["episode", "role", "image", "label", "induction", "repeats"];
    let (_, head) = lines.next().ok_or("the file is empty")?;
    let cols: Vec<&str> = head.split(',').map(str::trim).collect();
    if cols != want {
        return Err(format!(
            "line 1: the header must be `{}`, found `{head}`",
            want.join(",")
        ));
    }
    let mut order: Vec<String> = Vec::new();
    let mut rows: HashMap<String, (usize, Vec<[String; 5]>)> = HashMap::new();
    for (n, l) in lines {
        let f: Vec<String> = l.split(',').map(|x| x.trim().to_string()).collect();
        let [id, role, image, label, ind, rep] = f.as_slice() else {
            return Err(format!(
                "line {}: {} fields, 6 expected (commas inside a field are not supported)",
                n + 1,
                f.len()
            ));
        };
        if !rows.contains_key(id) {
            order.push(id.clone());
        }
        rows.entry(id.clone())
            .or_insert((n + 1, Vec::new()))
            .1
            .push([
                role.clone(),
                image.clone(),
                label.clone(),
                ind.clone(),
                rep.clone(),
            ]);
    }
    let mut per_cell: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for id in order {
        let (line, rs) = &rows[&id];
        let bad = |m: String| format!("episode `{id}` (line {line}): {m}");
        let ind = match rs[0][3].as_str() {
            "true" | "yes" | "1" => true,
            "false" | "no" | "0" => false,
            x => return Err(bad(format!("induction `{x}` is not true/false"))),
        };
        let repeats: usize = rs[0][4]
            .parse()
            .map_err(|_| bad(format!("repeats `{}` is not a count", rs[0][4])))?;
        if rs.iter().any(|r| r[3] != rs[0][3] || r[4] != rs[0][4]) {
            return Err(bad("induction and repeats differ between its rows".into()));
        }
        let shot = |r: &[String; 5]| Shot {
            image: r[1].clone(),
            label: r[2].clone(),
        };
        let support: Vec<Shot> = rs.iter().filter(|r| r[0] == "support").map(shot).collect();
        let queries: Vec<Shot> = rs.iter().filter(|r| r[0] == "query").map(shot).collect();
        if let Some(r) = rs.iter().find(|r| r[0] != "support" && r[0] != "query") {
            return Err(bad(format!("role `{}` is not support or query", r[0])));
        }
        let [query] = queries.as_slice() else {
            return Err(bad(format!("{} query rows, 1 expected", queries.len())));
        };
        let mut classes: Vec<String> = Vec::new();
        for s in &support {
            if !classes.contains(&s.label) {
                classes.push(s.label.clone());
            }
        }
        if classes.is_empty() || !support.len().is_multiple_of(classes.len()) {
            return Err(bad(format!(
                "{} support rows do not give every one of its {} classes the same number of shots",
                support.len(),
                classes.len()
            )));
        }
        let mut ep = Episode {
            ways: classes.len(),
            induction: ind,
            shots: support.len() / classes.len(),
            repeats,
            index: 0,
            classes,
            support,
            query: query.clone(),
        };
        let k = per_cell.entry(ep.cell()).or_insert(0);
        ep.index = *k;
        *k += 1;
        out.push((*line, ep));
    }
    Ok(out)
}

/// Episodes from a JSONL file (one episode per line, as runs write `episodes.jsonl`) or a CSV
/// file (`.csv`, see [`parse_episode_csv`]), checked against the data set.
pub fn read_episodes(path: &Path, set: &LabelledImages) -> Result<Vec<Episode>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::file(path, format!("cannot read the episode file: {e}")))?;
    let keys: HashMap<String, usize> = (0..set.len()).map(|i| (image_key(set, i), i)).collect();
    let parsed: Vec<(usize, Episode)> = if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
    {
        parse_episode_csv(&text).map_err(|m| Error::file(path, m))?
    } else {
        let mut v = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let ep: Episode = serde_json::from_str(line)
                .map_err(|e| Error::file(path, format!("line {}: not an episode: {e}", n + 1)))?;
            v.push((n + 1, ep));
        }
        v
    };
    let mut out = Vec::new();
    for (line, ep) in parsed {
        let n = line - 1;
        if ep.ways != ep.classes.len() || ep.support.len() != ep.ways * ep.shots {
            return Err(Error::file(path, format!("line {line}: a {}-way {}-shot episode needs {} classes and {} support images, it has {} and {}", ep.ways, ep.shots, ep.ways, ep.ways * ep.shots, ep.classes.len(), ep.support.len())));
        }
        for s in ep.support.iter().chain(std::iter::once(&ep.query)) {
            let i = *keys.get(&s.image).ok_or_else(|| {
                Error::file(
                    path,
                    format!(
                        "line {}: image `{}` is not in the data set's test split",
                        n + 1,
                        s.image
                    ),
                )
            })?;
            let truth = &set.class_names[set.labels[i] as usize];
            if truth != &s.label {
                return Err(Error::file(path, format!("line {}: image `{}` is labelled `{}` here but `{truth}` in the data set (a different data set or split?)", n + 1, s.image, s.label)));
            }
            if !ep.classes.contains(&s.label) {
                return Err(Error::file(
                    path,
                    format!(
                        "line {}: label `{}` is not among the episode's classes",
                        n + 1,
                        s.label
                    ),
                ));
            }
        }
        out.push(ep);
    }
    if out.is_empty() {
        return Err(Error::file(path, "holds no episodes"));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Images as text, prompts

/// The token text of one image (ids in raster order) under `s`.
pub fn image_text(ids: &[u32], vocab: &crate::lm::Vocab, s: &TokenSettings) -> String {
    let kept: Vec<(u32, String)> = ids
        .iter()
        .map(|&id| (id, vocab.token_text(id)))
        .filter(|(_, t)| (s.keep_special || !t.special) && (s.keep_subword || t.starts_word))
        .filter(|(_, t)| !t.text.trim().is_empty())
        .map(|(id, t)| (id, t.text.trim().to_string()))
        .collect();
    let m = kept.len();
    let n = if s.select == "all" {
        m
    } else {
        s.per_image.min(m)
    };
    let chosen: Vec<&str> = match s.select.as_str() {
        "raster" => kept[..n].iter().map(|x| x.1.as_str()).collect(),
        "stride" => (0..n).map(|i| kept[i * m / n.max(1)].1.as_str()).collect(),
        "frequent" => {
            let mut count: HashMap<u32, (usize, usize)> = HashMap::new();
            for (pos, (id, _)) in kept.iter().enumerate() {
                count.entry(*id).or_insert((0, pos)).0 += 1;
            }
            let mut ranked: Vec<(u32, usize, usize)> =
                count.into_iter().map(|(id, (c, p))| (id, c, p)).collect();
            ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
            ranked
                .iter()
                .take(n)
                .map(|&(_, _, p)| kept[p].1.as_str())
                .collect()
        }
        _ => kept.iter().map(|x| x.1.as_str()).collect(),
    };
    chosen.join(&s.separator)
}

/// `"a" or "b"`, `"a", "b" or "c"`.
pub fn label_list(labels: &[String]) -> String {
    let q: Vec<String> = labels.iter().map(|l| format!("\"{l}\"")).collect();
    match q.len() {
        0 => String::new(),
        1 => q[0].clone(),
        n => format!("{} or {}", q[..n - 1].join(", "), q[n - 1]),
    }
}

/// The prompt of an episode, ending where the query's label would start.
pub fn prompt(ep: &Episode, texts: &HashMap<String, String>, e: &EpisodeSettings) -> String {
    let mut p = String::new();
    if ep.induction {
        p.push_str(
            &e.induction_template
                .replace("{labels}", &label_list(&ep.classes)),
        );
    }
    let example = |s: &Shot| {
        e.example_template
            .replace("{image}", &texts[&s.image])
            .replace("{label}", &s.label)
    };
    for _ in 0..=ep.repeats {
        for s in &ep.support {
            p.push_str(&example(s));
        }
    }
    let cut = e
        .example_template
        .find("{label}")
        .unwrap_or(e.example_template.len());
    let query = e.example_template[..cut].replace("{image}", &texts[&ep.query.image]);
    p.push_str(query.trim_end());
    p
}

/// Lower-case, inner whitespace collapsed, surrounding spaces and final punctuation removed.
pub fn normalize(s: &str) -> String {
    let first = s.trim_start().lines().next().unwrap_or("");
    let t: Vec<&str> = first.split_whitespace().collect();
    t.join(" ")
        .trim_end_matches(['.', ',', ';', ':', '!', '?'])
        .trim()
        .to_lowercase()
}

/// Exact match of a generated answer against the class names.
pub fn match_answer(answer: &str, classes: &[String]) -> Option<usize> {
    let a = normalize(answer);
    classes.iter().position(|c| normalize(c) == a)
}

/// `first-token`: the most likely first tokens, best first; the first one that begins exactly
/// one class name (or is that name followed by more text) decides. Tokens that fit several
/// names are passed over.
pub fn first_token_pick(top: &[(String, f64)], classes: &[String]) -> Option<usize> {
    let names: Vec<String> = classes.iter().map(|c| c.to_lowercase()).collect();
    for (tok, _) in top {
        let t = tok
            .trim_start_matches(['Ġ', '▁'])
            .trim_start()
            .to_lowercase();
        if t.is_empty() {
            continue;
        }
        let fits: Vec<usize> = names
            .iter()
            .enumerate()
            .filter(|(_, n)| n.starts_with(&t) || t.starts_with(n.as_str()))
            .map(|(i, _)| i)
            .collect();
        if fits.len() == 1 {
            return Some(fits[0]);
        }
    }
    None
}

// ---------------------------------------------------------------------------------------
// Requests

/// What one request is for.
#[derive(Debug, Clone)]
struct Job {
    episode: usize,
    /// `loglik`: which class name is appended.
    candidate: Option<usize>,
    /// Characters of the prompt before the candidate (loglik).
    prefix_len: usize,
    endpoint: &'static str,
    body: Value,
}

/// The body of one request. `embedded`: the project's own llama-server, asked not to reuse
/// the KV cache of an earlier prompt (`cache_prompt: false`), so that an answer does not
/// depend on which request came before it (batch-size dependent rounding) and a resumed run
/// equals an uninterrupted one.
fn request_body(spec: &FewshotSpec, model: &str, text: &str, kind: &str, embedded: bool) -> Value {
    let chat = spec.llm.api == "chat";
    let mut b = if chat {
        json!({"model": model, "messages": [{"role": "user", "content": text}], "temperature": 0.0})
    } else {
        json!({"model": model, "prompt": text, "temperature": 0.0})
    };
    let o = b.as_object_mut().expect("object");
    match kind {
        "generate" => {
            o.insert("max_tokens".into(), spec.llm.max_answer_tokens.into());
            o.insert("stop".into(), json!(["\n"]));
        }
        "first-token" => {
            o.insert("max_tokens".into(), 1.into());
            if chat {
                o.insert("logprobs".into(), true.into());
                o.insert("top_logprobs".into(), spec.scoring.top_logprobs.into());
            } else {
                o.insert("logprobs".into(), spec.scoring.top_logprobs.into());
            }
        }
        _ => {
            // loglik: the prompt's own log-probabilities, echoed.
            o.insert("max_tokens".into(), 1.into());
            o.insert("echo".into(), true.into());
            o.insert("logprobs".into(), 1.into());
        }
    }
    if embedded {
        o.insert("cache_prompt".into(), false.into());
    }
    for (k, v) in &spec.llm.extra {
        if let Ok(v) = serde_json::to_value(v) {
            o.insert(k.clone(), v);
        }
    }
    b
}

/// What a strategy needs from a body, checked before the answer is cached or counted.
fn check_for(
    strategy: &str,
    prompt_len: usize,
) -> impl Fn(&Value) -> std::result::Result<(), String> + Sync {
    let strategy = strategy.to_string();
    move |v: &Value| {
        let c = llm::response::parse(v)?;
        match strategy.as_str() {
            "generate" => Ok(()),
            "first-token" => {
                let lp = c.logprobs.ok_or("strategy `first-token` needs log-probabilities, and the body has no `logprobs`; use strategy `generate`")?;
                match lp.first() {
                    Some(t) if !t.top.is_empty() => Ok(()),
                    _ => Err("strategy `first-token` needs the top log-probabilities of the first answer token, and the body's `logprobs` has none; use strategy `generate`".into()),
                }
            }
            _ => {
                let lp = c.logprobs.ok_or("strategy `loglik` needs the prompt's log-probabilities (`echo`), and the body has no `logprobs`; use strategy `first-token` or `generate`")?;
                let covered: usize = lp.iter().map(|t| t.token.len()).sum();
                let has_offsets = lp.iter().all(|t| t.offset.is_some());
                if covered < prompt_len || !has_offsets {
                    return Err(format!("strategy `loglik` needs the prompt's log-probabilities (`echo`), but the server returned log-probabilities for {} token(s) covering {covered} of the prompt's {prompt_len} bytes{}: it does not echo the prompt. Use strategy `first-token` or `generate`, or a server that echoes (vLLM, OpenAI davinci-002)", lp.len(), if has_offsets { "" } else { " without text offsets" }));
                }
                // Only the very first prompt token has no context; a missing value elsewhere
                // would read as certainty (log 1 = 0) and pick that class.
                if let Some(i) = lp.iter().skip(1).position(|t| t.logprob.is_none()) {
                    return Err(format!("strategy `loglik`: the server gave no log-probability for token {} (`{}`) of the echoed prompt", i + 1, lp[i + 1].token));
                }
                Ok(())
            }
        }
    }
}

/// `loglik`: summed log-probability of the tokens after `prefix_len` (characters, as
/// `text_offset` counts them) that belong to the
/// appended name (echoed prompt only, the generated token excluded).
fn candidate_loglik(c: &llm::Completion, prefix_len: usize, full_len: usize) -> f64 {
    c.logprobs
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .filter(|t| {
            let o = t.offset.unwrap_or(0);
            o < full_len && o + t.token.chars().count() > prefix_len
        })
        .map(|t| t.logprob.unwrap_or(0.0))
        .sum()
}

// ---------------------------------------------------------------------------------------
// The run

/// Per-episode outcome, written to `answers.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Answer {
    pub cell: String,
    pub index: usize,
    pub query: String,
    pub label: String,
    /// The generated text (`generate`), the deciding first token (`first-token`), or the
    /// best class name (`loglik`).
    pub answer: String,
    pub predicted: Option<String>,
    pub correct: bool,
    pub prompt_tokens: Option<u64>,
    /// `loglik`: the score of each class, in `classes` order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scores: Vec<f64>,
    /// The prompt as sent (for `loglik`, before a class name is appended): what the model saw.
    #[serde(default)]
    pub prompt: String,
}

struct Endpoint {
    base_url: String,
    identity: String,
    model: String,
    context: Option<usize>,
    /// Kept alive for the run; stopped on drop.
    server: Option<llm::server::EmbeddedServer>,
}

fn endpoint(spec: &FewshotSpec) -> Result<Endpoint> {
    match spec.llm.url.as_deref().filter(|u| !u.trim().is_empty()) {
        Some(url) => Ok(Endpoint {
            base_url: url.to_string(),
            identity: url.trim_end_matches('/').to_string(),
            model: spec.llm.model.clone(),
            context: spec.llm.context,
            server: None,
        }),
        None => {
            let opts = llm::server::ServerOptions {
                context: spec.llm.server_context,
                threads: spec.llm.server_threads,
                alias: spec.llm.model.clone(),
            };
            let s = llm::server::EmbeddedServer::start(&opts)?;
            eprintln!("  embedded llama-server on {} ({})", s.base_url, s.identity);
            Ok(Endpoint {
                base_url: s.base_url.clone(),
                identity: s.identity.clone(),
                model: spec.llm.model.clone(),
                context: Some(spec.llm.context.unwrap_or(spec.llm.server_context)),
                server: Some(s),
            })
        }
    }
}

/// The API key from `LQAE_LLM_API_KEY`, else from the variable the suite names.
pub fn api_key(spec: &LlmSettings) -> (Option<Secret>, String) {
    for var in ["LQAE_LLM_API_KEY", spec.api_key_env.as_str()] {
        if let Ok(k) = std::env::var(var) {
            if !k.is_empty() {
                return (Some(Secret::new(k)), format!("from ${var}"));
            }
        }
    }
    (None, "none".into())
}

/// Token counts of prompts: exact through the server's `/tokenize` (llama.cpp), else an
/// estimate of one token per 3 bytes. Returns the counts and how they were obtained.
async fn count_tokens(client: &LlmClient, prompts: &[&str]) -> (Vec<usize>, &'static str) {
    let base = client.settings.base_url.trim_end_matches("/v1").to_string();
    // A server that accepts `/tokenize` and never answers must not hang the run.
    let http = reqwest::Client::builder()
        .timeout(
            client
                .settings
                .timeout
                .min(std::time::Duration::from_secs(30)),
        )
        .build()
        .unwrap_or_default();
    let mut out = Vec::with_capacity(prompts.len());
    for p in prompts {
        let mut req = http
            .post(format!("{base}/tokenize"))
            .json(&json!({"content": p}));
        if let Some(k) = &client.settings.api_key {
            req = req.bearer_auth(k.expose());
        }
        let n = match req.send().await {
            Ok(r) if r.status().is_success() => r
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| v.get("tokens").and_then(|t| t.as_array()).map(|t| t.len())),
            _ => None,
        };
        match n {
            Some(n) => out.push(n),
            None => {
                return (
                    prompts.iter().map(|p| p.len().div_ceil(3)).collect(),
                    "estimate (bytes / 3)",
                )
            }
        }
    }
    (out, "server /tokenize")
}

/// Run a few-shot suite and write its results under `results_root`.
pub fn run(
    suite: &Suite,
    spec: &FewshotSpec,
    device: &Device,
    results_root: &Path,
    progress: bool,
) -> Result<(PathBuf, ResultFile)> {
    let t0 = Instant::now();
    let probs = spec.problems();
    if !probs.is_empty() {
        return Err(Error::file(
            &suite.path,
            format!("invalid suite:\n  {}", probs.join("\n  ")),
        ));
    }
    // Data and episodes.
    let dc = DataConfig {
        dataset: spec.data.dataset.clone(),
        path: spec.data.path.clone(),
        limit: None,
        augment: false,
    };
    let set = crate::train::load_data(&dc, Split::Test)?;
    let episodes = match &spec.episodes.file {
        Some(f) => read_episodes(Path::new(f), &set)?,
        None => {
            let pool = crate::probe::subset(
                set.len(),
                spec.data.test_limit,
                spec.episodes.seed,
                "fewshot-pool",
            );
            sample_episodes(
                &set,
                &pool,
                &spec.episodes.ways,
                &spec.episodes.columns,
                spec.episodes.count,
                spec.episodes.seed,
            )?
        }
    };
    // Images as text.
    let run_dir = crate::probe::ensure_trained(&spec.model, device, progress)?;
    let (model, _, state) = crate::train::load_model(&run_dir, device)?;
    let Autoencoder::Lqae(lqae) = &model else {
        return Err(Error::setting(
            "model",
            format!(
                "`{}` is not an LQAE: few-shot prompts need language tokens",
                spec.model
            ),
        ));
    };
    let keys: HashMap<String, usize> = (0..set.len()).map(|i| (image_key(&set, i), i)).collect();
    let mut needed: Vec<String> = episodes
        .iter()
        .flat_map(|e| {
            e.support
                .iter()
                .chain(std::iter::once(&e.query))
                .map(|s| s.image.clone())
        })
        .collect();
    needed.sort();
    needed.dedup();
    let idx: Vec<usize> = needed.iter().map(|k| keys[k]).collect();
    let size = state.config.model.image_size as u32;
    let mut texts = HashMap::new();
    let mut all_ids: Vec<u32> = Vec::new();
    for (chunk_k, chunk_i) in needed.chunks(64).zip(idx.chunks(64)) {
        let batch = crate::data::batch::make_batch(&set, chunk_i, size, None, device)?;
        let ids: Vec<Vec<u32>> = lqae.encode(&batch)?.to_vec2()?;
        for (k, row) in chunk_k.iter().zip(ids) {
            texts.insert(k.clone(), image_text(&row, lqae.lm().vocab(), &spec.tokens));
            all_ids.extend(row);
        }
    }
    let prompts: Vec<String> = episodes
        .iter()
        .map(|e| prompt(e, &texts, &spec.episodes))
        .collect();

    // The server and the client.
    let ep = endpoint(spec)?;
    let cache_path = spec
        .llm
        .cache
        .as_ref()
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            crate::assets::cache_dir()
                .join("llm")
                .join("responses.jsonl")
        });
    let cache = Arc::new(ResponseCache::open(&cache_path)?);
    let (key, key_source) = api_key(&spec.llm);
    let mut cs = ClientSettings::new(&ep.base_url);
    cs.identity = ep.identity.clone();
    cs.api_key = key;
    cs.timeout = std::time::Duration::from_secs_f64(spec.llm.timeout_s);
    cs.max_retries = spec.llm.max_retries;
    cs.concurrency = spec.llm.concurrency;
    let client = Arc::new(LlmClient::new(cs, Some(cache.clone()))?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Msg(format!("cannot start the async runtime: {e}")))?;

    // Does every prompt fit?
    let strategy = spec.scoring.strategy.as_str();
    let longest_label = episodes
        .iter()
        .flat_map(|e| e.classes.iter())
        .map(|c| c.len())
        .max()
        .unwrap_or(0);
    let (counts, counted_by) = rt.block_on(count_tokens(
        &client,
        &prompts.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let answer_room = match strategy {
        "generate" => spec.llm.max_answer_tokens,
        "first-token" => 1,
        _ => longest_label + 2,
    };
    if let Some(ctx) = ep.context {
        let limit = ctx.saturating_sub(answer_room);
        if let Some((i, n)) = counts
            .iter()
            .enumerate()
            .max_by_key(|x| x.1)
            .filter(|x| *x.1 > limit)
        {
            return Err(Error::setting(
                "tokens.per_image",
                format!(
                    "the prompt of episode {} #{} is {n} tokens ({counted_by}), over the model's context of {ctx} minus {answer_room} for the answer; lower `tokens.per_image` (now {}), or use fewer shots or repeats in `episodes.columns`, or raise `llm.context` if the model allows",
                    episodes[i].cell(), episodes[i].index, spec.tokens.per_image
                ),
            ));
        }
    } else if progress {
        eprintln!("  llm.context is not set: prompt lengths are not checked before sending");
    }

    // The requests.
    let mut jobs = Vec::new();
    for (i, (e, p)) in episodes.iter().zip(&prompts).enumerate() {
        match strategy {
            "loglik" => {
                for (c, name) in e.classes.iter().enumerate() {
                    let full = format!("{p} {name}");
                    jobs.push(Job {
                        episode: i,
                        candidate: Some(c),
                        prefix_len: p.chars().count(),
                        endpoint: "/v1/completions",
                        body: request_body(spec, &ep.model, &full, strategy, ep.server.is_some()),
                    });
                }
            }
            _ => jobs.push(Job {
                episode: i,
                candidate: None,
                prefix_len: p.chars().count(),
                endpoint: if spec.llm.api == "chat" {
                    "/v1/chat/completions"
                } else {
                    "/v1/completions"
                },
                body: request_body(spec, &ep.model, p, strategy, ep.server.is_some()),
            }),
        }
    }
    if progress {
        eprintln!(
            "  {} episodes in {} cells, {} requests ({} already in the response cache {})",
            episodes.len(),
            episodes
                .iter()
                .map(|e| e.cell())
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            jobs.len(),
            jobs.iter()
                .filter(|j| cache
                    .get(&llm::cache::key(&ep.identity, j.endpoint, &j.body))
                    .ok()
                    .flatten()
                    .is_some())
                .count(),
            cache_path.display()
        );
    }
    let t_req = Instant::now();
    let replies = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for (k, job) in jobs.iter().enumerate() {
            let client = client.clone();
            let body = job.body.clone();
            let endpoint = job.endpoint;
            let check_len = if job.candidate.is_some() {
                job.body["prompt"].as_str().map(str::len).unwrap_or(0)
            } else {
                0
            };
            let strategy = strategy.to_string();
            set.spawn(async move {
                let check = check_for(&strategy, check_len);
                (k, client.post(endpoint, &body, &check).await)
            });
        }
        let mut out: Vec<Option<llm::Reply>> = vec![None; jobs.len()];
        let mut done = 0usize;
        while let Some(r) = set.join_next().await {
            let (k, reply) = r.map_err(|e| Error::Msg(format!("a request task failed: {e}")))?;
            match reply {
                Ok(rep) => out[k] = Some(rep),
                Err(e) => {
                    set.abort_all();
                    return Err(Error::Msg(format!(
                        "{e}\nThe run stopped; {} answers are kept in the response cache {} and a rerun resumes from them",
                        cache.len(),
                        cache.path().display()
                    )));
                }
            }
            done += 1;
            if progress && (done.is_multiple_of(20) || done == jobs.len()) {
                let s = client.stats();
                eprintln!("  {done}/{} answered ({} from the cache, {} HTTP requests)", jobs.len(), s.cache_hits, s.http_requests);
            }
        }
        Ok::<_, Error>(out.into_iter().map(|r| r.expect("every job answered")).collect::<Vec<_>>())
    })?;
    let request_wall = t_req.elapsed().as_secs_f64();

    // Scoring.
    let mut answers: Vec<Answer> = episodes
        .iter()
        .zip(&prompts)
        .map(|(e, p)| Answer {
            cell: e.cell(),
            index: e.index,
            query: e.query.image.clone(),
            label: e.query.label.clone(),
            answer: String::new(),
            predicted: None,
            correct: false,
            prompt_tokens: None,
            scores: Vec::new(),
            prompt: p.clone(),
        })
        .collect();
    let mut tokens_prompt = 0u64;
    let mut tokens_completion = 0u64;
    let mut billed_prompt = 0u64;
    let mut billed_completion = 0u64;
    let mut overhead_ms = Vec::new();
    let mut server_ms_sum = 0.0;
    for (job, rep) in jobs.iter().zip(&replies) {
        let c = llm::response::parse(&rep.body)
            .map_err(|m| Error::Msg(format!("a cached answer cannot be read: {m}")))?;
        tokens_prompt += c.prompt_tokens.unwrap_or(0);
        tokens_completion += c.completion_tokens.unwrap_or(0);
        if !rep.cached {
            billed_prompt += c.prompt_tokens.unwrap_or(0);
            billed_completion += c.completion_tokens.unwrap_or(0);
            if let Some(s) = c.server_ms {
                overhead_ms.push((rep.request_ms - s).max(0.0));
                server_ms_sum += s;
            }
        }
        let e = &episodes[job.episode];
        let a = &mut answers[job.episode];
        a.prompt_tokens = a.prompt_tokens.or(c.prompt_tokens);
        match strategy {
            "generate" => {
                a.answer = c.text.clone();
                a.predicted = match_answer(&c.text, &e.classes).map(|k| e.classes[k].clone());
            }
            "first-token" => {
                let top = &c.logprobs.as_ref().expect("checked")[0].top;
                let k = first_token_pick(top, &e.classes);
                a.answer = top.first().map(|t| t.0.clone()).unwrap_or_default();
                a.predicted = k.map(|k| e.classes[k].clone());
            }
            _ => {
                let full_len = job.body["prompt"]
                    .as_str()
                    .map(|p| p.chars().count())
                    .unwrap_or(0);
                if a.scores.is_empty() {
                    a.scores = vec![f64::NEG_INFINITY; e.classes.len()];
                }
                a.scores[job.candidate.expect("loglik job")] =
                    candidate_loglik(&c, job.prefix_len, full_len);
            }
        }
    }
    if strategy == "loglik" {
        for (a, e) in answers.iter_mut().zip(&episodes) {
            let best = a
                .scores
                .iter()
                .enumerate()
                .max_by(|x, y| x.1.total_cmp(y.1))
                .map(|x| x.0);
            a.predicted = best.map(|k| e.classes[k].clone());
            a.answer = a.predicted.clone().unwrap_or_default();
        }
    }
    for a in &mut answers {
        a.correct = a.predicted.as_deref() == Some(a.label.as_str());
    }

    // Metrics per cell, the table, the files.
    let mut cells: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    for (a, e) in answers.iter().zip(&episodes) {
        let c = cells.entry(a.cell.clone()).or_insert((0, 0, e.ways));
        c.0 += a.correct as usize;
        c.1 += 1;
    }
    let mut metrics = BTreeMap::new();
    for (cell, &(k, n, _)) in &cells {
        metrics.insert(
            format!("{cell}/top1"),
            results::proportion(k, n, spec.tolerance),
        );
    }
    let ep_lines: Vec<String> = episodes
        .iter()
        .map(|e| serde_json::to_string(e).expect("episode"))
        .collect();
    let samples: Vec<Sample> = answers
        .iter()
        .zip(&episodes)
        .zip(&ep_lines)
        .map(|((a, e), line)| {
            let id = |name: &Option<String>| {
                name.as_ref()
                    .and_then(|n| set.class_names.iter().position(|c| c == n))
                    .map(|p| p as u32)
                    .unwrap_or(u32::MAX)
            };
            Sample {
                rep: a.cell.clone(),
                index: e.index,
                input_sha256: results::sha256_hex(line.as_bytes()),
                label: id(&Some(a.label.clone())),
                pred: id(&a.predicted),
                correct: a.correct,
                top5: false,
            }
        })
        .collect();
    let stats = client.stats();
    let network = stats.answered - stats.cache_hits;
    let mean_overhead = if overhead_ms.is_empty() {
        None
    } else {
        Some(overhead_ms.iter().sum::<f64>() / overhead_ms.len() as f64)
    };
    let overhead_share =
        (server_ms_sum > 0.0).then(|| overhead_ms.iter().sum::<f64>() / server_ms_sum);
    let cost = (spec.llm.price_prompt_per_million > 0.0
        || spec.llm.price_completion_per_million > 0.0)
        .then(|| {
            (billed_prompt as f64 * spec.llm.price_prompt_per_million
                + billed_completion as f64 * spec.llm.price_completion_per_million)
                / 1e6
        });
    let prompt_counts = counts.clone();
    let mut extra = serde_json::Map::new();
    extra.insert("strategy".into(), strategy.into());
    extra.insert("api".into(), spec.llm.api.clone().into());
    extra.insert("server".into(), ep.identity.clone().into());
    extra.insert("llm_model".into(), ep.model.clone().into());
    extra.insert("api_key".into(), key_source.into());
    extra.insert(
        "tokens".into(),
        serde_json::to_value(&spec.tokens).map_err(|e| Error::Msg(e.to_string()))?,
    );
    extra.insert(
        "lqae_tokens_per_image".into(),
        (all_ids.len() / needed.len().max(1)).into(),
    );
    extra.insert(
        "prompt_tokens".into(),
        json!({
            "counted_by": counted_by,
            "max": prompt_counts.iter().max(),
            "mean": prompt_counts.iter().sum::<usize>() as f64 / prompt_counts.len().max(1) as f64,
            "context": ep.context,
        }),
    );
    extra.insert(
        "chance".into(),
        cells
            .iter()
            .map(|(c, &(_, _, w))| (c.clone(), json!(1.0 / w as f64)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
    );
    extra.insert(
        "requests".into(),
        json!({
            "jobs": jobs.len(),
            "answered": stats.answered,
            "from_cache": stats.cache_hits,
            "sent": network,
            "http_requests": stats.http_requests,
            "retries": stats.retries,
            "wall_s": request_wall,
            "per_s": if request_wall > 0.0 { network as f64 / request_wall } else { 0.0 },
            "client_overhead_ms_mean": mean_overhead,
            "client_overhead_share_of_server_time": overhead_share,
            "server_ms_total": server_ms_sum,
        }),
    );
    extra.insert(
        "usage".into(),
        json!({
            "prompt_tokens": tokens_prompt,
            "completion_tokens": tokens_completion,
            "billed_prompt_tokens": billed_prompt,
            "billed_completion_tokens": billed_completion,
            "cost": cost,
        }),
    );
    extra.insert(
        "response_cache".into(),
        cache_path.display().to_string().into(),
    );
    let table = table_markdown(&cells, &metrics);
    extra.insert("table".into(), table.clone().into());

    let mut inputs = BTreeMap::new();
    inputs.insert("lqae".to_string(), crate::probe::checkpoint_sha(&run_dir)?);
    inputs.insert(
        "episodes".to_string(),
        results::sha256_hex(ep_lines.join("\n").as_bytes()),
    );
    if ep.server.is_some() {
        inputs.insert(
            "llm".to_string(),
            crate::assets::SMOLLM2.files[0].sha256.to_string(),
        );
    }
    let mut seeds = BTreeMap::new();
    seeds.insert("episodes".to_string(), spec.episodes.seed);
    let samples_sha256 = results::sha256_hex(
        samples
            .iter()
            .map(|s| s.input_sha256.as_str())
            .collect::<Vec<_>>()
            .join(",")
            .as_bytes(),
    );
    let result = ResultFile::finish(
        suite,
        device,
        t0,
        results::Measured {
            seeds,
            inputs_sha256: inputs,
            samples_sha256,
            metrics,
            extra,
        },
    )?;
    let dir = results::write_run(results_root, &result, &samples)?;
    crate::assets::write_atomic(
        &dir.join("episodes.jsonl"),
        (ep_lines.join("\n") + "\n").as_bytes(),
    )?;
    let ans: Vec<String> = answers
        .iter()
        .map(|a| serde_json::to_string(a).expect("answer"))
        .collect();
    crate::assets::write_atomic(
        &dir.join("answers.jsonl"),
        (ans.join("\n") + "\n").as_bytes(),
    )?;
    crate::assets::write_atomic(&dir.join("table.md"), table.as_bytes())?;
    if progress {
        println!("{table}");
    }
    Ok((dir, result))
}

/// The paper's layout: one row per N-way, one column per (induction, shots, repeats), each
/// cell `accuracy % [95% interval]`, and the chance level.
pub fn table_markdown(
    cells: &BTreeMap<String, (usize, usize, usize)>,
    metrics: &BTreeMap<String, results::Metric>,
) -> String {
    let mut ways: Vec<usize> = cells.values().map(|c| c.2).collect();
    ways.sort();
    ways.dedup();
    let mut cols: Vec<String> = cells
        .keys()
        .filter_map(|c| c.split_once('/').map(|x| x.1.to_string()))
        .collect();
    // Paper order: no induction first, then the inner-shot columns by shots, then the
    // repeat columns by repeats.
    let parse = |c: &str| -> (bool, usize, usize) {
        let p: Vec<&str> = c.split('/').collect();
        let num = |s: &str| {
            s.rsplit('-')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        (
            p.first() == Some(&"induction-yes"),
            num(p.get(1).unwrap_or(&"")),
            num(p.get(2).unwrap_or(&"")),
        )
    };
    cols.sort_by_key(|c| {
        let (ind, shots, rep) = parse(c);
        (ind, rep > 0, shots, rep)
    });
    cols.dedup();
    let head = |c: &str| {
        let (ind, s, r) = parse(c);
        format!(
            "{}, {s} shot{}{}",
            if ind { "induction" } else { "no induction" },
            if s == 1 { "" } else { "s" },
            if r > 0 {
                format!(", {r} repeat{}", if r == 1 { "" } else { "s" })
            } else {
                String::new()
            }
        )
    };
    let mut s = format!(
        "| | {} | chance |\n|---|{}---|\n",
        cols.iter().map(|c| head(c)).collect::<Vec<_>>().join(" | "),
        "---|".repeat(cols.len())
    );
    for w in ways {
        s.push_str(&format!("| {w}-way |"));
        for c in &cols {
            match metrics.get(&format!("{w}-way/{c}/top1")) {
                Some(m) => s.push_str(&format!(
                    " {:.1} [{:.1}, {:.1}] (n={}) |",
                    100.0 * m.value,
                    100.0 * m.ci95[0],
                    100.0 * m.ci95[1],
                    m.n
                )),
                None => s.push_str(" - |"),
            }
        }
        s.push_str(&format!(" {:.1} |\n", 100.0 / w as f64));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_and_exact_match() {
        let classes: Vec<String> = ["T-shirt/top", "Ankle boot", "Bag"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(match_answer(" ankle  boot.\nContext: x", &classes), Some(1));
        assert_eq!(match_answer("Bag", &classes), Some(2));
        assert_eq!(match_answer("T-shirt/top.", &classes), Some(0));
        assert_eq!(match_answer("Bags", &classes), None);
        assert_eq!(match_answer("", &classes), None);
    }

    #[test]
    fn first_token_skips_ambiguous_prefixes() {
        let classes: Vec<String> = ["Shirt", "Sneaker", "Bag"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let top = |v: &[(&str, f64)]| {
            v.iter()
                .map(|(t, l)| (t.to_string(), *l))
                .collect::<Vec<_>>()
        };
        // " S" fits two names and is passed over; " Sne" decides.
        assert_eq!(
            first_token_pick(
                &top(&[(" S", -0.1), (" Sne", -1.0), (" Bag", -2.0)]),
                &classes
            ),
            Some(1)
        );
        assert_eq!(first_token_pick(&top(&[("Ġbag", -0.5)]), &classes), Some(2));
        assert_eq!(
            first_token_pick(&top(&[(" the", -0.1), ("\n", -0.2)]), &classes),
            None
        );
    }

    #[test]
    fn csv_episodes_parse_and_bad_rows_are_named() {
        let csv = "episode,role,image,label,induction,repeats\n\
                   e1,support,a.jpg,lion,true,1\n\
                   e1,support,b.jpg,vase,true,1\n\
                   e1,query,c.jpg,vase,true,1\n\
                   e2,support,d.jpg,lion,false,0\n\
                   e2,support,e.jpg,lion,false,0\n\
                   e2,support,f.jpg,vase,false,0\n\
                   e2,support,g.jpg,vase,false,0\n\
                   e2,query,h.jpg,lion,false,0\n";
        let eps = parse_episode_csv(csv).unwrap();
        assert_eq!(eps.len(), 2);
        let (line, e) = &eps[0];
        assert_eq!(
            (*line, e.ways, e.shots, e.repeats, e.induction),
            (2, 2, 1, 1, true)
        );
        assert_eq!(e.classes, vec!["lion".to_string(), "vase".to_string()]);
        assert_eq!(e.query.image, "c.jpg");
        assert_eq!(
            (eps[1].1.shots, eps[1].1.cell()),
            (2, "2-way/induction-no/shots-2/repeats-0".to_string())
        );
        let err = parse_episode_csv(
            "episode,role,image,label,induction,repeats\nx,support,a,lion,true,0\n",
        )
        .unwrap_err();
        assert!(
            err.contains("episode `x`") && err.contains("0 query rows"),
            "{err}"
        );
        let err = parse_episode_csv("id,role,image\n").unwrap_err();
        assert!(err.contains("header"), "{err}");
        let err = parse_episode_csv("episode,role,image,label,induction,repeats\nx,support,a,lion,maybe,0\nx,query,b,lion,maybe,0\n").unwrap_err();
        assert!(err.contains("induction `maybe`"), "{err}");
    }

    #[test]
    fn the_table_follows_the_papers_column_order() {
        let mut cells = BTreeMap::new();
        let mut metrics = BTreeMap::new();
        for c in paper_columns() {
            let cell = format!("2-way/{}", c.name());
            cells.insert(cell.clone(), (1, 2, 2));
            metrics.insert(format!("{cell}/top1"), results::proportion(1, 2, 0.05));
        }
        let t = table_markdown(&cells, &metrics);
        let head = t.lines().next().unwrap();
        let want = "| | no induction, 1 shot | induction, 1 shot | induction, 3 shots | induction, 5 shots | induction, 1 shot, 1 repeat | induction, 1 shot, 3 repeats | induction, 1 shot, 5 repeats | chance |";
        assert_eq!(head, want);
        assert!(t.contains("| 2-way | 50.0 ["), "{t}");
        assert!(t.trim_end().ends_with("| 50.0 |"), "{t}");
    }

    #[test]
    fn label_lists_read_naturally() {
        let l = |v: &[&str]| label_list(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(l(&["lion", "vase"]), "\"lion\" or \"vase\"");
        assert_eq!(l(&["a", "b", "c"]), "\"a\", \"b\" or \"c\"");
    }

    #[test]
    fn loglik_sums_only_the_candidate_tokens() {
        let prompt = "Classification:";
        let full = format!("{prompt} Bag");
        let t = |tok: &str, lp: f64, off: usize| llm::TokenLogprob {
            token: tok.into(),
            logprob: Some(lp),
            top: vec![],
            offset: Some(off),
        };
        let c = llm::Completion {
            logprobs: Some(vec![
                t("Classification", -5.0, 0),
                t(":", -1.0, 14),
                t(" B", -0.5, 15),
                t("ag", -0.25, 17),
                t(".", -3.0, 19),
            ]),
            ..Default::default()
        };
        assert_eq!(candidate_loglik(&c, prompt.len(), full.len()), -0.75);
        // Offsets count characters: a multi-byte character before the candidate must not
        // shift the window (by bytes, " B" would fall before it and "." inside it).
        let prompt = "Classé:";
        let full = format!("{prompt} Bag");
        let c = llm::Completion {
            logprobs: Some(vec![
                t("Classé", -5.0, 0),
                t(":", -1.0, 6),
                t(" B", -0.5, 7),
                t("ag", -0.25, 9),
                t(".", -3.0, 11),
            ]),
            ..Default::default()
        };
        assert_eq!(
            candidate_loglik(&c, prompt.chars().count(), full.chars().count()),
            -0.75
        );
        let nulls = json!({"choices": [{"text": ".", "logprobs": {"tokens": ["Bag", " is", "."], "token_logprobs": [null, null, -1.0], "text_offset": [0, 3, 6]}}]});
        let e = check_for("loglik", 4)(&nulls).unwrap_err();
        assert!(e.contains("no log-probability for token 1"), "{e}");
        let check = check_for("loglik", full.len());
        let echoless = json!({"choices": [{"text": ".", "logprobs": {"content": [{"token": ".", "logprob": -3.0, "top_logprobs": []}]}}]});
        let e = check(&echoless).unwrap_err();
        assert!(
            e.contains("does not echo") && e.contains("first-token"),
            "{e}"
        );
    }
}
