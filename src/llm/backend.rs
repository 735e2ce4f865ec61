//! The backend side of an LLM evaluation: the settings of a server, the endpoint (a named URL
//! or the embedded llama-server), the API key, the shape of each kind of request, token
//! counts through `/tokenize`, and sending a batch of requests through the cached client.
//! Tasks (the few-shot suite kind) build prompts and score answers; they never speak HTTP.

use super::{ClientSettings, LlmClient, Reply, ResponseCache, Secret};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;

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

impl LlmSettings {
    /// Whether a price is set (costs are estimated and recorded only then).
    pub fn priced(&self) -> bool {
        self.price_prompt_per_million > 0.0 || self.price_completion_per_million > 0.0
    }
}

/// Which HTTP API of the server a suite uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `/v1/completions`: the prompt as text.
    Completions,
    /// `/v1/chat/completions`: the prompt as one user message.
    Chat,
}

impl Api {
    pub fn parse(s: &str) -> Option<Api> {
        match s {
            "completions" => Some(Api::Completions),
            "chat" => Some(Api::Chat),
            _ => None,
        }
    }
    pub fn path(self) -> &'static str {
        match self {
            Api::Completions => "/v1/completions",
            Api::Chat => "/v1/chat/completions",
        }
    }
}

/// What a request asks the server for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// Greedy generation of up to `max_answer_tokens`, stopping at a newline.
    Generate,
    /// One token with the top `n` log-probabilities.
    FirstToken { top_logprobs: usize },
    /// The prompt's own log-probabilities, echoed (completions only).
    Echo,
}

/// The body of one request. `embedded`: the project's own llama-server, asked not to reuse
/// the KV cache of an earlier prompt (`cache_prompt: false`), so that an answer does not
/// depend on which request came before it (batch-size dependent rounding) and a resumed run
/// equals an uninterrupted one.
pub fn request_body(
    llm: &LlmSettings,
    api: Api,
    model: &str,
    text: &str,
    kind: RequestKind,
    embedded: bool,
) -> Value {
    let chat = api == Api::Chat;
    let mut b = if chat {
        json!({"model": model, "messages": [{"role": "user", "content": text}], "temperature": 0.0})
    } else {
        json!({"model": model, "prompt": text, "temperature": 0.0})
    };
    let o = b.as_object_mut().expect("object");
    match kind {
        RequestKind::Generate => {
            o.insert("max_tokens".into(), llm.max_answer_tokens.into());
            o.insert("stop".into(), json!(["\n"]));
        }
        RequestKind::FirstToken { top_logprobs } => {
            o.insert("max_tokens".into(), 1.into());
            if chat {
                o.insert("logprobs".into(), true.into());
                o.insert("top_logprobs".into(), top_logprobs.into());
            } else {
                o.insert("logprobs".into(), top_logprobs.into());
            }
        }
        RequestKind::Echo => {
            o.insert("max_tokens".into(), 1.into());
            o.insert("echo".into(), true.into());
            o.insert("logprobs".into(), 1.into());
        }
    }
    if embedded {
        o.insert("cache_prompt".into(), false.into());
    }
    for (k, v) in &llm.extra {
        if let Ok(v) = serde_json::to_value(v) {
            o.insert(k.clone(), v);
        }
    }
    b
}

pub struct Endpoint {
    pub base_url: String,
    pub identity: String,
    pub model: String,
    pub context: Option<usize>,
    /// Kept alive for the run; stopped on drop.
    pub server: Option<super::server::EmbeddedServer>,
}

/// The server a suite names, or the embedded llama-server started on a free loopback port.
pub fn endpoint(llm: &LlmSettings) -> Result<Endpoint> {
    match llm.url.as_deref().filter(|u| !u.trim().is_empty()) {
        Some(url) => Ok(Endpoint {
            base_url: url.to_string(),
            identity: url.trim_end_matches('/').to_string(),
            model: llm.model.clone(),
            context: llm.context,
            server: None,
        }),
        None => {
            let opts = super::server::ServerOptions {
                context: llm.server_context,
                threads: llm.server_threads,
                alias: llm.model.clone(),
            };
            let s = super::server::EmbeddedServer::start(&opts)?;
            Ok(Endpoint {
                base_url: s.base_url.clone(),
                identity: s.identity.clone(),
                model: llm.model.clone(),
                context: Some(llm.context.unwrap_or(llm.server_context)),
                server: Some(s),
            })
        }
    }
}

/// The API key from `LQAE_LLM_API_KEY`, else from the variable the suite names.
pub fn api_key(llm: &LlmSettings) -> (Option<Secret>, String) {
    for var in ["LQAE_LLM_API_KEY", llm.api_key_env.as_str()] {
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
pub async fn count_tokens(client: &LlmClient, prompts: &[&str]) -> (Vec<usize>, &'static str) {
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

/// The client of a run: the endpoint's URL and identity, the key, the suite's limits, and
/// the response cache.
pub fn client(
    llm: &LlmSettings,
    ep: &Endpoint,
    key: Option<Secret>,
    cache: Arc<ResponseCache>,
) -> Result<LlmClient> {
    let mut cs = ClientSettings::new(&ep.base_url);
    cs.identity = ep.identity.clone();
    cs.api_key = key;
    cs.timeout = std::time::Duration::from_secs_f64(llm.timeout_s);
    cs.max_retries = llm.max_retries;
    cs.concurrency = llm.concurrency;
    LlmClient::new(cs, Some(cache))
}

/// What an answer must contain: `Err(why)` when it lacks it.
pub type ReplyCheck = Arc<dyn Fn(&Value) -> std::result::Result<(), String> + Send + Sync>;

/// One request of a batch: where it goes, its body, and what its answer must contain.
#[derive(Clone)]
pub struct Request {
    pub endpoint: &'static str,
    pub body: Value,
    pub check: ReplyCheck,
}

/// Send every request (through the cache, `concurrency` at a time) and return the replies in
/// order; the first failure stops the batch, with what is kept and how to resume.
/// `done(answered, client)` is told of progress.
pub async fn post_all(
    client: Arc<LlmClient>,
    requests: Vec<Request>,
    done: &(dyn Fn(usize, &LlmClient) + Sync),
) -> Result<Vec<Reply>> {
    let all = post_until(client, requests, usize::MAX, done, &|_| None).await?;
    Ok(all
        .into_iter()
        .map(|r| r.expect("every request answered"))
        .collect())
}

/// As [`post_all`], at most `window` requests in flight, and after each answer `stop` is asked
/// whether to go on: once it gives a reason, nothing more is sent, the requests in flight are
/// answered (and cached), and the run ends with [`Error::Stopped`] (the answers so far are in
/// the response cache: a rerun resumes from them). Unstopped: every reply, in order.
pub async fn post_until(
    client: Arc<LlmClient>,
    requests: Vec<Request>,
    window: usize,
    done: &(dyn Fn(usize, &LlmClient) + Sync),
    stop: &(dyn Fn(&Reply) -> Option<String> + Sync),
) -> Result<Vec<Option<Reply>>> {
    let n = requests.len();
    let mut set = tokio::task::JoinSet::new();
    let mut pending = requests.into_iter().enumerate();
    let spawn = |set: &mut tokio::task::JoinSet<_>, (k, r): (usize, Request)| {
        let client = client.clone();
        set.spawn(async move {
            let check = r.check;
            (k, client.post(r.endpoint, &r.body, &*check).await)
        });
    };
    for job in pending.by_ref().take(window.max(1)) {
        spawn(&mut set, job);
    }
    let mut out: Vec<Option<Reply>> = vec![None; n];
    let (mut answered, mut stopped) = (0usize, None::<String>);
    while let Some(r) = set.join_next().await {
        let (k, reply) = r.map_err(|e| Error::Msg(format!("a request task failed: {e}")))?;
        match reply {
            Ok(rep) => {
                if stopped.is_none() {
                    stopped = stop(&rep);
                }
                out[k] = Some(rep);
            }
            Err(e) => {
                set.abort_all();
                let (kept, path) = client
                    .cache()
                    .map(|c| (c.len(), c.path().display().to_string()))
                    .unwrap_or((0, "(none)".into()));
                return Err(Error::Msg(format!(
                    "{e}\nThe run stopped; {kept} answers are kept in the response cache {path} and a rerun resumes from them"
                )));
            }
        }
        answered += 1;
        done(answered, &client);
        if stopped.is_none() {
            if let Some(job) = pending.next() {
                spawn(&mut set, job);
            }
        }
    }
    if let Some(reason) = stopped {
        let path = client
            .cache()
            .map(|c| c.path().display().to_string())
            .unwrap_or_else(|| "(none)".into());
        return Err(Error::Stopped {
            msg: format!("{reason}; {answered} of {n} requests answered, kept in the response cache {path}: a rerun with a higher cap resumes from them"),
            partial: serde_json::json!({"answered": answered, "requests": n, "reason": reason, "response_cache": path}),
        });
    }
    Ok(out)
}
