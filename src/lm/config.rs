//! `config.json` of a BERT- or RoBERTa-family checkpoint, field for field as Hugging Face writes it.

use crate::error::{Error, Result};
use serde::Deserialize;
use std::path::Path;

/// Which family a checkpoint belongs to. It decides the position offset, the special tokens
/// and how token pieces become text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// BERT and its distillations (MiniLM, bert-base-uncased): WordPiece, `##` continuations,
    /// positions 0..n.
    Bert,
    /// RoBERTa (and XLM-R, CamemBERT): byte-level BPE or SentencePiece, positions start at
    /// `pad_token_id + 1`.
    Roberta,
}

pub const SUPPORTED_MODEL_TYPES: &[&str] = &["bert", "roberta", "xlm-roberta", "camembert"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum HiddenAct {
    #[serde(rename = "gelu")]
    Gelu,
    #[serde(alias = "gelu_new", alias = "gelu_pytorch_tanh", rename = "gelu_fast")]
    GeluTanh,
    #[serde(rename = "relu")]
    Relu,
}

fn default_act() -> HiddenAct {
    HiddenAct::Gelu
}
fn default_eps() -> f64 {
    1e-12
}
fn default_type_vocab() -> usize {
    2
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct LmConfig {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: HiddenAct,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: Option<usize>,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

impl LmConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::file(
                path,
                format!(
                    "cannot read the model config ({e}); a checkpoint folder needs config.json"
                ),
            )
        })?;
        let cfg: LmConfig = serde_json::from_str(&text)
            .map_err(|e| Error::file(path, format!("not a valid BERT/RoBERTa config: {e}")))?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    pub fn family(&self) -> Family {
        match self.model_type.as_str() {
            "bert" => Family::Bert,
            _ => Family::Roberta,
        }
    }

    /// First position id: 0 for BERT, `pad_token_id + 1` (= 2) for RoBERTa.
    pub fn position_offset(&self) -> usize {
        match self.family() {
            Family::Bert => 0,
            Family::Roberta => self.pad_token_id.unwrap_or(1) + 1,
        }
    }

    /// The longest token sequence the position table allows.
    pub fn max_tokens(&self) -> usize {
        self.max_position_embeddings
            .saturating_sub(self.position_offset())
    }

    pub fn validate(&self, path: &Path) -> Result<()> {
        if !SUPPORTED_MODEL_TYPES.contains(&self.model_type.as_str()) {
            return Err(Error::file(
                path,
                format!(
                    "model_type `{}` is not supported; expected one of {} (a BERT- or RoBERTa-family encoder)",
                    self.model_type,
                    SUPPORTED_MODEL_TYPES.join(", ")
                ),
            ));
        }
        if let Some(p) = &self.position_embedding_type {
            if p != "absolute" {
                return Err(Error::file(
                    path,
                    format!("position_embedding_type `{p}` is not supported; only `absolute`"),
                ));
            }
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(Error::file(
                path,
                format!(
                    "hidden_size {} is not divisible by num_attention_heads {}",
                    self.hidden_size, self.num_attention_heads
                ),
            ));
        }
        Ok(())
    }
}
