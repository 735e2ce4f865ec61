//! Crash and concurrency torture, loopback only, through the CLI as a user runs it.
//!
//! For each kind of run (a linear probe, a few-shot run against the real embedded
//! llama-server, a reconstruction run, training) on a tiny model that the zoo itself trains
//! from a configuration (so kills also land in the middle of training, features and answers):
//!
//! 1. an uninterrupted reference run, on fresh caches;
//! 2. `LQAE_TORTURE_N` times (default 3, the CI's count; the note's figures use 20): start
//!    it, SIGKILL it at a random moment within the reference run's duration, then once more to
//!    the end; the final result equals the reference's, every run folder holds either a
//!    complete result equal to it or no `result.json` (interrupted), and the response cache
//!    holds each distinct request once;
//! 3. two and then three processes started together on fresh shared caches, one of them
//!    SIGKILLed at a random moment: every survivor's result equals the reference, the zoo's
//!    model is trained by one process at a time (never two trainers in one folder), each
//!    request is answered once; and without a kill, the model is trained exactly once and the
//!    requests are sent once in all.
//!
//! Also: a results folder on a full and on a read-only file system (a real tmpfs, mounted in
//! a private user and mount namespace by `unshare`) gives a clear error naming it before any
//! work, and what was written before stays byte for byte.
//!
//! Kill moments come from `LQAE_TORTURE_SEED` (printed; random when unset).

mod common;

use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_lqae-eval");

fn n_kills() -> usize {
    std::env::var("LQAE_TORTURE_N")
        .ok()
        .map(|v| v.parse().expect("LQAE_TORTURE_N is a count"))
        .unwrap_or(3)
}

fn rng(salt: u64) -> StdRng {
    let seed = std::env::var("LQAE_TORTURE_SEED")
        .ok()
        .map(|v| v.parse().expect("LQAE_TORTURE_SEED is a number"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("kill moments: LQAE_TORTURE_SEED={seed} (salt {salt})");
    StdRng::seed_from_u64(seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// A fresh cache: the real one's assets (LLM server, weights) linked in, nothing computed.
fn fresh_cache(dir: &Path) -> PathBuf {
    // The kernels' BLAS (fetched on first use) in the real cache first, so that no run here
    // fetches it into its own.
    lqae::kernels::blas::available();
    let real = lqae::assets::cache_dir();
    std::fs::create_dir_all(dir).unwrap();
    for e in std::fs::read_dir(&real).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if p.is_dir() && !["features", "runs", "llm"].contains(&name.as_str()) {
            std::os::unix::fs::symlink(&p, dir.join(&name)).unwrap();
        }
    }
    dir.to_path_buf()
}

/// The project layout a kind runs in: suites/, configs/ (a tiny LQAE the zoo trains) and
/// the IDX fixture and tiny LM the configuration names.
struct Layout {
    root: PathBuf,
    suites: PathBuf,
}

fn layout(root: &Path) -> Layout {
    let suites = root.join("suites");
    let configs = root.join("configs");
    std::fs::create_dir_all(&suites).unwrap();
    std::fs::create_dir_all(&configs).unwrap();
    let cfg =
        common::tiny_lqae_config(root, 120, 10).replace("name = \"tiny\"", "name = \"tiny-cfg\"");
    std::fs::write(configs.join("tiny-cfg.toml"), &cfg).unwrap();
    std::fs::write(root.join("tiny-train.toml"), cfg).unwrap();
    let data = root.join("data").display().to_string();
    std::fs::write(
        suites.join("t-probe.toml"),
        format!("kind = \"linear-probe\"\ndescription = \"t\"\nmodel = \"tiny-cfg\"\nbaselines = [\"pixels\", \"random-encoder\"]\n[data]\ndataset = \"idx\"\npath = \"{data}\"\ntrain_limit = 48\ntest_limit = 40\n[probe]\nlayers = \"all\"\nl2_grid = [0.01, 1.0]\nmax_iterations = 40\n"),
    )
    .unwrap();
    std::fs::write(
        suites.join("t-recon.toml"),
        format!("kind = \"reconstruction\"\ndescription = \"t\"\nmodels = [\"tiny-cfg\"]\n[data]\ndataset = \"idx\"\npath = \"{data}\"\ntest_limit = 32\n[recon]\nlpips = \"none\"\nfid = false\ngrid_images = 4\nbatch = 8\n"),
    )
    .unwrap();
    Layout {
        root: root.to_path_buf(),
        suites,
    }
}

/// The few-shot suite, its response cache at `cache`.
fn write_fewshot(l: &Layout, cache: &Path) {
    std::fs::write(
        l.suites.join("t-fewshot.toml"),
        format!(
            "kind = \"fewshot\"\ndescription = \"t\"\nmodel = \"tiny-cfg\"\n[data]\ndataset = \"idx\"\npath = \"{}\"\n[llm]\ncache = \"{}\"\njudge = \"smollm2\"\nserver_threads = 1\nmax_answer_tokens = 4\nconcurrency = 2\n[tokens]\nper_image = 8\ncalibration = []\n[episodes]\nways = [2]\ncolumns = [{{ induction = true, shots = 1 }}, {{ induction = false, shots = 1 }}]\ncount = 6\nseed = 5\n",
            l.root.join("data").display(),
            cache.display()
        ),
    )
    .unwrap();
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Probe,
    Fewshot,
    Recon,
    Train,
}

impl Kind {
    fn suite(self) -> &'static str {
        match self {
            Kind::Probe => "t-probe",
            Kind::Fewshot => "t-fewshot",
            Kind::Recon => "t-recon",
            Kind::Train => "train",
        }
    }
}

/// One run of `kind` with the cache `cache`, results (or the training folder) under `out`.
fn command(l: &Layout, kind: Kind, cache: &Path, out: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env("LQAE_CACHE", cache)
        .env("LQAE_SUITES", &l.suites)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    match kind {
        Kind::Train => {
            c.args(["train", "--resume", "--config"])
                .arg(l.root.join("tiny-train.toml"))
                .arg("--out")
                .arg(out);
        }
        _ => {
            c.args(["--suite", kind.suite(), "--results"]).arg(out);
        }
    }
    c
}

fn finish(c: Child) -> (bool, String) {
    let o = c.wait_with_output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

fn sigkill(c: &mut Child) -> bool {
    let running = c.try_wait().unwrap().is_none();
    if running {
        unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
    }
    c.wait().unwrap();
    running
}

/// What a finished run is compared by: metrics (and the samples' hash) of a suite run, the
/// final weights' sha256 of training.
fn outcome(kind: Kind, out: &Path) -> Vec<Value> {
    if kind == Kind::Train {
        let ck = lqae::train::latest_checkpoint(out)
            .unwrap()
            .expect("a checkpoint");
        let state: Value =
            serde_json::from_slice(&std::fs::read(ck.join("state.json")).unwrap()).unwrap();
        return vec![serde_json::json!({
            "step": state["step"],
            "weights": lqae::util::fsx::sha256_file(&ck.join("model.safetensors")).unwrap(),
        })];
    }
    let mut v = Vec::new();
    for d in run_dirs(out, kind.suite()) {
        let r = d.join("result.json");
        if r.is_file() {
            let r: Value = serde_json::from_slice(&std::fs::read(r).unwrap()).unwrap();
            v.push(serde_json::json!({"metrics": r["metrics"], "samples": r["samples_sha256"]}));
        }
    }
    v
}

fn run_dirs(results: &Path, suite: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(results.join(suite))
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Each distinct request answered once; `want` distinct in all.
fn assert_each_request_once(cache: &Path, want: usize) {
    let keys = common::cache_keys(cache);
    let mut seen: HashMap<&String, usize> = HashMap::new();
    for k in &keys {
        *seen.entry(k).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "answers recorded twice: {twice:?}");
    assert_eq!(seen.len(), want, "distinct requests");
}

const FEWSHOT_REQUESTS: usize = 12;

fn torture(kind: Kind, salt: u64) {
    let n = n_kills();
    let dir = tempfile::tempdir().unwrap();
    let l = layout(dir.path());
    let t_all = Instant::now();
    let mut rng = rng(salt);

    // 1. Reference, uninterrupted, fresh caches.
    let ref_cache = fresh_cache(&dir.path().join("cache-ref"));
    let ref_out = dir.path().join("out-ref");
    write_fewshot(&l, &dir.path().join("responses-ref.jsonl"));
    let t0 = Instant::now();
    let (ok, log) = finish(command(&l, kind, &ref_cache, &ref_out).spawn().unwrap());
    assert!(ok, "{log}");
    let t_ref = t0.elapsed();
    let want = outcome(kind, &ref_out);
    assert_eq!(want.len(), 1);

    // 2. Rounds, each on fresh caches: start, SIGKILL at a moment uniform over the reference's
    //    duration, start again (resuming), ... until a run ends by itself; its result (and any
    //    other complete one) must equal the reference. Rounds until `n` kills in all.
    let (mut killed, mut starts, mut rounds) = (0usize, 0usize, 0usize);
    while killed < n {
        rounds += 1;
        let cache = fresh_cache(&dir.path().join(format!("cache-kill{rounds}")));
        let out = dir.path().join(format!("out-kill{rounds}"));
        let responses = dir.path().join(format!("responses-kill{rounds}.jsonl"));
        write_fewshot(&l, &responses);
        loop {
            starts += 1;
            assert!(starts <= 20 * n + 20, "{starts} starts for {killed} kills");
            let mut c = command(&l, kind, &cache, &out).spawn().unwrap();
            let (start, at) = (Instant::now(), t_ref.mul_f64(rng.random_range(0.0..1.0)));
            while start.elapsed() < at && c.try_wait().unwrap().is_none() {
                std::thread::sleep(Duration::from_millis(2));
            }
            if c.try_wait().unwrap().is_some() {
                let (ok, log) = finish(c);
                assert!(ok, "round {rounds}, after {killed} kills: {log}");
                break;
            }
            sigkill(&mut c);
            killed += 1;
        }
        let got = outcome(kind, &out);
        assert!(!got.is_empty());
        for g in &got {
            assert_eq!(
                g, &want[0],
                "round {rounds}: a complete run differs from the uninterrupted one"
            );
        }
        if kind != Kind::Train {
            // A folder without result.json is an interrupted run (`report` refuses it); with
            // one, it is complete and equal to the reference (checked above).
            let interrupted = run_dirs(&out, kind.suite())
                .iter()
                .filter(|d| !d.join("result.json").is_file())
                .count();
            if interrupted > 0 {
                eprintln!(
                    "round {rounds}: {interrupted} interrupted run folders, {} complete",
                    got.len()
                );
            }
        }
        if kind == Kind::Fewshot {
            assert_each_request_once(&responses, FEWSHOT_REQUESTS);
        }
    }
    let t_kills = t_all.elapsed();

    // 3. Processes started together on shared fresh caches.
    for k in [2usize, 3] {
        for with_kill in [false, true] {
            let tag = format!("{k}-{with_kill}");
            let cache = fresh_cache(&dir.path().join(format!("cache-c{tag}")));
            let out = dir.path().join(format!("out-c{tag}"));
            let responses = dir.path().join(format!("responses-c{tag}.jsonl"));
            write_fewshot(&l, &responses);
            let mut kids: Vec<Child> = (0..k)
                .map(|_| command(&l, kind, &cache, &out).spawn().unwrap())
                .collect();
            let victim = with_kill.then(|| rng.random_range(0..k));
            let mut victim_ran_out = false;
            if let Some(v) = victim {
                std::thread::sleep(t_ref.mul_f64(rng.random_range(0.0..1.0)));
                // Killed while running, or it had already finished (then it counts as a survivor).
                victim_ran_out = !sigkill(&mut kids[v]);
            }
            let mut logs = Vec::new();
            for (i, c) in kids.into_iter().enumerate() {
                if Some(i) == victim {
                    continue;
                }
                let (ok, log) = finish(c);
                if kind == Kind::Train && !ok {
                    // A second trainer on one folder is refused, by name, while the first runs.
                    assert!(
                        log.contains("another process is training into this run folder"),
                        "{log}"
                    );
                    continue;
                }
                assert!(ok, "{k} together (kill: {victim:?}), process {i}: {log}");
                logs.push(log);
            }
            if kind == Kind::Train {
                // Whoever was refused or killed: one more resume completes it, equal to the reference.
                let (ok, log) = finish(command(&l, kind, &cache, &out).spawn().unwrap());
                assert!(ok, "{log}");
                assert_eq!(outcome(kind, &out), want);
                continue;
            }
            let got = outcome(kind, &out);
            assert_eq!(
                got.len(),
                k - (victim.is_some() && !victim_ran_out) as usize,
                "{tag}"
            );
            for g in &got {
                assert_eq!(g, &want[0], "{k} together (kill: {victim:?})");
            }
            let trained = logs
                .iter()
                .filter(|l| l.contains("training tiny-cfg once into"))
                .count();
            if victim.is_none() {
                assert_eq!(trained, 1, "the zoo trained the model {trained} times");
            }
            if kind == Kind::Fewshot {
                assert_each_request_once(&responses, FEWSHOT_REQUESTS);
                if victim.is_none() {
                    let sent: u64 = run_dirs(&out, kind.suite())
                        .iter()
                        .map(|d| {
                            let r: Value = serde_json::from_slice(
                                &std::fs::read(d.join("result.json")).unwrap(),
                            )
                            .unwrap();
                            r["extra"]["requests"]["sent"].as_u64().unwrap()
                        })
                        .sum();
                    assert_eq!(sent, FEWSHOT_REQUESTS as u64, "requests sent in all");
                }
            }
        }
    }
    println!(
        "torture {kind:?}: reference {:.1} s; {killed} SIGKILLs of a running process over {rounds} rounds ({starts} starts) in {:.1} s; 2 and 3 together in {:.1} s",
        t_ref.as_secs_f64(),
        (t_kills - t_ref).as_secs_f64(),
        (t_all.elapsed() - t_kills).as_secs_f64()
    );
}

#[test]
fn torture_probe() {
    torture(Kind::Probe, 1);
}

#[test]
fn torture_fewshot_against_the_real_server() {
    let st = Command::new(BIN)
        .args(["fetch", "--quiet", "llama-server", "smollm2"])
        .status()
        .unwrap();
    assert!(st.success(), "fetching the embedded LLM server failed");
    torture(Kind::Fewshot, 2);
}

#[test]
fn torture_recon() {
    torture(Kind::Recon, 3);
}

#[test]
fn torture_training() {
    torture(Kind::Train, 4);
}

/// Run `script` in a private user + mount namespace (a tmpfs can be mounted there without
/// privileges); stdout and success.
fn in_namespace(script: &str, envs: &[(&str, &Path)]) -> (bool, String) {
    let mut c = Command::new("unshare");
    c.args(["--user", "--map-root-user", "--mount", "sh", "-ec", script]);
    for (k, v) in envs {
        c.env(k, v);
    }
    let o = c.output().unwrap_or_else(|e| {
        panic!("`unshare` is needed to mount a small tmpfs for the full and read-only file system checks: {e}")
    });
    (
        o.status.success(),
        format!(
            "{}\n--- stderr\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

#[test]
fn full_and_read_only_results_folders_fail_clearly_and_keep_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let l = layout(dir.path());
    let cache = fresh_cache(&dir.path().join("cache"));
    let res = dir.path().join("results");
    std::fs::create_dir_all(&res).unwrap();
    // On a 2 MiB tmpfs: a run, its files' hashes; then the disk filled and another run; then
    // the file system read-only and another run; the first run's hashes after each.
    let script = r#"
mount -t tmpfs -o size=2m tmpfs "$RES"
"$BIN" --suite t-recon --results "$RES" >/dev/null 2>&1
echo "RUNS $(ls "$RES/t-recon" | wc -l)"
(cd "$RES" && find . -type f | sort | xargs sha256sum) > "$RES.before"
kept() { (cd "$RES" && sha256sum --quiet -c "$RES.before") && echo "$1-KEPT"; }
dd if=/dev/zero of="$RES/spare" bs=4k count=4 2>/dev/null
dd if=/dev/zero of="$RES/filler" bs=4k 2>/dev/null || true
if "$BIN" --suite t-recon --results "$RES" 2>"$RES.full.err"; then echo "FULL-RAN"; fi
kept FULL
echo "FULL-ERR $(cat "$RES.full.err")"
rm -f "$RES/spare"
if "$BIN" --suite t-recon --results "$RES" 2>"$RES.mid.err"; then echo "MID-RAN"; fi
kept MID
echo "MID-ERR $(tr '\n' ' ' < "$RES.mid.err")"
echo "MID-FOLDERS $(ls "$RES/t-recon" | wc -l) COMPLETE $(ls "$RES"/t-recon/*/result.json | wc -l)"
rm -f "$RES/filler"
mount -o remount,ro "$RES"
if "$BIN" --suite t-recon --results "$RES" 2>"$RES.ro.err"; then echo "RO-RAN"; fi
kept RO
echo "RO-ERR $(cat "$RES.ro.err")"
"#;
    let (ok, out) = in_namespace(
        script,
        &[
            ("RES", &res),
            ("BIN", Path::new(BIN)),
            ("LQAE_CACHE", &cache),
            ("LQAE_SUITES", &l.suites),
        ],
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("RUNS 1"),
        "the first run did not complete: {out}"
    );
    for fs in ["FULL", "MID", "RO"] {
        assert!(!out.contains(&format!("{fs}-RAN")), "{out}");
        assert!(out.contains(&format!("{fs}-KEPT")), "files changed: {out}");
    }
    let line = |tag: &str| {
        out.lines()
            .find(|l| l.starts_with(tag))
            .unwrap_or_default()
            .to_string()
    };
    let full = line("FULL-ERR");
    assert!(
        full.contains("results folder cannot be written")
            && full.contains("t-recon")
            && full.contains("No space left on device")
            && full.contains("nothing was run"),
        "{full}"
    );
    println!("{full}");
    // Room for the preflight but not for the run's files: the run is computed, its folder
    // left without result.json (interrupted), the error says so.
    let mid = line("MID-ERR");
    assert!(
        mid.contains("No space left on device") && mid.contains("is incomplete (no result.json"),
        "{mid}"
    );
    assert!(out.contains("MID-FOLDERS 2 COMPLETE 1"), "{out}");
    let ro = line("RO-ERR");
    println!("{ro}");
    assert!(
        ro.contains("results folder cannot be written") && ro.contains("Read-only file system"),
        "{ro}"
    );
}
