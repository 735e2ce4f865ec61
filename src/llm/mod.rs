//! Talking to large language models over the OpenAI-compatible HTTP API. Lowest first: what
//! answers contain ([`response`]), the on-disk response cache ([`cache`]), the client
//! ([`client`]), what a task asks ([`request`]), tokens and money ([`usage`]), the judges the
//! embedded llama-server serves ([`judges`], [`server`]), a suite's `[llm]` ([`settings`]),
//! and the [`Backend`] that owns all of it for a run ([`backend`]).

pub mod backend;
pub mod cache;
pub mod client;
pub mod judges;
pub mod request;
pub mod response;
pub mod server;
pub mod settings;
pub mod usage;

pub use backend::{Backend, Sent};
pub use request::{Api, Ask, ReplyCheck, RequestKind};
pub use settings::{Judges, LlmConfig, LlmSettings};
pub use usage::{Estimate, Usage};

pub use cache::ResponseCache;
pub use client::{ClientSettings, LlmClient, Reply, Secret};
pub use response::{Completion, TokenLogprob};
