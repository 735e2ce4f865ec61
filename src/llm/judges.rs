//! The judges the embedded llama-server can serve: small instruction or base models shipped
//! as GGUF files inside registry packages (assets), each measured with oracle tokens (every
//! image of a class one fixed word) before it was listed. A judge that cannot copy a label
//! from its context makes every few-shot number chance, whatever the tokens; the few-shot
//! suites therefore score calibration tokens beside the tokenizer's in every run.

use crate::assets::{self, Asset};

#[derive(Debug)]
pub struct Judge {
    /// The name suites use (`llm.judge`), also the server's alias and the request's `model`.
    pub name: &'static str,
    pub asset: &'static Asset,
    /// What it is, and what it read in the measurement that listed it.
    pub description: &'static str,
}

impl Judge {
    /// The GGUF file inside the asset's folder.
    pub fn file(&self) -> &'static str {
        self.asset.files[0].name
    }
    pub fn sha256(&self) -> &'static str {
        self.asset.files[0].sha256
    }
}

/// The default: the only judge listed here that reads oracle tokens (95-100% in every cell of
/// `fewshot-fashionmnist`, 1 shot, with and without task induction).
pub const QWEN_CODER_1_5B: Judge = Judge {
    name: "qwen2.5-coder-1.5b",
    asset: &assets::QWEN_CODER_1_5B,
    description: "Qwen2.5-Coder-1.5B-Instruct Q4_K_M (1.1 GB): reads oracle tokens; the default",
};

pub const SMOLLM2: Judge = Judge {
    name: "smollm2",
    asset: &assets::SMOLLM2,
    description: "SmolLM2-135M-Instruct Q4_1 (93 MB): fast, but reads oracle tokens near chance",
};

pub const GEMMA3_270M: Judge = Judge {
    name: "gemma3-270m",
    asset: &assets::GEMMA3_270M,
    description: "Gemma-3-270M base Q4_K_M (253 MB): reads oracle tokens near chance",
};

/// The default judge's name.
pub const DEFAULT: &str = QWEN_CODER_1_5B.name;

pub const ALL: &[&Judge] = &[&QWEN_CODER_1_5B, &SMOLLM2, &GEMMA3_270M];

pub fn by_name(name: &str) -> Option<&'static Judge> {
    ALL.iter().copied().find(|j| j.name == name)
}

pub fn names() -> Vec<&'static str> {
    ALL.iter().map(|j| j.name).collect()
}
