//! One judge's part of a run: its backend opened, the prompts counted and checked against its
//! context, the cost estimated (a dry run stops here), the questions sent, and every row's
//! answers scored.

use super::answer::Reading;
use super::scoring::{Answer, Job};
use super::spec::CheckedFewshot;
use super::task::Task;
use crate::error::{Error, Result};
use crate::eval::stats::proportion;
use crate::eval::stats::Metric;
use crate::eval::suite_kind::Ctx;
use crate::llm::{Ask, Backend, Estimate, LlmConfig, Sent, Usage};
use serde_json::Value;
use std::collections::BTreeMap;

/// One row's answers as scored by one judge.
pub struct RowScore {
    /// One per episode, in episode order.
    pub answers: Vec<Answer>,
    /// Cell -> (correct, episodes, ways).
    pub cells: BTreeMap<String, (usize, usize, usize)>,
    /// `cell/top1` -> metric (not prefixed).
    pub metrics: BTreeMap<String, Metric>,
}

/// What one judge answered, and what it cost.
pub struct Judged {
    pub name: String,
    /// The server's identity (the response cache's name for it), the request's model, the
    /// API, where the key came from, the response cache.
    pub server: String,
    pub model: String,
    pub api: &'static str,
    pub key_source: String,
    pub response_cache: String,
    /// The embedded judge's model file hash.
    pub model_sha256: Option<&'static str>,
    pub requests: Value,
    pub usage: Value,
    /// Prompt tokens of every row's prompts (row-major), how they were counted, the context.
    pub counts: Vec<usize>,
    pub counted_by: &'static str,
    pub context: Option<usize>,
    /// Per row of the task.
    pub rows: Vec<RowScore>,
    pub tokens: Usage,
}

/// What asking a judge came to: its answers, or (dry run) what it would send.
pub enum Asked {
    Judged(Box<Judged>),
    Estimated(Estimate),
}

/// Ask `judge` every question of the task.
pub fn ask(
    spec: &CheckedFewshot,
    judge: &LlmConfig,
    task: &Task,
    (asks, jobs): (&[Ask], &[Job]),
    reading: &Reading,
    cx: &Ctx,
) -> Result<Asked> {
    let say = |m: &str| cx.progress.line(m);
    let backend = Backend::open(judge, &say)?;
    // Every row's prompts counted with the judge's tokenizer; each question costs its prompt.
    let mut counts = Vec::new();
    let mut counted_by = "";
    for row in &task.rows {
        let prompts: Vec<&str> = row.prompts.iter().map(String::as_str).collect();
        let (c, by) = backend.count_tokens(&prompts);
        counted_by = by;
        check_context(spec, &backend, task, row, &c, by, cx)?;
        counts.extend(c);
    }
    let n_episodes = task.episodes.len();
    let ask_counts: Vec<usize> = jobs
        .iter()
        .map(|j| counts[j.row * n_episodes + j.episode])
        .collect();
    let per_answer = spec.strategy.answer_tokens(judge.max_answer_tokens);
    let est = backend.estimate(asks, &ask_counts, per_answer);
    cx.progress
        .line(&format!("  {}: {}", judge.name(), est.line()));
    if cx.dry_run {
        return Ok(Asked::Estimated(est));
    }
    judge.caps.check(&est)?;
    if cx.progress.enabled() {
        let cells = task
            .episodes
            .iter()
            .map(|e| e.cell())
            .collect::<std::collections::BTreeSet<_>>();
        let rows = task.rows.len();
        cx.progress.line(&format!(
            "  {} episodes in {} cells{}, {} requests to {} ({} already in the response cache {})",
            n_episodes,
            cells.len(),
            if rows > 1 {
                format!(", each in {rows} rows")
            } else {
                String::new()
            },
            asks.len(),
            judge.name(),
            est.requests - est.to_send,
            backend.cache_path().display()
        ));
    }
    let sent = backend.send(asks, &say)?;
    let rows = (0..task.rows.len())
        .map(|r| score_row(spec, task, r, jobs, &sent, reading))
        .collect();
    Ok(Asked::Judged(Box::new(Judged {
        name: judge.name().to_string(),
        server: backend.identity.clone(),
        model: judge.model.clone(),
        api: judge.api.name(),
        key_source: backend.key_source.clone(),
        response_cache: backend.cache_path().display().to_string(),
        model_sha256: backend.model_sha256(),
        requests: backend.requests_record(&sent),
        usage: sent.usage.record(&judge.prices),
        counts,
        counted_by,
        context: backend.context,
        rows,
        tokens: sent.usage,
    })))
}

/// Refuse to send anything when a prompt cannot fit the model's context with its answer.
fn check_context(
    spec: &CheckedFewshot,
    backend: &Backend,
    task: &Task,
    row: &super::task::Row,
    counts: &[usize],
    counted_by: &str,
    cx: &Ctx,
) -> Result<()> {
    let longest_label = task
        .episodes
        .iter()
        .flat_map(|e| e.classes.iter())
        .map(|c| c.len())
        .max()
        .unwrap_or(0);
    let answer_room = spec
        .strategy
        .answer_room(backend.config.max_answer_tokens, longest_label);
    let Some(ctx) = backend.context else {
        cx.progress
            .line("  llm.context is not set: prompt lengths are not checked before sending");
        return Ok(());
    };
    let limit = ctx.saturating_sub(answer_room);
    if let Some((i, n)) = counts
        .iter()
        .enumerate()
        .max_by_key(|x| x.1)
        .filter(|x| *x.1 > limit)
    {
        let e = &task.episodes[i];
        return Err(Error::setting(
            "tokens.per_image",
            format!(
                "the prompt of episode {} #{} is {n} tokens ({counted_by}), over the model's context of {ctx} minus {answer_room} for the answer; lower `tokens.per_image` (now {}), or use fewer shots or repeats in `episodes.columns`, or raise `llm.context` if the model allows",
                row.key(&e.cell()), e.index, row.point.per_image
            ),
        ));
    }
    Ok(())
}

/// Row `r`'s answers folded from the replies to its questions, then its cells and metrics.
fn score_row(
    spec: &CheckedFewshot,
    task: &Task,
    r: usize,
    jobs: &[Job],
    sent: &Sent,
    reading: &Reading,
) -> RowScore {
    let row = &task.rows[r];
    let mut answers: Vec<Answer> = task
        .episodes
        .iter()
        .zip(&row.prompts)
        .map(|(e, p)| Answer::unanswered(e, p))
        .collect();
    for (job, c) in jobs.iter().zip(&sent.completions).filter(|x| x.0.row == r) {
        let a = &mut answers[job.episode];
        a.prompt_tokens = a.prompt_tokens.or(c.prompt_tokens);
        spec.strategy
            .take(job, c, &task.episodes[job.episode], a, reading);
    }
    spec.strategy.finish(&mut answers, task.episodes);
    let mut cells: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    for (a, e) in answers.iter().zip(task.episodes) {
        let c = cells.entry(a.cell.clone()).or_insert((0, 0, e.ways));
        c.0 += a.correct as usize;
        c.1 += 1;
    }
    let metrics = cells
        .iter()
        .map(|(cell, &(k, n, _))| (format!("{cell}/top1"), proportion(k, n, spec.tolerance)))
        .collect();
    RowScore {
        answers,
        cells,
        metrics,
    }
}
