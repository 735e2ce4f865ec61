//! What a task asks of an LLM, before it is a request: the prompt, the kind of answer wanted,
//! and what the answer must contain. The backend turns an [`Ask`] into the HTTP body of its
//! server ([`body`]), so tasks never see endpoints, model names or server quirks.

use serde_json::{json, Value};
use std::sync::Arc;

/// Which HTTP API of the server a suite uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// `/v1/completions`: the prompt as text.
    Completions,
    /// `/v1/chat/completions`: the prompt as one user message.
    Chat,
}

impl Api {
    pub const NAMES: &'static [&'static str] = &["completions", "chat"];
    pub fn parse(s: &str) -> Option<Api> {
        match s {
            "completions" => Some(Api::Completions),
            "chat" => Some(Api::Chat),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Api::Completions => "completions",
            Api::Chat => "chat",
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
    /// Greedy generation of up to `max_answer_tokens`. No stop sequence: a judge that opens
    /// with a new line still answers, and the answer parser cuts the text where it ends.
    Generate,
    /// One token with the top `n` log-probabilities.
    FirstToken { top_logprobs: usize },
    /// The prompt's own log-probabilities, echoed (completions only).
    Echo,
}

/// What an answer must contain: `Err(why)` when it lacks it.
pub type ReplyCheck = Arc<dyn Fn(&Value) -> std::result::Result<(), String> + Send + Sync>;

/// One question for the LLM: the text, what kind of answer, through which API (`None`: the
/// suite's), and what the answer must contain before it is cached or counted.
#[derive(Clone)]
pub struct Ask {
    pub text: String,
    pub kind: RequestKind,
    pub api: Option<Api>,
    pub check: ReplyCheck,
}

/// How a backend shapes its bodies: the API, the `model` field, whether the server is the
/// project's own llama-server, the answer length and the suite's extra fields.
#[derive(Debug, Clone)]
pub struct Shape {
    pub api: Api,
    pub model: String,
    pub embedded: bool,
    pub max_answer_tokens: usize,
    pub extra: toml::Table,
}

/// The endpoint and body of `ask` under `shape`. `embedded`: the project's own llama-server,
/// asked not to reuse the KV cache of an earlier prompt (`cache_prompt: false`), so that an
/// answer does not depend on which request came before it (batch-size dependent rounding) and
/// a resumed run equals an uninterrupted one.
pub fn body(shape: &Shape, ask: &Ask) -> (&'static str, Value) {
    let api = ask.api.unwrap_or(shape.api);
    let (model, text) = (&shape.model, &ask.text);
    let chat = api == Api::Chat;
    let mut b = if chat {
        json!({"model": model, "messages": [{"role": "user", "content": text}], "temperature": 0.0})
    } else {
        json!({"model": model, "prompt": text, "temperature": 0.0})
    };
    let o = b.as_object_mut().expect("object");
    match ask.kind {
        RequestKind::Generate => {
            o.insert("max_tokens".into(), shape.max_answer_tokens.into());
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
    if shape.embedded {
        o.insert("cache_prompt".into(), false.into());
    }
    for (k, v) in &shape.extra {
        if let Ok(v) = serde_json::to_value(v) {
            o.insert(k.clone(), v);
        }
    }
    (api.path(), b)
}
