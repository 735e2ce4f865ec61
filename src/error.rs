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

    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    #[error("{0}")]
    Msg(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn file(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::File { path: path.into(), msg: msg.into() }
    }
    pub fn setting(key: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Setting { key: key.into(), msg: msg.into() }
    }
}
