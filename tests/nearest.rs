//! The nearest-support suite (no LLM): its episodes are the few-shot suites' own, its pixel
//! figures equal a golden computed without the crate (tests/data/nearest/golden.py, from the
//! Fashion-MNIST file itself), and its token figures equal the few-shot suite's recorded
//! no-LLM reference on the episodes both ran (results/baselines/fewshot-fashionmnist).

use candle_core::Device;
use lqae::eval::results::read_result;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

fn jsonl(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn the_only_dir(p: &Path) -> std::path::PathBuf {
    let mut d: Vec<_> = std::fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(d.len(), 1, "{}", p.display());
    d.pop().unwrap()
}

#[test]
fn episodes_pixels_and_tokens_agree_with_independent_records() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = root.join("tests/data/nearest");
    let sets: Vec<String> = [
        "episodes.count=100",
        "tokens.per_image=16",
        "baselines=[\"pixels\"]",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let suite = lqae::eval::suite::load(&root.join("suites"), "nearest-fashionmnist", &sets)
        .expect("the shipped suite with the test's settings");
    let out = tempfile::tempdir().unwrap();
    let (dir, r) = lqae::eval::runner::run_one(&suite, &Device::Cpu, out.path()).unwrap();

    // The episodes are the sampler's (a change to it moves every few-shot figure).
    let eps = jsonl(&dir.join("episodes.jsonl"));
    assert_eq!(eps, jsonl(&data.join("episodes.jsonl")), "episodes moved");

    // Pixels: the golden counts, exactly.
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("golden.json")).unwrap()).unwrap();
    for (cell, g) in golden["pixels"].as_object().unwrap() {
        let m = &r.metrics[&format!("pixels/{cell}")];
        let k = (m.value * m.n as f64).round() as u64;
        assert_eq!(
            (k, m.n as u64),
            (g["correct"].as_u64().unwrap(), g["n"].as_u64().unwrap()),
            "pixels/{cell}"
        );
        assert!(m.ci95[0] <= m.value && m.value <= m.ci95[1]);
    }

    // Tokens: the few-shot suite's recorded reference, on the first episodes of each cell
    // (episodes are drawn per index, so its 10 are these 100's first 10).
    let base = the_only_dir(&root.join("results/baselines/fewshot-fashionmnist"));
    let (fewshot, _) = read_result(&base.join("result.json")).unwrap();
    let fs_eps: Vec<Value> = jsonl(&base.join("episodes.jsonl"))
        .into_iter()
        .filter(|e| e["induction"] == false)
        .collect();
    let (_, samples) = read_result(&dir.join("result.json")).unwrap();
    let samples = samples.expect("samples.jsonl");
    let mut right: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
    for e in &fs_eps {
        let ways = e["ways"].as_u64().unwrap() as usize;
        let index = e["index"].as_u64().unwrap() as usize;
        let pos = eps
            .iter()
            .position(|x| x["ways"] == e["ways"] && x["index"] == e["index"])
            .expect("the few-shot episode is among these");
        for k in ["classes", "support", "query"] {
            assert_eq!(eps[pos][k], e[k], "{ways}-way episode {index}: {k}");
        }
        let s = samples
            .iter()
            .find(|s| s.rep == format!("lqae/{ways}-way-1-shot") && s.index == pos)
            .expect("a sample per episode");
        let c = right.entry(ways).or_insert((0, 0));
        c.0 += s.correct as usize;
        c.1 += 1;
    }
    assert_eq!(right.len(), 2, "{right:?}");
    for (ways, (k, n)) in right {
        let m =
            &fewshot.metrics[&format!("{ways}-way/induction-no/shots-1/repeats-0/nearest_support")];
        assert_eq!(
            (k, n),
            ((m.value * m.n as f64).round() as usize, m.n),
            "{ways}-way: the few-shot suite's no-LLM reference"
        );
    }
    // Which examples were scored: the episodes' hash (two runs over the same episodes pair
    // their samples in `report`, whatever they predicted).
    let bytes = std::fs::read(dir.join("episodes.jsonl")).unwrap();
    assert_eq!(r.samples_sha256, lqae::util::fsx::sha256_hex(&bytes));
    // The rule and what was written are on record.
    assert!(r.extra["rule"]
        .as_str()
        .unwrap()
        .starts_with("nearest support"));
    assert_eq!(r.extra["written_per_image"]["lqae"], 16.0);
}

#[test]
fn bad_settings_are_named() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (set, key) in [
        ("baselines=[\"judge\"]", "`baselines`"),
        ("episodes.shots=[0]", "`episodes.shots`"),
        ("tokens.select=\"best\"", "`tokens.select`"),
        ("tokens.calibration=[\"oracle\"]", "`tokens.calibration`"),
    ] {
        let e =
            lqae::eval::suite::load(&root.join("suites"), "nearest-fashionmnist", &[set.into()])
                .err()
                .unwrap_or_else(|| panic!("{set} accepted"));
        let msg = e.to_string();
        assert!(msg.contains(key), "{set}: {msg}");
    }
}
