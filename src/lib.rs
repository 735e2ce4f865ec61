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
//! - [`data`]: image data sets.

pub mod assets;
pub mod bench;
pub mod data;
pub mod device;
pub mod error;
pub mod fewshot;
pub mod kernels;
pub mod llm;
pub mod lm;
pub mod lpips;
pub mod metrics;
pub mod model;
pub mod nn;
pub mod probe;
pub mod quantizer;
pub mod recon;
pub mod results;
pub mod rng;
pub mod suites;
pub mod train;

pub use error::{Error, Result};
