//! Small tools behind the command line that are neither suites nor benchmarks.

pub mod preview;
pub mod tokens;
