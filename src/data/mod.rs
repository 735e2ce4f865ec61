//! Image data sets.

pub mod batch;
pub mod folder;
pub mod idx;

pub use folder::{load_image_folder, load_mini_imagenet, mini_imagenet_class_name};

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
