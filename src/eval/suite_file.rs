//! Suites are files under `suites/` (TOML): a `kind`, a one-line `description`, and the
//! settings of that kind. `include = "other"` starts from another suite and overrides its keys
//! (tables merge key by key); `--set key=value` overrides any key last. A `group` suite lists
//! other suites to run. The kinds themselves are listed in one place, [`super::kinds`].

use super::kinds::{self, SuiteSpec, KINDS};
use crate::error::{Error, Result};
use crate::util::toml_ext::{apply_override, merge};
use serde::{Deserialize, Serialize};
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

/// `validate`: the problems of a suite (a name or a file) with overrides, and its path.
pub fn validate(arg: &str, overrides: &[String]) -> Result<(PathBuf, Vec<String>)> {
    let (dir, name) = locate(arg);
    let (path, mut table) = resolve_table(&dir, &name, &mut Vec::new())?;
    for o in overrides {
        apply_override(&mut table, o)?;
    }
    Ok((path, problems(&table)))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    pub suites: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Suite {
    pub name: String,
    pub path: PathBuf,
    pub description: String,
    pub kind: String,
    pub spec: SuiteSpec,
    /// The fully resolved table (includes and overrides applied), recorded in results.
    pub resolved: toml::Table,
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

/// Every problem of a resolved suite table, each naming its key.
pub fn problems(table: &toml::Table) -> Vec<String> {
    match parse(table) {
        Ok(_) => Vec::new(),
        Err(p) => p,
    }
}

/// The kind and description of a resolved table, and its body parsed and checked by its kind.
fn parse(table: &toml::Table) -> std::result::Result<(String, String, SuiteSpec), Vec<String>> {
    let kind = match table.get("kind") {
        Some(toml::Value::String(k)) if KINDS.contains(&k.as_str()) => k.clone(),
        Some(toml::Value::String(k)) => {
            return Err(vec![format!(
                "`kind`: `{k}` is not a suite kind (known: {})",
                KINDS.join(", ")
            )])
        }
        Some(v) => {
            return Err(vec![format!(
                "`kind`: expected a string, found {}",
                v.type_str()
            )])
        }
        None => return Err(vec!["`kind`: missing".into()]),
    };
    let mut out = Vec::new();
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
    match kinds::parse(&kind, &body) {
        Ok(spec) if out.is_empty() => Ok((kind, description, spec)),
        Ok(_) => Err(out),
        Err(p) => {
            out.extend(p);
            Err(out)
        }
    }
}

/// Load a suite by name with overrides (`key=value`), validated.
pub fn load(dir: &Path, name: &str, overrides: &[String]) -> Result<Suite> {
    let (path, mut table) = resolve_table(dir, name, &mut Vec::new())?;
    for o in overrides {
        apply_override(&mut table, o)?;
    }
    let (kind, description, spec) = parse(&table)
        .map_err(|p| Error::file(&path, format!("invalid suite:\n  {}", p.join("\n  "))))?;
    Ok(Suite {
        name: name.to_string(),
        path,
        description,
        kind,
        spec,
        resolved: table,
    })
}

/// Expand groups into the list of runnable suites, in order, without repeats.
pub fn expand(dir: &Path, names: &[String], overrides: &[String]) -> Result<Vec<Suite>> {
    let mut out: Vec<Suite> = Vec::new();
    for n in names {
        let s = load(dir, n, overrides)?;
        match &s.spec {
            SuiteSpec::Group(g) => {
                for inner in expand(dir, &g.suites, overrides)? {
                    if !out.iter().any(|o| o.name == inner.name) {
                        out.push(inner);
                    }
                }
            }
            _ => {
                if !out.iter().any(|o| o.name == s.name) {
                    out.push(s);
                }
            }
        }
    }
    Ok(out)
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
    use crate::eval::kinds::probe::Layers;

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

    fn write(d: &Path, name: &str, text: &str) {
        std::fs::write(d.join(format!("{name}.toml")), text).unwrap();
    }

    const BASE: &str = r#"
kind = "linear-probe"
description = "base"
model = "lqae-small"
baselines = ["pixels"]
[data]
dataset = "fashion-mnist"
train_limit = 100
[probe]
layers = "all"
l2_grid = [0.1, 1.0]
"#;

    #[test]
    fn include_merges_tables_and_overrides_apply_last() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "base", BASE);
        write(d.path(), "child", "include = \"base\"\ndescription = \"child\"\n[data]\ntest_limit = 7\n[probe]\nlayers = [0, 6]\n");
        let s = load(d.path(), "child", &["data.train_limit=9".into()]).unwrap();
        assert_eq!(s.description, "child");
        let SuiteSpec::LinearProbe(p) = s.spec else {
            panic!()
        };
        assert_eq!(
            (
                p.data.dataset.as_str(),
                p.data.train_limit,
                p.data.test_limit
            ),
            ("fashion-mnist", Some(9), Some(7))
        );
        assert_eq!(p.probe.layers, Layers::List(vec![0, 6]));
        assert_eq!(p.probe.l2_grid, vec![0.1, 1.0]);
        assert_eq!(p.baselines, vec!["pixels"]);
        write(d.path(), "a", "include = \"b\"\n");
        write(d.path(), "b", "include = \"a\"\n");
        let e = load(d.path(), "a", &[]).unwrap_err().to_string();
        assert!(e.contains("cycle") && e.contains("a -> b -> a"), "{e}");
    }

    #[test]
    fn validation_names_each_bad_key() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "base", BASE);
        let bad = |over: &str| {
            load(d.path(), "base", &[over.to_string()])
                .unwrap_err()
                .to_string()
        };
        let e = bad("probe.layerz=1");
        assert!(
            e.contains("unknown field `layerz`") && e.contains("`probe.layerz`"),
            "{e}"
        );
        let e = bad("data.train_limit=\"many\"");
        assert!(e.contains("`data.train_limit`: invalid type"), "{e}");
        let e = bad("data.dataset=\"mini-imagenet\"");
        assert!(
            e.contains("`data.path`") && e.contains("--set data.path"),
            "{e}"
        );
        let e = bad("data.path=\"/no/such/dir\"");
        assert!(e.contains("/no/such/dir does not exist"), "{e}");
        let e = bad("kind=\"fewshots\"");
        assert!(e.contains("`kind`") && e.contains("linear-probe"), "{e}");
        write(
            d.path(),
            "g",
            "kind = \"group\"\ndescription = \"g\"\nsuites = [\"base\", \"base\"]\n",
        );
        let all = expand(d.path(), &["g".into()], &[]).unwrap();
        assert_eq!(all.len(), 1);
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
