//! The settings of a `fewshot` suite, as written and as checked.

use super::scoring::Strategy;
use crate::eval::suite_file::SuiteData;
use crate::llm::backend::{Api, LlmSettings};
use serde::{Deserialize, Serialize};

fn d_tol() -> f64 {
    0.05
}
fn d_per_image() -> OneOrList<usize> {
    OneOrList::One(16)
}
fn d_select() -> OneOrList<String> {
    OneOrList::One("stride".into())
}

/// A setting given as one value, or as a list: a sweep, every value run over the same
/// episodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrList<T> {
    One(T),
    List(Vec<T>),
}

impl<T: Clone> OneOrList<T> {
    pub fn values(&self) -> Vec<T> {
        match self {
            OneOrList::One(v) => vec![v.clone()],
            OneOrList::List(v) => v.clone(),
        }
    }
    pub fn is_list(&self) -> bool {
        matches!(self, OneOrList::List(_))
    }
    /// The value of a single setting (a sweep's first value).
    pub fn first(&self) -> Option<&T> {
        match self {
            OneOrList::One(v) => Some(v),
            OneOrList::List(v) => v.first(),
        }
    }
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
    /// A list (`[4, 8, 16, 32]`) is a sweep: every value over the same episodes.
    #[serde(default = "d_per_image")]
    pub per_image: OneOrList<usize>,
    /// `raster` (the first ones in raster order), `stride` (evenly spaced over the grid),
    /// `frequent` (the image's most frequent distinct tokens, ties by first position), `all`;
    /// a list is a sweep, as for `per_image`.
    #[serde(default = "d_select")]
    pub select: OneOrList<String>,
    /// Keep the LM tokenizer's special tokens (`[CLS]`, `[MASK]`, ...).
    #[serde(default)]
    pub keep_special: bool,
    /// Keep pieces that continue a word (`##ing`), written without their marker.
    #[serde(default = "d_true")]
    pub keep_subword: bool,
    #[serde(default = "d_sep")]
    pub separator: String,
    /// Precomputed tokens (the JSONL `lqae-eval encode` writes, or any tokenizer's in that
    /// format) written in place of the model's; the selection above applies to them too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<crate::eval::tokens_file::Files>,
    /// `ids` (of the model's LM, written through its vocabulary as the model's own are) or
    /// `text` (the file's words as they are); unset: `ids` when the file's header names the
    /// model's LM, else `text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_tokens: Option<String>,
}

impl Default for TokenSettings {
    fn default() -> Self {
        toml::from_str("").expect("all fields have defaults")
    }
}

impl TokenSettings {
    /// Tokens per image of a single setting (a point of a sweep).
    pub fn per_image(&self) -> usize {
        self.per_image.first().copied().unwrap_or(0)
    }
    /// `select` of a single setting; unparsable names are refused by the suite check.
    pub fn select(&self) -> Select {
        self.select
            .first()
            .and_then(|s| Select::parse(s))
            .unwrap_or(Select::All)
    }
}

/// One value of a sweep over `tokens.per_image` and `tokens.select` (the only one when neither
/// is a list): its name, a prefix of its metrics (`per_image-8`, `select-frequent/per_image-8`;
/// empty without a sweep), and the token settings with single values.
#[derive(Debug, Clone)]
pub struct Point {
    pub name: String,
    pub tokens: TokenSettings,
}

impl Point {
    /// `name/cell` (`cell` alone without a sweep).
    pub fn key(&self, cell: &str) -> String {
        if self.name.is_empty() {
            cell.to_string()
        } else {
            format!("{}/{cell}", self.name)
        }
    }
}

/// Every point of the sweep `t` describes (select major, per_image minor, in the order
/// written); `select = "all"` is one point whatever `per_image` says.
pub fn sweep_points(t: &TokenSettings) -> Vec<Point> {
    let mut out: Vec<Point> = Vec::new();
    for sel in t.select.values() {
        for n in t.per_image.values() {
            let all = Select::parse(&sel) == Some(Select::All);
            let mut parts = Vec::new();
            if t.select.is_list() {
                parts.push(format!("select-{sel}"));
            }
            if t.per_image.is_list() {
                parts.push(if all {
                    "per_image-all".to_string()
                } else {
                    format!("per_image-{n}")
                });
            }
            let mut tokens = t.clone();
            tokens.per_image = OneOrList::One(if all { 0 } else { n });
            tokens.select = OneOrList::One(sel.clone());
            let p = Point {
                name: parts.join("/"),
                tokens,
            };
            if !out.iter().any(|o| o.name == p.name) {
                out.push(p);
            }
        }
    }
    out
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
fn d_names() -> String {
    "real".into()
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
    /// `real` (the data set's class names) or `nonsense` (Frozen's Open-Ended protocol: each
    /// episode's classes renamed to nonsense words drawn for it, the real names recorded).
    #[serde(default = "d_names")]
    pub names: String,
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

/// How `tokens.select` picks an image's tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    Raster,
    Stride,
    Frequent,
    All,
}

impl Select {
    pub const NAMES: &'static [&'static str] = &["raster", "stride", "frequent", "all"];
    pub fn parse(s: &str) -> Option<Select> {
        Some(match s {
            "raster" => Select::Raster,
            "stride" => Select::Stride,
            "frequent" => Select::Frequent,
            "all" => Select::All,
            _ => return None,
        })
    }
}

/// A checked `fewshot` suite: the settings as written (`Deref`) and their enums.
#[derive(Debug, Clone)]
pub struct CheckedFewshot {
    pub spec: FewshotSpec,
    pub strategy: Strategy,
    /// The sweep's points (one without a sweep).
    pub points: Vec<Point>,
    pub api: Api,
}

impl std::ops::Deref for CheckedFewshot {
    type Target = FewshotSpec;
    fn deref(&self) -> &FewshotSpec {
        &self.spec
    }
}

impl FewshotSpec {
    /// The checked form, or every setting that parses but cannot work, each naming its key.
    pub fn check(self) -> std::result::Result<CheckedFewshot, Vec<String>> {
        let mut out = self.data.problems();
        let strategy = Strategy::parse(&self.scoring.strategy);
        if strategy.is_none() {
            out.push(format!(
                "`scoring.strategy`: `{}` is not one of {}",
                self.scoring.strategy,
                Strategy::NAMES.join(", ")
            ));
        }
        let selects = self.tokens.select.values();
        for s in &selects {
            if Select::parse(s).is_none() {
                out.push(format!(
                    "`tokens.select`: `{s}` is not one of {}",
                    Select::NAMES.join(", ")
                ));
            }
        }
        let only_all = selects.iter().all(|s| s == "all");
        if self.tokens.per_image.values().contains(&0) && !only_all {
            out.push(
                "`tokens.per_image`: 0 writes no tokens (use select = \"all\" for every token)"
                    .into(),
            );
        }
        for (key, n, distinct) in [
            (
                "tokens.per_image",
                self.tokens.per_image.values().len(),
                dedup_len(self.tokens.per_image.values()),
            ),
            ("tokens.select", selects.len(), dedup_len(selects.clone())),
        ] {
            if n == 0 {
                out.push(format!("`{key}`: an empty list sweeps nothing"));
            } else if distinct < n {
                out.push(format!("`{key}`: a value is listed twice"));
            }
        }
        if let Some(f) = self.tokens.file_tokens.as_deref() {
            if crate::eval::tokens_file::Field::parse(f).is_none() {
                out.push(format!(
                    "`tokens.file_tokens`: `{f}` is not `ids` or `text`"
                ));
            }
            if self.tokens.file.is_none() {
                out.push("`tokens.file_tokens`: set without `tokens.file`".into());
            }
        }
        let api = Api::parse(&self.llm.api);
        if api.is_none() {
            out.push(format!(
                "`llm.api`: `{}` is not `completions` or `chat`",
                self.llm.api
            ));
        }
        if strategy == Some(Strategy::Loglik) && api != Some(Api::Completions) {
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
        if !["real", "nonsense"].contains(&self.episodes.names.as_str()) {
            out.push(format!(
                "`episodes.names`: `{}` is not `real` or `nonsense`",
                self.episodes.names
            ));
        }
        if !self.episodes.example_template.contains("{image}")
            || !self.episodes.example_template.contains("{label}")
        {
            out.push("`episodes.example_template`: needs both `{image}` and `{label}`".into());
        }
        if self.llm.max_cost.is_some() && !self.llm.priced() {
            out.push("`llm.max_cost`: a cost cap needs the prices: set llm.price_prompt_per_million and llm.price_completion_per_million".into());
        }
        if self.llm.concurrency == 0 {
            out.push("`llm.concurrency`: must be at least 1".into());
        }
        match (strategy, api) {
            (Some(strategy), Some(api)) if out.is_empty() => Ok(CheckedFewshot {
                points: sweep_points(&self.tokens),
                spec: self,
                strategy,
                api,
            }),
            _ => Err(out),
        }
    }
}

fn dedup_len<T: Ord>(mut v: Vec<T>) -> usize {
    v.sort();
    v.dedup();
    v.len()
}
