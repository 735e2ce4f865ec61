//! Few-shot image classification by a large language model reading LQAE tokens: the protocol
//! of Frozen's Open-Ended miniImageNet as LQAE used it. An N-way episode shows K support
//! images per class (optionally after a task-induction sentence and repeated), each written as
//! the text of its LQAE tokens and followed by its class name, then the query image; the LLM
//! must name the query's class.
//!
//! Everything the paper left unsaid is a recorded setting: how many of an image's tokens are
//! written and which (`tokens`), the prompt templates, and the scoring strategy
//! ([`scoring`]). The roles are split as lm-evaluation-harness splits them: episodes and
//! prompts here (the task), strategies in [`scoring`] (what to request, how to score),
//! HTTP, keys, token counts and the cache in `crate::llm::backend` (the backend).
//!
//! A server that cannot give what a strategy needs stops the run with that reason; nothing is
//! ever scored at chance silently. Every answer goes through the response cache first, so a
//! killed run resumes without repeating a request.

pub mod episodes;
pub mod page;
pub mod prompt;
pub mod scoring;
pub mod spec;
pub mod sweep;
pub mod table;

pub use episodes::{parse_episode_csv, read_episodes, sample_episodes, Episode, Shot};
pub use prompt::{
    first_token_pick, image_text, label_list, match_answer, normalize, prompt, words_text,
};
pub use scoring::{candidate_loglik, check_for, Answer, Strategy};
pub use spec::{
    paper_columns, sweep_points, CheckedFewshot, Column, EpisodeSettings, FewshotSpec, OneOrList,
    Point, ScoringSettings, Select, TokenSettings,
};
pub use table::table_markdown;

use crate::data::{image_key, subset, LabelledImages, Split};
use crate::error::{Error, Result};
use crate::eval::kind::{Ctx, Outcome, SuiteKind};
use crate::eval::results::{Measured, Metric, Sample};
use crate::eval::stats::proportion;
use crate::eval::tokens_file::{Field, Precomputed};
use crate::llm::backend::{self, Endpoint};
use crate::llm::{LlmClient, Reply, ResponseCache};
use crate::model::Lqae;
use crate::util::fsx::sha256_hex;
use scoring::{parse_reply, Job};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

pub struct Fewshot;

impl SuiteKind for Fewshot {
    const NAME: &'static str = "fewshot";
    type Spec = FewshotSpec;
    type Checked = CheckedFewshot;
    fn check(spec: FewshotSpec) -> std::result::Result<CheckedFewshot, Vec<String>> {
        spec.check()
    }
    fn run(spec: &CheckedFewshot, cx: &Ctx) -> Result<Outcome> {
        run(spec, cx)
    }
}

/// The episodes of a run: replayed from `episodes.file`, or sampled from the test subset.
fn episodes_of(spec: &CheckedFewshot, set: &LabelledImages) -> Result<Vec<Episode>> {
    let mut eps = match &spec.episodes.file {
        Some(f) => read_episodes(Path::new(f), set)?,
        None => {
            let e = &spec.episodes;
            let pool = subset(set.len(), spec.data.test_limit, e.seed, "fewshot-pool");
            sample_episodes(set, &pool, &e.ways, &e.columns, e.count, e.seed)?
        }
    };
    if spec.episodes.names == "nonsense" {
        episodes::name_nonsense(&mut eps, spec.episodes.seed)?;
    }
    Ok(eps)
}

/// An image's tokens before selection: ids of the model's LM, or a file's words.
pub enum RawTokens {
    Ids(Vec<u32>),
    Words(Vec<String>),
}

/// Every image the episodes show, by key, with its data-set index.
fn shown_images(set: &LabelledImages, episodes: &[Episode]) -> Vec<(String, usize)> {
    let keys: HashMap<String, usize> = (0..set.len()).map(|i| (image_key(set, i), i)).collect();
    let mut needed: Vec<String> = episodes
        .iter()
        .flat_map(|e| {
            e.support
                .iter()
                .chain(std::iter::once(&e.query))
                .map(|s| s.image.clone())
        })
        .collect();
    needed.sort();
    needed.dedup();
    needed
        .into_iter()
        .map(|k| {
            let i = keys[&k];
            (k, i)
        })
        .collect()
}

/// The tokens of every image the episodes show (from the model, or from `tokens.file`), and
/// how many tokens an image has.
fn raw_tokens_of(
    file: Option<(&Precomputed, Field)>,
    lqae: &Lqae,
    size: u32,
    set: &LabelledImages,
    shown: &[(String, usize)],
    cx: &Ctx,
) -> Result<(HashMap<String, RawTokens>, usize)> {
    let mut raw = HashMap::new();
    let mut n_ids = 0usize;
    if let Some((file, field)) = file {
        let vocab = lqae.lm().vocab();
        for (k, i) in shown {
            let e = file.get(set, Split::Test, *i)?;
            let id = crate::eval::tokens_file::data_image_id(Split::Test, *i);
            let r = match field {
                Field::Ids => RawTokens::Ids(file.ids_of(e, &id, vocab.len())?.to_vec()),
                Field::Text => RawTokens::Words(file.text_of(e, &id)?.to_vec()),
            };
            n_ids += match &r {
                RawTokens::Ids(v) => v.len(),
                RawTokens::Words(v) => v.len(),
            };
            raw.insert(k.clone(), r);
        }
    } else {
        for chunk in shown.chunks(64) {
            let idx: Vec<usize> = chunk.iter().map(|x| x.1).collect();
            let batch = crate::data::batch::make_batch(set, &idx, size, None, cx.device)?;
            let ids: Vec<Vec<u32>> = lqae.encode(&batch)?.to_vec2()?;
            for ((k, _), row) in chunk.iter().zip(ids) {
                n_ids += row.len();
                raw.insert(k.clone(), RawTokens::Ids(row));
            }
        }
    }
    Ok((raw, n_ids / shown.len().max(1)))
}

/// The token text of every image under one point's settings, and the mean number of tokens
/// written per image.
fn texts_for(
    raw: &HashMap<String, RawTokens>,
    vocab: &crate::lm::Vocab,
    tokens: &TokenSettings,
) -> (HashMap<String, String>, f64) {
    let mut written = 0usize;
    let texts: HashMap<String, String> = raw
        .iter()
        .map(|(k, r)| {
            let words = match r {
                RawTokens::Ids(ids) => prompt::image_words(ids, vocab, tokens),
                RawTokens::Words(w) => prompt::text_words(w, tokens),
            };
            written += words.len();
            (k.clone(), words.join(&tokens.separator))
        })
        .collect();
    (texts, written as f64 / raw.len().max(1) as f64)
}

/// Refuse to send anything when a prompt cannot fit the model's context with its answer.
fn check_context(
    spec: &CheckedFewshot,
    point: &Point,
    ep: &Endpoint,
    episodes: &[Episode],
    counts: &[usize],
    counted_by: &str,
    cx: &Ctx,
) -> Result<()> {
    let longest_label = episodes
        .iter()
        .flat_map(|e| e.classes.iter())
        .map(|c| c.len())
        .max()
        .unwrap_or(0);
    let answer_room = spec
        .strategy
        .answer_room(spec.llm.max_answer_tokens, longest_label);
    let Some(ctx) = ep.context else {
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
        return Err(Error::setting(
            "tokens.per_image",
            format!(
                "the prompt of episode {} #{} is {n} tokens ({counted_by}), over the model's context of {ctx} minus {answer_room} for the answer; lower `tokens.per_image` (now {}), or use fewer shots or repeats in `episodes.columns`, or raise `llm.context` if the model allows",
                point.key(&episodes[i].cell()), episodes[i].index, point.tokens.per_image()
            ),
        ));
    }
    Ok(())
}

/// Every answer scored: one `Answer` per episode, and token usage of what was sent.
fn score_answers(
    spec: &CheckedFewshot,
    episodes: &[Episode],
    prompts: &[String],
    jobs: &[Job],
    replies: &[Reply],
) -> Result<(Vec<Answer>, Usage, Vec<f64>, f64)> {
    let mut answers: Vec<Answer> = episodes
        .iter()
        .zip(prompts)
        .map(|(e, p)| Answer {
            cell: e.cell(),
            index: e.index,
            query: e.query.image.clone(),
            label: e.query.label.clone(),
            answer: String::new(),
            predicted: None,
            correct: false,
            prompt_tokens: None,
            scores: Vec::new(),
            prompt: p.clone(),
        })
        .collect();
    let mut usage = Usage::default();
    let mut overhead_ms = Vec::new();
    let mut server_ms_sum = 0.0;
    for (job, rep) in jobs.iter().zip(replies) {
        let c = parse_reply(&rep.body)?;
        usage.prompt += c.prompt_tokens.unwrap_or(0);
        usage.completion += c.completion_tokens.unwrap_or(0);
        if !rep.cached {
            usage.billed_prompt += c.prompt_tokens.unwrap_or(0);
            usage.billed_completion += c.completion_tokens.unwrap_or(0);
            if let Some(s) = c.server_ms {
                overhead_ms.push((rep.request_ms - s).max(0.0));
                server_ms_sum += s;
            }
        }
        let a = &mut answers[job.episode];
        a.prompt_tokens = a.prompt_tokens.or(c.prompt_tokens);
        spec.strategy.take(job, &c, &episodes[job.episode], a);
    }
    spec.strategy.finish(&mut answers, episodes);
    Ok((answers, usage, overhead_ms, server_ms_sum))
}

/// Tokens of the answered requests, and of those billed (not answered by the cache).
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    prompt: u64,
    completion: u64,
    billed_prompt: u64,
    billed_completion: u64,
}

impl Usage {
    fn add(&mut self, o: Usage) {
        self.prompt += o.prompt;
        self.completion += o.completion;
        self.billed_prompt += o.billed_prompt;
        self.billed_completion += o.billed_completion;
    }

    /// The `usage` record: the counts, and the billed ones' cost (`null` unless priced).
    fn record(&self, llm: &crate::llm::backend::LlmSettings) -> serde_json::Value {
        json!({
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "billed_prompt_tokens": self.billed_prompt,
            "billed_completion_tokens": self.billed_completion,
            "cost": llm.priced().then(|| cost_of(llm, self.billed_prompt, self.billed_completion)),
        })
    }
}

/// One sample per episode (its cell as the representation, the episode's hash as input).
fn samples_of(
    answers: &[Answer],
    episodes: &[Episode],
    ep_lines: &[String],
    set: &LabelledImages,
) -> Vec<Sample> {
    // A class as the data set numbers it (nonsense names mapped back to the real ones).
    let id = |e: &Episode, name: Option<&str>| {
        let real = name.map(|n| match &e.names {
            Some(real) => e
                .classes
                .iter()
                .position(|c| c == n)
                .map_or(n, |k| real[k].as_str()),
            None => n,
        });
        real.and_then(|n| set.class_names.iter().position(|c| c == n))
            .map(|p| p as u32)
            .unwrap_or(u32::MAX)
    };
    answers
        .iter()
        .zip(episodes)
        .zip(ep_lines)
        .map(|((a, e), line)| Sample {
            rep: a.cell.clone(),
            index: e.index,
            input_sha256: sha256_hex(line.as_bytes()),
            label: id(e, Some(&a.label)),
            pred: id(e, a.predicted.as_deref()),
            correct: a.correct,
            top5: false,
        })
        .collect()
}

/// The `requests` record: how many were answered from the cache, sent, retried, and how fast.
fn requests_record(
    client: &LlmClient,
    jobs: usize,
    wall: f64,
    overhead_ms: &[f64],
    server_ms: f64,
) -> serde_json::Value {
    let stats = client.stats();
    let network = stats.answered - stats.cache_hits;
    let mean_overhead = (!overhead_ms.is_empty())
        .then(|| overhead_ms.iter().sum::<f64>() / overhead_ms.len() as f64);
    let overhead_share = (server_ms > 0.0).then(|| overhead_ms.iter().sum::<f64>() / server_ms);
    json!({
        "jobs": jobs,
        "answered": stats.answered,
        "from_cache": stats.cache_hits,
        "sent": network,
        "http_requests": stats.http_requests,
        "retries": stats.retries,
        "wall_s": wall,
        "per_s": if wall > 0.0 { network as f64 / wall } else { 0.0 },
        "client_overhead_ms_mean": mean_overhead,
        "client_overhead_share_of_server_time": overhead_share,
        "server_ms_total": server_ms,
    })
}

/// `(prompt, completion)` tokens at the suite's prices.
fn cost_of(llm: &crate::llm::backend::LlmSettings, prompt: u64, completion: u64) -> f64 {
    (prompt as f64 * llm.price_prompt_per_million
        + completion as f64 * llm.price_completion_per_million)
        / 1e6
}

/// What the jobs not yet in the response cache would send and cost, said on the progress;
/// with `--dry-run` the run stops here, and a cap the estimate exceeds refuses the run.
/// Prompt tokens are the counted prompts' (exact with the server's tokenizer); completion
/// tokens are given as a range: at least one per request, at most the strategy's room.
/// Returns how many jobs the cache already answers.
fn budget(
    spec: &CheckedFewshot,
    ep: &Endpoint,
    client: &LlmClient,
    jobs: &[Job],
    job_counts: &[usize],
    cx: &Ctx,
) -> Result<usize> {
    let cached = |j: &Job| {
        client.cache().is_some_and(|c| {
            let k = crate::llm::cache::key(&ep.identity, j.request.endpoint, &j.request.body);
            c.get(&k).ok().flatten().is_some()
        })
    };
    let todo: Vec<usize> = (0..jobs.len()).filter(|&i| !cached(&jobs[i])).collect();
    let prompt: u64 = todo.iter().map(|&i| job_counts[i] as u64).sum();
    let per_answer = match spec.strategy {
        Strategy::Generate => spec.llm.max_answer_tokens as u64,
        _ => 1,
    };
    let (lo, hi) = (todo.len() as u64, todo.len() as u64 * per_answer);
    let llm = &spec.llm;
    let priced = llm.priced();
    let (cost_lo, cost_hi) = (cost_of(llm, prompt, lo), cost_of(llm, prompt, hi));
    let line = format!(
        "{} requests ({} already answered in the response cache), {} to send: {prompt} prompt tokens, {lo}-{hi} completion tokens{}",
        jobs.len(),
        jobs.len() - todo.len(),
        todo.len(),
        if priced {
            format!(", estimated cost {cost_lo:.4}-{cost_hi:.4}")
        } else {
            " (no llm.price_* set: cost not estimated)".into()
        }
    );
    cx.progress.line(&format!("  {line}"));
    let partial = json!({
        "requests": jobs.len(), "to_send": todo.len(), "prompt_tokens": prompt,
        "completion_tokens": [lo, hi], "cost": priced.then_some([cost_lo, cost_hi]),
    });
    if crate::eval::kind::dry_run() {
        return Err(Error::Stopped {
            msg: format!("dry run, nothing sent: {line}"),
            partial,
        });
    }
    if let Some(cap) = llm.max_prompt_tokens.filter(|&cap| prompt > cap) {
        return Err(Error::setting(
            "llm.max_prompt_tokens",
            format!("the run would send {prompt} prompt tokens, over the cap of {cap}; nothing was sent (fewer episodes.count, shots or tokens.per_image, or a higher cap; --dry-run shows the estimate)"),
        ));
    }
    if let Some(cap) = llm.max_cost.filter(|&cap| cost_lo > cap) {
        return Err(Error::setting(
            "llm.max_cost",
            format!("the run would cost at least {cost_lo:.4} (prompts, one answer token each), over the cap of {cap}; nothing was sent (fewer episodes, or a higher cap; --dry-run shows the estimate)"),
        ));
    }
    Ok(jobs.len() - todo.len())
}

/// Send the jobs' requests through the cached client; the replies and the wall time.
fn send(
    spec: &CheckedFewshot,
    cached: usize,
    rt: &tokio::runtime::Runtime,
    client: &Arc<LlmClient>,
    episodes: &[Episode],
    jobs: &[Job],
    cx: &Ctx,
) -> Result<(Vec<Reply>, f64)> {
    if let (true, Some(cache)) = (cx.progress.enabled(), client.cache()) {
        let cells = episodes
            .iter()
            .map(|e| e.cell())
            .collect::<std::collections::BTreeSet<_>>();
        let points = spec.points.len();
        cx.progress.line(&format!(
            "  {} episodes in {} cells{}, {} requests ({cached} already in the response cache {})",
            episodes.len(),
            cells.len(),
            if points > 1 {
                format!(", each at {points} points of the sweep")
            } else {
                String::new()
            },
            jobs.len(),
            cache.path().display()
        ));
    }
    let t_req = Instant::now();
    let requests = jobs.iter().map(|j| j.request.clone()).collect();
    let total = jobs.len();
    let progress = cx.progress;
    let report = move |done: usize, c: &LlmClient| {
        if done.is_multiple_of(20) || done == total {
            let s = c.stats();
            progress.line(&format!(
                "  {done}/{total} answered ({} from the cache, {} HTTP requests)",
                s.cache_hits, s.http_requests
            ));
        }
    };
    // Budget caps on what is really billed (cached answers cost nothing).
    let billed = std::sync::Mutex::new((0u64, 0u64));
    let llm = &spec.llm;
    let stop = |rep: &Reply| -> Option<String> {
        if rep.cached {
            return None;
        }
        let c = parse_reply(&rep.body).ok()?;
        let mut b = billed.lock().unwrap();
        b.0 += c.prompt_tokens.unwrap_or(0);
        b.1 += c.completion_tokens.unwrap_or(0);
        let cost = cost_of(llm, b.0, b.1);
        if let Some(cap) = llm.max_prompt_tokens.filter(|&cap| b.0 > cap) {
            return Some(format!(
                "llm.max_prompt_tokens reached: {} prompt tokens sent, cap {cap}",
                b.0
            ));
        }
        if let Some(cap) = llm.max_cost.filter(|&cap| cost > cap) {
            return Some(format!("llm.max_cost reached: {cost:.4} spent, cap {cap}"));
        }
        None
    };
    let replies = rt.block_on(backend::post_until(
        client.clone(),
        requests,
        llm.concurrency,
        &report,
        &stop,
    ))?;
    let replies = replies
        .into_iter()
        .map(|r| r.expect("every request answered"))
        .collect();
    Ok((replies, t_req.elapsed().as_secs_f64()))
}

/// Run a few-shot suite: episodes, prompts, the strategy's requests, answers, the table.
fn run(spec: &CheckedFewshot, cx: &Ctx) -> Result<Outcome> {
    let set = spec.data.load(Split::Test)?;
    let episodes = episodes_of(spec, &set)?;
    let trained = cx.zoo.load_for(&spec.model, &spec.data, "model")?;
    let lqae = trained.lqae("model", ": few-shot prompts need language tokens")?;
    let size = trained.state.config.model.image_size as u32;
    let file = spec
        .tokens
        .file
        .as_ref()
        .map(|f| {
            crate::eval::tokens_file::open(
                f,
                spec.tokens.file_tokens.as_deref(),
                &trained.state.config.model.lm_name(),
                lqae.lm().vocab().len(),
                cx.progress,
                "",
            )
        })
        .transpose()?;
    let file_ref = file.as_ref().map(|(p, f)| (p, *f));
    let shown = shown_images(&set, &episodes);
    let (raw, tokens_per_image) = raw_tokens_of(file_ref, lqae, size, &set, &shown, cx)?;

    // The server and the client.
    let ep = backend::endpoint(&spec.llm)?;
    if ep.server.is_some() {
        cx.progress.line(&format!(
            "  embedded llama-server on {} ({})",
            ep.base_url, ep.identity
        ));
    }
    let cache_path = spec
        .llm
        .cache
        .as_ref()
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            crate::assets::cache_dir()
                .join("llm")
                .join("responses.jsonl")
        });
    let cache = Arc::new(ResponseCache::open(&cache_path)?);
    let (key, key_source) = backend::api_key(&spec.llm);
    let client = Arc::new(backend::client(&spec.llm, &ep, key, cache.clone())?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Msg(format!("cannot start the async runtime: {e}")))?;

    // Every point's prompts and requests (the same episodes at each point: paired).
    let embedded = ep.server.is_some();
    let mut runs: Vec<PointRun> = Vec::new();
    let mut jobs: Vec<Job> = Vec::new();
    let mut job_counts: Vec<usize> = Vec::new();
    let mut counted_by = "";
    for point in &spec.points {
        let (texts, written) = texts_for(&raw, lqae.lm().vocab(), &point.tokens);
        let prompts: Vec<String> = episodes
            .iter()
            .map(|e| prompt(e, &texts, &spec.episodes))
            .collect();
        let prompt_refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
        let (counts, by) = rt.block_on(backend::count_tokens(&client, &prompt_refs));
        counted_by = by;
        check_context(spec, point, &ep, &episodes, &counts, counted_by, cx)?;
        let start = jobs.len();
        for (i, (e, p)) in episodes.iter().zip(&prompts).enumerate() {
            for j in spec.strategy.jobs(spec, &ep.model, embedded, i, e, p) {
                job_counts.push(counts[i]);
                jobs.push(j);
            }
        }
        runs.push(PointRun {
            point,
            texts,
            written,
            prompts,
            counts,
            jobs: start..jobs.len(),
        });
    }
    let cached = budget(spec, &ep, &client, &jobs, &job_counts, cx)?;
    let (replies, request_wall) = send(spec, cached, &rt, &client, &episodes, &jobs, cx)?;

    // Scoring, metrics per point and cell, the tables, the files.
    let ep_lines: Vec<String> = episodes
        .iter()
        .map(|e| serde_json::to_string(e).expect("episode"))
        .collect();
    let mut metrics: BTreeMap<String, Metric> = BTreeMap::new();
    let mut samples = Vec::new();
    let mut all_answers: Vec<Answer> = Vec::new();
    let mut usage = Usage::default();
    let (mut overhead_ms, mut server_ms) = (Vec::new(), 0.0);
    let mut tables = Vec::new();
    let mut scored: Vec<sweep::PointResult> = Vec::new();
    for r in &runs {
        let (mut answers, point_usage, o_ms, s_ms) = score_answers(
            spec,
            &episodes,
            &r.prompts,
            &jobs[r.jobs.clone()],
            &replies[r.jobs.clone()],
        )?;
        overhead_ms.extend(o_ms);
        server_ms += s_ms;
        usage.add(point_usage);
        let mut cells: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
        for (a, e) in answers.iter().zip(&episodes) {
            let c = cells.entry(a.cell.clone()).or_insert((0, 0, e.ways));
            c.0 += a.correct as usize;
            c.1 += 1;
        }
        let point_metrics: BTreeMap<String, Metric> = cells
            .iter()
            .map(|(cell, &(k, n, _))| (format!("{cell}/top1"), proportion(k, n, spec.tolerance)))
            .collect();
        let table = table_markdown(&cells, &point_metrics);
        tables.push(if r.point.name.is_empty() {
            table.clone()
        } else {
            format!(
                "**{}** ({:.1} tokens written per image on average)\n\n{table}",
                r.point.name, r.written
            )
        });
        for (m, v) in &point_metrics {
            metrics.insert(r.point.key(m), v.clone());
        }
        let mut point_samples = samples_of(&answers, &episodes, &ep_lines, &set);
        for (s, a) in point_samples.iter_mut().zip(answers.iter_mut()) {
            s.rep = r.point.key(&s.rep);
            a.cell = r.point.key(&a.cell);
        }
        samples.extend(point_samples);
        scored.push(sweep::PointResult {
            point: r.point.clone(),
            written: r.written,
            cells,
            metrics: point_metrics,
            correct: answers.iter().map(|a| a.correct).collect(),
            cell_of: episodes.iter().map(|e| e.cell()).collect(),
        });
        all_answers.extend(answers);
    }
    let sweep_summary = (spec.points.len() > 1).then(|| sweep::summary(&scored));
    let table = match &sweep_summary {
        Some(sw) => format!("{}\n{}", sweep::summary_markdown(sw), tables.join("\n")),
        None => tables.concat(),
    };
    let mut extra = serde_json::Map::new();
    extra.insert("strategy".into(), spec.strategy.name().into());
    extra.insert("api".into(), spec.llm.api.clone().into());
    extra.insert("server".into(), ep.identity.clone().into());
    extra.insert("llm_model".into(), ep.model.clone().into());
    extra.insert("api_key".into(), key_source.into());
    extra.insert("tokens".into(), serde_json::to_value(&spec.tokens)?);
    extra.insert("lqae_tokens_per_image".into(), tokens_per_image.into());
    if let Some((p, f)) = &file {
        extra.insert("tokens_file".into(), p.record(*f));
    }
    let all_counts: Vec<usize> = runs.iter().flat_map(|r| r.counts.iter().copied()).collect();
    extra.insert(
        "prompt_tokens".into(),
        json!({
            "counted_by": counted_by,
            "max": all_counts.iter().max(),
            "mean": all_counts.iter().sum::<usize>() as f64 / all_counts.len().max(1) as f64,
            "context": ep.context,
        }),
    );
    let chance: serde_json::Map<String, serde_json::Value> = episodes
        .iter()
        .map(|e| (e.cell(), json!(1.0 / e.ways as f64)))
        .collect();
    extra.insert("chance".into(), chance.into());
    extra.insert(
        "requests".into(),
        requests_record(&client, jobs.len(), request_wall, &overhead_ms, server_ms),
    );
    extra.insert("usage".into(), usage.record(&spec.llm));
    extra.insert(
        "response_cache".into(),
        cache_path.display().to_string().into(),
    );
    extra.insert("table".into(), table.clone().into());
    if let Some(sw) = &sweep_summary {
        extra.insert("sweep".into(), sw.clone());
    }

    let mut inputs = BTreeMap::new();
    inputs.insert("lqae".to_string(), trained.sha256.clone());
    if let Some((p, _)) = &file {
        inputs.insert("tokens_file".to_string(), p.sha256.clone());
    }
    inputs.insert(
        "episodes".to_string(),
        sha256_hex(ep_lines.join("\n").as_bytes()),
    );
    if embedded {
        inputs.insert(
            "llm".to_string(),
            crate::assets::SMOLLM2.files[0].sha256.to_string(),
        );
    }
    let mut seeds = BTreeMap::new();
    seeds.insert("episodes".to_string(), spec.episodes.seed);
    let samples_sha256 = sha256_hex(
        samples
            .iter()
            .map(|s| s.input_sha256.as_str())
            .collect::<Vec<_>>()
            .join(",")
            .as_bytes(),
    );
    let ans: Vec<String> = all_answers
        .iter()
        .map(|a| serde_json::to_string(a).expect("answer"))
        .collect();
    let mut files = vec![
        (
            "episodes.jsonl".into(),
            (ep_lines.join("\n") + "\n").into_bytes(),
        ),
        ("answers.jsonl".into(), (ans.join("\n") + "\n").into_bytes()),
        ("table.md".into(), table.clone().into_bytes()),
    ];
    if let Some(sw) = &sweep_summary {
        files.push(("sweep.json".into(), serde_json::to_vec_pretty(sw)?));
        files.push(("sweep.md".into(), sweep::summary_markdown(sw).into_bytes()));
        if let Some(png) = sweep::plot_png(sw, &cx.suite.name)? {
            files.push((sweep::PLOT_FILE.into(), png));
        }
    }
    // The run's page: thumbnails of every image shown, the episodes as sent and answered.
    let thumbs = page::thumbnails(&set, &shown)?;
    let data = page::PageData {
        episodes: episodes.clone(),
        answers: all_answers,
        texts: runs
            .iter()
            .map(|r| (r.point.name.clone(), r.texts.clone()))
            .collect(),
        images: thumbs
            .iter()
            .map(|(k, f, _)| (k.clone(), f.clone()))
            .collect(),
        plot: sweep_summary.as_ref().and_then(|_| {
            files
                .iter()
                .any(|f| f.0 == sweep::PLOT_FILE)
                .then_some(sweep::PLOT_FILE.to_string())
        }),
    };
    files.extend(thumbs.into_iter().map(|(_, f, png)| (f, png)));
    let mut outcome = Outcome::new(Measured {
        seeds,
        inputs_sha256: inputs,
        samples_sha256,
        metrics,
        extra,
    });
    outcome.samples = samples;
    outcome.files = files;
    outcome.pages = vec![(
        page::PAGE_FILE.into(),
        Box::new(move |r: &crate::eval::results::ResultFile| page::page_html(r, &data)),
    )];
    outcome.table = Some(table);
    drop(ep);
    Ok(outcome)
}

/// One point of the sweep as sent: its texts, prompts, prompt sizes and its jobs' range.
struct PointRun<'a> {
    point: &'a Point,
    texts: HashMap<String, String>,
    written: f64,
    prompts: Vec<String>,
    counts: Vec<usize>,
    jobs: std::ops::Range<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_and_exact_match() {
        let classes: Vec<String> = ["T-shirt/top", "Ankle boot", "Bag"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(match_answer(" ankle  boot.\nContext: x", &classes), Some(1));
        assert_eq!(match_answer("Bag", &classes), Some(2));
        assert_eq!(match_answer("T-shirt/top.", &classes), Some(0));
        assert_eq!(match_answer("Bags", &classes), None);
        assert_eq!(match_answer("", &classes), None);
    }

    #[test]
    fn first_token_skips_ambiguous_prefixes() {
        let classes: Vec<String> = ["Shirt", "Sneaker", "Bag"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let top = |v: &[(&str, f64)]| {
            v.iter()
                .map(|(t, l)| (t.to_string(), *l))
                .collect::<Vec<_>>()
        };
        // " S" fits two names and is passed over; " Sne" decides.
        assert_eq!(
            first_token_pick(
                &top(&[(" S", -0.1), (" Sne", -1.0), (" Bag", -2.0)]),
                &classes
            ),
            Some(1)
        );
        assert_eq!(first_token_pick(&top(&[("Ġbag", -0.5)]), &classes), Some(2));
        assert_eq!(
            first_token_pick(&top(&[(" the", -0.1), ("\n", -0.2)]), &classes),
            None
        );
    }

    #[test]
    fn csv_episodes_parse_and_bad_rows_are_named() {
        let csv = "episode,role,image,label,induction,repeats\n\
                   e1,support,a.jpg,lion,true,1\n\
                   e1,support,b.jpg,vase,true,1\n\
                   e1,query,c.jpg,vase,true,1\n\
                   e2,support,d.jpg,lion,false,0\n\
                   e2,support,e.jpg,lion,false,0\n\
                   e2,support,f.jpg,vase,false,0\n\
                   e2,support,g.jpg,vase,false,0\n\
                   e2,query,h.jpg,lion,false,0\n";
        let eps = parse_episode_csv(csv).unwrap();
        assert_eq!(eps.len(), 2);
        let (line, e) = &eps[0];
        assert_eq!(
            (*line, e.ways, e.shots, e.repeats, e.induction),
            (2, 2, 1, 1, true)
        );
        assert_eq!(e.classes, vec!["lion".to_string(), "vase".to_string()]);
        assert_eq!(e.query.image, "c.jpg");
        assert_eq!(
            (eps[1].1.shots, eps[1].1.cell()),
            (2, "2-way/induction-no/shots-2/repeats-0".to_string())
        );
        let err = parse_episode_csv(
            "episode,role,image,label,induction,repeats\nx,support,a,lion,true,0\n",
        )
        .unwrap_err();
        assert!(
            err.contains("episode `x`") && err.contains("0 query rows"),
            "{err}"
        );
        let err = parse_episode_csv("id,role,image\n").unwrap_err();
        assert!(err.contains("header"), "{err}");
        let err = parse_episode_csv("episode,role,image,label,induction,repeats\nx,support,a,lion,maybe,0\nx,query,b,lion,maybe,0\n").unwrap_err();
        assert!(err.contains("induction `maybe`"), "{err}");
    }

    #[test]
    fn the_table_follows_the_papers_column_order() {
        let mut cells = BTreeMap::new();
        let mut metrics = BTreeMap::new();
        for c in paper_columns() {
            let cell = format!("2-way/{}", c.name());
            cells.insert(cell.clone(), (1, 2, 2));
            metrics.insert(
                format!("{cell}/top1"),
                crate::eval::stats::proportion(1, 2, 0.05),
            );
        }
        let t = table_markdown(&cells, &metrics);
        let head = t.lines().next().unwrap();
        let want = "| | no induction, 1 shot | induction, 1 shot | induction, 3 shots | induction, 5 shots | induction, 1 shot, 1 repeat | induction, 1 shot, 3 repeats | induction, 1 shot, 5 repeats | chance |";
        assert_eq!(head, want);
        assert!(t.contains("| 2-way | 50.0 ["), "{t}");
        assert!(t.trim_end().ends_with("| 50.0 |"), "{t}");
    }

    #[test]
    fn nonsense_names_are_per_episode_paired_across_columns_and_recorded() {
        let set = LabelledImages {
            source: crate::data::ImageSource::Grey(crate::data::idx::GreyImages {
                n: 40,
                rows: 1,
                cols: 1,
                pixels: vec![0; 40],
            }),
            labels: (0..40).map(|i| i % 10).collect(),
            class_names: (0..10).map(|c| format!("class{c}")).collect(),
        };
        let pool: Vec<usize> = (0..40).collect();
        let cols = [
            Column {
                induction: false,
                shots: 1,
                repeats: 0,
            },
            Column {
                induction: true,
                shots: 1,
                repeats: 0,
            },
        ];
        let mut eps = sample_episodes(&set, &pool, &[5], &cols, 4, 3).unwrap();
        let real = eps.clone();
        episodes::name_nonsense(&mut eps, 3).unwrap();
        for (e, r) in eps.iter().zip(&real) {
            assert_eq!(e.names.as_ref(), Some(&r.classes));
            let distinct: std::collections::BTreeSet<&String> = e.classes.iter().collect();
            assert_eq!(distinct.len(), 5);
            for c in &e.classes {
                assert!(episodes::NONSENSE_WORDS.contains(&c.as_str()));
                assert!(!set.class_names.contains(c));
            }
            // Every label renamed consistently: the k-th class's images carry the k-th word.
            let word = |real_label: &str| {
                e.classes[r.classes.iter().position(|c| c == real_label).unwrap()].clone()
            };
            for (s, rs) in e
                .support
                .iter()
                .zip(&r.support)
                .chain([(&e.query, &r.query)])
            {
                assert_eq!(s.label, word(&rs.label));
                assert_eq!(s.image, rs.image);
            }
        }
        // Paired: the same index in both columns gets the same words.
        let (a, b) = eps.split_at(4);
        for (x, y) in a.iter().zip(b) {
            assert_eq!(x.classes, y.classes);
        }
        // Not every episode the same words.
        assert!(a.windows(2).any(|w| w[0].classes != w[1].classes));
        // Samples map the nonsense names back to the data set's classes.
        let ans: Vec<Answer> = eps
            .iter()
            .map(|e| Answer {
                cell: e.cell(),
                index: e.index,
                query: e.query.image.clone(),
                label: e.query.label.clone(),
                answer: e.query.label.clone(),
                predicted: Some(e.query.label.clone()),
                correct: true,
                prompt_tokens: None,
                scores: vec![],
                prompt: String::new(),
            })
            .collect();
        let lines: Vec<String> = eps
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        for (s, r) in samples_of(&ans, &eps, &lines, &set).iter().zip(&real) {
            assert_eq!(
                s.label,
                set.class_names
                    .iter()
                    .position(|c| *c == r.query.label)
                    .unwrap() as u32
            );
            assert_eq!(s.pred, s.label);
        }
    }

    #[test]
    fn sweeps_parse_check_and_name_their_points() {
        let spec = |t: &str| -> FewshotSpec {
            toml::from_str(&format!(
                "model = \"m\"\n[data]\ndataset = \"fashion-mnist\"\n[tokens]\n{t}\n[episodes]\ncount = 1\n"
            ))
            .unwrap()
        };
        let names = |c: &CheckedFewshot| -> Vec<String> {
            c.points.iter().map(|p| p.name.clone()).collect()
        };
        let c = spec("per_image = 8").check().unwrap();
        assert_eq!(names(&c), [""]);
        assert_eq!(c.points[0].key("2-way/x"), "2-way/x");
        let c = spec("per_image = [4, 8]").check().unwrap();
        assert_eq!(names(&c), ["per_image-4", "per_image-8"]);
        assert_eq!(
            (c.points[1].tokens.per_image(), c.points[1].tokens.select()),
            (8, Select::Stride)
        );
        assert_eq!(c.points[1].key("2-way/x"), "per_image-8/2-way/x");
        let c = spec("per_image = [4, 8]\nselect = [\"frequent\", \"all\"]")
            .check()
            .unwrap();
        assert_eq!(
            names(&c),
            [
                "select-frequent/per_image-4",
                "select-frequent/per_image-8",
                "select-all/per_image-all"
            ]
        );
        let c = spec("select = [\"raster\", \"stride\"]").check().unwrap();
        assert_eq!(names(&c), ["select-raster", "select-stride"]);
        let err = |t: &str| spec(t).check().unwrap_err().join("\n");
        assert!(err("per_image = []").contains("`tokens.per_image`: an empty list"));
        assert!(err("per_image = [4, 4]").contains("listed twice"));
        assert!(err("per_image = [0, 4]").contains("0 writes no tokens"));
        let e = err("select = [\"stride\", \"bogus\"]");
        assert!(e.contains("`tokens.select`: `bogus` is not one of"), "{e}");
        // Written lists are kept as lists in the resolved settings (the result records them).
        let v = serde_json::to_value(&spec("per_image = [4, 8]").tokens).unwrap();
        assert_eq!(v["per_image"], serde_json::json!([4, 8]));
        assert_eq!(v["select"], "stride");
    }

    #[test]
    fn label_lists_read_naturally() {
        let l = |v: &[&str]| label_list(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(l(&["lion", "vase"]), "\"lion\" or \"vase\"");
        assert_eq!(l(&["a", "b", "c"]), "\"a\", \"b\" or \"c\"");
    }

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
