//! What comes from others stays in its folder and in its size: one rule for every path that
//! comes from data (an image id, a tokens-file id, a name that becomes a file name), and reads
//! of foreign files and replies that stop at a stated bound instead of at the end of the input.
//!
//! **The path rule** ([`relative_path`], [`join_under`]): a name from data is a relative path
//! of plain components separated by `/`: not empty, not absolute, no `.` or `..` component, no
//! NUL, backslash or control character, at most [`MAX_NAME_BYTES`] bytes. Joined under the
//! folder the user named, no component that already exists below that folder may be a
//! symbolic link (a link planted in the output folder is not followed out of it). The check
//! is made just before the write; a process that swaps a folder for a link between the check
//! and the write (a race with a local attacker) is outside what this guards.

use crate::error::{Error, Result};
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Longest name from data accepted as a path (bytes).
pub const MAX_NAME_BYTES: usize = 1024;

/// Largest `result.json` read from a results folder (`report`, `board`).
pub const MAX_RESULT_BYTES: u64 = 16 << 20;

/// Largest `samples.jsonl` / `per_image.jsonl` read beside a result.
pub const MAX_SAMPLES_BYTES: u64 = 128 << 20;

/// Largest metric magnitude a result may state; a larger one (or a non-finite one) is a
/// damaged or forged file, never a measurement.
pub const MAX_METRIC_MAGNITUDE: f64 = 1e15;

/// `name` as a relative path that stays under any folder it is joined to, or why not.
pub fn relative_path(name: &str) -> std::result::Result<PathBuf, String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "is {} bytes, more than the {MAX_NAME_BYTES} a name may have",
            name.len()
        ));
    }
    if let Some(c) = name.chars().find(|c| *c == '\0' || c.is_control()) {
        return Err(format!(
            "holds the control character U+{:04X}; names may not",
            c as u32
        ));
    }
    if name.contains('\\') {
        return Err("holds a backslash; use `/` between folders".into());
    }
    if name.starts_with('/') {
        return Err("is an absolute path; names must be relative to the output folder".into());
    }
    let p = Path::new(name);
    for c in p.components() {
        match c {
            Component::Normal(_) => {}
            Component::ParentDir => {
                return Err("holds `..`; names may not leave the output folder".into())
            }
            Component::CurDir => return Err("holds `.` as a folder".into()),
            Component::RootDir | Component::Prefix(_) => {
                return Err(
                    "is an absolute path; names must be relative to the output folder".into(),
                )
            }
        }
    }
    // Checked on the text: `Path::components` quietly drops an inner `.` and an empty part.
    for part in name.split('/') {
        match part {
            "" => return Err("has an empty folder name (`//` or a trailing `/`)".into()),
            "." => return Err("holds `.` as a folder".into()),
            ".." => return Err("holds `..`; names may not leave the output folder".into()),
            _ => {}
        }
    }
    Ok(p.to_path_buf())
}

/// `root/name` after [`relative_path`]'s checks, refusing a path through a symbolic link that
/// already exists below `root`.
pub fn join_under(root: &Path, name: &str) -> std::result::Result<PathBuf, String> {
    let rel = relative_path(name)?;
    let mut at = root.to_path_buf();
    for c in rel.components() {
        at.push(c);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                "leads through the symbolic link {}; links in the output folder are not followed",
                at.display()
            ))
            }
            Ok(_) => {}
            Err(_) => break, // nothing exists from here on: nothing to follow
        }
    }
    Ok(root.join(rel))
}

/// Read at most `limit` bytes of a file that did not come from this run; a longer file is an
/// error naming it, the limit and `what` the file was expected to be.
pub fn read_bounded(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>> {
    // A regular file only: a FIFO or a device would block the open or never end.
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            return Err(Error::file(
                path,
                format!("is not a regular file; not read as a {what}"),
            ))
        }
        Err(e) => return Err(Error::file(path, format!("cannot open: {e}"))),
    }
    let f =
        std::fs::File::open(path).map_err(|e| Error::file(path, format!("cannot open: {e}")))?;
    let mut buf = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    if buf.len() as u64 > limit {
        return Err(Error::file(
            path,
            format!("is larger than {limit} bytes, more than any {what}; not read"),
        ));
    }
    Ok(buf)
}

/// Read through the next newline into `line`, holding at most `limit` bytes of it:
/// `(bytes consumed, ended by a newline, longer than limit)`. Past the limit the rest of the
/// line is consumed but not kept, so a reader can skip the line or name it as an error; a
/// line without its newline (end of input, a line still being written) is not whole.
pub fn read_line_bounded(
    r: &mut impl std::io::BufRead,
    line: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<(usize, bool, bool)> {
    let (mut n, mut too_long) = (0usize, false);
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok((n, false, too_long));
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(p) => (p + 1, true),
            None => (buf.len(), false),
        };
        if !too_long {
            if line.len() + take > limit {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(&buf[..take]);
            }
        }
        r.consume(take);
        n += take;
        if done {
            return Ok((n, true, too_long));
        }
    }
}

/// The body of an HTTP reply, read piece by piece and stopped past `limit` bytes: `Ok(None)`
/// when it is longer (the rest is never read; the caller names its setting), so a server
/// cannot make the client hold more than `limit` bytes of one reply.
pub async fn read_body(
    resp: reqwest::Response,
    limit: usize,
) -> std::result::Result<Option<Vec<u8>>, reqwest::Error> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Ok(None);
    }
    let mut resp = resp;
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if buf.len() + chunk.len() > limit {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Some(buf))
}

/// Up to `limit` bytes of a reply's body, for an error message (the rest is dropped unread).
pub async fn read_body_prefix(resp: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut resp = resp;
    let mut buf = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = limit.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if buf.len() >= limit {
            break;
        }
    }
    buf
}

/// A metric value a result may hold: finite and at most [`MAX_METRIC_MAGNITUDE`] in size.
pub fn plausible(x: f64) -> bool {
    x.is_finite() && x.abs() <= MAX_METRIC_MAGNITUDE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_leave_the_folder_are_refused() {
        for bad in [
            "",
            "/tmp/x",
            "../x",
            "a/../../x",
            "a/./b",
            "./a",
            "a\\b",
            "a\0b",
            "a\nb",
            "a\u{1b}[31m",
            "a//b",
            "a/",
        ] {
            assert!(relative_path(bad).is_err(), "{bad:?} accepted");
        }
        assert!(relative_path(&"a".repeat(MAX_NAME_BYTES + 1)).is_err());
        for good in ["x", "a/b/c.png", "trouser 1.png", "é/ü.jpg", "..a", "a.."] {
            assert_eq!(relative_path(good).unwrap(), Path::new(good), "{good:?}");
        }
    }

    #[test]
    fn links_below_the_root_are_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside");
        let root = d.path().join("out");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::create_dir_all(root.join("real")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        assert!(join_under(&root, "link/x.png")
            .unwrap_err()
            .contains("symbolic link"));
        std::os::unix::fs::symlink(outside.join("f.png"), root.join("f.png")).unwrap();
        assert!(join_under(&root, "f.png").is_err());
        assert_eq!(
            join_under(&root, "real/new/x.png").unwrap(),
            root.join("real/new/x.png")
        );
        // The root itself may be a link: the user named it.
        std::os::unix::fs::symlink(&root, d.path().join("alias")).unwrap();
        assert!(join_under(&d.path().join("alias"), "real/x.png").is_ok());
    }

    #[test]
    fn bounded_reads_stop_at_the_limit() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, vec![b'x'; 100]).unwrap();
        assert_eq!(read_bounded(&p, 100, "file").unwrap().len(), 100);
        let e = read_bounded(&p, 99, "result file").unwrap_err().to_string();
        assert!(
            e.contains("larger than 99 bytes") && e.contains("result file"),
            "{e}"
        );
        assert!(plausible(0.5) && plausible(-1e15));
        assert!(!plausible(f64::NAN) && !plausible(f64::INFINITY) && !plausible(1e308));
    }
}
