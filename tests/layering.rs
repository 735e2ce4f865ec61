//! The crate's layers: its top-level modules in order, lowest first ([`LAYERS`]); a module may
//! use only the modules before it (so there is no dependency cycle among them, and e.g. `lm`,
//! `model` or `kernels` never reach up into `eval` or `bench`). This test reads every source
//! file and fails on a reference to a module at its own level or above, and on a module of
//! `src/lib.rs` that has no place in the order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level modules, lowest layer first.
const LAYERS: &[&str] = &[
    "error",
    "util",
    "rng",
    "device",
    "assets",
    "kernels",
    "nn",
    "quantizer",
    "lm",
    "data",
    "lpips",
    "metrics",
    "fid",
    "llm",
    "model",
    "train",
    "bench",
    "tools",
    "eval",
];

/// The order, after checking that it names exactly the modules `lib.rs` declares.
fn layers() -> Vec<String> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let mut declared: Vec<String> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').trim().to_string())
        .collect();
    let mut ordered: Vec<String> = LAYERS.iter().map(|s| s.to_string()).collect();
    declared.sort();
    ordered.sort();
    assert_eq!(
        declared, ordered,
        "lib.rs declares other modules than LAYERS orders: give each a layer"
    );
    LAYERS.iter().map(|s| s.to_string()).collect()
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level modules a source text names as `crate::<module>` (comments left out).
fn uses(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                group[..end].split(',').collect()
            } else {
                vec![rest]
            };
            for n in names {
                let m: String = n
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !m.is_empty() && m != "Error" && m != "Result" {
                    out.push(m);
                }
            }
        }
    }
    out
}

/// The top-level module a file under src/ belongs to (None: lib.rs and the binaries).
fn owner(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src()).unwrap();
    let first = rel
        .components()
        .next()?
        .as_os_str()
        .to_string_lossy()
        .to_string();
    match first.as_str() {
        "lib.rs" | "bin" => None,
        f => Some(f.trim_end_matches(".rs").to_string()),
    }
}

#[test]
fn no_module_uses_one_declared_after_it() {
    let order = layers();
    assert!(order.len() > 10, "lib.rs declares {order:?}");
    let rank: BTreeMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), i))
        .collect();
    let mut all = Vec::new();
    files(&src(), &mut all);
    let mut bad = Vec::new();
    for f in &all {
        let Some(me) = owner(f) else { continue };
        let mine = *rank
            .get(me.as_str())
            .unwrap_or_else(|| panic!("{} is not declared in lib.rs", f.display()));
        for used in uses(&std::fs::read_to_string(f).unwrap()) {
            let Some(&r) = rank.get(used.as_str()) else {
                continue;
            };
            if r > mine {
                bad.push(format!("{} ({me}) uses crate::{used}", f.display()));
            }
        }
    }
    bad.sort();
    bad.dedup();
    assert!(
        bad.is_empty(),
        "lower layers reach up (lib.rs order: {}):\n  {}",
        order.join(" < "),
        bad.join("\n  ")
    );
}

/// The sub-modules of `eval`, lowest first: suite files know nothing of the kinds, statistics
/// nothing of results, the tokens file's format nothing of the codec, the kinds nothing of the
/// runner or the board.
const EVAL_LAYERS: &[&str] = &[
    "suite_file",
    "stats",
    "results",
    "tokens_file",
    "shipped",
    "zoo",
    "codec",
    "suite_kind",
    "kinds",
    "suite",
    "runner",
    "board",
    "ci",
];

/// A file's module path (`src/eval/kinds/fewshot/judge.rs`: `eval::kinds::fewshot::judge`;
/// a `mod.rs` is its folder's module).
fn module_path(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).unwrap();
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().to_string())
        .collect();
    let last = parts.pop().unwrap();
    if last != "mod.rs" {
        parts.push(last.trim_end_matches(".rs").to_string());
    }
    parts
}

/// Every module path a source text names, absolute: `crate::a::b`, and `super::`/`self::`
/// paths resolved from `me` (comments left out; grouped imports expanded one level).
fn paths(text: &str, me: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        for start in ["crate::", "super::", "self::"] {
            let mut rest = code;
            while let Some(i) = rest.find(start) {
                // A `super::` inside `crate::x::super::` would not compile: take whole words.
                let before = rest[..i].chars().last();
                rest = &rest[i..];
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                    rest = &rest[start.len()..];
                    continue;
                }
                let mut base: Vec<String> = match start {
                    "crate::" => Vec::new(),
                    "self::" => me.to_vec(),
                    _ => me[..me.len().saturating_sub(1)].to_vec(),
                };
                let mut tail = &rest[start.len()..];
                while let Some(t) = tail.strip_prefix("super::") {
                    base.pop();
                    tail = t;
                }
                let heads: Vec<&str> = if let Some(group) = tail.strip_prefix('{') {
                    let end = group.find('}').unwrap_or(group.len());
                    group[..end].split(',').collect()
                } else {
                    vec![tail]
                };
                for h in heads {
                    let mut p = base.clone();
                    for seg in h.trim().split("::") {
                        let w: String = seg
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        if w.is_empty() || w == "self" {
                            break;
                        }
                        p.push(w);
                        if seg.len() > p.last().unwrap().len() {
                            break;
                        }
                    }
                    out.push(p);
                }
                rest = &rest[start.len()..];
            }
        }
    }
    out
}

#[test]
fn eval_submodules_use_only_those_below_them() {
    let rank: BTreeMap<&str, usize> = EVAL_LAYERS
        .iter()
        .enumerate()
        .map(|(i, m)| (*m, i))
        .collect();
    let eval = src().join("eval");
    let mut all = Vec::new();
    files(&eval, &mut all);
    let mut bad = Vec::new();
    for f in &all {
        let me = module_path(f);
        if me.len() < 2 {
            continue; // eval/mod.rs: the re-exports
        }
        let mine = *rank
            .get(me[1].as_str())
            .unwrap_or_else(|| panic!("{} has no place in EVAL_LAYERS: give it one", f.display()));
        let text = std::fs::read_to_string(f).unwrap();
        // Unit tests may reach anywhere.
        let code = text.split("#[cfg(test)]").next().unwrap();
        for p in paths(code, &me) {
            if p.len() < 2 || p[0] != "eval" {
                continue;
            }
            if let Some(&r) = rank.get(p[1].as_str()) {
                if r > mine {
                    bad.push(format!(
                        "{} (eval::{}) uses eval::{}",
                        f.display(),
                        me[1],
                        p[1]
                    ));
                }
            }
        }
    }
    bad.sort();
    bad.dedup();
    assert!(
        bad.is_empty(),
        "eval's sub-modules reach up (order: {}):\n  {}",
        EVAL_LAYERS.join(" < "),
        bad.join("\n  ")
    );
}

#[test]
fn relative_paths_resolve_from_the_file() {
    let me: Vec<String> = ["eval", "kinds", "fewshot", "judge"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let p = paths("use super::task::Task;", &me);
    assert_eq!(p, [["eval", "kinds", "fewshot", "task", "Task"]]);
    let p = paths("use super::super::super::runner::{self, Ran};", &me);
    assert_eq!(p[0][..2], ["eval", "runner"]);
    let p = paths("let x = crate::eval::stats::proportion(1, 2, 0.1);", &me);
    assert_eq!(p[0][..3], ["eval", "stats", "proportion"]);
    assert!(paths("// super::board", &me).is_empty());
}

#[test]
fn the_scanner_sees_plain_and_grouped_paths_and_skips_comments() {
    assert_eq!(uses("use crate::eval::zoo::Zoo;"), ["eval"]);
    assert_eq!(uses("use crate::{bench, lm::FrozenLm};"), ["bench", "lm"]);
    assert!(uses("// see crate::eval").is_empty());
    assert!(uses("let e: crate::Result<()> = crate::Error::Msg(x);").is_empty());
}
