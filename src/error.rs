//! The crate's error type: every variant says which file, tensor or setting is at fault.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file is missing, unreadable or malformed. `msg` says what was expected.
    #[error("{}: {msg}", path.display())]
    File { path: PathBuf, msg: String },

    /// A setting (CLI flag, config key, environment variable) has a bad value.
    #[error("setting `{key}`: {msg}")]
    Setting { key: String, msg: String },

    /// An asset could not be fetched or verified.
    #[error("asset `{name}`: {msg}")]
    Asset { name: String, msg: String },

    /// A tensor operation failed (backtraces stripped: the message is for people).
    #[error(transparent)]
    Candle(candle_core::Error),

    /// A request to an LLM server failed for good (after the retries it deserved).
    #[error("LLM server {url}: {msg}")]
    Llm { url: String, msg: String },

    /// A value could not be written or read as JSON.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),

    /// A run stopped on purpose before its end (a budget cap reached, or a dry run): `partial`
    /// says how far it got; what it did is kept (e.g. in the response cache) for a rerun.
    #[error("{msg}")]
    Stopped {
        msg: String,
        partial: serde_json::Value,
    },

    #[error("{0}")]
    Msg(String),
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Candle(strip_backtrace(e))
    }
}

/// candle wraps errors in a captured backtrace when RUST_BACKTRACE is set; its Display then
/// prints the whole trace. Keep the message.
pub fn strip_backtrace(e: candle_core::Error) -> candle_core::Error {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => strip_backtrace(*inner),
        e => e,
    }
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn file(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::File {
            path: path.into(),
            msg: msg.into(),
        }
    }
    pub fn setting(key: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Setting {
            key: key.into(),
            msg: msg.into(),
        }
    }
}
