//! The bottom layer: file writing and hashing, provenance of results, TOML helpers, HTML
//! escaping, progress lines, the path rule and bounded reads for what comes from others. Nothing here knows about models, suites or benchmarks.

pub mod fsx;
pub mod html;
pub mod progress;
pub mod provenance;
pub mod toml_ext;
pub mod untrusted;
