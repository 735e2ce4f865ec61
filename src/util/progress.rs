//! Where progress lines go: nowhere (tests, `--quiet`) or standard error.

pub trait Progress: Sync {
    fn enabled(&self) -> bool;
    /// A line of its own.
    fn line(&self, msg: &str);
    /// A line that the next `partial` or `line` overwrites (counters).
    fn partial(&self, msg: &str);
}

pub struct Quiet;

impl Progress for Quiet {
    fn enabled(&self) -> bool {
        false
    }
    fn line(&self, _: &str) {}
    fn partial(&self, _: &str) {}
}

pub struct Stderr;

impl Progress for Stderr {
    fn enabled(&self) -> bool {
        true
    }
    fn line(&self, msg: &str) {
        eprintln!("{msg}");
    }
    fn partial(&self, msg: &str) {
        eprint!("\r{msg}");
    }
}
