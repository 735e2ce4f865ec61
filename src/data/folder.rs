//! Image files on disk: an image folder (one sub-folder per class) and mini-ImageNet in its
//! usual layout (`images/` + `train.csv` / `val.csv` / `test.csv` with `filename,label` rows,
//! labels being WordNet ids). Problems are reported with the file (and line) at fault.

use super::{ImageSource, LabelledImages, Split};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

const TABLE: &str = include_str!("mini_imagenet_classes.tsv");

/// Readable name of a mini-ImageNet WordNet id (`n01532829` -> `house finch`).
pub fn mini_imagenet_class_name(wnid: &str) -> Option<&'static str> {
    TABLE.lines().find_map(|l| {
        l.split_once('\t')
            .filter(|(w, _)| *w == wnid)
            .map(|(_, n)| n)
    })
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::file(dir, format!("cannot list: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    v.sort();
    Ok(v)
}

/// `root/<class>/<image>.{png,jpg,jpeg}`; classes in name order.
pub fn load_image_folder(root: &Path) -> Result<LabelledImages> {
    let mut files = Vec::new();
    let mut labels = Vec::new();
    let mut class_names = Vec::new();
    for dir in sorted_entries(root)?.into_iter().filter(|p| p.is_dir()) {
        let label = class_names.len() as u32;
        class_names.push(
            dir.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
        );
        for f in sorted_entries(&dir)?.into_iter().filter(|p| is_image(p)) {
            files.push(f);
            labels.push(label);
        }
    }
    if class_names.is_empty() || files.is_empty() {
        return Err(Error::file(
            root,
            "no class sub-folders with PNG/JPEG images: expected root/<class>/<image>.png",
        ));
    }
    Ok(LabelledImages {
        source: ImageSource::Files(files),
        labels,
        class_names,
    })
}

/// mini-ImageNet: `root/{train,val,test}.csv` (`filename,label`) and `root/images/<filename>`.
/// Classes are numbered in sorted WordNet-id order within the split; their names come from
/// the table of the 100 mini-ImageNet classes (unknown ids keep the id as name).
pub fn load_mini_imagenet(root: &Path, split: Split) -> Result<LabelledImages> {
    let csv = root.join(match split {
        Split::Train => "train.csv",
        Split::Test => "test.csv",
    });
    if !csv.is_file() {
        return Err(Error::file(
            &csv,
            "does not exist; a mini-ImageNet folder holds images/ and train.csv, val.csv, test.csv",
        ));
    }
    let bytes = crate::util::untrusted::read_bounded(&csv, 256 << 20, "split table")?;
    let text = String::from_utf8(bytes)
        .map_err(|e| Error::file(&csv, format!("is not UTF-8 text: {e}")))?;
    let images = root.join("images");
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if n == 0 {
            if line != "filename,label" {
                return Err(Error::file(
                    &csv,
                    format!("line 1 is `{line}`; the header must be `filename,label`"),
                ));
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let (file, wnid) = line
            .split_once(',')
            .filter(|(f, w)| !f.is_empty() && !w.is_empty() && !w.contains(','))
            .ok_or_else(|| {
                Error::file(
                    &csv,
                    format!("line {}: `{line}` is not `filename,label`", n + 1),
                )
            })?;
        // The file name comes from the table: it stays under images/ by the path rule (a read:
        // links inside the folder, common in mini-ImageNet layouts, are followed).
        let rel = crate::util::untrusted::relative_path(file).map_err(|why| {
            Error::file(
                &csv,
                format!(
                    "line {}: the file name `{}` {why}",
                    n + 1,
                    file.escape_debug()
                ),
            )
        })?;
        let path = images.join(rel);
        if !path.is_file() {
            return Err(Error::file(
                &csv,
                format!("line {}: image {} does not exist", n + 1, path.display()),
            ));
        }
        rows.push((path, wnid.to_string()));
    }
    if rows.is_empty() {
        return Err(Error::file(&csv, "lists no images"));
    }
    let mut wnids: Vec<String> = rows.iter().map(|(_, w)| w.clone()).collect();
    wnids.sort();
    wnids.dedup();
    let labels = rows
        .iter()
        .map(|(_, w)| wnids.binary_search(w).expect("wnid listed") as u32)
        .collect();
    let class_names = wnids
        .iter()
        .map(|w| mini_imagenet_class_name(w).unwrap_or(w).to_string())
        .collect();
    Ok(LabelledImages {
        source: ImageSource::Files(rows.into_iter().map(|(p, _)| p).collect()),
        labels,
        class_names,
    })
}
