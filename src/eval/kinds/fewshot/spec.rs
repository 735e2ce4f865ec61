//! The settings of a `fewshot` suite: as written ([`FewshotSpec`], strings and all) and as
//! checked ([`CheckedFewshot`], enums and resolved values only).

use super::calibration::Calibration;
use super::scoring::Strategy;
use crate::data::SuiteData;
use crate::eval::tokens_file::{Field, Files};
use crate::llm::{Judges, LlmConfig};
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
}
fn d_true() -> bool {
    true
}
fn d_sep() -> String {
    " ".into()
}

/// How an image becomes text, as written.
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
    pub file: Option<Files>,
    /// `ids` (of the model's LM, written through its vocabulary as the model's own are) or
    /// `text` (the file's words as they are); unset: `ids` when the file's header names the
    /// model's LM, else `text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_tokens: Option<String>,
    /// Calibration tokenizers scored beside these tokens over the same episodes (rows with
    /// metrics prefixed `calibration-<name>/`): `oracle` (each class one English word, the
    /// judge's ceiling), `noisy-<p>` (each word the class word with probability p, else
    /// noise), `random` (noise only, the floor). `[]` turns them off.
    #[serde(default = "super::calibration::default_names")]
    pub calibration: Vec<String>,
}

impl Default for TokenSettings {
    fn default() -> Self {
        toml::from_str("").expect("all fields have defaults")
    }
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
    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// Which tokens an image keeps and how they are joined (the same at every point of a sweep).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextRule {
    pub keep_special: bool,
    pub keep_subword: bool,
    pub separator: String,
}

impl Default for TextRule {
    fn default() -> Self {
        TextRule {
            keep_special: false,
            keep_subword: true,
            separator: " ".into(),
        }
    }
}

/// One value of a sweep over `tokens.per_image` and `tokens.select` (the only one when neither
/// is a list): its name, a prefix of its metrics (`per_image-8`, `select-frequent/per_image-8`;
/// empty without a sweep), and how many tokens it writes, chosen how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    pub name: String,
    /// Tokens written per image (`select = All`: every one, and this is 0).
    pub per_image: usize,
    pub select: Select,
}

impl Point {
    /// `name/cell` (`cell` alone without a sweep).
    pub fn key(&self, cell: &str) -> String {
        prefixed(&self.name, cell)
    }
}

/// `prefix/key`, or `key` alone under an empty prefix.
pub fn prefixed(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}/{key}")
    }
}

/// Every point of the sweep `t` describes (select major, per_image minor, in the order
/// written); `select = "all"` is one point whatever `per_image` says. Unknown selects are
/// left out (the check refuses them).
pub fn sweep_points(t: &TokenSettings) -> Vec<Point> {
    let mut out: Vec<Point> = Vec::new();
    for sel in t.select.values() {
        let Some(select) = Select::parse(&sel) else {
            continue;
        };
        for n in t.per_image.values() {
            let all = select == Select::All;
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
            let p = Point {
                name: parts.join("/"),
                per_image: if all { 0 } else { n },
                select,
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
pub(crate) fn d_induction() -> String {
    "Classify the context into {labels}.\n".into()
}
pub(crate) fn d_example() -> String {
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

/// Which class names episodes show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names {
    /// The data set's.
    Real,
    /// Frozen's Open-Ended protocol: nonsense words drawn per episode.
    Nonsense,
}

/// The prompt's templates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Templates {
    /// `{labels}` becomes `"a", "b" or "c"`.
    pub induction: String,
    /// `{image}` and `{label}`; the query is cut just before `{label}`.
    pub example: String,
}

impl Default for Templates {
    fn default() -> Self {
        Templates {
            induction: d_induction(),
            example: d_example(),
        }
    }
}

/// Checked episode settings.
#[derive(Debug, Clone)]
pub struct Episodes {
    pub ways: Vec<usize>,
    pub columns: Vec<Column>,
    pub count: usize,
    pub seed: u64,
    pub file: Option<String>,
    pub names: Names,
    pub templates: Templates,
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
    /// The judge(s): one `[llm]` table, or a list (`[[llm]]`) that each get every request.
    #[serde(default)]
    pub llm: Judges,
    #[serde(default)]
    pub tokens: TokenSettings,
    pub episodes: EpisodeSettings,
    #[serde(default)]
    pub scoring: ScoringSettings,
    /// An accuracy may drop by this much (absolute) before the report calls it a regression.
    #[serde(default = "d_tol")]
    pub tolerance: f64,
}

/// Precomputed tokens, checked.
#[derive(Debug, Clone)]
pub struct TokensFile {
    pub files: Files,
    /// `None`: decided by the file's header (see [`TokenSettings::file_tokens`]).
    pub field: Option<Field>,
}

/// A checked `fewshot` suite.
#[derive(Debug, Clone)]
pub struct CheckedFewshot {
    pub model: String,
    pub data: SuiteData,
    /// Every judge, in the order written; each gets the same requests.
    pub judges: Vec<LlmConfig>,
    pub text: TextRule,
    /// The sweep's points (one without a sweep).
    pub points: Vec<Point>,
    pub file: Option<TokensFile>,
    /// The calibration tokenizers, in the order written.
    pub calibration: Vec<Calibration>,
    pub episodes: Episodes,
    pub strategy: Strategy,
    pub top_logprobs: usize,
    pub tolerance: f64,
    /// The token settings as written (the result records them).
    pub tokens_written: serde_json::Value,
}

impl CheckedFewshot {
    /// Whether there is more than one judge (their metrics are then prefixed `judge-<name>/`).
    pub fn several_judges(&self) -> bool {
        self.judges.len() > 1
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
        out.extend(token_problems(&self.tokens));
        let file_field = self.tokens.file_tokens.as_deref().map(Field::parse);
        if let Some(f) = self.tokens.file_tokens.as_deref() {
            if file_field == Some(None) {
                out.push(format!(
                    "`tokens.file_tokens`: `{f}` is not `ids` or `text`"
                ));
            }
            if self.tokens.file.is_none() {
                out.push("`tokens.file_tokens`: set without `tokens.file`".into());
            }
        }
        let judges = match self.llm.check() {
            Ok(j) => j,
            Err(p) => {
                out.extend(p);
                Vec::new()
            }
        };
        if strategy == Some(Strategy::Loglik)
            && judges.iter().any(|j| j.api != crate::llm::Api::Completions)
        {
            out.push("`scoring.strategy`: `loglik` needs prompt log-probabilities, which only `/v1/completions` with `echo` gives; set llm.api = \"completions\"".into());
        }
        let e = &self.episodes;
        if e.file.is_none() {
            if e.count == 0 {
                out.push("`episodes.count`: 0 episodes per cell".into());
            }
            if let Some(w) = e.ways.iter().find(|&&w| w < 2) {
                out.push(format!("`episodes.ways`: {w}-way is not a classification"));
            }
            if e.columns.iter().any(|c| c.shots == 0) {
                out.push("`episodes.columns`: shots must be at least 1".into());
            }
        }
        let names = match e.names.as_str() {
            "real" => Some(Names::Real),
            "nonsense" => Some(Names::Nonsense),
            other => {
                out.push(format!(
                    "`episodes.names`: `{other}` is not `real` or `nonsense`"
                ));
                None
            }
        };
        if !e.example_template.contains("{image}") || !e.example_template.contains("{label}") {
            out.push("`episodes.example_template`: needs both `{image}` and `{label}`".into());
        }
        match (strategy, names) {
            (Some(strategy), Some(names)) if out.is_empty() => Ok(CheckedFewshot {
                points: sweep_points(&self.tokens),
                tokens_written: serde_json::to_value(&self.tokens).expect("token settings"),
                text: TextRule {
                    keep_special: self.tokens.keep_special,
                    keep_subword: self.tokens.keep_subword,
                    separator: self.tokens.separator,
                },
                calibration: self
                    .tokens
                    .calibration
                    .iter()
                    .filter_map(|c| Calibration::parse(c))
                    .collect(),
                file: self.tokens.file.map(|files| TokensFile {
                    files,
                    field: file_field.flatten(),
                }),
                episodes: Episodes {
                    ways: e.ways.clone(),
                    columns: e.columns.clone(),
                    count: e.count,
                    seed: e.seed,
                    file: e.file.clone(),
                    names,
                    templates: Templates {
                        induction: e.induction_template.clone(),
                        example: e.example_template.clone(),
                    },
                },
                model: self.model,
                data: self.data,
                judges,
                strategy,
                top_logprobs: self.scoring.top_logprobs,
                tolerance: self.tolerance,
            }),
            _ => Err(out),
        }
    }
}

/// What is wrong with the token settings, each naming its key.
fn token_problems(t: &TokenSettings) -> Vec<String> {
    let mut out = Vec::new();
    let selects = t.select.values();
    for s in &selects {
        if Select::parse(s).is_none() {
            out.push(format!(
                "`tokens.select`: `{s}` is not one of {}",
                Select::NAMES.join(", ")
            ));
        }
    }
    for c in &t.calibration {
        if Calibration::parse(c).is_none() {
            out.push(format!("`tokens.calibration`: `{c}` is not `oracle`, `random` or `noisy-<p>` with 0 < p < 1"));
        }
    }
    let parsed: Vec<String> = t
        .calibration
        .iter()
        .filter_map(|c| Calibration::parse(c).map(|c| c.name()))
        .collect();
    if dedup_len(parsed.clone()) < parsed.len() {
        out.push("`tokens.calibration`: a tokenizer is listed twice".into());
    }
    let only_all = selects.iter().all(|s| s == "all");
    if t.per_image.values().contains(&0) && !only_all {
        out.push(
            "`tokens.per_image`: 0 writes no tokens (use select = \"all\" for every token)".into(),
        );
    }
    for (key, n, distinct) in [
        (
            "tokens.per_image",
            t.per_image.values().len(),
            dedup_len(t.per_image.values()),
        ),
        ("tokens.select", selects.len(), dedup_len(selects.clone())),
    ] {
        if n == 0 {
            out.push(format!("`{key}`: an empty list sweeps nothing"));
        } else if distinct < n {
            out.push(format!("`{key}`: a value is listed twice"));
        }
    }
    out
}

fn dedup_len<T: Ord>(mut v: Vec<T>) -> usize {
    v.sort();
    v.dedup();
    v.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_parse_check_and_name_their_points() {
        let spec = |t: &str| -> FewshotSpec {
            toml::from_str(&format!(
                "model = \"m\"\n[data]\ndataset = \"fashion-mnist\"\n[tokens]\n{t}\n[episodes]\ncount = 1\n"
            ))
            .unwrap()
        };
        let names = |c: &CheckedFewshot| -> Vec<String> {
            c.points.iter().map(|p| p.name.clone()).collect()
        };
        let c = spec("per_image = 8").check().unwrap();
        assert_eq!(names(&c), [""]);
        assert_eq!(c.points[0].key("2-way/x"), "2-way/x");
        let c = spec("per_image = [4, 8]").check().unwrap();
        assert_eq!(names(&c), ["per_image-4", "per_image-8"]);
        assert_eq!(
            (c.points[1].per_image, c.points[1].select),
            (8, Select::Stride)
        );
        assert_eq!(c.points[1].key("2-way/x"), "per_image-8/2-way/x");
        let c = spec("per_image = [4, 8]\nselect = [\"frequent\", \"all\"]")
            .check()
            .unwrap();
        assert_eq!(
            names(&c),
            [
                "select-frequent/per_image-4",
                "select-frequent/per_image-8",
                "select-all/per_image-all"
            ]
        );
        let c = spec("select = [\"raster\", \"stride\"]").check().unwrap();
        assert_eq!(names(&c), ["select-raster", "select-stride"]);
        let err = |t: &str| spec(t).check().unwrap_err().join("\n");
        assert!(err("per_image = []").contains("`tokens.per_image`: an empty list"));
        assert!(err("per_image = [4, 4]").contains("listed twice"));
        assert!(err("per_image = [0, 4]").contains("0 writes no tokens"));
        let e = err("select = [\"stride\", \"bogus\"]");
        assert!(e.contains("`tokens.select`: `bogus` is not one of"), "{e}");
        // Written lists are kept as lists in the resolved settings (the result records them).
        let v = spec("per_image = [4, 8]").check().unwrap().tokens_written;
        assert_eq!(v["per_image"], serde_json::json!([4, 8]));
        assert_eq!(v["select"], "stride");
    }
}
