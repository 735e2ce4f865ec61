//! A loaded suite: its file's identity ([`SuiteId`]) and its body read and checked by its
//! kind through the registry ([`super::kinds`]); groups expanded into the suites they list.

use super::kinds::{self, KindSettings};
use super::suite_file::{self, SuiteId};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Suite {
    pub id: SuiteId,
    pub settings: KindSettings,
}

impl std::ops::Deref for Suite {
    type Target = SuiteId;
    fn deref(&self) -> &SuiteId {
        &self.id
    }
}

/// Every problem of a resolved suite table, each naming its key.
pub fn problems(table: &toml::Table) -> Vec<String> {
    match parse(table) {
        Ok(_) => Vec::new(),
        Err(p) => p,
    }
}

/// The kind and description of a resolved table, and its body parsed and checked by its kind.
fn parse(table: &toml::Table) -> std::result::Result<(String, String, KindSettings), Vec<String>> {
    let (kind, description, body) = suite_file::head(table)?;
    let settings = kinds::parse(&kind, &body)?;
    Ok((kind, description, settings))
}

/// Load a suite by name with overrides (`key=value`), validated.
pub fn load(dir: &Path, name: &str, overrides: &[String]) -> Result<Suite> {
    let (path, table) = suite_file::read(dir, name, overrides)?;
    let (kind, description, settings) = parse(&table)
        .map_err(|p| Error::file(&path, format!("invalid suite:\n  {}", p.join("\n  "))))?;
    Ok(Suite {
        id: SuiteId {
            name: name.to_string(),
            path,
            description,
            kind,
            resolved: table,
        },
        settings,
    })
}

/// `validate`: the problems of a suite (a name or a file) with overrides, and its path.
pub fn validate(arg: &str, overrides: &[String]) -> Result<(PathBuf, Vec<String>)> {
    let (dir, name) = suite_file::locate(arg);
    let (path, table) = suite_file::read(&dir, &name, overrides)?;
    Ok((path, problems(&table)))
}

/// Expand groups into the list of runnable suites, in order, without repeats.
pub fn expand(dir: &Path, names: &[String], overrides: &[String]) -> Result<Vec<Suite>> {
    let mut out: Vec<Suite> = Vec::new();
    for n in names {
        let s = load(dir, n, overrides)?;
        match &s.settings {
            KindSettings::Group(g) => {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::kinds::probe::Layers;

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
        let KindSettings::LinearProbe(p) = s.settings else {
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
}
