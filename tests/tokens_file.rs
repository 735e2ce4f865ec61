//! `tokens.file`: precomputed tokens scored by the probe and few-shot suites.
//!
//! - `encode`'s output of a model, given as `tokens.file`, gives the probe the same features,
//!   predictions and metrics as the model itself, and the few-shot suite the same prompts and
//!   answers (the second run is served entirely from the response cache, so every prompt is
//!   byte-identical);
//! - a tokenizer this test writes (per-patch brightness words, pixels hashed here from the
//!   raw IDX bytes, not by the library) is scored by both suites through `text`, and the
//!   report says whose tokens each run scored;
//! - a missing image, a mismatched pixel hash and ids of another LM are errors naming them.

mod common;

use candle_core::Device;
use lqae::eval::codec::{self, EncodeArgs, Images};
use lqae::eval::runner::run_one;
use lqae::eval::suite;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The IDX fixture's images of one split: (side, pixels per image).
fn idx_images(data: &Path, stem: &str) -> (usize, Vec<Vec<u8>>) {
    let b = std::fs::read(data.join(format!("{stem}-images-idx3-ubyte"))).unwrap();
    let be = |o: usize| u32::from_be_bytes(b[o..o + 4].try_into().unwrap()) as usize;
    let (n, h, w) = (be(4), be(8), be(12));
    assert_eq!(h, w);
    let px = (0..n)
        .map(|i| b[16 + i * h * w..16 + (i + 1) * h * w].to_vec())
        .collect();
    (h, px)
}

/// The test's own tokenizer: one word per 8x8 patch for its mean brightness (one letter, so
/// the tiny LM's tokenizer keeps each whole within its 16 positions).
fn brightness_words(side: usize, px: &[u8]) -> Vec<String> {
    let words = ["a", "b", "c", "d"];
    let mut out = Vec::new();
    for py in (0..side).step_by(8) {
        for px0 in (0..side).step_by(8) {
            let mut s = 0u32;
            for y in py..py + 8 {
                for x in px0..px0 + 8 {
                    s += px[y * side + x] as u32;
                }
            }
            out.push(words[((s / 64) as usize * 4 / 256).min(3)].to_string());
        }
    }
    out
}

/// sha256 of `"{w}x{h}:"` + RGB8 with the grey value repeated (the format's definition).
fn grey_sha(side: usize, px: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(format!("{side}x{side}:").as_bytes());
    for &v in px {
        h.update([v, v, v]);
    }
    format!("{:x}", h.finalize())
}

/// Write the brightness-words tokens file of both splits.
fn write_words_file(data: &Path, out: &Path) {
    let mut s = json!({"lqae_tokens": 1, "model": "brightness-words", "transform": "8x8 patch means, 4 levels"}).to_string() + "\n";
    for (stem, split) in [("train", "train"), ("t10k", "test")] {
        let (side, imgs) = idx_images(data, stem);
        for (i, px) in imgs.iter().enumerate() {
            s += &(json!({"id": format!("{split}/{i}"), "pixels_sha256": grey_sha(side, px), "width": side, "height": side, "text": brightness_words(side, px)}).to_string() + "\n");
        }
    }
    std::fs::write(out, s).unwrap();
}

fn encode_split(model: &str, data: &Path, split: lqae::data::Split, out: &Path) {
    let zoo = lqae::eval::Zoo::new(&Device::Cpu, false);
    let cfg = lqae::data::DataConfig {
        dataset: "idx".into(),
        path: Some(data.display().to_string()),
        limit: None,
        augment: false,
    };
    codec::encode(
        &zoo,
        &EncodeArgs {
            model: model.into(),
            images: Images::Data(cfg, split),
            out: out.to_path_buf(),
            shard: None,
            skip_bad: false,
            batch: 16,
        },
        &mut |_, _| {},
    )
    .unwrap();
}

fn probe_suite(dir: &Path, run: &Path, tokens: &str) -> PathBuf {
    let suites = dir.join("suites");
    std::fs::create_dir_all(&suites).unwrap();
    std::fs::write(
        suites.join("tf-probe.toml"),
        format!(
            "kind = \"linear-probe\"\ndescription = \"tokens.file\"\nmodel = \"{}\"\nbaselines = [\"pixels\"]\n[data]\ndataset = \"idx\"\npath = \"{}\"\ntrain_limit = 48\ntest_limit = 40\n[probe]\nlayers = \"all\"\nl2_grid = [0.01, 1.0]\nmax_iterations = 50\n{tokens}",
            run.display(),
            dir.join("data").display()
        ),
    )
    .unwrap();
    suites
}

fn load(suites: &Path, name: &str, sets: &[&str]) -> lqae::eval::Suite {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    suite::load(suites, name, &sets).unwrap()
}

fn run_err(suites: &Path, name: &str, sets: &[&str], out: &Path) -> String {
    match run_one(&load(suites, name, sets), &Device::Cpu, out) {
        Ok(_) => panic!("{name} {sets:?} ran"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn probe_scores_encode_files_as_the_model_and_any_tokenizer_by_text() {
    let dir = tempfile::tempdir().unwrap();
    let run = common::train_tiny_lqae(dir.path(), 6);
    let model = run.display().to_string();
    let data = dir.path().join("data");
    let (tr, te) = (
        dir.path().join("train.jsonl"),
        dir.path().join("test.jsonl"),
    );
    encode_split(&model, &data, lqae::data::Split::Train, &tr);
    encode_split(&model, &data, lqae::data::Split::Test, &te);
    let suites = probe_suite(dir.path(), &run, "");
    let out = dir.path().join("results");
    let (d_model, r_model) = run_one(&load(&suites, "tf-probe", &[]), &Device::Cpu, &out).unwrap();
    let files = format!("tokens.file=[\"{}\", \"{}\"]", tr.display(), te.display());
    let (d_file, r_file) =
        run_one(&load(&suites, "tf-probe", &[&files]), &Device::Cpu, &out).unwrap();
    assert_eq!(r_file.metrics, r_model.metrics, "same tokens, same probe");
    assert_eq!(r_file.samples_sha256, r_model.samples_sha256);
    let samples = |d: &Path| std::fs::read_to_string(d.join("samples.jsonl")).unwrap();
    assert_eq!(
        samples(&d_file),
        samples(&d_model),
        "same predictions per image"
    );
    let rec = &r_file.extra["tokens_file"];
    assert_eq!(rec["field"], "ids", "{rec}");
    assert_eq!(rec["tokenizer"], model.as_str(), "{rec}");
    assert!(r_file.inputs_sha256.contains_key("tokens_file"));
    assert!(!r_model.inputs_sha256.contains_key("tokens_file"));

    // The test's own tokenizer, read as text and tokenized by the suite's LM.
    let words = dir.path().join("words.jsonl");
    write_words_file(&data, &words);
    let set = format!("tokens.file=\"{}\"", words.display());
    let (d_words, r_words) =
        run_one(&load(&suites, "tf-probe", &[&set]), &Device::Cpu, &out).unwrap();
    assert_eq!(r_words.extra["tokens_file"]["field"], "text");
    assert_eq!(
        r_words.extra["tokens_file"]["tokenizer"],
        "brightness-words"
    );
    let m = &r_words.metrics["lqae/top1"];
    assert!(m.n == 40 && (0.0..=1.0).contains(&m.value), "{m:?}");
    assert_eq!(
        r_words.metrics["pixels/top1"], r_model.metrics["pixels/top1"],
        "baselines do not depend on the tokens"
    );
    assert_ne!(
        std::fs::read_to_string(d_words.join("samples.jsonl")).unwrap(),
        samples(&d_model),
        "other tokens, other features"
    );
    // The report says whose tokens each run scored.
    let md = lqae::eval::runner::report(&d_model, &d_words)
        .unwrap()
        .markdown;
    assert!(
        md.contains("Tokens: baseline the model's own, current `brightness-words`"),
        "{md}"
    );

    // Errors name the image and the file.
    let full = std::fs::read_to_string(&words).unwrap();
    let lines: Vec<&str> = full.lines().collect();
    // An image the probe uses, taken out of the file, then given another hash.
    let used = r_model_test_image(&d_model);
    let missing = dir.path().join("missing.jsonl");
    std::fs::write(
        &missing,
        lines
            .iter()
            .filter(|l| !l.contains(&format!("\"id\":\"test/{used}\"")))
            .map(|l| format!("{l}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let e = run_err(
        &suites,
        "tf-probe",
        &[&format!("tokens.file=\"{}\"", missing.display())],
        &out,
    );
    assert!(
        e.contains(&format!("`test/{used}`")) && e.contains("missing.jsonl"),
        "{e}"
    );
    let bad = dir.path().join("bad-hash.jsonl");
    let target = format!("\"id\":\"test/{used}\"");
    std::fs::write(
        &bad,
        lines
            .iter()
            .map(|l| {
                if l.contains(&target) {
                    let mut v: Value = serde_json::from_str(l).unwrap();
                    v["pixels_sha256"] = json!("0".repeat(64));
                    format!("{v}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect::<String>(),
    )
    .unwrap();
    let e = run_err(
        &suites,
        "tf-probe",
        &[&format!("tokens.file=\"{}\"", bad.display())],
        &out,
    );
    assert!(
        e.contains(&format!("`test/{used}`"))
            && e.contains("pixels_sha256")
            && e.contains("bad-hash.jsonl"),
        "{e}"
    );
    // Ids asked of a file made by another LM.
    let other = dir.path().join("other-lm.jsonl");
    let t = std::fs::read_to_string(&te).unwrap();
    let mut ls = t.lines();
    let mut h: Value = serde_json::from_str(ls.next().unwrap()).unwrap();
    h["lm"] = json!("roberta-base");
    let tr_text = std::fs::read_to_string(&tr).unwrap();
    let mut s = format!("{h}\n");
    for l in tr_text.lines().skip(1).chain(ls) {
        s += &format!("{l}\n");
    }
    std::fs::write(&other, s).unwrap();
    let e = run_err(
        &suites,
        "tf-probe",
        &[
            &format!("tokens.file=\"{}\"", other.display()),
            "tokens.file_tokens=\"ids\"",
        ],
        &out,
    );
    assert!(
        e.contains("roberta-base") && e.contains("tokens.file_tokens"),
        "{e}"
    );
}

/// A test image index the probe used (from its samples).
fn r_model_test_image(d: &Path) -> usize {
    let s = std::fs::read_to_string(d.join("samples.jsonl")).unwrap();
    let v: Value = serde_json::from_str(s.lines().next().unwrap()).unwrap();
    v["index"].as_u64().unwrap() as usize
}

fn fewshot_suite(dir: &Path, run: &Path) -> PathBuf {
    let suites = dir.join("suites");
    std::fs::create_dir_all(&suites).unwrap();
    std::fs::write(
        suites.join("tf-fewshot.toml"),
        format!(
            r#"kind = "fewshot"
description = "tokens.file"
model = "{model}"
[data]
dataset = "idx"
path = "{data}"
[llm]
cache = "{cache}"
judge = "smollm2"
server_threads = 1
max_answer_tokens = 4
[tokens]
per_image = 8
calibration = []
[episodes]
ways = [2]
columns = [{{ induction = true, shots = 1 }}]
count = 3
seed = 3
"#,
            model = run.display(),
            data = dir.join("data").display(),
            cache = dir.join("responses.jsonl").display()
        ),
    )
    .unwrap();
    suites
}

fn answers(d: &Path) -> Vec<Value> {
    std::fs::read_to_string(d.join("answers.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn fewshot_prompts_from_an_encode_file_equal_the_models_and_words_are_written_as_given() {
    let dir = tempfile::tempdir().unwrap();
    let run = common::train_tiny_lqae(dir.path(), 4);
    let model = run.display().to_string();
    let data = dir.path().join("data");
    let te = dir.path().join("test.jsonl");
    encode_split(&model, &data, lqae::data::Split::Test, &te);
    let suites = fewshot_suite(dir.path(), &run);
    let out = dir.path().join("results");
    let (d_model, r_model) =
        run_one(&load(&suites, "tf-fewshot", &[]), &Device::Cpu, &out).unwrap();
    let set = format!("tokens.file=\"{}\"", te.display());
    let (d_file, r_file) =
        run_one(&load(&suites, "tf-fewshot", &[&set]), &Device::Cpu, &out).unwrap();
    assert_eq!(
        answers(&d_file),
        answers(&d_model),
        "same prompts, same answers"
    );
    assert_eq!(r_file.metrics, r_model.metrics);
    let req =
        |r: &lqae::eval::results::ResultFile, k: &str| r.extra["requests"][k].as_u64().unwrap();
    assert_eq!(req(&r_model, "sent"), 3);
    assert_eq!(
        (req(&r_file, "sent"), req(&r_file, "from_cache")),
        (0, 3),
        "every prompt byte-identical, so every answer came from the cache"
    );
    assert_eq!(r_file.extra["tokens_file"]["field"], "ids");

    // The test's own tokenizer through few-shot: its words are what the prompt shows.
    let words = dir.path().join("words.jsonl");
    write_words_file(&data, &words);
    let set = format!("tokens.file=\"{}\"", words.display());
    let (d_words, r_words) =
        run_one(&load(&suites, "tf-fewshot", &[&set]), &Device::Cpu, &out).unwrap();
    assert_eq!(
        r_words.extra["tokens_file"]["tokenizer"],
        "brightness-words"
    );
    let (_, imgs) = idx_images(&data, "t10k");
    for a in answers(&d_words) {
        let q: usize = a["query"].as_str().unwrap().parse().unwrap();
        let w = brightness_words(16, &imgs[q]);
        // per_image = 8: all 4 words, in raster order.
        let want: Vec<&str> = w.iter().map(String::as_str).collect();
        let prompt = a["prompt"].as_str().unwrap();
        assert!(prompt.contains(&want.join(" ")), "{prompt} lacks {want:?}");
    }
}
