//! The bottom layer: file writing and hashing, provenance of results, TOML helpers. Nothing
//! here knows about models, suites or benchmarks.

pub mod fsx;
pub mod provenance;
pub mod toml_ext;
