//! TOML helpers shared by run configurations and suite files: `--set` overrides, merging
//! included tables, and the dotted key a parse error points at.

use crate::error::{Error, Result};

/// Apply `a.b.c=value` to a TOML table; the value is parsed as TOML, else taken as a string.
pub fn apply_override(table: &mut toml::Table, assignment: &str) -> Result<()> {
    let (key, raw) = assignment.split_once('=').ok_or_else(|| {
        Error::setting(assignment, "an override must look like section.key=value")
    })?;
    let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let parts: Vec<&str> = key.trim().split('.').collect();
    let mut cur = table;
    for p in &parts[..parts.len() - 1] {
        cur = cur
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .ok_or_else(|| Error::setting(key, format!("`{p}` is not a section")))?;
    }
    cur.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

/// Merge `over` into `base`: tables merge key by key, anything else replaces.
pub fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// The dotted key whose line holds byte `pos` of a TOML text (`[section]` + `key =`).
pub fn key_at(text: &str, pos: usize) -> String {
    let mut section = String::new();
    let mut offset = 0;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') && t.ends_with(']') {
            section = t.trim_matches(|c| c == '[' || c == ']').to_string();
        }
        if pos < offset + line.len() + 1 {
            return match t.split_once('=') {
                Some((k, _)) if !section.is_empty() => format!("{section}.{}", k.trim()),
                Some((k, _)) => k.trim().to_string(),
                None => section,
            };
        }
        offset += line.len() + 1;
    }
    section
}
