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

#[test]
fn the_scanner_sees_plain_and_grouped_paths_and_skips_comments() {
    assert_eq!(uses("use crate::eval::zoo::Zoo;"), ["eval"]);
    assert_eq!(uses("use crate::{bench, lm::FrozenLm};"), ["bench", "lm"]);
    assert!(uses("// see crate::eval").is_empty());
    assert!(uses("let e: crate::Result<()> = crate::Error::Msg(x);").is_empty());
}
