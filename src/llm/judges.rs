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

pub const SMOLLM2: Judge = Judge {
    name: "smollm2",
    asset: &assets::SMOLLM2,
    description: "SmolLM2-135M-Instruct Q4_1: fast, but reads oracle tokens near chance",
};

/// The default judge's name.
pub const DEFAULT: &str = SMOLLM2.name;

pub const ALL: &[&Judge] = &[&SMOLLM2];

pub fn by_name(name: &str) -> Option<&'static Judge> {
    ALL.iter().copied().find(|j| j.name == name)
}

pub fn names() -> Vec<&'static str> {
    ALL.iter().map(|j| j.name).collect()
}
