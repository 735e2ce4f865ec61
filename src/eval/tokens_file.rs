//! `tokens.file`: precomputed tokens scored by the probe and few-shot suites in place of the
//! suite model's own, so any tokenizer (SPAE, the V2L tokenizer, a test's brightness words)
//! is scored under the same protocol. The files are in the format `lqae-eval encode` writes
//! ([`crate::eval::codec`]): a header line naming the tokenizer, then one line per image with
//! its `id` (`<split>/<index>` for a data set), `pixels_sha256` and either `ids` (of the
//! suite's LM) or `text` (a list of words, or one string split at whitespace), or both.
//!
//! Every image a suite uses must be in the file(s) under its id, with the same decoded
//! pixels: a missing or mismatched image is an error naming it and the file.

use crate::data::{batch, LabelledImages, Split};
use crate::error::{Error, Result};
use crate::util::fsx::{sha256_file, sha256_hex};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;

/// One file or several (e.g. a train and a test split encoded separately).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Files {
    One(String),
    Many(Vec<String>),
}

impl Files {
    pub fn paths(&self) -> Vec<PathBuf> {
        match self {
            Files::One(p) => vec![PathBuf::from(p)],
            Files::Many(v) => v.iter().map(PathBuf::from).collect(),
        }
    }
}

/// Which part of an image line is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// Token ids of the suite's LM (what `encode` writes for an LQAE).
    Ids,
    /// Words: tokenized by the LM's tokenizer for the probe, written as they are by few-shot.
    Text,
}

impl Field {
    pub fn parse(s: &str) -> Option<Field> {
        match s {
            "ids" => Some(Field::Ids),
            "text" => Some(Field::Text),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Field::Ids => "ids",
            Field::Text => "text",
        }
    }
}

/// The id `encode --data` gives image `i` of `split`.
pub fn data_image_id(split: Split, i: usize) -> String {
    let name = match split {
        Split::Train => "train",
        Split::Test => "test",
    };
    format!("{name}/{i}")
}

/// One image's precomputed tokens.
#[derive(Debug, Clone)]
pub struct Entry {
    pub pixels_sha256: String,
    pub ids: Option<Vec<u32>>,
    pub text: Option<Vec<String>>,
    /// The file it came from (for errors).
    file: usize,
}

/// Every image of one or more tokens files, by id.
pub struct Precomputed {
    pub files: Vec<PathBuf>,
    /// sha256 over the files' sha256s, in order.
    pub sha256: String,
    /// The tokenizer the header names (`model`), and its hash when given.
    pub tokenizer: String,
    pub tokenizer_sha256: Option<String>,
    /// The LM whose ids `ids` are, as the header names it (`lm`), when it does.
    pub lm: Option<String>,
    /// The vocabulary size the header gives (`vocab`), when it does.
    pub vocab: Option<usize>,
    entries: HashMap<String, Entry>,
}

impl Precomputed {
    /// Read `files`; their headers must name one tokenizer.
    pub fn load(files: &Files) -> Result<Self> {
        let paths = files.paths();
        if paths.is_empty() {
            return Err(Error::setting("tokens.file", "names no file"));
        }
        let mut entries: HashMap<String, Entry> = HashMap::new();
        let mut header: Option<(Value, usize)> = None;
        let mut shas = Vec::new();
        for (fi, path) in paths.iter().enumerate() {
            if !path.is_file() {
                return Err(Error::file(
                    path,
                    "does not exist (`tokens.file`: write it with `lqae-eval encode`, or give the path of your tokenizer's JSONL)",
                ));
            }
            shas.push(sha256_file(path)?);
            let mut saw_header = false;
            super::codec::for_each_line(path, |n, l| {
                if l.get("lqae_tokens").is_some() {
                    saw_header = true;
                    match &header {
                        None => header = Some((l, fi)),
                        Some((h, hf)) => {
                            if h.get("model") != l.get("model")
                                || h.get("model_sha256") != l.get("model_sha256")
                            {
                                return Err(Error::file(
                                    path,
                                    format!(
                                        "line {}: names tokenizer {} but {} names {}; one suite run scores one tokenizer",
                                        n + 1,
                                        l.get("model").unwrap_or(&Value::Null),
                                        paths[*hf].display(),
                                        h.get("model").unwrap_or(&Value::Null)
                                    ),
                                ));
                            }
                        }
                    }
                    return Ok(());
                }
                if !saw_header {
                    return Err(Error::file(
                        path,
                        format!(
                            "line {}: an image line before the header (`lqae_tokens`)",
                            n + 1
                        ),
                    ));
                }
                if l.get("skipped").is_some() {
                    return Ok(());
                }
                let bad = |what: &str| Error::file(path, format!("line {}: {what}", n + 1));
                let id = l["id"]
                    .as_str()
                    .ok_or_else(|| bad("an image line needs a string `id`"))?
                    .to_string();
                let pixels_sha256 = l["pixels_sha256"]
                    .as_str()
                    .ok_or_else(|| bad(&format!("image `{id}` has no `pixels_sha256`")))?
                    .to_string();
                let ids = match l.get("ids") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(super::codec::ids_of_line(v).ok_or_else(|| {
                        bad(&format!("image `{id}`: `ids` is not a list of token ids"))
                    })?),
                };
                let text = match l.get("text") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) => {
                        Some(s.split_whitespace().map(String::from).collect())
                    }
                    Some(Value::Array(a)) => Some(
                        a.iter()
                            .map(|x| x.as_str().map(String::from))
                            .collect::<Option<Vec<String>>>()
                            .ok_or_else(|| {
                                bad(&format!("image `{id}`: `text` is not a list of strings"))
                            })?,
                    ),
                    Some(_) => {
                        return Err(bad(&format!(
                            "image `{id}`: `text` must be a string or a list of strings"
                        )))
                    }
                };
                if ids.is_none() && text.is_none() {
                    return Err(bad(&format!("image `{id}` has neither `ids` nor `text`")));
                }
                let e = Entry {
                    pixels_sha256,
                    ids,
                    text,
                    file: fi,
                };
                if let Some(old) = entries.insert(id.clone(), e) {
                    return Err(bad(&format!(
                        "image `{id}` appears twice (also in {})",
                        paths[old.file].display()
                    )));
                }
                Ok(())
            })?;
            if !saw_header {
                return Err(Error::file(path, "has no header line (`lqae_tokens`)"));
            }
        }
        let (h, _) = header.expect("each file has a header");
        let tokenizer = h["model"]
            .as_str()
            .ok_or_else(|| Error::file(&paths[0], "its header names no tokenizer (`model`)"))?
            .to_string();
        Ok(Self {
            sha256: if shas.len() == 1 {
                shas[0].clone()
            } else {
                sha256_hex(shas.join(",").as_bytes())
            },
            files: paths,
            tokenizer,
            tokenizer_sha256: h["model_sha256"].as_str().map(String::from),
            lm: h["lm"].as_str().map(String::from),
            vocab: h["vocab"].as_u64().map(|v| v as usize),
            entries,
        })
    }

    /// `want` (`tokens.file_tokens`) or, unset, `ids` when the header names the suite's LM
    /// (`lm_spec`) and `text` otherwise.
    pub fn field(&self, want: Option<&str>, lm_spec: &str, vocab: usize) -> Result<Field> {
        let f = match want {
            Some(w) => Field::parse(w).ok_or_else(|| {
                Error::setting("tokens.file_tokens", format!("`{w}`: use `ids` or `text`"))
            })?,
            None if self.lm.as_deref() == Some(lm_spec) => Field::Ids,
            None => Field::Text,
        };
        if f == Field::Ids {
            if let Some(l) = self.lm.as_deref().filter(|l| *l != lm_spec) {
                return Err(Error::setting(
                    "tokens.file_tokens",
                    format!("`ids`: {} holds ids of LM `{l}`, not of the suite's LM `{lm_spec}`; use `text` (the words, tokenized by the suite's LM) or a model with that LM", self.files[0].display()),
                ));
            }
            if let Some(v) = self.vocab.filter(|&v| v != vocab) {
                return Err(Error::setting(
                    "tokens.file_tokens",
                    format!(
                        "`ids`: {} says its vocabulary has {v} tokens; the suite's LM has {vocab}",
                        self.files[0].display()
                    ),
                ));
            }
        }
        Ok(f)
    }

    /// Image `i` of `set` (the suite's `split`): its entry, after checking its pixels.
    pub fn get(&self, set: &LabelledImages, split: Split, i: usize) -> Result<&Entry> {
        let id = data_image_id(split, i);
        let e = self.entries.get(&id).ok_or_else(|| {
            Error::file(
                &self.files[0],
                format!(
                    "has no tokens for image `{id}`, which this suite uses (`tokens.file`: encode the whole split, e.g. `lqae-eval encode --data ... --split {}`)",
                    id.split('/').next().unwrap_or("test")
                ),
            )
        })?;
        let have = super::codec::pixels_sha256(&batch::rgb(set, i)?);
        if have != e.pixels_sha256 {
            return Err(Error::file(
                &self.files[e.file],
                format!("image `{id}`: its pixels_sha256 {} is not that of the suite's image `{id}` ({have}); the file was written for other images (another data set, order or version)", e.pixels_sha256),
            ));
        }
        Ok(e)
    }

    /// The entry's ids, or an error naming the image.
    pub fn ids_of<'a>(&self, e: &'a Entry, id: &str, vocab: usize) -> Result<&'a [u32]> {
        let ids = e.ids.as_deref().ok_or_else(|| {
            Error::file(
                &self.files[e.file],
                format!("image `{id}` has no `ids`; set tokens.file_tokens = \"text\""),
            )
        })?;
        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= vocab) {
            return Err(Error::file(
                &self.files[e.file],
                format!("image `{id}`: token id {bad} is outside the LM's vocabulary of {vocab}"),
            ));
        }
        if ids.is_empty() {
            return Err(Error::file(
                &self.files[e.file],
                format!("image `{id}` has no tokens"),
            ));
        }
        Ok(ids)
    }

    /// The entry's words, or an error naming the image.
    pub fn text_of<'a>(&self, e: &'a Entry, id: &str) -> Result<&'a [String]> {
        let t = e.text.as_deref().ok_or_else(|| {
            Error::file(
                &self.files[e.file],
                format!("image `{id}` has no `text`; set tokens.file_tokens = \"ids\""),
            )
        })?;
        if t.iter().all(|w| w.trim().is_empty()) {
            return Err(Error::file(
                &self.files[e.file],
                format!("image `{id}` has no words"),
            ));
        }
        Ok(t)
    }

    /// What a result records about the file(s).
    pub fn record(&self, field: Field) -> Value {
        json!({
            "files": self.files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "sha256": self.sha256,
            "tokenizer": self.tokenizer,
            "tokenizer_sha256": self.tokenizer_sha256,
            "field": field.name(),
        })
    }
}

/// `tokens.file` of a suite whose model has the LM `lm_name` (`vocab` tokens): read, its field
/// chosen (`file_tokens`), and said on the run's progress, prefixed by `who`.
pub fn open(
    files: &Files,
    file_tokens: Option<&str>,
    lm_name: &str,
    vocab: usize,
    progress: &dyn crate::eval::Progress,
    who: &str,
) -> Result<(Precomputed, Field)> {
    let p = Precomputed::load(files)?;
    let field = p.field(file_tokens, lm_name, vocab)?;
    progress.line(&format!(
        "  {who}tokens from {} (tokenizer `{}`, {})",
        p.files[0].display(),
        p.tokenizer,
        field.name()
    ));
    Ok((p, field))
}
