//! The backend of an LLM evaluation: everything between a task's questions ([`Ask`]) and the
//! answers. It owns the endpoint (a named URL, or the embedded llama-server with a judge,
//! started here and stopped on drop), the response cache, the API key, the HTTP client and its
//! runtime, token counting through `/tokenize`, the request bodies, the budget (estimates and
//! caps) and the usage of what was sent. Tasks (the few-shot suite kind) build questions and
//! score answers; they never speak HTTP.

use super::request::{self, Ask, ReplyCheck, Shape};
use super::response::{self, Completion};
use super::settings::{LlmConfig, Target};
use super::usage::{Estimate, Usage};
use super::{ClientSettings, LlmClient, Reply, ResponseCache, Secret};
use crate::error::{Error, Result};
use crate::util::untrusted;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Progress lines from the backend (sending, server start); `Sync` because answers arrive on
/// the runtime's threads.
pub type Say<'a> = &'a (dyn Fn(&str) + Sync);

/// One request of a batch: where it goes, its body, and what its answer must contain.
#[derive(Clone)]
pub struct Request {
    pub endpoint: &'static str,
    pub body: Value,
    pub check: ReplyCheck,
}

/// The answers of a batch, in the order asked, with what they cost and how fast they came.
pub struct Sent {
    pub replies: Vec<Reply>,
    /// Each reply read (text, log-probabilities, token counts).
    pub completions: Vec<Completion>,
    pub usage: Usage,
    pub wall_s: f64,
    /// Per request sent (not cached): client time beyond the server's own.
    pub overhead_ms: Vec<f64>,
    pub server_ms: f64,
}

pub struct Backend {
    pub config: LlmConfig,
    shape: Shape,
    /// What the response cache calls the server: the URL of a remote one, or the embedded
    /// server's build, model hash and options (its port changes from run to run).
    pub identity: String,
    /// The model's context in tokens, when known.
    pub context: Option<usize>,
    cache: Arc<ResponseCache>,
    /// Where the key came from (`from $VAR`, `none`); the key itself is only in the client.
    pub key_source: String,
    client: Arc<LlmClient>,
    rt: tokio::runtime::Runtime,
    /// Kept alive for the backend's life; stopped on drop.
    server: Option<super::server::EmbeddedServer>,
}

impl Backend {
    /// Start (or name) the server, open the response cache, read the key, build the client.
    pub fn open(config: &LlmConfig, say: Say) -> Result<Backend> {
        let (base_url, identity, context, server) = match &config.target {
            Target::Remote { url } => (
                url.clone(),
                url.trim_end_matches('/').to_string(),
                config.context,
                None,
            ),
            Target::Embedded(judge) => {
                let opts = super::server::ServerOptions {
                    context: config.server_context,
                    threads: config.server_threads,
                    alias: config.model.clone(),
                };
                let s = super::server::EmbeddedServer::start(judge, &opts)?;
                say(&format!(
                    "  embedded llama-server on {} ({})",
                    s.base_url, s.identity
                ));
                (
                    s.base_url.clone(),
                    s.identity.clone(),
                    Some(config.context.unwrap_or(config.server_context)),
                    Some(s),
                )
            }
        };
        let cache_path = config.cache.as_ref().map(PathBuf::from).unwrap_or_else(|| {
            crate::assets::cache_dir()
                .join("llm")
                .join("responses.jsonl")
        });
        let cache = Arc::new(ResponseCache::open(&cache_path)?);
        if cache.skipped_lines() > 0 {
            eprintln!(
                "  response cache {}: {} unreadable, oversized or forged line(s) passed over",
                cache_path.display(),
                cache.skipped_lines()
            );
        }
        let (key, key_source) = api_key(&config.api_key_env);
        let mut cs = ClientSettings::new(&base_url);
        cs.identity = identity.clone();
        cs.api_key = key;
        cs.timeout = std::time::Duration::from_secs_f64(config.timeout_s);
        cs.max_retries = config.max_retries;
        cs.max_reply_bytes = config.max_reply_bytes;
        cs.concurrency = config.concurrency;
        let client = Arc::new(LlmClient::new(cs, Some(cache.clone()))?);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::Msg(format!("cannot start the async runtime: {e}")))?;
        Ok(Backend {
            shape: config.shape(),
            config: config.clone(),
            identity,
            context,
            cache,
            key_source,
            client,
            rt,
            server,
        })
    }

    /// Whether requests go to the project's own llama-server.
    pub fn embedded(&self) -> bool {
        self.server.is_some()
    }

    /// The sha256 of the embedded judge's model file (none for a remote server).
    pub fn model_sha256(&self) -> Option<&'static str> {
        match &self.config.target {
            Target::Embedded(j) => Some(j.sha256()),
            Target::Remote { .. } => None,
        }
    }

    pub fn cache_path(&self) -> &std::path::Path {
        self.cache.path()
    }

    /// The HTTP request of a question.
    pub fn request(&self, ask: &Ask) -> Request {
        let (endpoint, body) = request::body(&self.shape, ask);
        Request {
            endpoint,
            body,
            check: ask.check.clone(),
        }
    }

    /// Token counts of prompts: exact through the server's `/tokenize` (llama.cpp), else an
    /// estimate of one token per 3 bytes. Returns the counts and how they were obtained.
    pub fn count_tokens(&self, prompts: &[&str]) -> (Vec<usize>, &'static str) {
        self.rt.block_on(count_tokens(&self.client, prompts))
    }

    /// What `asks` would send that the response cache does not answer yet. `prompt_tokens`
    /// counts each ask's prompt; `per_answer` is the most tokens an answer may take.
    pub fn estimate(&self, asks: &[Ask], prompt_tokens: &[usize], per_answer: u64) -> Estimate {
        let todo: Vec<usize> = (0..asks.len())
            .filter(|&i| {
                let r = self.request(&asks[i]);
                let k = super::cache::key(&self.identity, r.endpoint, &r.body);
                self.cache.get(&k).ok().flatten().is_none()
            })
            .collect();
        let prompt: u64 = todo.iter().map(|&i| prompt_tokens[i] as u64).sum();
        Estimate::new(
            &self.config.prices,
            asks.len(),
            todo.len(),
            prompt,
            per_answer,
        )
    }

    /// Send every question (through the cache, `concurrency` at a time) and read the answers,
    /// in order. Sending stops once what is billed passes a cap (`Error::Stopped`; the answers
    /// so far are cached, so a rerun resumes). `say` is told of progress.
    pub fn send(&self, asks: &[Ask], say: Say) -> Result<Sent> {
        let t0 = Instant::now();
        let requests: Vec<Request> = asks.iter().map(|a| self.request(a)).collect();
        let total = requests.len();
        let report = move |done: usize, c: &LlmClient| {
            if done.is_multiple_of(20) || done == total {
                let s = c.stats();
                say(&format!(
                    "  {done}/{total} answered ({} from the cache, {} HTTP requests)",
                    s.cache_hits, s.http_requests
                ));
            }
        };
        // Caps on what is really billed (cached answers cost nothing).
        let billed = std::sync::Mutex::new((0u64, 0u64));
        let cfg = &self.config;
        let stop = |rep: &Reply| -> Option<String> {
            if rep.cached {
                return None;
            }
            let c = response::parse(&rep.body).ok()?;
            let mut b = billed.lock().unwrap();
            b.0 += c.prompt_tokens.unwrap_or(0);
            b.1 += c.completion_tokens.unwrap_or(0);
            cfg.caps.reached(&cfg.prices, b.0, b.1)
        };
        let replies = self.rt.block_on(post_until(
            self.client.clone(),
            requests,
            cfg.concurrency,
            &report,
            &stop,
        ))?;
        let replies: Vec<Reply> = replies
            .into_iter()
            .map(|r| r.expect("every request answered"))
            .collect();
        let wall_s = t0.elapsed().as_secs_f64();
        let mut sent = Sent {
            completions: Vec::with_capacity(replies.len()),
            usage: Usage::default(),
            wall_s,
            overhead_ms: Vec::new(),
            server_ms: 0.0,
            replies: Vec::new(),
        };
        for rep in &replies {
            let c = response::parse(&rep.body)
                .map_err(|m| Error::Msg(format!("a cached answer cannot be read: {m}")))?;
            let (p, k) = (
                c.prompt_tokens.unwrap_or(0),
                c.completion_tokens.unwrap_or(0),
            );
            sent.usage.prompt += p;
            sent.usage.completion += k;
            if !rep.cached {
                sent.usage.billed_prompt += p;
                sent.usage.billed_completion += k;
                if let Some(s) = c.server_ms {
                    sent.overhead_ms.push((rep.request_ms - s).max(0.0));
                    sent.server_ms += s;
                }
            }
            sent.completions.push(c);
        }
        sent.replies = replies;
        Ok(sent)
    }

    /// The `requests` record of a batch: how many were answered from the cache, sent, retried,
    /// and how fast.
    pub fn requests_record(&self, sent: &Sent) -> Value {
        let stats = self.client.stats();
        let network = stats.answered - stats.cache_hits;
        let o = &sent.overhead_ms;
        let mean_overhead = (!o.is_empty()).then(|| o.iter().sum::<f64>() / o.len() as f64);
        let overhead_share = (sent.server_ms > 0.0).then(|| o.iter().sum::<f64>() / sent.server_ms);
        json!({
            "jobs": sent.replies.len(),
            "answered": stats.answered,
            "from_cache": stats.cache_hits,
            "sent": network,
            "http_requests": stats.http_requests,
            "retries": stats.retries,
            "wall_s": sent.wall_s,
            "per_s": if sent.wall_s > 0.0 { network as f64 / sent.wall_s } else { 0.0 },
            "client_overhead_ms_mean": mean_overhead,
            "client_overhead_share_of_server_time": overhead_share,
            "server_ms_total": sent.server_ms,
            // Torn, oversized or forged lines of the response cache, passed over.
            "cache_lines_skipped": self.cache.skipped_lines(),
        })
    }
}

/// The API key from `LQAE_LLM_API_KEY`, else from the variable the suite names.
fn api_key(env: &str) -> (Option<Secret>, String) {
    for var in ["LQAE_LLM_API_KEY", env] {
        if let Ok(k) = std::env::var(var) {
            if !k.is_empty() {
                return (Some(Secret::new(k)), format!("from ${var}"));
            }
        }
    }
    (None, "none".into())
}

/// How [`Backend::count_tokens`] counted when the server's tokenizer answered.
pub const COUNTED_BY_SERVER: &str = "server /tokenize";

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
            // Bounded like every reply: a prompt's token list is far under the reply limit.
            Ok(r) if r.status().is_success() => {
                match untrusted::read_body(r, client.settings.max_reply_bytes).await {
                    Ok(Some(b)) => serde_json::from_slice::<Value>(&b)
                        .ok()
                        .and_then(|v| v.get("tokens").and_then(|t| t.as_array()).map(|t| t.len())),
                    _ => None,
                }
            }
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
    (out, COUNTED_BY_SERVER)
}

/// Send every request (through the cache, at most `window` in flight) and return the replies
/// in order; the first failure stops the batch, with what is kept and how to resume.
/// `done(answered, client)` is told of progress. After each answer `stop` is asked whether
/// to go on: once it gives a reason, nothing more is sent, the requests in flight are
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
