//! Talking to large language models over the OpenAI-compatible HTTP API: the client
//! ([`client`]), what answers contain ([`response`]), the on-disk response cache ([`cache`]),
//! and the embedded llama-server used when a suite names no server ([`server`]).

pub mod backend;
pub mod cache;
pub mod client;
pub mod response;
pub mod server;

pub use cache::ResponseCache;
pub use client::{ClientSettings, LlmClient, Reply, Secret};
pub use response::{Completion, TokenLogprob};
