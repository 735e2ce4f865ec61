//! The task, as lm-evaluation-harness splits it from the backend: the rows of a run (which
//! tokens are written: the suite's at each point of a sweep) over the same episodes, each
//! episode's prompt, and the questions the scoring strategy asks. No HTTP here.

use super::episodes::Episode;
use super::prompt::{image_words, prompt, text_words};
use super::scoring::Job;
use super::sources::RawTokens;
use super::spec::{CheckedFewshot, Point};
use crate::llm::Ask;
use std::collections::HashMap;

/// One row of the run: the tokens written at one point, every episode's prompt.
pub struct Row {
    /// The prefix of its metrics (empty for the only row).
    pub name: String,
    pub point: Point,
    /// Image key -> the token text written.
    pub texts: HashMap<String, String>,
    /// Mean tokens written per image.
    pub written: f64,
    /// One prompt per episode, in episode order.
    pub prompts: Vec<String>,
}

impl Row {
    /// `name/cell` (`cell` alone for an unnamed row).
    pub fn key(&self, cell: &str) -> String {
        if self.name.is_empty() {
            cell.to_string()
        } else {
            format!("{}/{cell}", self.name)
        }
    }
}

/// The episodes and every row's prompts.
pub struct Task<'a> {
    pub episodes: &'a [Episode],
    pub rows: Vec<Row>,
}

impl<'a> Task<'a> {
    /// One row per point of the sweep, each over every episode.
    pub fn build(
        spec: &CheckedFewshot,
        episodes: &'a [Episode],
        raw: &HashMap<String, RawTokens>,
        vocab: &crate::lm::Vocab,
    ) -> Task<'a> {
        let rows = spec
            .points
            .iter()
            .map(|point| {
                let (texts, written) = texts_for(raw, vocab, point, spec);
                let prompts = episodes
                    .iter()
                    .map(|e| prompt(e, &texts, &spec.episodes.templates))
                    .collect();
                Row {
                    name: point.name.clone(),
                    point: point.clone(),
                    texts,
                    written,
                    prompts,
                }
            })
            .collect();
        Task { episodes, rows }
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

/// The token text of every image at one point, and the mean number of tokens written.
fn texts_for(
    raw: &HashMap<String, RawTokens>,
    vocab: &crate::lm::Vocab,
    point: &Point,
    spec: &CheckedFewshot,
) -> (HashMap<String, String>, f64) {
    let mut written = 0usize;
    let texts: HashMap<String, String> = raw
        .iter()
        .map(|(k, r)| {
            let words = match r {
                RawTokens::Ids(ids) => image_words(ids, vocab, point, &spec.text),
                RawTokens::Words(w) => text_words(w, point),
            };
            written += words.len();
            (k.clone(), words.join(&spec.text.separator))
        })
        .collect();
    (texts, written as f64 / raw.len().max(1) as f64)
}
