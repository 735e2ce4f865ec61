//! What a few-shot run hands the runner: metrics and samples per judge and row, the typed
//! record that becomes `extra` in `result.json`, and the files beside it (episodes, answers,
//! table, sweep summary and plot, the run's page with its thumbnails).

use super::episodes::Episode;
use super::judge::Judged;
use super::scoring::Answer;
use super::sources::Inputs;
use super::spec::CheckedFewshot;
use super::task::{Source, Task};
use super::{answer, page, plot, reference, summary, sweep, table::table_markdown};
use crate::data::LabelledImages;
use crate::error::Result;
use crate::eval::results::{Measured, Sample};
use crate::eval::stats::proportion;
use crate::eval::stats::Metric;
use crate::eval::suite_kind::{Ctx, Outcome};
use crate::util::fsx::sha256_hex;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// `extra` of a few-shot result. With several judges, `judge`, `api`, `server`, `llm_model`
/// and `api_key` are the judges' values joined, `usage` their sum (priced when every judge is),
/// the per-judge `prompt_tokens`, `requests` and `response_cache` are left out, and `judges`
/// holds each one's record.
#[derive(Serialize)]
struct Record {
    strategy: &'static str,
    /// The judge's name (the key of its calibration, the prefix of its metrics when several).
    judge: String,
    api: String,
    server: String,
    llm_model: String,
    api_key: String,
    tokens: Value,
    lqae_tokens_per_image: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    tokens_file: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens: Option<Value>,
    chance: BTreeMap<String, f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    requests: Option<Value>,
    usage: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_cache: Option<String>,
    table: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    sweep: Option<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    judges: Vec<JudgeRecord>,
    /// How a generated answer becomes a class name.
    answer_rule: &'static str,
    /// The calibration rows and the gate, per judge.
    calibration: Value,
}

/// One judge of several.
#[derive(Serialize)]
struct JudgeRecord {
    name: String,
    prefix: String,
    server: String,
    llm_model: String,
    api: &'static str,
    api_key: String,
    prompt_tokens: Value,
    requests: Value,
    usage: Value,
    response_cache: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    sweep: Option<Value>,
}

/// The metric prefix of a judge (`judge-<slug>/` when there are several, else empty).
fn judge_prefix(spec: &CheckedFewshot, slug: &str) -> String {
    if spec.several_judges() {
        format!("judge-{slug}/")
    } else {
        String::new()
    }
}

fn prompt_tokens(j: &Judged) -> Value {
    json!({
        "counted_by": j.counted_by,
        "max": j.counts.iter().max(),
        "mean": j.counts.iter().sum::<usize>() as f64 / j.counts.len().max(1) as f64,
        "context": j.context,
    })
}

/// A judge's metrics, samples, answers and tables over every row, and its calibration.
struct Scored {
    metrics: BTreeMap<String, Metric>,
    samples: Vec<Sample>,
    answers: Vec<Answer>,
    table: String,
    sweep: Option<Value>,
    calibration: Value,
}

fn scored(
    spec: &CheckedFewshot,
    task: &Task,
    j: &Judged,
    reference: &[BTreeMap<String, Metric>],
    ep_lines: &[String],
    set: &LabelledImages,
) -> Scored {
    let prefix = judge_prefix(spec, &j.slug);
    let mut out = Scored {
        metrics: BTreeMap::new(),
        samples: Vec::new(),
        answers: Vec::new(),
        table: String::new(),
        sweep: None,
        calibration: Value::Null,
    };
    let mut tables = Vec::new();
    let mut points = Vec::new();
    for (r, (row, rs)) in task.rows.iter().zip(&j.rows).enumerate() {
        let key = |k: &str| format!("{prefix}{}", row.key(k));
        for (m, v) in &rs.metrics {
            out.metrics.insert(key(m), v.clone());
        }
        let mut answers = rs.answers.clone();
        let mut samples = samples_of(&answers, task.episodes, ep_lines, set);
        for (s, a) in samples.iter_mut().zip(answers.iter_mut()) {
            s.rep = key(&s.rep);
            a.cell = key(&a.cell);
        }
        out.samples.extend(samples);
        out.answers.extend(answers);
        if row.source != Source::Tokens {
            continue;
        }
        let table = table_markdown(&rs.cells, &rs.metrics, Some(&reference[r]));
        tables.push(if row.name.is_empty() {
            table
        } else {
            format!(
                "**{}** ({:.1} tokens written per image on average)\n\n{table}",
                row.name, row.written
            )
        });
        points.push(sweep::PointResult {
            point: row.point.clone(),
            written: row.written,
            cells: rs.cells.clone(),
            metrics: rs.metrics.clone(),
            correct: rs.answers.iter().map(|a| a.correct).collect(),
            cell_of: task.episodes.iter().map(|e| e.cell()).collect(),
        });
    }
    out.sweep = (points.len() > 1).then(|| sweep::summary(&points));
    out.calibration = summary::judge_calibration(&task.rows, &j.rows, reference);
    let cal = summary::markdown(&j.name, &out.calibration, &spec.calibration);
    out.table = match &out.sweep {
        Some(sw) => format!("{}\n{}", sweep::summary_markdown(sw), tables.join("\n")),
        None => tables.concat(),
    };
    if !cal.is_empty() {
        out.table = format!("{}\n{cal}", out.table);
    }
    out
}

/// Each row's no-LLM reference per cell (`cell/nearest_support` -> metric).
fn references(spec: &CheckedFewshot, task: &Task) -> Vec<BTreeMap<String, Metric>> {
    task.rows
        .iter()
        .map(|row| {
            let mut cells: BTreeMap<String, (usize, usize)> = BTreeMap::new();
            for (e, ok) in task
                .episodes
                .iter()
                .zip(reference::correct(task.episodes, row))
            {
                let c = cells.entry(e.cell()).or_insert((0, 0));
                c.0 += ok as usize;
                c.1 += 1;
            }
            cells
                .into_iter()
                .map(|(cell, (k, n))| {
                    (
                        format!("{cell}/nearest_support"),
                        proportion(k, n, spec.tolerance),
                    )
                })
                .collect()
        })
        .collect()
}

/// Every judge's scores gathered: metrics, samples, answers, tables, sweep files and plot
/// name, each judge's record and calibration.
struct Gathered {
    metrics: BTreeMap<String, Metric>,
    samples: Vec<Sample>,
    answers: Vec<Answer>,
    table: String,
    files: Vec<(String, Vec<u8>)>,
    judges: Vec<JudgeRecord>,
    calibration: serde_json::Map<String, Value>,
    sweep_plot: Option<String>,
}

fn gather(
    spec: &CheckedFewshot,
    inputs: &Inputs,
    task: &Task,
    judged: &[Judged],
    ep_lines: &[String],
    cx: &Ctx,
) -> Result<Gathered> {
    let reference = references(spec, task);
    let mut g = Gathered {
        metrics: BTreeMap::new(),
        samples: Vec::new(),
        answers: Vec::new(),
        table: String::new(),
        files: Vec::new(),
        judges: Vec::new(),
        calibration: serde_json::Map::new(),
        sweep_plot: None,
    };
    for (row, refs) in task.rows.iter().zip(&reference) {
        for (m, v) in refs {
            g.metrics.insert(row.key(m), v.clone());
        }
    }
    let mut tables = Vec::new();
    for j in judged {
        let s = scored(spec, task, j, &reference, ep_lines, &inputs.set);
        g.calibration.insert(j.name.clone(), s.calibration);
        g.metrics.extend(s.metrics);
        g.samples.extend(s.samples);
        g.answers.extend(s.answers);
        let several = spec.several_judges();
        let suffix = if several {
            format!("-{}", j.slug)
        } else {
            String::new()
        };
        tables.push(if several {
            format!("### Judge {}\n\n{}", j.name, s.table)
        } else {
            s.table
        });
        if let Some(sw) = &s.sweep {
            g.files.push((
                format!("sweep{suffix}.json"),
                serde_json::to_vec_pretty(sw)?,
            ));
            g.files.push((
                format!("sweep{suffix}.md"),
                sweep::summary_markdown(sw).into_bytes(),
            ));
            if let Some(png) = plot::sweep_png(sw, &cx.suite.name)? {
                let name = format!("sweep{suffix}.png");
                g.sweep_plot.get_or_insert(name.clone());
                g.files.push((name, png));
            }
        }
        g.judges.push(JudgeRecord {
            prefix: judge_prefix(spec, &j.slug),
            name: j.name.clone(),
            server: j.server.clone(),
            llm_model: j.model.clone(),
            api: j.api,
            api_key: j.key_source.clone(),
            prompt_tokens: prompt_tokens(j),
            requests: j.requests.clone(),
            usage: j.usage.record(j.cost),
            response_cache: j.response_cache.clone(),
            sweep: s.sweep,
        });
    }
    g.table = tables.join("\n");
    Ok(g)
}

/// The record (`extra`): with one judge its fields, with several their names joined and
/// each judge's record under `judges`.
fn record(
    spec: &CheckedFewshot,
    inputs: &Inputs,
    task: &Task,
    judged: &[Judged],
    judges: Vec<JudgeRecord>,
    calibration: serde_json::Map<String, Value>,
    table: &str,
) -> Record {
    let one = |f: &dyn Fn(&JudgeRecord) -> String| {
        let v: Vec<String> = judges.iter().map(f).collect();
        v.join(", ")
    };
    let first = &judges[0];
    let several = spec.several_judges();
    let only = |v: &Value| (!several).then(|| v.clone());
    let mut usage = crate::llm::Usage::default();
    let mut cost = Some(0.0);
    for j in judged {
        usage.add(j.usage);
        cost = cost.zip(j.cost).map(|(a, b)| a + b);
    }
    Record {
        strategy: spec.strategy.name(),
        judge: one(&|r| r.name.clone()),
        api: one(&|r| r.api.to_string()),
        server: one(&|r| r.server.clone()),
        llm_model: one(&|r| r.llm_model.clone()),
        api_key: one(&|r| r.api_key.clone()),
        tokens: spec.tokens_written.clone(),
        lqae_tokens_per_image: inputs.tokens_per_image,
        tokens_file: inputs.file.as_ref().map(|(p, f)| p.record(*f)),
        prompt_tokens: only(&first.prompt_tokens),
        chance: task
            .episodes
            .iter()
            .map(|e| (e.cell(), 1.0 / e.ways as f64))
            .collect(),
        requests: only(&first.requests),
        usage: usage.record(cost),
        response_cache: (!several).then(|| first.response_cache.clone()),
        table: table.to_string(),
        sweep: if several { None } else { first.sweep.clone() },
        answer_rule: answer::RULE,
        calibration: json!({
            "rows": spec.calibration.iter().map(|c| c.name()).collect::<Vec<_>>(),
            "gate": summary::GATE,
            "gate_rule": format!("a judge whose oracle row is below {:.0}% in a cell cannot read tokens there: {}", 100.0 * summary::GATE, summary::UNREADABLE),
            "reference_rule": reference::RULE,
            "words": task.calibrator.as_ref().map(|c| c.record(&inputs.set.class_names)),
            "judges": calibration,
        }),
        judges: if several { judges } else { Vec::new() },
    }
}

/// What the run read, by hash: the model, the tokens file, the episodes, each embedded judge.
fn input_hashes(
    spec: &CheckedFewshot,
    inputs: &Inputs,
    judged: &[Judged],
    ep_lines: &[String],
) -> BTreeMap<String, String> {
    let mut h = BTreeMap::new();
    h.insert("lqae".to_string(), inputs.trained.sha256.clone());
    if let Some((p, _)) = &inputs.file {
        h.insert("tokens_file".to_string(), p.sha256.clone());
    }
    h.insert(
        "episodes".to_string(),
        sha256_hex(ep_lines.join("\n").as_bytes()),
    );
    for j in judged {
        if let Some(sha) = j.model_sha256 {
            let key = if spec.several_judges() {
                format!("llm-{}", j.slug)
            } else {
                "llm".to_string()
            };
            h.insert(key, sha.to_string());
        }
    }
    h
}

/// The run's outcome from every judge's answers.
pub fn outcome(
    spec: &CheckedFewshot,
    inputs: &Inputs,
    task: &Task,
    judged: Vec<Judged>,
    cx: &Ctx,
) -> Result<Outcome> {
    let episodes = task.episodes;
    let ep_lines: Vec<String> = episodes
        .iter()
        .map(|e| serde_json::to_string(e).expect("episode"))
        .collect();
    let g = gather(spec, inputs, task, &judged, &ep_lines, cx)?;
    let record = record(
        spec,
        inputs,
        task,
        &judged,
        g.judges,
        g.calibration,
        &g.table,
    );
    let calibration_plot = plot::calibration_png(&record.calibration, &cx.suite.name)?;
    let Value::Object(extra) = serde_json::to_value(&record)? else {
        unreachable!("a struct serialises to an object")
    };
    let mut seeds = BTreeMap::new();
    seeds.insert("episodes".to_string(), spec.episodes.seed);
    let samples_sha256 = sha256_hex(
        g.samples
            .iter()
            .map(|s| s.input_sha256.as_str())
            .collect::<Vec<_>>()
            .join(",")
            .as_bytes(),
    );
    let ans: Vec<String> = g
        .answers
        .iter()
        .map(|a| serde_json::to_string(a).expect("answer"))
        .collect();
    let mut files = vec![
        (
            "episodes.jsonl".to_string(),
            (ep_lines.join("\n") + "\n").into_bytes(),
        ),
        ("answers.jsonl".into(), (ans.join("\n") + "\n").into_bytes()),
        ("table.md".into(), g.table.clone().into_bytes()),
    ];
    files.extend(g.files);
    let calibration_plot = calibration_plot.map(|png| {
        files.push((page::CALIBRATION_PLOT.into(), png));
        page::CALIBRATION_PLOT.to_string()
    });
    // The run's page: thumbnails of every image shown, the episodes as sent and answered.
    let thumbs = page::thumbnails(&inputs.set, &inputs.shown)?;
    let data = page::PageData {
        episodes: episodes.to_vec(),
        answers: g.answers,
        texts: task
            .rows
            .iter()
            .map(|r| (r.name.clone(), r.texts.clone()))
            .collect(),
        images: thumbs
            .iter()
            .map(|(k, f, _)| (k.clone(), f.clone()))
            .collect(),
        plot: g.sweep_plot,
        calibration_plot,
    };
    files.extend(thumbs.into_iter().map(|(_, f, png)| (f, png)));
    let mut outcome = Outcome::new(Measured {
        seeds,
        inputs_sha256: input_hashes(spec, inputs, &judged, &ep_lines),
        samples_sha256,
        metrics: g.metrics,
        extra,
    });
    outcome.samples = g.samples;
    outcome.files = files;
    outcome.pages = vec![(
        page::PAGE_FILE.into(),
        Box::new(move |r: &crate::eval::results::ResultFile| page::page_html(r, &data)),
    )];
    outcome.table = Some(g.table);
    Ok(outcome)
}

/// One sample per episode (its cell as the representation, the episode's hash as input).
pub fn samples_of(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::LabelledImages;
    use crate::eval::kinds::fewshot::episodes::{self, sample_episodes};
    use crate::eval::kinds::fewshot::spec::Column;

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
}
