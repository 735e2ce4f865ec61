//! The settings of a `linear-probe` suite, as written and as checked.

use crate::data::SuiteData;
use serde::{Deserialize, Serialize};

/// Which hidden states become features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Layers {
    /// `last` (the LM's last hidden state), `all` (every LM hidden state, concatenated, as
    /// the official code), `encoder` (every ViT encoder block), `everything` (encoder + LM).
    Named(String),
    /// LM hidden-state indices (0 = embedding output).
    List(Vec<usize>),
}

fn d_grid() -> Vec<f64> {
    vec![1e-3, 1e-2, 1e-1, 1.0]
}
fn d_val() -> f64 {
    0.1
}
fn d_iters() -> u64 {
    150
}
fn d_tol() -> f64 {
    0.02
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSettings {
    pub layers: Layers,
    /// L2 strengths tried on the held-out part of the train split.
    #[serde(default = "d_grid")]
    pub l2_grid: Vec<f64>,
    #[serde(default = "d_val")]
    pub val_fraction: f64,
    #[serde(default = "d_iters")]
    pub max_iterations: u64,
    #[serde(default)]
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearProbeSpec {
    /// The LQAE: a run configuration name under configs/ (trained once, cached by its hash)
    /// or a run folder.
    pub model: String,
    /// The VQ-VAE baseline, likewise.
    #[serde(default)]
    pub vqvae: Option<String>,
    pub data: SuiteData,
    pub probe: ProbeSettings,
    /// Representations scored beside the LQAE on identical splits: `pixels`, `vqvae`
    /// (its codes through the same LM), `random-encoder` (an untrained LQAE).
    #[serde(default)]
    pub baselines: Vec<String>,
    /// A metric may drop by this much (absolute) before the report calls it a regression.
    #[serde(default = "d_tol")]
    pub tolerance: f64,
    /// Precomputed tokens scored as the `lqae` representation in place of the model's own
    /// (the model still gives the frozen LM and the baselines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<ProbeTokens>,
}

/// `[tokens]` of a probe suite.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeTokens {
    /// The JSONL `lqae-eval encode` writes (or any tokenizer's in that format), covering the
    /// train and test images the probe uses (one file or a list, e.g. one per split).
    pub file: crate::eval::tokens_file::Files,
    /// `ids` (of the model's LM) or `text` (words, tokenized by the LM's tokenizer); unset:
    /// `ids` when the file's header names the model's LM, else `text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_tokens: Option<String>,
}

/// Which hidden states become features, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum LayerSel {
    /// The LM's last hidden state.
    Last,
    /// Every LM hidden state (this project's `all`; the official code's `all_bert`).
    All,
    /// Every ViT encoder block.
    Encoder,
    /// Encoder blocks and LM states (the official code's `all`).
    Everything,
    /// LM hidden-state indices (0 = embedding output).
    List(Vec<usize>),
}

/// A representation scored beside the LQAE on identical splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    Pixels,
    Vqvae,
    RandomEncoder,
}

impl Baseline {
    pub fn name(self) -> &'static str {
        match self {
            Baseline::Pixels => "pixels",
            Baseline::Vqvae => "vqvae",
            Baseline::RandomEncoder => "random-encoder",
        }
    }
}

/// A checked `linear-probe` suite: the settings as written (`Deref`) and their enums.
#[derive(Debug, Clone)]
pub struct CheckedProbe {
    pub spec: LinearProbeSpec,
    pub layers: LayerSel,
    pub baseline_reps: Vec<Baseline>,
}

impl std::ops::Deref for CheckedProbe {
    type Target = LinearProbeSpec;
    fn deref(&self) -> &LinearProbeSpec {
        &self.spec
    }
}

impl LinearProbeSpec {
    pub fn check(self) -> std::result::Result<CheckedProbe, Vec<String>> {
        let mut problems = self.data.problems();
        let layers = match &self.probe.layers {
            Layers::Named(n) => match n.as_str() {
                "last" => LayerSel::Last,
                "all" => LayerSel::All,
                "encoder" => LayerSel::Encoder,
                "everything" => LayerSel::Everything,
                other => {
                    problems.push(format!("`probe.layers`: `{other}`: use last, all, encoder, everything or a list of LM layer indices"));
                    LayerSel::Last
                }
            },
            Layers::List(ix) => LayerSel::List(ix.clone()),
        };
        let mut baselines = Vec::new();
        for b in &self.baselines {
            match b.as_str() {
                "pixels" => baselines.push(Baseline::Pixels),
                "vqvae" => baselines.push(Baseline::Vqvae),
                "random-encoder" => baselines.push(Baseline::RandomEncoder),
                other => problems.push(format!(
                    "`baselines`: unknown baseline `{other}`; known: pixels, vqvae, random-encoder"
                )),
            }
        }
        if let Some(t) = &self.tokens {
            if let Some(f) = t.file_tokens.as_deref() {
                if crate::eval::tokens_file::Field::parse(f).is_none() {
                    problems.push(format!(
                        "`tokens.file_tokens`: `{f}` is not `ids` or `text`"
                    ));
                }
            }
            if matches!(layers, LayerSel::Encoder | LayerSel::Everything) {
                problems.push("`probe.layers`: encoder states need the model's encoder; with `tokens.file` only the LM's states exist (use last, all or a list)".into());
            }
        }
        if baselines.contains(&Baseline::Vqvae) && self.vqvae.is_none() {
            problems.push(
                "`vqvae`: baseline `vqvae` needs `vqvae = \"<config or run folder>\"`".into(),
            );
        }
        crate::eval::kinds::checked(
            CheckedProbe {
                spec: self,
                layers,
                baseline_reps: baselines,
            },
            problems,
        )
    }
}
