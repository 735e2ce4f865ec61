//! The task, as lm-evaluation-harness splits it from the backend: the rows of a run (which
//! tokens are written: the suite's at each point of a sweep, and each calibration tokenizer's
//! at each point) over the same episodes, each episode's prompt, and the questions the
//! scoring strategy asks. No HTTP here.

use super::calibration::{Calibration, Calibrator};
use super::episodes::Episode;
use super::prompt::{image_words, prompt, text_words};
use super::scoring::Job;
use super::sources::{Inputs, RawTokens};
use super::spec::{CheckedFewshot, Point};
use crate::error::Result;
use crate::llm::Ask;
use std::collections::HashMap;

/// Whose tokens a row writes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Source {
    /// The suite's: the model's, or its `tokens.file`'s.
    Tokens,
    Calibration(Calibration),
}

/// One row of the run: the tokens written at one point, every episode's prompt.
pub struct Row {
    /// The prefix of its metrics (empty for the only row of the suite's tokens).
    pub name: String,
    pub source: Source,
    pub point: Point,
    /// Image key -> the words written, in order.
    pub words: HashMap<String, Vec<String>>,
    /// Image key -> the token text written (the words joined).
    pub texts: HashMap<String, String>,
    /// Mean tokens written per image.
    pub written: f64,
    /// One prompt per episode, in episode order.
    pub prompts: Vec<String>,
}

impl Row {
    /// `name/cell` (`cell` alone for an unnamed row).
    pub fn key(&self, cell: &str) -> String {
        super::spec::prefixed(&self.name, cell)
    }
}

/// The episodes, every row's prompts, and the calibration words of the run.
pub struct Task<'a> {
    pub episodes: &'a [Episode],
    pub rows: Vec<Row>,
    pub calibrator: Option<Calibrator>,
}

impl<'a> Task<'a> {
    /// The suite's tokens at each point, then each calibration tokenizer at each point; every
    /// row over every episode.
    pub fn build(spec: &CheckedFewshot, inputs: &'a Inputs) -> Result<Task<'a>> {
        let vocab = inputs.lqae().lm().vocab();
        let calibrator = (!spec.calibration.is_empty())
            .then(|| Calibrator::draw(&inputs.set.class_names, spec.episodes.seed))
            .transpose()?;
        let mut sources = vec![(Source::Tokens, None)];
        if let Some(cal) = &calibrator {
            for &c in &spec.calibration {
                // Each shown image's words under `c`, as many as the model gives it tokens.
                let raw: HashMap<String, RawTokens> = inputs
                    .shown
                    .iter()
                    .map(|(k, i)| {
                        let label = inputs.set.labels[*i] as usize;
                        let w = cal.tokens(c, *i, label, inputs.tokens_per_image);
                        (k.clone(), RawTokens::Words(w))
                    })
                    .collect();
                sources.push((Source::Calibration(c), Some(raw)));
            }
        }
        let mut rows = Vec::new();
        for (source, raw) in &sources {
            let raw = raw.as_ref().unwrap_or(&inputs.raw);
            for point in &spec.points {
                let words: HashMap<String, Vec<String>> = raw
                    .iter()
                    .map(|(k, r)| {
                        let w = match r {
                            RawTokens::Ids(ids) => image_words(ids, vocab, point, &spec.text),
                            RawTokens::Words(w) => text_words(w, point),
                        };
                        (k.clone(), w)
                    })
                    .collect();
                let written =
                    words.values().map(Vec::len).sum::<usize>() as f64 / words.len().max(1) as f64;
                let texts: HashMap<String, String> = words
                    .iter()
                    .map(|(k, w)| (k.clone(), w.join(&spec.text.separator)))
                    .collect();
                let prompts = inputs
                    .episodes
                    .iter()
                    .map(|e| prompt(e, &texts, &spec.episodes.templates))
                    .collect();
                let name = match source {
                    Source::Tokens => point.name.clone(),
                    Source::Calibration(c) => c.row_name(&point.name),
                };
                rows.push(Row {
                    name,
                    source: *source,
                    point: point.clone(),
                    words,
                    texts,
                    written,
                    prompts,
                });
            }
        }
        Ok(Task {
            episodes: &inputs.episodes,
            rows,
            calibrator,
        })
    }

    /// Every row's questions, row-major, each episode's in order, with what each is for.
    pub fn asks(&self, spec: &CheckedFewshot) -> (Vec<Ask>, Vec<Job>) {
        let mut asks = Vec::new();
        let mut jobs = Vec::new();
        for (r, row) in self.rows.iter().enumerate() {
            for (i, (e, p)) in self.episodes.iter().zip(&row.prompts).enumerate() {
                for (a, j) in spec.strategy.asks(spec.top_logprobs, r, i, e, p) {
                    asks.push(a);
                    jobs.push(j);
                }
            }
        }
        (asks, jobs)
    }
}
