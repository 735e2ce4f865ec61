//! Files written atomically and hashed.

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::Path;

/// Write a file so that readers see either the old or the whole new content.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let mut tmp =
        tempfile::NamedTempFile::new_in(parent).map_err(|e| Error::file(parent, e.to_string()))?;
    tmp.write_all(bytes)
        .map_err(|e| Error::file(path, e.to_string()))?;
    // Temporary files are created 0600; what we write (results, checkpoints, caches) is
    // meant to be read by others too.
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(|e| Error::file(path, e.to_string()))?;
    }
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::file(path, e.to_string()))?;
    tmp.persist(path)
        .map_err(|e| Error::file(path, e.to_string()))?;
    // The rename itself is durable only once the folder is synced.
    if let Ok(d) = std::fs::File::open(parent) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Fail early, before any work, when a results folder cannot take a file: created if needed,
/// then a small file written, synced and removed there.
pub fn check_writable(dir: &Path) -> Result<()> {
    let fail = |e: &dyn std::fmt::Display| {
        Error::file(
            dir,
            format!("the results folder cannot be written ({e}); nothing was run: free space, fix its permissions or mount, or choose another --results"),
        )
    };
    std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
    let mut t = tempfile::NamedTempFile::new_in(dir).map_err(|e| fail(&e))?;
    t.write_all(&[0u8; 4096]).map_err(|e| fail(&e))?;
    t.as_file().sync_all().map_err(|e| fail(&e))?;
    t.close().map_err(|e| fail(&e))
}

/// An exclusive `flock` on `path` (created if needed), held until the returned file is dropped
/// and freed by the kernel if its holder dies: one process at a time past this point.
pub fn lock_exclusive(path: &Path) -> Result<std::fs::File> {
    let f = std::fs::File::create(path).map_err(|e| Error::file(path, e.to_string()))?;
    f.lock()
        .map_err(|e| Error::file(path, format!("cannot lock: {e}")))?;
    Ok(f)
}

/// Lower-case hex sha256 of a file's content, read in 1 MiB pieces.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f =
        std::fs::File::open(path).map_err(|e| Error::file(path, format!("cannot open: {e}")))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Lower-case hex sha256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// JSON lines: one serialised record per line, each line ending in a newline.
pub fn json_lines<T: serde::Serialize>(records: &[T]) -> Result<String> {
    let mut lines = String::new();
    for r in records {
        lines.push_str(&serde_json::to_string(r)?);
        lines.push('\n');
    }
    Ok(lines)
}
