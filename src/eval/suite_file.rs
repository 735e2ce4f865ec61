//! Suites are files under `suites/` (TOML): a `kind`, a one-line `description`, and the
//! settings of that kind. `include = "other"` starts from another suite and overrides its keys
//! (tables merge key by key); `--set key=value` overrides any key last. A `group` suite lists
//! other suites to run.
//!
//! This module reads the files and knows nothing of the kinds: it gives a suite's identity
//! ([`SuiteId`]: name, file, description, kind name, the resolved table) and the body its
//! kind reads; the registry (`super::kinds`) turns them into a checked suite (`super::suite`).

use crate::error::{Error, Result};
use crate::util::toml_ext::{apply_override, merge};
use std::path::{Path, PathBuf};

/// `$LQAE_SUITES`, else `./suites`, else the `suites/` folder of the source tree.
pub fn suites_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LQAE_SUITES").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let local = PathBuf::from("suites");
    if local.is_dir() {
        return local;
    }
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/suites"))
}

#[derive(Debug, Clone)]
pub struct SuiteEntry {
    pub name: String,
    pub path: PathBuf,
    pub description: String,
}

/// Every `*.toml` in `dir`, sorted by name, with its `description` (or the parse error).
pub fn list(dir: &Path) -> Result<Vec<SuiteEntry>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::file(dir, format!("cannot list suites: {e}"))),
    };
    let mut out = Vec::new();
    for entry in rd {
        let path = entry.map_err(|e| Error::file(dir, e.to_string()))?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let name = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let description = match std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| toml::from_str::<toml::Table>(&t).map_err(|e| e.message().to_string()))
        {
            Ok(t) => t
                .get("description")
                .and_then(|d| d.as_str())
                .unwrap_or("(no description)")
                .to_string(),
            Err(e) => format!("(invalid: {e})"),
        };
        out.push(SuiteEntry {
            name,
            path,
            description,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Find a suite by name; an unknown name gets the closest known names.
pub fn find(dir: &Path, name: &str) -> Result<SuiteEntry> {
    let all = list(dir)?;
    if let Some(s) = all.iter().find(|s| s.name == name) {
        return Ok(s.clone());
    }
    let known: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
    Err(Error::setting(
        "suite",
        unknown_name_message(name, &known, &dir.display().to_string()),
    ))
}

/// "no suite named X; did you mean Y?" with the list of known names.
pub fn unknown_name_message(name: &str, known: &[&str], place: &str) -> String {
    if known.is_empty() {
        return format!("no suite named `{name}`: {place} holds no suite files yet");
    }
    let mut scored: Vec<(usize, &str)> =
        known.iter().map(|k| (edit_distance(name, k), *k)).collect();
    scored.sort();
    let close: Vec<&str> = scored
        .iter()
        .filter(|(d, k)| *d <= (k.len().max(name.len()) / 3).max(2))
        .map(|(_, k)| *k)
        .take(3)
        .collect();
    let mut msg = format!("no suite named `{name}` in {place}");
    if !close.is_empty() {
        msg.push_str(&format!(
            "; did you mean {}?",
            close
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(" or ")
        ));
    }
    msg.push_str(&format!(" (known: {})", known.join(", ")));
    msg
}

/// `configs/` beside the suites folder, else the source tree's (run configurations by name).
pub fn configs_dir() -> PathBuf {
    let beside = suites_dir().parent().map(|p| p.join("configs"));
    match beside {
        Some(d) if d.is_dir() => d,
        _ => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/configs")),
    }
}

/// A suite argument may be a name under suites/ or a path to a suite file: the folder to look
/// in and the name.
pub fn locate(arg: &str) -> (PathBuf, String) {
    let p = Path::new(arg);
    if p.extension().is_some_and(|e| e == "toml") && p.is_file() {
        let dir = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = p
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        (dir, name)
    } else {
        (suites_dir(), arg.to_string())
    }
}

/// A suite as its file says, before its kind reads the body: what results record of it.
#[derive(Debug, Clone)]
pub struct SuiteId {
    pub name: String,
    pub path: PathBuf,
    pub description: String,
    /// The `kind = "..."` as written (the registry knows which exist).
    pub kind: String,
    /// The fully resolved table (includes and overrides applied), recorded in results.
    pub resolved: toml::Table,
}

/// A suite's table by name, with its includes resolved and the overrides (`key=value`)
/// applied: its path and the table.
pub fn read(dir: &Path, name: &str, overrides: &[String]) -> Result<(PathBuf, toml::Table)> {
    let (path, mut table) = resolve_table(dir, name, &mut Vec::new())?;
    for o in overrides {
        apply_override(&mut table, o)?;
    }
    Ok((path, table))
}

/// The kind and description of a resolved table (or what is wrong with them), and its body:
/// the table without those two keys, which the kind reads.
pub fn head(
    table: &toml::Table,
) -> std::result::Result<(String, String, toml::Table), Vec<String>> {
    let mut out = Vec::new();
    let kind = match table.get("kind") {
        Some(toml::Value::String(k)) => k.clone(),
        Some(v) => {
            out.push(format!("`kind`: expected a string, found {}", v.type_str()));
            String::new()
        }
        None => {
            out.push("`kind`: missing".into());
            String::new()
        }
    };
    let description = match table.get("description") {
        Some(toml::Value::String(d)) => d.clone(),
        _ => {
            out.push("`description`: missing (one line saying what the suite measures)".into());
            String::new()
        }
    };
    let mut body = table.clone();
    body.remove("kind");
    body.remove("description");
    if out.is_empty() {
        Ok((kind, description, body))
    } else {
        Err(out)
    }
}

fn read_table(path: &Path) -> Result<toml::Table> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    toml::from_str(&text).map_err(|e| Error::file(path, format!("invalid TOML: {e}")))
}

/// A suite's table with its `include` chain resolved (cycles are errors).
pub fn resolve_table(
    dir: &Path,
    name: &str,
    chain: &mut Vec<String>,
) -> Result<(PathBuf, toml::Table)> {
    let entry = find(dir, name)?;
    if chain.contains(&entry.name) {
        chain.push(entry.name.clone());
        return Err(Error::file(
            &entry.path,
            format!("`include` cycle: {}", chain.join(" -> ")),
        ));
    }
    chain.push(entry.name.clone());
    let mut own = read_table(&entry.path)?;
    let table = match own.remove("include") {
        Some(toml::Value::String(parent)) => {
            let (_, mut base) = resolve_table(dir, &parent, chain)?;
            base.remove("description");
            merge(&mut base, own);
            base
        }
        Some(other) => {
            return Err(Error::file(
                &entry.path,
                format!("`include` must be a suite name, not {other}"),
            ))
        }
        None => own,
    };
    Ok((entry.path, table))
}

pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_you_mean_picks_the_close_name() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        let m = unknown_name_message(
            "linear-fashionmnst",
            &["linear-fashionmnist", "recon-fashionmnist", "x"],
            "suites",
        );
        assert!(m.contains("did you mean `linear-fashionmnist`"), "{m}");
        assert!(!m.contains("did you mean `x`"), "{m}");
    }

    #[test]
    fn lists_toml_files_with_descriptions() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("b.toml"), "description = \"second\"\n").unwrap();
        std::fs::write(d.path().join("a.toml"), "description = \"first\"\n").unwrap();
        std::fs::write(d.path().join("notes.md"), "not a suite").unwrap();
        std::fs::write(d.path().join("c.toml"), "description = \n").unwrap();
        let l = list(d.path()).unwrap();
        let names: Vec<_> = l.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(l[0].description, "first");
        assert!(
            l[2].description.starts_with("(invalid"),
            "{}",
            l[2].description
        );
        assert!(list(&d.path().join("none")).unwrap().is_empty());
    }
}
