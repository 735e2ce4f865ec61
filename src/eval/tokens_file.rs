//! The tokens file: the format `lqae-eval encode` writes and every reader of tokens reads
//! (decode, and `tokens.file` in the probe and few-shot suites, so any tokenizer, SPAE, the V2L
//! tokenizer or a test's brightness words, is scored under the same protocol). JSON lines:
//!
//! - header: `{"lqae_tokens": 1, "model": NAME, "model_sha256": ..., "kind": "lqae"|"vqvae",
//!   "lm": ..., "image_size": S, "tokens_per_image": T, "vocab": V, "transform": ..., "source":
//!   ..., "images": N, "shard": "K/N" | null}` ([`Header`]; only `lqae_tokens` and `model` are
//!   required of other tokenizers' files);
//! - image: `{"id": ..., "pixels_sha256": ..., "width": W, "height": H, "ids": [...], "text":
//!   [...]}` ([`ImageLine`]) where `id` is the path relative to the folder (`/`-separated) or
//!   `<split>/<index>` for a data set, `pixels_sha256` the sha256 of `"{W}x{H}:"` followed by
//!   the decoded image as RGB8 (grey repeated), before any transform ([`pixels_sha256`]),
//!   `ids` token ids of the model's LM (or codebook) and `text` a list of words or one string
//!   split at whitespace; an image line has `ids` or `text` or both;
//! - a skipped image (`encode --skip-bad`): `{"id": ..., "skipped": REASON}`.
//!
//! One reader ([`for_each_line`], [`TokensFile::read`]) with one set of rules: the header comes
//! first; headers repeated by concatenated shards must agree on everything but `shard` and
//! `images`; an id appears once; lines are read one at a time, each at most
//! [`MAX_LINE_BYTES`], so a file of any length (or a hostile one) fits in memory.
//!
//! For the suites: every image a suite uses must be in the file(s) under its id, with the same
//! decoded pixels: a missing or mismatched image is an error naming it and the file.

use crate::data::{batch, LabelledImages, Split};
use crate::error::{Error, Result};
use crate::util::fsx::{sha256_file, sha256_hex};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The longest line read (a 256-token image line is about 4 KB; a million-token line is not
/// a tokens file's).
pub const MAX_LINE_BYTES: usize = 4 << 20;

/// The header line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub lqae_tokens: u32,
    /// The tokenizer (a model name, or any tokenizer's own name).
    pub model: String,
    #[serde(default)]
    pub model_sha256: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    /// The LM whose ids `ids` are, when they are an LM's.
    #[serde(default)]
    pub lm: Option<String>,
    #[serde(default)]
    pub image_size: Option<usize>,
    #[serde(default)]
    pub tokens_per_image: Option<usize>,
    #[serde(default)]
    pub vocab: Option<usize>,
    #[serde(default)]
    pub transform: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub images: Option<usize>,
    #[serde(default)]
    pub shard: Option<String>,
}

impl Header {
    /// The line as written: a JSON object with its keys sorted.
    pub fn line(&self) -> String {
        serde_json::to_value(self).expect("a header").to_string()
    }
    /// Whether two headers of concatenated shards agree (all but `shard` and `images`).
    fn agrees(&self, o: &Header) -> bool {
        let strip = |h: &Header| Header {
            shard: None,
            images: None,
            ..h.clone()
        };
        strip(self) == strip(o)
    }
}

/// An image line.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageLine {
    pub id: String,
    pub pixels_sha256: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub ids: Option<Vec<u32>>,
    pub text: Option<Vec<String>>,
}

impl ImageLine {
    /// The line as written (keys sorted; absent fields left out).
    pub fn line(&self) -> String {
        let mut o = serde_json::Map::new();
        o.insert("id".into(), json!(self.id));
        if let Some(v) = &self.pixels_sha256 {
            o.insert("pixels_sha256".into(), json!(v));
        }
        if let Some(v) = self.width {
            o.insert("width".into(), json!(v));
        }
        if let Some(v) = self.height {
            o.insert("height".into(), json!(v));
        }
        if let Some(v) = &self.ids {
            o.insert("ids".into(), json!(v));
        }
        if let Some(v) = &self.text {
            o.insert("text".into(), json!(v));
        }
        Value::Object(o).to_string()
    }
}

/// One line of a tokens file.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    Header(Box<Header>),
    Image(ImageLine),
    Skipped { id: String, reason: String },
}

impl Line {
    /// A line from its JSON, or what is wrong with it.
    pub fn parse(v: Value) -> std::result::Result<Line, String> {
        if v.get("lqae_tokens").is_some() {
            return serde_json::from_value::<Header>(v)
                .map(|h| Line::Header(Box::new(h)))
                .map_err(|e| format!("a header line that does not read: {e}"));
        }
        let id = v["id"]
            .as_str()
            .ok_or("an image line needs a string `id`")?
            .to_string();
        if let Some(r) = v.get("skipped") {
            let reason = r.as_str().unwrap_or("").to_string();
            return Ok(Line::Skipped { id, reason });
        }
        let ids = match v.get("ids") {
            None | Some(Value::Null) => None,
            Some(x) => Some(
                ids_of(x)
                    .ok_or_else(|| format!("image `{id}`: `ids` is not a list of token ids"))?,
            ),
        };
        let text = match v.get("text") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.split_whitespace().map(String::from).collect()),
            Some(Value::Array(a)) => Some(
                a.iter()
                    .map(|x| x.as_str().map(String::from))
                    .collect::<Option<Vec<String>>>()
                    .ok_or_else(|| format!("image `{id}`: `text` is not a list of strings"))?,
            ),
            Some(_) => {
                return Err(format!(
                    "image `{id}`: `text` must be a string or a list of strings"
                ))
            }
        };
        if ids.is_none() && text.is_none() {
            return Err(format!("image `{id}` has neither `ids` nor `text`"));
        }
        let dim = |k: &str| v[k].as_u64().and_then(|x| u32::try_from(x).ok());
        Ok(Line::Image(ImageLine {
            pixels_sha256: v["pixels_sha256"].as_str().map(String::from),
            width: dim("width"),
            height: dim("height"),
            id,
            ids,
            text,
        }))
    }
}

/// A list of token ids, each fitting `u32`; `None` otherwise.
fn ids_of(v: &Value) -> Option<Vec<u32>> {
    v.as_array()?
        .iter()
        .map(|x| x.as_u64().and_then(|x| u32::try_from(x).ok()))
        .collect()
}

/// sha256 of `"{w}x{h}:"` + the decoded image as RGB8: an image's identity in a tokens file.
pub fn pixels_sha256(img: &batch::RgbF) -> String {
    let mut bytes = format!("{}x{}:", img.width(), img.height()).into_bytes();
    bytes.extend(
        img.pixels()
            .flat_map(|p| p.0.map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)),
    );
    sha256_hex(&bytes)
}

/// Each complete line of `path` (a missing file has none), read, with its 0-based number, one
/// at a time; returns the byte length the complete lines span (a torn last line is left out:
/// an interrupted write). A line that is not JSON or not a tokens-file line, or longer than
/// [`MAX_LINE_BYTES`], is an error naming the file and line.
pub fn for_each_line(path: &Path, mut f: impl FnMut(usize, Line) -> Result<()>) -> Result<u64> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::file(path, e.to_string())),
    };
    let mut r = std::io::BufReader::new(file);
    let (mut end, mut buf) = (0u64, Vec::new());
    for i in 0.. {
        buf.clear();
        let (n, whole, too_long) =
            crate::util::untrusted::read_line_bounded(&mut r, &mut buf, MAX_LINE_BYTES)
                .map_err(|e| Error::file(path, e.to_string()))?;
        if too_long {
            return Err(Error::file(
                path,
                format!(
                    "line {} is longer than {MAX_LINE_BYTES} bytes: not a tokens file's line",
                    i + 1
                ),
            ));
        }
        if !whole {
            break;
        }
        let bad = |why: String| Error::file(path, format!("line {}: {why}", i + 1));
        let v = serde_json::from_slice::<Value>(&buf).map_err(|e| {
            bad(format!(
                "not JSON ({e}); it is not a tokens file, or it is damaged: move it away"
            ))
        })?;
        f(i, Line::parse(v).map_err(bad)?)?;
        end += n as u64;
    }
    Ok(end)
}

/// A tokens file read by the rules: its header and image lines (skipped ones left out).
pub struct TokensFile {
    pub header: Header,
    pub images: Vec<ImageLine>,
}

impl TokensFile {
    /// Read `path` (concatenated shards' repeated headers must agree; an id appears once).
    pub fn read(path: &Path) -> Result<TokensFile> {
        let mut header: Option<Header> = None;
        let mut images = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for_each_line(path, |n, l| {
            let bad = |why: String| Error::file(path, format!("line {}: {why}", n + 1));
            match l {
                Line::Header(h) => match &header {
                    None => header = Some(*h),
                    Some(first) if first.agrees(&h) => {}
                    Some(_) => {
                        return Err(bad("a header for another tokenizer or transform".into()))
                    }
                },
                _ if header.is_none() => {
                    return Err(bad("an image line before the header (`lqae_tokens`)".into()))
                }
                Line::Skipped { .. } => {}
                Line::Image(im) => {
                    if let Some(first) = seen.insert(im.id.clone(), n) {
                        return Err(bad(format!(
                            "image `{}` appears twice (also on line {})",
                            im.id,
                            first + 1
                        )));
                    }
                    images.push(im);
                }
            }
            Ok(())
        })?;
        let header =
            header.ok_or_else(|| Error::file(path, "has no header line (`lqae_tokens`)"))?;
        Ok(TokensFile { header, images })
    }
}

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
    /// Read `files`; their headers must name one tokenizer, an image appears once in all of
    /// them, and every image line has its `pixels_sha256` (a suite checks its images by it).
    pub fn load(files: &Files) -> Result<Self> {
        let paths = files.paths();
        if paths.is_empty() {
            return Err(Error::setting("tokens.file", "names no file"));
        }
        let mut entries: HashMap<String, Entry> = HashMap::new();
        let mut first: Option<Header> = None;
        let mut shas = Vec::new();
        for (fi, path) in paths.iter().enumerate() {
            if !path.is_file() {
                return Err(Error::file(
                    path,
                    "does not exist (`tokens.file`: write it with `lqae-eval encode`, or give the path of your tokenizer's JSONL)",
                ));
            }
            shas.push(sha256_file(path)?);
            let file = TokensFile::read(path)?;
            let h = file.header;
            match &first {
                None => first = Some(h),
                Some(f) if f.model != h.model || f.model_sha256 != h.model_sha256 => {
                    return Err(Error::file(
                        path,
                        format!(
                            "names tokenizer `{}` but {} names `{}`; one suite run scores one tokenizer",
                            h.model,
                            paths[0].display(),
                            f.model
                        ),
                    ))
                }
                Some(_) => {}
            }
            for im in file.images {
                let pixels_sha256 = im.pixels_sha256.ok_or_else(|| {
                    Error::file(path, format!("image `{}` has no `pixels_sha256`", im.id))
                })?;
                let e = Entry {
                    pixels_sha256,
                    ids: im.ids,
                    text: im.text,
                    file: fi,
                };
                if let Some(old) = entries.insert(im.id.clone(), e) {
                    return Err(Error::file(
                        path,
                        format!(
                            "image `{}` appears twice (also in {})",
                            im.id,
                            paths[old.file].display()
                        ),
                    ));
                }
            }
        }
        let h = first.expect("at least one file");
        Ok(Self {
            sha256: if shas.len() == 1 {
                shas[0].clone()
            } else {
                sha256_hex(shas.join(",").as_bytes())
            },
            files: paths,
            tokenizer: h.model,
            tokenizer_sha256: h.model_sha256,
            lm: h.lm,
            vocab: h.vocab,
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
        let have = pixels_sha256(&batch::rgb(set, i)?);
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
    progress: &dyn crate::util::progress::Progress,
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
