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
    /// The name as metric prefixes and file names use it.
    pub slug: String,
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
    /// Tokens used and billed, and their cost at the judge's prices.
    pub usage: Usage,
    pub cost: Option<f64>,
    /// Prompt tokens of every row's prompts (row-major), how they were counted, the context.
    pub counts: Vec<usize>,
    pub counted_by: String,
    pub context: Option<usize>,
    /// Per row of the task.
    pub rows: Vec<RowScore>,
}

/// A judge ready to be asked: its backend open (the embedded server started), every row's
/// prompts counted with its tokenizer and checked against its context, and what the questions
/// not yet in the response cache would send and cost.
pub struct Prepared<'a> {
    pub judge: &'a LlmConfig,
    backend: Backend,
    counts: Vec<usize>,
    counted_by: String,
    pub estimate: Estimate,
}

/// Open `judge`'s backend, count and check every prompt, and estimate what asking costs.
pub fn prepare<'a>(
    spec: &CheckedFewshot,
    judge: &'a LlmConfig,
    task: &Task,
    (asks, jobs): (&[Ask], &[Job]),
    cx: &Ctx,
) -> Result<Prepared<'a>> {
    let say = |m: &str| cx.progress.line(m);
    let backend = Backend::open(judge, &say)?;
    if backend.context.is_none() {
        cx.progress
            .line("  llm.context is not set: prompt lengths are not checked before sending");
    }
    let mut counts = Vec::new();
    let mut methods: Vec<&str> = Vec::new();
    for row in &task.rows {
        let prompts: Vec<&str> = row.prompts.iter().map(String::as_str).collect();
        let (c, by) = backend.count_tokens(&prompts);
        if backend.embedded() && by != crate::llm::backend::COUNTED_BY_SERVER {
            return Err(Error::Msg(format!(
                "the embedded llama-server did not count the prompts of row `{}` through /tokenize; its log is under {}",
                row.name,
                crate::assets::cache_dir().join("llm").join("logs").display()
            )));
        }
        check_context(spec, &backend, task, row, &c, by)?;
        if !methods.contains(&by) {
            methods.push(by);
        }
        counts.extend(c);
    }
    let n_episodes = task.episodes.len();
    let ask_counts: Vec<usize> = jobs
        .iter()
        .map(|j| counts[j.row * n_episodes + j.episode])
        .collect();
    let per_answer = spec.strategy.answer_tokens(judge.max_answer_tokens);
    let estimate = backend.estimate(asks, &ask_counts, per_answer);
    cx.progress
        .line(&format!("  {}: {}", judge.name(), estimate.line()));
    Ok(Prepared {
        judge,
        backend,
        counts,
        counted_by: methods.join(", then "),
        estimate,
    })
}

/// Ask a prepared judge every question of the task and score its answers.
pub fn ask(
    spec: &CheckedFewshot,
    p: Prepared,
    task: &Task,
    (asks, jobs): (&[Ask], &[Job]),
    reading: &Reading,
    cx: &Ctx,
) -> Result<Judged> {
    let (judge, backend) = (p.judge, &p.backend);
    if cx.progress.enabled() {
        let cells = task
            .episodes
            .iter()
            .map(|e| e.cell())
            .collect::<std::collections::BTreeSet<_>>();
        let rows = task.rows.len();
        cx.progress.line(&format!(
            "  {} episodes in {} cells{}, {} requests to {} ({} already in the response cache {})",
            task.episodes.len(),
            cells.len(),
            if rows > 1 {
                format!(", each in {rows} rows")
            } else {
                String::new()
            },
            asks.len(),
            judge.name(),
            p.estimate.requests - p.estimate.to_send,
            backend.cache_path().display()
        ));
    }
    let say = |m: &str| cx.progress.line(m);
    let sent = backend.send(asks, &say)?;
    let rows = (0..task.rows.len())
        .map(|r| score_row(spec, task, r, jobs, &sent, reading))
        .collect();
    Ok(Judged {
        name: judge.name().to_string(),
        slug: judge.slug(),
        server: backend.identity.clone(),
        model: judge.model.clone(),
        api: judge.api.name(),
        key_source: backend.key_source.clone(),
        response_cache: backend.cache_path().display().to_string(),
        model_sha256: backend.model_sha256(),
        requests: backend.requests_record(&sent),
        cost: sent.usage.cost(&judge.prices),
        usage: sent.usage,
        counts: p.counts,
        counted_by: p.counted_by,
        context: backend.context,
        rows,
    })
}

/// Refuse to send anything when a prompt cannot fit the model's context with its answer.
fn check_context(
    spec: &CheckedFewshot,
    backend: &Backend,
    task: &Task,
    row: &super::task::Row,
    counts: &[usize],
    counted_by: &str,
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
