//! Image data sets.

pub mod batch;
pub mod idx;

pub use idx::{read_idx_images, read_idx_labels, GreyImages};

use crate::error::{Error, Result};
use std::path::Path;

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

/// A labelled grey-image set in memory.
pub struct LabelledImages {
    pub images: GreyImages,
    pub labels: Vec<u8>,
    pub class_names: Vec<String>,
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
        images,
        labels,
        class_names: class_names.iter().map(|s| s.to_string()).collect(),
    })
}
