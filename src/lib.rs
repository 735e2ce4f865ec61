//! # lqae: Language-Quantized AutoEncoders in candle
//!
//! Liu, Yan & Abbeel, "Language Quantized AutoEncoders: Towards Unsupervised Text-Image
//! Alignment" (arXiv 2302.00902). An image becomes a grid of text tokens by quantizing a ViT
//! encoder's outputs to the nearest rows of a frozen language model's word-embedding table.
//!
//! - [`lm`]: the frozen BERT/RoBERTa-family LM (hidden states from ids or input embeddings),
//!   its codebook and the text of each token.
//! - [`quantizer`]: exact nearest-neighbour quantization over the whole vocabulary.
//! - [`assets`]: real weights and data, fetched, verified and cached outside the repository.
//! - [`data`]: image data sets, and which images a run uses.
//! - [`model`], [`train`]: the LQAE and its VQ-VAE baseline, and their training.
//! - [`fid`]: FID / KID (rFID) with the FID Inception-v3 in candle.
//! - [`eval`]: suites, the model zoo, the suite kinds, results and reports.
//! - [`bench`]: timed kernels and the PyTorch peer.

// The modules form layers (lowest first: error, util, rng, device, assets, kernels, nn,
// quantizer, lm, data, lpips, metrics, fid, llm, model, train, bench, tools, eval); a module uses
// only modules of lower layers. `tests/layering.rs` holds the order and enforces it.
pub mod assets;
pub mod bench;
pub mod data;
pub mod device;
pub mod error;
pub mod eval;
pub mod fid;
pub mod kernels;
pub mod llm;
pub mod lm;
pub mod lpips;
pub mod metrics;
pub mod model;
pub mod nn;
pub mod quantizer;
pub mod rng;
pub mod tools;
pub mod train;
pub mod util;

pub use error::{Error, Result};
