//! Which images a run uses: the data set a configuration names, seeded subsets of it, and the
//! identity of each image (its key and the hash of its stored bytes).

use super::{ImageSource, LabelledImages, Split, FASHION_MNIST_CLASSES};
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::util::fsx::sha256_hex;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// `fashion-mnist` (fetched asset) or `idx` (a folder given by `path`).
    pub dataset: String,
    #[serde(default)]
    pub path: Option<String>,
    /// Use only the first `limit` training images.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Random resized crop (scale 0.2-1) + horizontal flip, as the paper trains; off: resize only.
    #[serde(default)]
    pub augment: bool,
}

/// The `[data]` table of a suite: which data set, where, how many images of each split.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuiteData {
    /// fashion-mnist, mnist-5k, idx, image-folder, mini-imagenet.
    pub dataset: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub train_limit: Option<usize>,
    #[serde(default)]
    pub test_limit: Option<usize>,
    /// Score models trained on another data set (e.g. Fashion-MNIST tokens of mini-ImageNet
    /// photographs); without it such a model is an error naming both data sets.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_other_models: bool,
}

impl SuiteData {
    /// The images of `split` (all of them: suites take their seeded subsets themselves).
    pub fn load(&self, split: Split) -> Result<LabelledImages> {
        let dc = DataConfig {
            dataset: self.dataset.clone(),
            path: self.path.clone(),
            limit: None,
            augment: false,
        };
        load(&dc, split)
    }

    /// A data set that needs a folder without one, or a folder that does not exist.
    pub fn problems(&self) -> Vec<String> {
        let needs_path = matches!(
            self.dataset.as_str(),
            "idx" | "image-folder" | "mini-imagenet"
        );
        match self.path.as_deref() {
            None if needs_path => vec![format!("`data.path`: data set `{}` needs the folder that holds it; set it with --set data.path=DIR", self.dataset)],
            Some(p) if !Path::new(p).exists() => vec![format!("`data.path`: {p} does not exist")],
            _ => Vec::new(),
        }
    }
}

fn need_path(d: &DataConfig) -> Result<&str> {
    d.path.as_deref().ok_or_else(|| {
        Error::setting(
            "data.path",
            format!(
                "data set `{}` needs `data.path`, the folder that holds it",
                d.dataset
            ),
        )
    })
}

/// Load the images of `split` that a data config names.
pub fn load(d: &DataConfig, split: Split) -> Result<LabelledImages> {
    let mut set = match d.dataset.as_str() {
        "fashion-mnist" => {
            let dir = crate::assets::ensure(&crate::assets::FASHION_MNIST)?;
            super::load_mnist_like(&dir, split, &FASHION_MNIST_CLASSES)?
        }
        "idx" => {
            let dir = need_path(d)?;
            let names: Vec<String> = (0..10).map(|i| i.to_string()).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            super::load_mnist_like(Path::new(dir), split, &refs)?
        }
        "mnist-5k" => {
            let dir = crate::assets::ensure(&crate::assets::MNIST_5K)?;
            super::load_mnist_csv(&dir.join("mnist_5k.csv.gz"), split)?
        }
        "image-folder" => super::load_image_folder(Path::new(need_path(d)?))?,
        "mini-imagenet" => super::load_mini_imagenet(Path::new(need_path(d)?), split)?,
        other => {
            return Err(Error::setting(
                "data.dataset",
                format!("unknown data set `{other}`; known: fashion-mnist, mnist-5k, idx, image-folder, mini-imagenet"),
            ))
        }
    };
    if let Some(limit) = d.limit {
        set.truncate(limit);
    }
    Ok(set)
}

/// sha256 of each image's stored bytes (pixels or file content).
pub fn input_hashes(set: &LabelledImages, idx: &[usize]) -> Result<Vec<String>> {
    idx.iter()
        .map(|&i| match &set.source {
            ImageSource::Grey(g) => Ok(sha256_hex(g.image(i))),
            ImageSource::Files(f) => std::fs::read(&f[i])
                .map(|b| sha256_hex(&b))
                .map_err(|e| Error::file(&f[i], e.to_string())),
        })
        .collect()
}

/// A seeded subset of `n` indices of `set` (all when `limit` is None), in sorted order.
pub fn subset(len: usize, limit: Option<usize>, seed: u64, name: &str) -> Vec<usize> {
    let mut idx = match limit {
        Some(k) if k < len => Rng::derive(seed, name, 0)
            .permutation(len)
            .into_iter()
            .take(k)
            .collect(),
        _ => (0..len).collect::<Vec<_>>(),
    };
    idx.sort();
    idx
}

/// The key of image `i` of a set: its file name, or its index for in-memory (IDX) images.
pub fn image_key(set: &LabelledImages, i: usize) -> String {
    match &set.source {
        ImageSource::Grey(_) => i.to_string(),
        ImageSource::Files(f) => f[i]
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| f[i].display().to_string()),
    }
}
