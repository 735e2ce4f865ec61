//! Few-shot classification end to end against the real embedded llama-server (the small
//! SmolLM2-135M judge, fast: these tests are about the machinery; tests/judges.rs reads with
//! the default judge) with lqae-fmnist tokens of real Fashion-MNIST images: each scoring
//! strategy the server supports, a clear refusal for the one it does not, a real SIGKILL
//! mid-run and a resume that repeats no answered request, and an API key that never reaches a
//! file.

mod common;

use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_lqae-eval");

/// A few-shot suite file in `dir` with its own response cache.
fn suite(
    dir: &Path,
    name: &str,
    strategy: &str,
    ways: &str,
    columns: &str,
    count: usize,
) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(
        &p,
        format!(
            r#"kind = "fewshot"
description = "test"
model = "lqae-fmnist"
[data]
dataset = "fashion-mnist"
test_limit = 300
[llm]
cache = "{cache}"
judge = "smollm2"
server_threads = 1
[tokens]
per_image = 8
calibration = []
[episodes]
ways = {ways}
columns = {columns}
count = {count}
seed = 7
[scoring]
strategy = "{strategy}"
"#,
            cache = dir.join(format!("{name}-responses.jsonl")).display()
        ),
    )
    .unwrap();
    p
}

const ONE_COLUMN: &str = "[{ induction = true, shots = 1 }]";

fn run(suite: &Path, results: &Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new(BIN);
    c.arg("--suite").arg(suite).arg("--results").arg(results);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
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

/// The one run folder under `results/<suite>/`.
fn run_dirs(results: &Path, name: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(results.join(name))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn result(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("result.json")).unwrap()).unwrap()
}

fn answers(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("answers.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn generate_and_first_token_against_the_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let res = dir.path().join("results");
    for (strategy, api) in [
        ("generate", "completions"),
        ("first-token", "completions"),
        ("generate", "chat"),
    ] {
        let name = format!("fs-{strategy}-{api}");
        let s = suite(dir.path(), &name, strategy, "[2, 5]", ONE_COLUMN, 3);
        let text = std::fs::read_to_string(&s)
            .unwrap()
            .replace("[llm]\n", &format!("[llm]\napi = \"{api}\"\n"));
        std::fs::write(&s, text).unwrap();
        ok(&run(&s, &res, &[]));
        let d = &run_dirs(&res, &name)[0];
        let r = result(d);
        let m = &r["metrics"];
        for cell in [
            "2-way/induction-yes/shots-1/repeats-0/top1",
            "5-way/induction-yes/shots-1/repeats-0/top1",
        ] {
            let c = &m[cell];
            assert_eq!(c["n"], 3, "{strategy} {cell}: {c}");
            let (v, lo, hi) = (
                c["value"].as_f64().unwrap(),
                c["ci95"][0].as_f64().unwrap(),
                c["ci95"][1].as_f64().unwrap(),
            );
            assert!(lo <= v && v <= hi && (0.0..=1.0).contains(&v), "{c}");
        }
        let x = &r["extra"];
        assert_eq!(x["strategy"], strategy);
        assert_eq!(x["api"], api);
        assert_eq!(x["chance"]["5-way/induction-yes/shots-1/repeats-0"], 0.2);
        assert_eq!(x["requests"]["sent"], 6, "{}", x["requests"]);
        assert!(
            x["usage"]["prompt_tokens"].as_u64().unwrap() > 6 * 20,
            "{}",
            x["usage"]
        );
        assert_eq!(x["prompt_tokens"]["counted_by"], "server /tokenize");
        assert!(
            x["requests"]["client_overhead_share_of_server_time"]
                .as_f64()
                .is_some(),
            "{}",
            x["requests"]
        );
        assert_eq!(x["tokens"]["per_image"], 8);
        let a = answers(d);
        assert_eq!(a.len(), 6);
        // Every answer is what the server said: generated text or a first token, never empty.
        assert!(
            a.iter().all(|a| !a["answer"].as_str().unwrap().is_empty()),
            "{a:?}"
        );
        assert!(a
            .iter()
            .all(|a| a["correct"] == (a["predicted"] == a["label"])));
        // The prompt as sent: induction naming the episode's classes, one example per support
        // image with its label, and the query cut before its label.
        for x in &a {
            let p = x["prompt"].as_str().unwrap();
            let ways = if x["cell"].as_str().unwrap().starts_with("5-way") {
                5
            } else {
                2
            };
            assert!(p.starts_with("Classify the context into \""), "{p}");
            assert!(p.ends_with("\nClassification:"), "{p}");
            assert_eq!(p.matches("Context: ").count(), ways + 1, "{p}");
            assert!(
                p.contains(&format!(
                    "Classification: {}.",
                    x["label"].as_str().unwrap()
                )),
                "{p}"
            );
        }
        let table = std::fs::read_to_string(d.join("table.md")).unwrap();
        assert!(
            table.contains("| 2-way |") && table.contains("| 5-way |") && table.contains("20.0 |"),
            "{table}"
        );
        // The episodes file replays exactly.
        let replay = dir.path().join(format!("{name}-replay.toml"));
        let text = std::fs::read_to_string(&s).unwrap().replace(
            "seed = 7",
            &format!(
                "seed = 7\nfile = \"{}\"",
                d.join("episodes.jsonl").display()
            ),
        );
        std::fs::write(&replay, text).unwrap();
        ok(&run(&replay, &res, &[]));
        let d2 = &run_dirs(&res, &format!("{name}-replay"))[0];
        let r2 = result(d2);
        assert_eq!(
            r2["metrics"], r["metrics"],
            "{strategy}: a replay from the cache gives the same results"
        );
        assert_eq!(
            r2["extra"]["requests"]["sent"], 0,
            "a replay is answered from the cache"
        );
        assert_eq!(answers(d2), a);
    }
}

#[test]
fn loglik_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let res = dir.path().join("results");
    let s = suite(dir.path(), "fs-loglik", "loglik", "[2]", ONE_COLUMN, 2);
    let out = run(&s, &res, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "loglik against a server without echo must fail:\n{err}"
    );
    assert!(
        err.contains("`loglik`") && err.contains("does not echo") && err.contains("first-token"),
        "{err}"
    );
    assert!(
        run_dirs(&res, "fs-loglik").is_empty(),
        "no result is written when a strategy cannot be scored"
    );
    assert!(
        common::cache_keys(&dir.path().join("fs-loglik-responses.jsonl")).is_empty(),
        "a refused body is not cached"
    );
}

#[test]
fn a_prompt_over_the_context_is_refused_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let res = dir.path().join("results");
    let s = suite(
        dir.path(),
        "fs-long",
        "generate",
        "[5]",
        "[{ induction = true, shots = 5 }]",
        1,
    );
    let text = std::fs::read_to_string(&s)
        .unwrap()
        .replace("[llm]\n", "[llm]\nserver_context = 256\n");
    std::fs::write(&s, text).unwrap();
    let out = run(&s, &res, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("tokens.per_image")
            && err.contains("context of 256")
            && err.contains("server /tokenize"),
        "{err}"
    );
    assert!(
        common::cache_keys(&dir.path().join("fs-long-responses.jsonl")).is_empty(),
        "nothing was sent"
    );
}

#[test]
fn a_killed_run_resumes_without_repeating_requests_and_keeps_the_key_secret() {
    let dir = tempfile::tempdir().unwrap();
    let res = dir.path().join("results");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let key = format!(
        "sk-lqae-test-{:016x}",
        (std::process::id() as u64 ^ nanos << 20).wrapping_mul(0x2545_F491_4F6C_DD1D)
    );
    let env = [("LQAE_LLM_API_KEY", key.as_str())];
    let cols = "[{ induction = false, shots = 1 }, { induction = true, shots = 1 }]";
    // Uninterrupted, with its own cache.
    let whole = suite(dir.path(), "fs-whole", "generate", "[2, 5]", cols, 4);
    ok(&run(&whole, &res, &env));
    let want = run_dirs(&res, "fs-whole")[0].clone();

    // The same episodes with a fresh cache, SIGKILLed once a few answers are on disk.
    let killed = suite(dir.path(), "fs-killed", "generate", "[2, 5]", cols, 4);
    let cache = dir.path().join("fs-killed-responses.jsonl");
    let mut child = Command::new(BIN)
        .arg("--suite")
        .arg(&killed)
        .arg("--results")
        .arg(&res)
        .envs(env)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while common::cache_keys(&cache).len() < 5 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(900),
            "no answers after 15 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    let before: Vec<String> = common::cache_keys(&cache);
    assert!(
        before.len() >= 5 && before.len() < 16,
        "killed after {} of 16 answers",
        before.len()
    );
    assert!(
        run_dirs(&res, "fs-killed").is_empty(),
        "a killed run writes no result"
    );

    // Resume.
    let err = ok(&run(&killed, &res, &env));
    let d = &run_dirs(&res, "fs-killed")[0];
    let r = result(d);
    let after = common::cache_keys(&cache);
    let mut seen = HashMap::new();
    for k in &after {
        *seen.entry(k.clone()).or_insert(0) += 1;
    }
    assert!(
        seen.values().all(|&n| n == 1),
        "a request was sent twice: {seen:?}"
    );
    assert_eq!(after.len(), 16);
    assert_eq!(
        &after[..before.len()],
        &before[..],
        "answers from before the kill are kept as they were"
    );
    assert_eq!(
        r["extra"]["requests"]["from_cache"],
        before.len() as u64,
        "{err}"
    );
    assert_eq!(r["extra"]["requests"]["sent"], 16 - before.len() as u64);
    // Same answers and metrics as the uninterrupted run.
    let w = result(&want);
    assert_eq!(r["metrics"], w["metrics"]);
    assert_eq!(answers(d), answers(&want));

    // The key is in no file the runs wrote: results, caches, server logs.
    let cache_root = std::env::var_os("LQAE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/lqae"));
    let mut files = Vec::new();
    walk(dir.path(), &mut files);
    walk(&cache_root.join("llm"), &mut files);
    assert!(files.len() > 8, "{files:?}");
    for f in files {
        let b = std::fs::read(&f).unwrap_or_default();
        assert!(
            !b.windows(key.len()).any(|w| w == key.as_bytes()),
            "the API key is in {}",
            f.display()
        );
    }
    assert_eq!(r["extra"]["api_key"], "from $LQAE_LLM_API_KEY");
}

/// Two runs started together on one response cache send each distinct request once: the
/// claim makes the second wait for the first's answer instead of paying for it again.
#[test]
fn two_runs_on_one_cache_send_each_request_once() {
    let dir = tempfile::tempdir().unwrap();
    let res = dir.path().join("results");
    let cols = "[{ induction = false, shots = 1 }, { induction = true, shots = 1 }]";
    let s = suite(dir.path(), "fs-pair", "generate", "[2, 5]", cols, 3);
    let cache = dir.path().join("fs-pair-responses.jsonl");
    let spawn = || {
        Command::new(BIN)
            .arg("--suite")
            .arg(&s)
            .arg("--results")
            .arg(&res)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    for c in [a, b] {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let keys = common::cache_keys(&cache);
    let distinct: std::collections::BTreeSet<&String> = keys.iter().collect();
    println!(
        "{} answers in the cache for {} distinct requests",
        keys.len(),
        distinct.len()
    );
    assert_eq!(distinct.len(), 12, "3 episodes x 2 ways x 2 columns");
    assert_eq!(keys.len(), distinct.len(), "a request was sent twice");
    let dirs = run_dirs(&res, "fs-pair");
    assert_eq!(dirs.len(), 2);
    let (ra, rb) = (result(&dirs[0]), result(&dirs[1]));
    assert_eq!(ra["metrics"], rb["metrics"]);
    let sent = |r: &Value| r["extra"]["requests"]["sent"].as_u64().unwrap();
    let cached = |r: &Value| r["extra"]["requests"]["from_cache"].as_u64().unwrap();
    assert_eq!(sent(&ra) + sent(&rb), 12);
    assert_eq!(cached(&ra) + cached(&rb), 12);
}

fn walk(p: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
}

/// `--dry-run` counts and prices without sending; `llm.max_cost` refuses a run whose estimate
/// exceeds it, and stops one whose real cost does, leaving a folder marked partial (no
/// result.json, refused by `report`) that a rerun with a higher cap resumes from the cache.
#[test]
fn dry_run_and_cost_caps_against_the_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let res = dir.path().join("results");
    let cols = "[{ induction = false, shots = 1 }, { induction = true, shots = 1 }]";
    let s = suite(dir.path(), "fs-budget", "generate", "[2]", cols, 6);
    let cache = dir.path().join("fs-budget-responses.jsonl");
    // One unit per answer token, prompts free: the estimate's range is 12 .. 12 x max tokens.
    let run_with = |extra: &[&str]| {
        let mut c = Command::new(BIN);
        c.arg("--suite").arg(&s).arg("--results").arg(&res);
        for a in [
            "--set",
            "llm.price_prompt_per_million=0",
            "--set",
            "llm.price_completion_per_million=1000000",
        ]
        .iter()
        .chain(extra)
        {
            c.arg(a);
        }
        c.output().unwrap()
    };
    let out = run_with(&["--dry-run"]);
    let err = ok(&out);
    assert!(
        err.contains("dry run, nothing sent: 12 requests (0 already answered in the response cache), 12 to send:")
            && err.contains("estimated cost 12.0000-"),
        "{err}"
    );
    // Per cell, what its episodes can detect (6 episodes against a chance-level row: nothing).
    assert!(
        err.contains(
            "2-way/induction-yes/shots-1/repeats-0: 6 episodes cannot detect even a perfect row"
        ),
        "{err}"
    );
    assert!(
        common::cache_keys(&cache).is_empty(),
        "a dry run sent something"
    );
    assert!(
        run_dirs(&res, "fs-budget").is_empty(),
        "a dry run wrote a result"
    );

    // Over the cap by the estimate: refused, nothing sent.
    let out = run_with(&["--set", "llm.max_cost=5"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(
        err.contains("llm.max_cost")
            && err.contains("at least 12.0000")
            && err.contains("nothing was sent"),
        "{err}"
    );
    assert!(common::cache_keys(&cache).is_empty());

    // Under the cap by the estimate, over it by the real count: stopped part way.
    let out = run_with(&["--set", "llm.max_cost=14.5"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "the cap never stopped the run: {err}"
    );
    assert!(
        err.contains("llm.max_cost reached") && err.contains("marked partial in"),
        "{err}"
    );
    let kept = common::cache_keys(&cache).len();
    assert!(kept > 0 && kept < 12, "{kept} answers kept: {err}");
    let dirs = run_dirs(&res, "fs-budget");
    assert_eq!(dirs.len(), 1);
    assert!(dirs[0].join("partial.json").is_file() && !dirs[0].join("result.json").exists());
    let rep = Command::new(BIN)
        .args(["report", "--baseline"])
        .arg(&dirs[0])
        .arg("--current")
        .arg(&dirs[0])
        .output()
        .unwrap();
    assert!(!rep.status.success());
    assert!(String::from_utf8_lossy(&rep.stderr).contains("interrupted run"));

    // A rerun without the cap resumes: only the rest is sent, each request once.
    let err = ok(&run_with(&[]));
    let keys = common::cache_keys(&cache);
    let distinct: std::collections::BTreeSet<&String> = keys.iter().collect();
    assert_eq!((keys.len(), distinct.len()), (12, 12), "{err}");
    let d = run_dirs(&res, "fs-budget")
        .into_iter()
        .find(|d| d.join("result.json").is_file())
        .unwrap();
    let r = result(&d);
    assert_eq!(r["extra"]["requests"]["from_cache"], kept as u64);
    assert_eq!(r["extra"]["requests"]["sent"], 12 - kept as u64);
    println!(
        "stopped after {kept} of 12 answers; resumed with {} sent",
        12 - kept
    );
}

/// Frozen's open-ended naming end to end: the prompts show the episode's nonsense words, never
/// the real class names, which `episodes.jsonl` records beside them.
#[test]
fn open_ended_episodes_show_nonsense_names_and_record_the_real_ones() {
    let dir = tempfile::tempdir().unwrap();
    let res = dir.path().join("results");
    let s = suite(dir.path(), "fs-open", "generate", "[2, 5]", ONE_COLUMN, 2);
    let out = Command::new(BIN)
        .arg("--suite")
        .arg(&s)
        .arg("--results")
        .arg(&res)
        .args(["--set", "episodes.names=\"nonsense\""])
        .output()
        .unwrap();
    ok(&out);
    let d = &run_dirs(&res, "fs-open")[0];
    let eps: Vec<Value> = std::fs::read_to_string(d.join("episodes.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let real = lqae::data::FASHION_MNIST_CLASSES;
    for (e, a) in eps.iter().zip(answers(d)) {
        let classes: Vec<&str> = e["classes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let names: Vec<&str> = e["names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(classes.len(), names.len());
        assert!(names.iter().all(|n| real.contains(n)), "{names:?}");
        let prompt = a["prompt"].as_str().unwrap();
        for c in &classes {
            assert!(
                prompt.contains(&format!("Classification: {c}.")),
                "{prompt}"
            );
        }
        for n in real {
            assert!(
                !prompt.contains(&format!("Classification: {n}")),
                "{prompt}"
            );
        }
        assert_eq!(a["label"].as_str(), e["query"]["label"].as_str());
        assert!(classes.contains(&a["label"].as_str().unwrap()));
    }
}

/// Exact two-sided McNemar p, computed here from the binomial sum (not the library's).
fn mcnemar(b: usize, c: usize) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    let choose =
        |n: usize, k: usize| -> f64 { (0..k).map(|i| (n - i) as f64 / (i + 1) as f64).product() };
    let tail: f64 = (0..=b.min(c)).map(|i| choose(n, i)).sum::<f64>() / 2f64.powi(n as i32);
    (2.0 * tail).min(1.0)
}

/// The words of the query's token text in a prompt (the last `Context:` line).
fn query_words(prompt: &str) -> usize {
    let line = prompt
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("Context: "))
        .unwrap();
    line.split(' ').filter(|w| !w.is_empty()).count()
}

#[test]
fn a_sweep_runs_every_value_over_the_same_episodes_with_a_plot_and_a_page() {
    let dir = tempfile::tempdir().unwrap();
    let res = dir.path().join("results");
    let s = suite(
        dir.path(),
        "fs-sweep",
        "generate",
        "[2, 5]",
        "[{ induction = false, shots = 1 }, { induction = true, shots = 1 }]",
        4,
    );
    let text = std::fs::read_to_string(&s)
        .unwrap()
        .replace("per_image = 8", "per_image = [4, 16]");
    std::fs::write(&s, text).unwrap();
    ok(&run(&s, &res, &[]));
    let d = &run_dirs(&res, "fs-sweep")[0];
    let r = result(d);
    let metrics: Vec<&String> = r["metrics"].as_object().unwrap().keys().collect();
    // Per point and cell: the judge's top-1 and the no-LLM nearest-support reference.
    assert_eq!(metrics.len(), 16, "{metrics:?}");
    assert_eq!(metrics.iter().filter(|m| m.ends_with("/top1")).count(), 8);
    for m in &metrics {
        assert!(
            m.starts_with("per_image-4/") || m.starts_with("per_image-16/"),
            "{m}"
        );
    }
    // Paired: both points scored the same episodes, in the same order.
    let samples: Vec<Value> = std::fs::read_to_string(d.join("samples.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let inputs = |p: &str| -> Vec<(String, String)> {
        samples
            .iter()
            .filter(|s| s["rep"].as_str().unwrap().starts_with(p))
            .map(|s| {
                let rep = s["rep"].as_str().unwrap();
                (
                    rep[p.len()..].to_string(),
                    s["input_sha256"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    assert_eq!(inputs("per_image-4/").len(), 16);
    assert_eq!(inputs("per_image-4/"), inputs("per_image-16/"));
    // The prompts write at most the point's tokens per image, more at 16 than at 4.
    let ans = answers(d);
    assert_eq!(ans.len(), 32);
    let (mut words4, mut words16) = (0, 0);
    for a in &ans {
        let cell = a["cell"].as_str().unwrap();
        let w = query_words(a["prompt"].as_str().unwrap());
        if cell.starts_with("per_image-4/") {
            assert!((1..=4).contains(&w), "{w} words at 4");
            words4 += w;
        } else {
            assert!(cell.starts_with("per_image-16/"), "{cell}");
            assert!(w <= 16, "{w} words at 16");
            words16 += w;
        }
    }
    assert!(words16 > 2 * words4, "{words16} vs {words4}");
    // The summary agrees with the answers: each point's cells, and the paired counts and
    // McNemar p between the two points, recomputed here.
    let sw: Value = serde_json::from_slice(&std::fs::read(d.join("sweep.json")).unwrap()).unwrap();
    assert_eq!(sw, r["extra"]["sweep"]);
    let right = |p: &str, cell: &str| -> Vec<bool> {
        let mut v: Vec<(u64, bool)> = ans
            .iter()
            .filter(|a| a["cell"].as_str() == Some(&format!("{p}/{cell}")))
            .map(|a| {
                (
                    a["index"].as_u64().unwrap(),
                    a["correct"].as_bool().unwrap(),
                )
            })
            .collect();
        v.sort();
        v.into_iter().map(|x| x.1).collect()
    };
    let pts = sw["points"].as_array().unwrap();
    assert_eq!(pts.len(), 2);
    for p in pts {
        let name = p["name"].as_str().unwrap();
        for (cell, c) in p["cells"].as_object().unwrap() {
            let k = right(name, cell).iter().filter(|x| **x).count();
            assert_eq!(c["k"].as_u64().unwrap() as usize, k, "{name}/{cell}");
            assert_eq!(c["n"].as_u64(), Some(4));
        }
    }
    let paired = sw["paired"].as_array().unwrap();
    assert_eq!(paired.len(), 4);
    for p in paired {
        let cell = p["cell"].as_str().unwrap();
        let (a, b) = (right("per_image-4", cell), right("per_image-16", cell));
        let only_a = a.iter().zip(&b).filter(|(x, y)| **x && !**y).count();
        let only_b = a.iter().zip(&b).filter(|(x, y)| !**x && **y).count();
        assert_eq!(p["only_from"].as_u64().unwrap() as usize, only_a, "{cell}");
        assert_eq!(p["only_to"].as_u64().unwrap() as usize, only_b, "{cell}");
        assert!((p["p_mcnemar"].as_f64().unwrap() - mcnemar(only_a, only_b)).abs() < 1e-12);
    }
    // The plot: two panels (2-way, 5-way), drawn lines and text, not a blank canvas.
    let plot = image::open(d.join("sweep.png")).unwrap().to_rgb8();
    assert_eq!(plot.dimensions(), (1240, 500));
    let (colours, _) = common::browser::colours(&d.join("sweep.png"));
    assert!(colours.len() > 50, "{} colours", colours.len());
    let dark = plot
        .pixels()
        .filter(|p| p.0.iter().all(|&c| c < 80))
        .count();
    assert!(dark > 2000, "axes and labels missing: {dark} dark pixels");

    // The run's page: every answer an episode section, every thumbnail a file.
    let page = d.join("index.html");
    let html = std::fs::read_to_string(&page).unwrap();
    assert_eq!(html.matches("<section class=\"ep ").count(), 32);
    assert!(html.contains("src=\"sweep.png\""));
    let mut thumbs = 0;
    for part in html.split("<img src=\"").skip(1) {
        let f = &part[..part.find('"').unwrap()];
        if f.starts_with("images/") {
            thumbs += 1;
            let t = image::open(d.join(f)).unwrap();
            assert_eq!((t.width(), t.height()), (28, 28), "{f}");
        }
    }
    assert!(thumbs >= 32 * 3, "{thumbs} thumbnails");
    // In Chromium: the filter in the address shows exactly that cell's wrong answers.
    let cell = "per_image-16/2-way/induction-yes/shots-1/repeats-0";
    let wrong = ans
        .iter()
        .filter(|a| a["cell"].as_str() == Some(cell) && a["correct"] == false)
        .count();
    let dom = common::browser::dump_dom(&format!(
        "file://{}#cell={}&outcome=wrong",
        page.display(),
        cell.replace('/', "%2F")
    ));
    let sections: Vec<&str> = dom.split("<section ").skip(1).collect();
    assert_eq!(sections.len(), 32);
    let shown = sections
        .iter()
        .filter(|s| !s[..s.find('>').unwrap()].contains("display: none"))
        .count();
    assert_eq!(shown, wrong, "sections shown under the filter");
    assert!(
        dom.contains(&format!("{wrong} of 32 episodes shown")),
        "the counter"
    );
    let shot = dir.path().join("page.png");
    common::browser::screenshot(&page, &shot, (1280, 3000));
    let (colours, img) = common::browser::colours(&shot);
    assert_eq!(img.dimensions(), (1280, 3000));
    assert!(colours.contains(&[0xe8, 0xee, 0xf7]), "table header colour");
    assert!(
        colours.len() > 200,
        "{} colours: blank page?",
        colours.len()
    );
    // The episodes are reached: their right/wrong marks are drawn.
    let marks = img
        .pixels()
        .filter(|p| p.0 == [0x2e, 0x8b, 0x3a] || p.0 == [0xc6, 0x28, 0x28])
        .count();
    assert!(marks > 500, "episode marks: {marks} pixels");
}
