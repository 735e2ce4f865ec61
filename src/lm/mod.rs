//! The frozen pretrained language model: its encoder, its word-embedding table (LQAE's
//! codebook), its tokenizer and the text of each token. Any BERT- or RoBERTa-family
//! checkpoint in the Hugging Face layout loads from a local folder:
//! `config.json`, `model.safetensors` (tensor names with or without the `bert.`/`roberta.`
//! prefix) and `tokenizer.json`.

pub mod config;
pub mod encoder;
pub mod random;
pub mod vocab;

pub use config::{Family, LmConfig};
pub use encoder::Encoder;
pub use vocab::{SpecialIds, TokenText, Vocab};

use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use std::path::{Path, PathBuf};
use tokenizers::Tokenizer;

pub struct FrozenLm {
    config: LmConfig,
    encoder: Encoder,
    tokenizer: Tokenizer,
    vocab: Vocab,
    dir: PathBuf,
}

fn required(dir: &Path, name: &str, what: &str) -> Result<PathBuf> {
    let p = dir.join(name);
    if p.is_file() {
        Ok(p)
    } else if !dir.is_dir() {
        Err(Error::file(dir, "model folder not found; it should hold config.json, model.safetensors and tokenizer.json"))
    } else {
        Err(Error::file(
            p,
            format!("missing: a checkpoint folder needs {name} ({what})"),
        ))
    }
}

impl FrozenLm {
    /// Load a checkpoint folder onto `device`. The weights are read as plain tensors: nothing
    /// here is trainable.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        crate::kernels::tune_allocator();
        let config_path = required(dir, "config.json", "the model configuration")?;
        let weights_path = required(dir, "model.safetensors", "the weights")?;
        let tokenizer_path = required(dir, "tokenizer.json", "the tokenizer")?;
        let config = LmConfig::from_file(&config_path)?;

        let mut tokenizer = Tokenizer::from_file(&tokenizer_path).map_err(|e| {
            Error::file(&tokenizer_path, format!("not a valid tokenizer.json: {e}"))
        })?;
        // The packaged tokenizer pads/truncates to 128 tokens: we never want either silently.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| Error::file(&tokenizer_path, format!("cannot disable truncation: {e}")))?;
        let tok_size = tokenizer.get_vocab_size(true);
        if tok_size != config.vocab_size {
            return Err(Error::file(
                &tokenizer_path,
                format!(
                    "the tokenizer has {tok_size} tokens but {} says vocab_size = {}: they must describe the same vocabulary (every codebook row needs its text)",
                    config_path.display(),
                    config.vocab_size
                ),
            ));
        }
        let vocab = Vocab::from_tokenizer(&tokenizer, config.family(), &tokenizer_path)?;

        // SAFETY: the file is memory-mapped read-only and must not change while mapped.
        let vb =
            unsafe { VarBuilder::from_mmaped_safetensors(&[&weights_path], DType::F32, device) }
                .map_err(|e| {
                    Error::file(
                        &weights_path,
                        format!(
                            "cannot read safetensors: {}",
                            crate::error::strip_backtrace(e)
                        ),
                    )
                })?;
        let prefix = [
            config.model_type.replace('-', "_"),
            "bert".into(),
            "roberta".into(),
        ]
        .into_iter()
        .find(|p| vb.contains_tensor(&format!("{p}.embeddings.word_embeddings.weight")));
        let vb = match prefix {
            Some(p) => vb.pp(p),
            None => vb,
        };
        let encoder = Encoder::new(&config, vb).map_err(|e| {
            Error::file(
                &weights_path,
                format!(
                    "does not match {}: {}",
                    config_path.display(),
                    crate::error::strip_backtrace(e)
                ),
            )
        })?;
        Ok(Self {
            config,
            encoder,
            tokenizer,
            vocab,
            dir: dir.to_path_buf(),
        })
    }

    pub fn config(&self) -> &LmConfig {
        &self.config
    }
    pub fn family(&self) -> Family {
        self.config.family()
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }
    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The input word-embedding table `(vocab, hidden)`: LQAE's frozen codebook.
    pub fn word_embeddings(&self) -> &Tensor {
        self.encoder.embeddings().word_embeddings()
    }

    pub fn mask_id(&self) -> u32 {
        self.vocab.special_ids.mask
    }

    /// Token ids of `text`, with `[CLS] ... [SEP]` (or `<s> ... </s>`) when `special` is set.
    pub fn tokenize(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, special)
            .map_err(|e| Error::Msg(format!("tokenizing {text:?}: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// All hidden states for token ids `(b, s)`.
    pub fn forward_ids(
        &self,
        ids: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<Vec<Tensor>> {
        Ok(self.encoder.forward_ids(ids, attention_mask)?)
    }

    /// All hidden states for input embeddings `(b, s, hidden)`; gradients flow back to them.
    pub fn forward_embeds(
        &self,
        inputs_embeds: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<Vec<Tensor>> {
        let h = inputs_embeds.dim(candle_core::D::Minus1)?;
        if h != self.config.hidden_size {
            return Err(Error::Msg(format!(
                "input embeddings have width {h} but the language model at {} expects {}",
                self.dir.display(),
                self.config.hidden_size
            )));
        }
        Ok(self.encoder.forward_embeds(inputs_embeds, attention_mask)?)
    }
}
