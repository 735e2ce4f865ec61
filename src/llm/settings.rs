//! The `[llm]` table of a suite as written ([`LlmSettings`]), and checked ([`LlmConfig`]):
//! which server (a URL, or the embedded llama-server with one of the project's judges), the
//! API, limits, prices and caps. A suite may name several (`[[llm]]`): the same requests go
//! to each judge.

use super::judges::{self, Judge};
use super::request::{Api, Shape};
use super::usage::Caps;
use serde::{Deserialize, Serialize};

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
/// 16 MiB: a `loglik` reply echoing a 4,096-token prompt with 20 alternatives per token is
/// about 4 MiB; a `generate` reply is under a kilobyte.
pub const DEFAULT_MAX_REPLY_BYTES: usize = 16 << 20;
/// The largest `llm.max_reply_bytes` accepted: an answer must fit a response-cache line.
pub const MAX_REPLY_BYTES_LIMIT: usize = 16 << 20;
fn d_reply_bytes() -> usize {
    DEFAULT_MAX_REPLY_BYTES
}
fn d_server_ctx() -> usize {
    4096
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmSettings {
    /// Base URL of an OpenAI-compatible server (`http://host:port` or `.../v1`). Empty or
    /// absent: the embedded llama-server with `judge` on a free loopback port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The embedded server's model, one of the project's judges (`lqae-eval ls-judges`);
    /// default [`judges::DEFAULT`]. Not used with `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<String>,
    /// The `model` field of each request: required with `url`; the judge's name otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
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
    /// Longest reply body read from the server; a longer one is an error naming this
    /// setting, and nothing of it is cached.
    #[serde(default = "d_reply_bytes")]
    pub max_reply_bytes: usize,
    /// The model's context in tokens (the embedded server's is `server_context`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<usize>,
    /// Tokens generated for an answer (`generate`).
    #[serde(default = "d_answer_tokens")]
    pub max_answer_tokens: usize,
    /// The response cache file; default `$LQAE_CACHE/llm/responses.jsonl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
    /// Prices per million tokens, for the cost line of the result (0: not reported).
    #[serde(default)]
    pub price_prompt_per_million: f64,
    #[serde(default)]
    pub price_completion_per_million: f64,
    /// Refuse to start when the estimated cost of what is not yet cached exceeds this (at the
    /// prices above), and stop sending once the real cost does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost: Option<f64>,
    /// The same for prompt tokens sent (billed: cached answers cost nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_prompt_tokens: Option<u64>,
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

/// Prices per million tokens (0: not priced).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Prices {
    pub prompt_per_million: f64,
    pub completion_per_million: f64,
}

impl Prices {
    /// Whether a price is set (costs are estimated and recorded only then).
    pub fn priced(&self) -> bool {
        self.prompt_per_million > 0.0 || self.completion_per_million > 0.0
    }
    /// `(prompt, completion)` tokens at these prices.
    pub fn cost(&self, prompt: u64, completion: u64) -> f64 {
        (prompt as f64 * self.prompt_per_million + completion as f64 * self.completion_per_million)
            / 1e6
    }
}

/// Where requests go.
#[derive(Debug, Clone)]
pub enum Target {
    /// The project's llama-server with one of its judges, on a free loopback port.
    Embedded(&'static Judge),
    /// A server the suite names.
    Remote { url: String },
}

/// One checked `[llm]`: enums and resolved values only.
#[derive(Debug, Clone)]
pub struct LlmConfig {
    pub target: Target,
    /// The request's `model` field.
    pub model: String,
    pub api: Api,
    pub api_key_env: String,
    pub concurrency: usize,
    pub timeout_s: f64,
    pub max_retries: u32,
    pub max_reply_bytes: usize,
    pub context: Option<usize>,
    pub max_answer_tokens: usize,
    pub cache: Option<String>,
    pub prices: Prices,
    pub caps: Caps,
    pub extra: toml::Table,
    pub server_context: usize,
    pub server_threads: usize,
}

impl LlmConfig {
    /// A short name for metric prefixes and tables: the judge's, or the request's model.
    pub fn name(&self) -> &str {
        match &self.target {
            Target::Embedded(j) => j.name,
            Target::Remote { .. } => &self.model,
        }
    }

    /// The name as metric prefixes and file names use it: characters other than letters,
    /// digits, `.`, `_` and `-` become `_` (a remote model is often `org/name`).
    pub fn slug(&self) -> String {
        self.name()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }

    pub fn shape(&self) -> Shape {
        Shape {
            api: self.api,
            model: self.model.clone(),
            embedded: matches!(self.target, Target::Embedded(_)),
            max_answer_tokens: self.max_answer_tokens,
            extra: self.extra.clone(),
        }
    }
}

impl LlmSettings {
    /// The checked form, or every problem, each naming its key (`at` is the table's name,
    /// `llm` or `llm[k]`).
    pub fn check(&self, at: &str) -> std::result::Result<LlmConfig, Vec<String>> {
        let mut out = Vec::new();
        let api = Api::parse(&self.api);
        if api.is_none() {
            out.push(format!(
                "`{at}.api`: `{}` is not one of {}",
                self.api,
                Api::NAMES.join(", ")
            ));
        }
        let url = self.url.as_deref().map(str::trim).filter(|u| !u.is_empty());
        let target = match (url, self.judge.as_deref()) {
            (Some(_), Some(j)) => {
                out.push(format!("`{at}.judge`: `{j}` is a model of the embedded server, and `{at}.url` names another server; set one of them"));
                None
            }
            (Some(u), None) => Some(Target::Remote { url: u.to_string() }),
            (None, j) => match judges::by_name(j.unwrap_or(judges::DEFAULT)) {
                Some(j) => Some(Target::Embedded(j)),
                None => {
                    out.push(format!(
                        "`{at}.judge`: `{}` is not one of {}",
                        j.unwrap_or_default(),
                        judges::names().join(", ")
                    ));
                    None
                }
            },
        };
        let model = match (&target, self.model.as_deref()) {
            (_, Some(m)) => m.to_string(),
            (Some(Target::Embedded(j)), None) => j.name.to_string(),
            _ => {
                if url.is_some() {
                    out.push(format!("`{at}.model`: a server named by `{at}.url` needs the name of the model it serves (the `model` field of each request)"));
                }
                String::new()
            }
        };
        let prices = Prices {
            prompt_per_million: self.price_prompt_per_million,
            completion_per_million: self.price_completion_per_million,
        };
        if self.max_cost.is_some() && !prices.priced() {
            out.push(format!("`{at}.max_cost`: a cost cap needs the prices: set {at}.price_prompt_per_million and {at}.price_completion_per_million"));
        }
        if !(4096..=MAX_REPLY_BYTES_LIMIT).contains(&self.max_reply_bytes) {
            out.push(format!("`{at}.max_reply_bytes`: {} is outside 4096..={MAX_REPLY_BYTES_LIMIT} (a reply must fit a response-cache line)", self.max_reply_bytes));
        }
        if self.concurrency == 0 {
            out.push(format!("`{at}.concurrency`: must be at least 1"));
        }
        match (target, api) {
            (Some(target), Some(api)) if out.is_empty() => Ok(LlmConfig {
                target,
                model,
                api,
                api_key_env: self.api_key_env.clone(),
                concurrency: self.concurrency,
                timeout_s: self.timeout_s,
                max_retries: self.max_retries,
                max_reply_bytes: self.max_reply_bytes,
                context: self.context,
                max_answer_tokens: self.max_answer_tokens,
                cache: self.cache.clone(),
                prices,
                caps: Caps {
                    max_cost: self.max_cost,
                    max_prompt_tokens: self.max_prompt_tokens,
                },
                extra: self.extra.clone(),
                server_context: self.server_context,
                server_threads: self.server_threads,
            }),
            _ => Err(out),
        }
    }
}

/// One `[llm]` table or a list of them (`[[llm]]`): several judges, the same requests to each.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Judges {
    One(Box<LlmSettings>),
    List(Vec<LlmSettings>),
}

impl Default for Judges {
    fn default() -> Self {
        Judges::One(Box::default())
    }
}

impl Judges {
    pub fn all(&self) -> Vec<&LlmSettings> {
        match self {
            Judges::One(s) => vec![s],
            Judges::List(v) => v.iter().collect(),
        }
    }

    /// Every judge checked; two of one name are refused (their metrics would collide).
    pub fn check(&self) -> std::result::Result<Vec<LlmConfig>, Vec<String>> {
        let all = self.all();
        if all.is_empty() {
            return Err(vec!["`llm`: an empty list names no judge".into()]);
        }
        let mut out = Vec::new();
        let mut problems = Vec::new();
        for (k, s) in all.iter().enumerate() {
            let at = match self {
                Judges::One(_) => "llm".to_string(),
                Judges::List(_) => format!("llm[{k}]"),
            };
            match s.check(&at) {
                Ok(c) => {
                    if out.iter().any(|o: &LlmConfig| o.slug() == c.slug()) {
                        problems.push(format!(
                            "`{at}`: judge `{}` is listed twice (or two judges' names differ only in characters that metric names cannot hold)",
                            c.name()
                        ));
                    }
                    out.push(c);
                }
                Err(p) => problems.extend(p),
            }
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(problems)
        }
    }
}

// A table is one judge, an array of tables several; each is read by `LlmSettings`' own
// deserializer, so a misspelt key is still named (an untagged enum would only say that no
// variant matched).
impl<'de> Deserialize<'de> for Judges {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Judges;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an [llm] table or a list of them ([[llm]])")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<Judges, A::Error> {
                LlmSettings::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(|s| Judges::One(Box::new(s)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, s: A) -> Result<Judges, A::Error> {
                Vec::<LlmSettings>::deserialize(serde::de::value::SeqAccessDeserializer::new(s))
                    .map(Judges::List)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Doc {
        #[serde(default)]
        llm: Judges,
    }

    fn parse(t: &str) -> Result<Doc, String> {
        toml::from_str::<Doc>(t).map_err(|e| e.to_string())
    }

    #[test]
    fn one_table_or_a_list_and_bad_keys_are_named() {
        let d = parse("").unwrap();
        let c = d.llm.check().unwrap();
        assert_eq!(c.len(), 1);
        assert!(matches!(c[0].target, Target::Embedded(j) if j.name == judges::DEFAULT));
        assert_eq!(c[0].model, judges::DEFAULT);
        let d =
            parse("[[llm]]\njudge = \"smollm2\"\n[[llm]]\nurl = \"http://x/v1\"\nmodel = \"m\"\n")
                .unwrap();
        let c = d.llm.check().unwrap();
        assert_eq!(
            c.iter().map(|c| c.name()).collect::<Vec<_>>(),
            ["smollm2", "m"]
        );
        let d = parse("[[llm]]\nurl = \"http://x\"\nmodel = \"org/m 1\"\n[[llm]]\nurl = \"http://y\"\nmodel = \"org_m_1\"\n")
            .unwrap();
        let e = d.llm.check().unwrap_err().join("\n");
        assert!(
            e.contains("`llm[1]`: judge `org_m_1` is listed twice"),
            "{e}"
        );
        let one = parse("[llm]\nurl = \"http://x\"\nmodel = \"org/m\"\n").unwrap();
        assert_eq!(one.llm.check().unwrap()[0].slug(), "org_m");
        let e = parse("[llm]\njudeg = \"smollm2\"\n").unwrap_err();
        assert!(e.contains("judeg"), "{e}");
        let e = parse("[[llm]]\nconcurency = 2\n").unwrap_err();
        assert!(e.contains("concurency"), "{e}");
        let bad = |t: &str| parse(t).unwrap().llm.check().unwrap_err().join("\n");
        assert!(bad("[llm]\njudge = \"gpt-9\"\n").contains("`llm.judge`: `gpt-9` is not one of"));
        assert!(bad("[llm]\nurl = \"http://x\"\n").contains("`llm.model`"));
        assert!(
            bad("[llm]\nurl = \"http://x\"\nmodel = \"m\"\njudge = \"smollm2\"\n")
                .contains("set one of them")
        );
        assert!(
            bad("[[llm]]\njudge = \"smollm2\"\n[[llm]]\njudge = \"smollm2\"\n")
                .contains("`llm[1]`: judge `smollm2` is listed twice")
        );
        assert!(bad("[llm]\napi = \"soap\"\n").contains("`llm.api`: `soap`"));
        assert!(bad("[llm]\nmax_cost = 1.0\n").contains("`llm.max_cost`"));
    }
}
