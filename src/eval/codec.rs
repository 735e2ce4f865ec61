//! Images to tokens and back, for any image folder or data set: `lqae-eval encode` writes a
//! tokens file (the format: [`super::tokens_file`]), `lqae-eval decode` turns one back into
//! PNGs with the model that encoded it.
//!
//! `--shard K/N` takes the K-th of N contiguous, deterministic ranges of the sorted images, so
//! the shards' image lines concatenated in order equal one whole run's. Lines are appended one
//! batch at a time (flushed and synced); a rerun with the same output resumes after the last
//! complete line (a torn last line is cut off), after checking the header names the same model,
//! transform, source and shard.

use super::tokens_file::{self, pixels_sha256, Header, ImageLine, Line, TokensFile};
use crate::data::{batch, ImageSource, LabelledImages};
use crate::error::{Error, Result};
use crate::eval::zoo::Zoo;
use candle_core::Tensor;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where the images come from.
pub enum Images {
    /// Every PNG/JPEG under a folder (recursively), sorted by relative path.
    Folder(PathBuf),
    /// A data set as suites name it, and the split.
    Data(crate::data::DataConfig, crate::data::Split),
}

pub struct EncodeArgs {
    pub model: String,
    pub images: Images,
    pub out: PathBuf,
    /// `(k, n)`, 1-based `k`.
    pub shard: Option<(usize, usize)>,
    pub skip_bad: bool,
    pub batch: usize,
}

/// What an encode run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeSummary {
    pub images: usize,
    pub resumed_after: usize,
    pub encoded: usize,
    pub skipped: usize,
}

fn folder_images(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    if !dir.is_dir() {
        return Err(Error::file(dir, "is not a folder of images"));
    }
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| Error::file(&d, e.to_string()))? {
            let e = e.map_err(|e| Error::file(&d, e.to_string()))?;
            let p = e.path();
            // The entry's own type: a link is not followed (out of the folder, or round a loop).
            let kind = e.file_type().map_err(|e| Error::file(&p, e.to_string()))?;
            if kind.is_symlink() {
                return Err(Error::file(
                    &p,
                    format!("is a symbolic link inside {}; encode reads only the files in the folder it is given (copy the image in, or name the folder the link points to)", dir.display()),
                ));
            }
            if kind.is_dir() {
                stack.push(p);
            } else if kind.is_file() && crate::metrics::is_image(&p) {
                let rel = p
                    .strip_prefix(dir)
                    .unwrap_or(&p)
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                // The id becomes a file name when the tokens are decoded: the same rule now.
                crate::util::untrusted::relative_path(&rel).map_err(|why| {
                    Error::file(
                        &p,
                        format!("cannot be an image id: its name {why}; rename it"),
                    )
                })?;
                out.push((rel, p));
            }
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(Error::file(dir, "holds no PNG/JPEG images"));
    }
    Ok(out)
}

/// The image set with one id per image.
fn image_set(images: &Images) -> Result<(LabelledImages, Vec<String>, String)> {
    match images {
        Images::Folder(dir) => {
            let files = folder_images(dir)?;
            let ids = files.iter().map(|(r, _)| r.clone()).collect();
            let n = files.len();
            Ok((
                LabelledImages {
                    source: ImageSource::Files(files.into_iter().map(|(_, p)| p).collect()),
                    labels: vec![0; n],
                    class_names: vec!["?".into()],
                },
                ids,
                format!("folder {}", dir.display()),
            ))
        }
        Images::Data(cfg, split) => {
            let set = crate::data::load(cfg, *split)?;
            let name = match split {
                crate::data::Split::Train => "train",
                crate::data::Split::Test => "test",
            };
            let ids = (0..set.len())
                .map(|i| tokens_file::data_image_id(*split, i))
                .collect();
            Ok((set, ids, format!("data {} ({name})", cfg.dataset)))
        }
    }
}

/// The indices of shard `k` of `n` (1-based): a contiguous range.
pub fn shard_range(len: usize, shard: Option<(usize, usize)>) -> Result<std::ops::Range<usize>> {
    match shard {
        None => Ok(0..len),
        Some((k, n)) if n >= 1 && (1..=n).contains(&k) => Ok((k - 1) * len / n..k * len / n),
        Some((k, n)) => Err(Error::setting(
            "--shard",
            format!("`{k}/{n}`: use K/N with 1 <= K <= N"),
        )),
    }
}

/// Parse `K/N`.
pub fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let bad = || Error::setting("--shard", format!("`{s}`: use K/N, e.g. 2/8"));
    let (k, n) = s.split_once('/').ok_or_else(bad)?;
    let (k, n) = (
        k.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    shard_range(1, Some((k, n)))?;
    Ok((k, n))
}

/// The header an encode run writes.
fn header(
    args: &EncodeArgs,
    t: &crate::eval::zoo::Trained,
    vocab: usize,
    source: String,
    images: usize,
) -> Header {
    let size = t.state.config.model.image_size;
    Header {
        lqae_tokens: 1,
        model: args.model.clone(),
        model_sha256: Some(t.sha256.clone()),
        kind: Some(format!("{:?}", t.state.config.model.kind).to_lowercase()),
        lm: (t.state.config.model.kind == crate::model::ModelKind::Lqae)
            .then(|| t.state.config.model.lm_name()),
        image_size: Some(size),
        tokens_per_image: Some(t.state.config.tokens_per_image()),
        vocab: Some(vocab),
        transform: Some(format!("RGB (grey repeated) in [0, 1]; bicubic resize of the shorter side to {size}, center crop {size}x{size}")),
        source: Some(source),
        images: Some(images),
        shard: args.shard.map(|(k, n)| format!("{k}/{n}")),
    }
}

/// Where an encode run into `out` starts: the images already written (after checking the
/// header is this run's), and whether the file is new (its header still to write). A torn
/// last line (an interrupted write) is cut off.
fn resume_point(out: &Path, header: &Header, images: usize) -> Result<(usize, bool)> {
    let (mut first, mut lines) = (None, 0usize);
    let keep = tokens_file::for_each_line(out, |i, l| {
        if i == 0 {
            first = Some(l);
        }
        lines += 1;
        Ok(())
    })?;
    let done = match &first {
        None => 0,
        Some(Line::Header(h)) if **h == *header => lines - 1,
        Some(h) => {
            return Err(Error::file(
                out,
                format!(
                    "exists with another header ({h:?}); it was written for another model, transform, source or shard: choose another --out or remove it"
                ),
            ))
        }
    };
    if done > images {
        return Err(Error::file(out, "holds more images than this run has"));
    }
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(out)
        .and_then(|f| f.set_len(keep))
        .map_err(|e| Error::file(out, format!("cannot open for writing: {e}")))?;
    Ok((done, first.is_none()))
}

/// Encode images into a tokens file; resumes a partial one.
pub fn encode(
    zoo: &Zoo,
    args: &EncodeArgs,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<EncodeSummary> {
    let t = zoo.load(&args.model)?;
    let model = &t.model;
    let size = t.state.config.model.image_size;
    let (set, ids, source) = image_set(&args.images)?;
    let range = shard_range(set.len(), args.shard)?;
    let header = header(args, &t, model.codebook_len(), source, range.len());
    let (done, fresh) = resume_point(&args.out, &header, range.len())?;
    let mut f = std::io::BufWriter::new(
        std::fs::OpenOptions::new()
            .append(true)
            .open(&args.out)
            .map_err(|e| Error::file(&args.out, e.to_string()))?,
    );
    if fresh {
        writeln!(f, "{}", header.line()).map_err(|e| Error::file(&args.out, e.to_string()))?;
    }
    let todo: Vec<usize> = range.clone().skip(done).collect();
    let mut summary = EncodeSummary {
        images: range.len(),
        resumed_after: done,
        encoded: 0,
        skipped: 0,
    };
    progress(done, range.len());
    for chunk in todo.chunks(args.batch.max(1)) {
        // Decode each image once for its hash (and to find bad ones), then batch the good.
        let mut good = Vec::new();
        let mut rec: Vec<Option<ImageLine>> = Vec::new();
        for &i in chunk {
            match batch::rgb(&set, i) {
                Ok(img) => {
                    good.push(i);
                    rec.push(Some(ImageLine {
                        id: ids[i].clone(),
                        pixels_sha256: Some(pixels_sha256(&img)),
                        width: Some(img.width()),
                        height: Some(img.height()),
                        ids: None,
                        text: None,
                    }));
                }
                Err(e) if args.skip_bad => {
                    summary.skipped += 1;
                    rec.push(None);
                    writeln!(f, "{}", json!({"id": ids[i], "skipped": e.to_string()}))
                        .map_err(|e| Error::file(&args.out, e.to_string()))?;
                }
                Err(e) => {
                    return Err(Error::Msg(format!(
                        "{e} (pass --skip-bad to record it and go on)"
                    )))
                }
            }
        }
        if !good.is_empty() {
            let images = batch::make_batch(&set, &good, size as u32, None, zoo.device())?;
            let toks: Vec<Vec<u32>> = model.encode(&images)?.to_vec2()?;
            let mut toks = toks.into_iter();
            for r in rec.into_iter().flatten() {
                let row = toks.next().expect("one token row per good image");
                let text: Vec<String> = row
                    .iter()
                    .map(|&t| model.token_text(t).unwrap_or_else(|| t.to_string()))
                    .collect();
                let r = ImageLine {
                    ids: Some(row),
                    text: Some(text),
                    ..r
                };
                writeln!(f, "{}", r.line()).map_err(|e| Error::file(&args.out, e.to_string()))?;
                summary.encoded += 1;
            }
        }
        f.flush()
            .map_err(|e| Error::file(&args.out, e.to_string()))?;
        f.get_ref()
            .sync_data()
            .map_err(|e| Error::file(&args.out, e.to_string()))?;
        progress(done + summary.encoded + summary.skipped, range.len());
    }
    Ok(summary)
}

/// Decode a tokens file with `model` into one PNG per image line under `out` (its id with
/// `/` kept as folders and the extension replaced by `.png`); returns the images written.
pub fn decode(zoo: &Zoo, model: &str, tokens: &Path, out: &Path, batch: usize) -> Result<usize> {
    let file = TokensFile::read(tokens)?;
    // Every output path checked before anything is loaded or written.
    let paths = output_paths(tokens, out, file.images.iter().map(|im| im.id.as_str()))?;
    let t = zoo.load(model)?;
    if file.header.model_sha256.as_deref() != Some(t.sha256.as_str()) {
        return Err(Error::file(
            tokens,
            format!(
                "was encoded by `{}` (sha256 {}), not by `{model}` (sha256 {}); decode with the model that encoded it",
                file.header.model,
                file.header.model_sha256.as_deref().unwrap_or("?"),
                t.sha256
            ),
        ));
    }
    let images: Vec<(&str, &[u32])> = file
        .images
        .iter()
        .map(|im| {
            im.ids
                .as_deref()
                .map(|ids| (im.id.as_str(), ids))
                .ok_or_else(|| {
                    Error::file(tokens, format!("image `{}` has no `ids` to decode", im.id))
                })
        })
        .collect::<Result<_>>()?;
    let codes = t.model.codebook_len();
    if let Some((id, bad)) = images
        .iter()
        .find_map(|(id, ids)| ids.iter().find(|&&c| c as usize >= codes).map(|c| (id, c)))
    {
        return Err(Error::file(
            tokens,
            format!(
                "image `{}` holds token id {bad}; the model has {codes} codes",
                id.escape_debug()
            ),
        ));
    }
    let tpi = t.state.config.tokens_per_image();
    let batch = batch.max(1);
    for (chunk, chunk_paths) in images.chunks(batch).zip(paths.chunks(batch)) {
        let flat: Vec<u32> = chunk.iter().flat_map(|(_, ids)| ids.to_vec()).collect();
        if let Some((id, ids)) = chunk.iter().find(|(_, ids)| ids.len() != tpi) {
            return Err(Error::file(
                tokens,
                format!(
                    "image `{id}` has {} tokens; the model takes {tpi}",
                    ids.len()
                ),
            ));
        }
        let ids = Tensor::from_vec(flat, (chunk.len(), tpi), zoo.device())?;
        let recon = t.model.decode_ids(&ids)?.clamp(0f32, 1f32)?;
        let (_, _, h, w) = recon.dims4()?;
        let v: Vec<f32> = recon.flatten_all()?.to_vec1()?;
        for (j, path) in chunk_paths.iter().enumerate() {
            let img = image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
                let at = |c: usize| {
                    (v[((j * 3 + c) * h + y as usize) * w + x as usize] * 255.0).round() as u8
                };
                image::Rgb([at(0), at(1), at(2)])
            });
            if let Some(d) = path.parent() {
                std::fs::create_dir_all(d).map_err(|e| Error::file(d, e.to_string()))?;
            }
            let mut bytes = Vec::new();
            img.write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .map_err(|e| Error::file(path, e.to_string()))?;
            crate::util::fsx::write_atomic(path, &bytes)?;
        }
    }
    Ok(images.len())
}

/// Where each image of a tokens file is decoded to: its id with the extension replaced by
/// `.png`, under `out` by the path rule of [`crate::util::untrusted`] (an id that would leave
/// `out` is an error naming it), and no two ids to one file. Checked for every id before
/// anything is written.
fn output_paths<'a>(
    tokens: &Path,
    out: &Path,
    ids: impl Iterator<Item = &'a str>,
) -> Result<Vec<PathBuf>> {
    let mut seen: std::collections::HashMap<PathBuf, &str> = Default::default();
    let mut paths = Vec::new();
    for id in ids {
        let refuse = |why: String| {
            Error::file(
                tokens,
                format!(
                    "image id `{}` {why}; nothing was decoded",
                    id.escape_debug()
                ),
            )
        };
        let rel = crate::util::untrusted::relative_path(id).map_err(refuse)?;
        let name = rel.with_extension("png");
        let path =
            crate::util::untrusted::join_under(out, &name.to_string_lossy()).map_err(refuse)?;
        if let Some(other) = seen.insert(path.clone(), id) {
            return Err(refuse(format!(
                "and image id `{}` would both be written to {}",
                other.escape_debug(),
                path.display()
            )));
        }
        paths.push(path);
    }
    // `x` (the file x.png) and `x.png/y` (a file in a folder x.png) cannot both be written.
    for p in &paths {
        let mut folders = p.ancestors().skip(1).take_while(|a| *a != out);
        if let Some(folder) = folders.find(|a| seen.contains_key(*a)) {
            return Err(Error::file(
                tokens,
                format!(
                    "image ids `{}` and `{}` would make {} both a file and a folder; nothing was decoded",
                    seen[folder].escape_debug(),
                    seen[p.as_path()].escape_debug(),
                    folder.display()
                ),
            ));
        }
    }
    Ok(paths)
}
