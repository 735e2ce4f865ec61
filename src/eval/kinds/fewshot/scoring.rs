//! Scoring strategies: what requests each needs for an episode, what an answer must contain,
//! and how the answers become a prediction.
//! - `generate`: greedy generation, exact match of the class name (the paper's protocol);
//! - `loglik`: the log-likelihood of each class name after the prompt (needs a server that
//!   returns prompt log-probabilities, `echo`);
//! - `first-token`: the top log-probabilities of the first answer token, matched to the class
//!   names they begin.

use super::answer::{first_token_pick, match_answer, Reading};
use super::episodes::Episode;
use crate::llm::response::Completion;
use crate::llm::{Api, Ask, RequestKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Generate,
    Loglik,
    FirstToken,
}

impl Strategy {
    pub const NAMES: &'static [&'static str] = &["generate", "loglik", "first-token"];
    pub fn parse(s: &str) -> Option<Strategy> {
        Some(match s {
            "generate" => Strategy::Generate,
            "loglik" => Strategy::Loglik,
            "first-token" => Strategy::FirstToken,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Generate => "generate",
            Strategy::Loglik => "loglik",
            Strategy::FirstToken => "first-token",
        }
    }

    /// The most tokens one answer may take (for the cost estimate).
    pub fn answer_tokens(self, max_answer_tokens: usize) -> u64 {
        match self {
            Strategy::Generate => max_answer_tokens as u64,
            _ => 1,
        }
    }

    /// Tokens the answer needs beyond the prompt (for the context check).
    pub fn answer_room(self, max_answer_tokens: usize, longest_label: usize) -> usize {
        match self {
            Strategy::Generate => max_answer_tokens,
            Strategy::FirstToken => 1,
            Strategy::Loglik => longest_label + 2,
        }
    }

    /// The questions of an episode with prompt `p` (one, or one per class for loglik), each
    /// with what scoring it needs to know. `row` and `episode` say where the answer goes.
    pub fn asks(
        self,
        top_logprobs: usize,
        row: usize,
        episode: usize,
        e: &Episode,
        p: &str,
    ) -> Vec<(Ask, Job)> {
        let one = |candidate: Option<usize>, text: String, kind, api: Option<Api>| {
            // A loglik answer must echo the whole prompt: its check needs the prompt's length.
            let check_len = if candidate.is_some() { text.len() } else { 0 };
            let job = Job {
                row,
                episode,
                candidate,
                prefix_len: p.chars().count(),
                full_len: text.chars().count(),
            };
            let ask = Ask {
                text,
                kind,
                api,
                check: Arc::new(check_for(self, check_len)),
            };
            (ask, job)
        };
        match self {
            Strategy::Loglik => e
                .classes
                .iter()
                .enumerate()
                .map(|(c, name)| {
                    one(
                        Some(c),
                        format!("{p} {name}"),
                        RequestKind::Echo,
                        Some(Api::Completions),
                    )
                })
                .collect(),
            Strategy::Generate => vec![one(None, p.to_string(), RequestKind::Generate, None)],
            Strategy::FirstToken => vec![one(
                None,
                p.to_string(),
                RequestKind::FirstToken { top_logprobs },
                None,
            )],
        }
    }

    /// Fold one parsed answer of `job` into the episode's `Answer`.
    pub fn take(self, job: &Job, c: &Completion, e: &Episode, a: &mut Answer, r: &Reading) {
        match self {
            Strategy::Generate => {
                a.answer = c.text.clone();
                a.predicted = match_answer(&c.text, &r.cue, &e.classes, &r.names);
            }
            Strategy::FirstToken => {
                let top = &c.logprobs.as_ref().expect("checked")[0].top;
                let k = first_token_pick(top, &e.classes);
                a.answer = top.first().map(|t| t.0.clone()).unwrap_or_default();
                a.predicted = k.map(|k| e.classes[k].clone());
            }
            Strategy::Loglik => {
                if a.scores.is_empty() {
                    a.scores = vec![f64::NEG_INFINITY; e.classes.len()];
                }
                a.scores[job.candidate.expect("loglik job")] =
                    candidate_loglik(c, job.prefix_len, job.full_len);
            }
        }
    }

    /// Once every answer is in: loglik picks the best-scoring class; all mark correctness.
    pub fn finish(self, answers: &mut [Answer], episodes: &[Episode]) {
        if self == Strategy::Loglik {
            for (a, e) in answers.iter_mut().zip(episodes) {
                let best = a
                    .scores
                    .iter()
                    .enumerate()
                    .max_by(|x, y| x.1.total_cmp(y.1))
                    .map(|x| x.0);
                a.predicted = best.map(|k| e.classes[k].clone());
                a.answer = a.predicted.clone().unwrap_or_default();
            }
        }
        for a in answers {
            a.correct = a.predicted.as_deref() == Some(a.label.as_str());
        }
    }
}

/// What one question is for.
#[derive(Debug, Clone, Copy)]
pub struct Job {
    /// The row (tokens written, judge-independent) and the episode it asks about.
    pub row: usize,
    pub episode: usize,
    /// `loglik`: which class name is appended.
    pub candidate: Option<usize>,
    /// Characters of the prompt before the candidate (loglik).
    pub prefix_len: usize,
    /// Characters of the whole text asked (prompt and candidate).
    pub full_len: usize,
}

/// What a strategy needs from a body, checked before the answer is cached or counted.
pub fn check_for(
    strategy: Strategy,
    prompt_len: usize,
) -> impl Fn(&Value) -> std::result::Result<(), String> + Send + Sync {
    move |v: &Value| {
        let c = crate::llm::response::parse(v)?;
        match strategy {
            Strategy::Generate => Ok(()),
            Strategy::FirstToken => {
                let lp = c.logprobs.ok_or("strategy `first-token` needs log-probabilities, and the body has no `logprobs`; use strategy `generate`")?;
                match lp.first() {
                    Some(t) if !t.top.is_empty() => Ok(()),
                    _ => Err("strategy `first-token` needs the top log-probabilities of the first answer token, and the body's `logprobs` has none; use strategy `generate`".into()),
                }
            }
            Strategy::Loglik => {
                let lp = c.logprobs.ok_or("strategy `loglik` needs the prompt's log-probabilities (`echo`), and the body has no `logprobs`; use strategy `first-token` or `generate`")?;
                let covered: usize = lp.iter().map(|t| t.token.len()).sum();
                let has_offsets = lp.iter().all(|t| t.offset.is_some());
                if covered < prompt_len || !has_offsets {
                    return Err(format!("strategy `loglik` needs the prompt's log-probabilities (`echo`), but the server returned log-probabilities for {} token(s) covering {covered} of the prompt's {prompt_len} bytes{}: it does not echo the prompt. Use strategy `first-token` or `generate`, or a server that echoes (vLLM, OpenAI davinci-002)", lp.len(), if has_offsets { "" } else { " without text offsets" }));
                }
                // Only the very first prompt token has no context; a missing value elsewhere
                // would read as certainty (log 1 = 0) and pick that class.
                if let Some(i) = lp.iter().skip(1).position(|t| t.logprob.is_none()) {
                    return Err(format!("strategy `loglik`: the server gave no log-probability for token {} (`{}`) of the echoed prompt", i + 1, lp[i + 1].token));
                }
                Ok(())
            }
        }
    }
}

/// `loglik`: summed log-probability of the tokens after `prefix_len` (characters, as
/// `text_offset` counts them) that belong to the
/// appended name (echoed prompt only, the generated token excluded).
pub fn candidate_loglik(c: &Completion, prefix_len: usize, full_len: usize) -> f64 {
    c.logprobs
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .filter(|t| {
            let o = t.offset.unwrap_or(0);
            o < full_len && o + t.token.chars().count() > prefix_len
        })
        .map(|t| t.logprob.unwrap_or(0.0))
        .sum()
}

/// Per-episode outcome, written to `answers.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Answer {
    pub cell: String,
    pub index: usize,
    pub query: String,
    pub label: String,
    /// The generated text (`generate`), the deciding first token (`first-token`), or the
    /// best class name (`loglik`).
    pub answer: String,
    pub predicted: Option<String>,
    pub correct: bool,
    pub prompt_tokens: Option<u64>,
    /// `loglik`: the score of each class, in `classes` order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scores: Vec<f64>,
    /// The prompt as sent (for `loglik`, before a class name is appended): what the model saw.
    #[serde(default)]
    pub prompt: String,
}

impl Answer {
    /// Episode `e` asked with prompt `p`, before any answer is folded in.
    pub fn unanswered(e: &Episode, p: &str) -> Answer {
        Answer {
            cell: e.cell(),
            index: e.index,
            query: e.query.image.clone(),
            label: e.query.label.clone(),
            answer: String::new(),
            predicted: None,
            correct: false,
            prompt_tokens: None,
            scores: Vec::new(),
            prompt: p.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn loglik_sums_only_the_candidate_tokens() {
        let prompt = "Classification:";
        let full = format!("{prompt} Bag");
        let t = |tok: &str, lp: f64, off: usize| crate::llm::TokenLogprob {
            token: tok.into(),
            logprob: Some(lp),
            top: vec![],
            offset: Some(off),
        };
        let c = crate::llm::Completion {
            logprobs: Some(vec![
                t("Classification", -5.0, 0),
                t(":", -1.0, 14),
                t(" B", -0.5, 15),
                t("ag", -0.25, 17),
                t(".", -3.0, 19),
            ]),
            ..Default::default()
        };
        assert_eq!(candidate_loglik(&c, prompt.len(), full.len()), -0.75);
        // Offsets count characters: a multi-byte character before the candidate must not
        // shift the window (by bytes, " B" would fall before it and "." inside it).
        let prompt = "Classé:";
        let full = format!("{prompt} Bag");
        let c = crate::llm::Completion {
            logprobs: Some(vec![
                t("Classé", -5.0, 0),
                t(":", -1.0, 6),
                t(" B", -0.5, 7),
                t("ag", -0.25, 9),
                t(".", -3.0, 11),
            ]),
            ..Default::default()
        };
        assert_eq!(
            candidate_loglik(&c, prompt.chars().count(), full.chars().count()),
            -0.75
        );
        let nulls = json!({"choices": [{"text": ".", "logprobs": {"tokens": ["Bag", " is", "."], "token_logprobs": [null, null, -1.0], "text_offset": [0, 3, 6]}}]});
        let e = check_for(Strategy::Loglik, 4)(&nulls).unwrap_err();
        assert!(e.contains("no log-probability for token 1"), "{e}");
        let check = check_for(Strategy::Loglik, full.len());
        let echoless = json!({"choices": [{"text": ".", "logprobs": {"content": [{"token": ".", "logprob": -3.0, "top_logprobs": []}]}}]});
        let e = check(&echoless).unwrap_err();
        assert!(
            e.contains("does not echo") && e.contains("first-token"),
            "{e}"
        );
    }
}
