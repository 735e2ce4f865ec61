//! Few-shot image classification by a large language model reading LQAE tokens: the protocol
//! of Frozen's Open-Ended miniImageNet as LQAE used it. An N-way episode shows K support
//! images per class (optionally after a task-induction sentence and repeated), each written as
//! the text of its LQAE tokens and followed by its class name, then the query image; the LLM
//! must name the query's class.
//!
//! Everything the paper left unsaid is a recorded setting: how many of an image's tokens are
//! written and which (`tokens`), the prompt templates, and the scoring strategy
//! ([`scoring`]). The roles are split as lm-evaluation-harness splits them: what a run reads
//! ([`sources`]), the task ([`task`]: rows of tokens over the same episodes, prompts and
//! questions, no HTTP), each judge's answers ([`judge`], through `crate::llm::Backend`, which
//! owns the server, cache, key, budget and sending), reading an answer ([`answer`]), the
//! strategies ([`scoring`]) and the typed record and files ([`record`]).
//!
//! A server that cannot give what a strategy needs stops the run with that reason; nothing is
//! ever scored at chance silently. Every answer goes through the response cache first, so a
//! killed run resumes without repeating a request.

pub mod answer;
pub mod calibration;
pub mod episodes;
pub mod gate;
pub mod judge;
pub mod page;
pub mod plot;
pub mod prompt;
pub mod record;
pub mod reference;
pub mod scoring;
pub mod sources;
pub mod spec;
pub mod summary;
pub mod sweep;
pub mod table;
pub mod task;

pub use answer::{first_token_pick, match_answer, normalize};
pub use episodes::{parse_episode_csv, read_episodes, sample_episodes, Episode, Shot};
pub use prompt::{image_text, image_words, label_list, prompt, text_words};
pub use scoring::{candidate_loglik, check_for, Answer, Strategy};
pub use spec::{
    paper_columns, sweep_points, CheckedFewshot, Column, EpisodeSettings, FewshotSpec, OneOrList,
    Point, ScoringSettings, Select, Templates, TextRule, TokenSettings,
};
pub use table::table_markdown;

use crate::error::{Error, Result};
use crate::eval::results::ResultFile;
use crate::eval::suite_kind::{BoardEntry, Ctx, Outcome, SuiteKind};

pub struct Fewshot;

impl SuiteKind for Fewshot {
    const NAME: &'static str = "fewshot";
    const DRY_RUNS: bool = true;
    type Spec = FewshotSpec;
    type Checked = CheckedFewshot;
    fn check(spec: FewshotSpec) -> std::result::Result<CheckedFewshot, Vec<String>> {
        spec.check()
    }
    fn run(spec: &CheckedFewshot, cx: &Ctx) -> Result<Outcome> {
        run(spec, cx)
    }
    fn board_rows(r: &ResultFile) -> Vec<BoardEntry> {
        gate::board_rows(r)
    }
    fn report_notes(r: &ResultFile) -> Vec<String> {
        gate::report_notes(r)
    }
}

/// Run a few-shot suite: what it reads, the task's questions, each judge's answers, the record.
fn run(spec: &CheckedFewshot, cx: &Ctx) -> Result<Outcome> {
    let inputs = sources::Inputs::load(spec, cx)?;
    let task = task::Task::build(spec, &inputs)?;
    let (asks, jobs) = task.asks(spec);
    if cx.dry_run {
        for l in summary::power_lines(&inputs.episodes) {
            cx.progress.line(&format!("  {l}"));
        }
    }
    let reading = answer::Reading {
        cue: answer::answer_cue(&spec.episodes.templates.example),
        names: inputs.set.class_names.clone(),
    };
    // Every judge counted, checked and estimated before anything is sent to any of them.
    let prepared = spec
        .judges
        .iter()
        .map(|j| judge::prepare(spec, j, &task, (&asks, &jobs), cx))
        .collect::<Result<Vec<_>>>()?;
    let mut total = prepared[0].estimate.clone();
    for p in &prepared[1..] {
        total.add(&p.estimate);
    }
    if prepared.len() > 1 {
        cx.progress.line(&format!(
            "  all {} judges: {}",
            prepared.len(),
            total.line()
        ));
    }
    if cx.dry_run {
        return Err(Error::Stopped {
            msg: format!("dry run, nothing sent: {}", total.line()),
            partial: total.record(),
        });
    }
    for p in &prepared {
        p.judge.caps.check(&p.estimate)?;
    }
    let judged = prepared
        .into_iter()
        .map(|p| judge::ask(spec, p, &task, (&asks, &jobs), &reading, cx))
        .collect::<Result<Vec<_>>>()?;
    record::outcome(spec, &inputs, &task, judged, cx)
}
