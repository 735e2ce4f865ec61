//! Our kernels and the PyTorch peer's (`benches/peer/peer.py`) timed side by side in one run:
//! `lqae-eval bench --peer`. The peer is one long-lived Python process speaking JSON lines;
//! each round times every kernel on our side and then on the peer's, so both see the same
//! machine state, and the ratio ours/theirs is taken per round (these machines are noisy:
//! only ratios from one run mean anything). Before timing, the peer is checked to do the same
//! work: the same nearest codes on the same data, and the same losses for two `lqae-small`
//! training steps from the same weights, images and masks.

use super::{median, Kernel};
use crate::error::{Error, Result};
use crate::model::RunConfig;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// The peer script, embedded so that the binary needs no checkout to run it.
pub const PEER_PY: &str = include_str!("../../benches/peer/peer.py");

/// The peer's Python: `$LQAE_PEER_PYTHON`, else the venv `scripts/peer-venv.sh` builds (and
/// runs, when it is missing or stale) in the cache.
pub fn python() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("LQAE_PEER_PYTHON") {
        return Ok(p.into());
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/peer-venv.sh");
    if !script.exists() {
        return Err(Error::setting(
            "LQAE_PEER_PYTHON",
            format!("{} is not here to build the peer's venv; set LQAE_PEER_PYTHON to a python with the packages of benches/peer/requirements.txt", script.display()),
        ));
    }
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| Error::file(&script, format!("cannot run: {e}")))?;
    if !out.status.success() {
        return Err(Error::file(&script, format!("failed ({})", out.status)));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or("").trim();
    if last.is_empty() {
        return Err(Error::file(&script, "printed no python path"));
    }
    Ok(last.into())
}

/// The peer's answer to `time_step`: seconds per step, and torch's own memory figures (CUDA).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct PeerStepTimes {
    pub times: Vec<f64>,
    pub max_allocated_bytes: Option<f64>,
    pub max_reserved_bytes: Option<f64>,
}

/// Per step: losses, code ids and global gradient norms.
pub type TrainCheck = (Vec<f64>, Vec<Vec<u32>>, Vec<f64>);

pub struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// What the peer said at set-up: torch and numpy versions, threads.
    pub info: Value,
}

impl Peer {
    /// Start the peer with `python`, for the kernels of `cfg` over the LM in `lm_dir`, on
    /// torch's `device` (`cpu` or `cuda`).
    pub fn start(
        python: &Path,
        lm_dir: &Path,
        cfg: &RunConfig,
        mask_id: u32,
        device: &str,
    ) -> Result<Peer> {
        let dir = crate::assets::cache_dir().join("peer");
        std::fs::create_dir_all(&dir).map_err(|e| Error::file(&dir, e.to_string()))?;
        let script = dir.join("peer.py");
        crate::util::fsx::write_atomic(&script, PEER_PY.as_bytes())?;
        let mut child = Command::new(python)
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                Error::file(
                    python,
                    format!("cannot start the PyTorch peer: {e}; run scripts/peer-venv.sh or set LQAE_PEER_PYTHON"),
                )
            })?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut p = Peer {
            child,
            stdin,
            stdout,
            info: Value::Null,
        };
        let shapes: Vec<Value> = super::SEARCH_SHAPES
            .iter()
            .map(|(n, v, d)| json!([n, v, d]))
            .collect();
        p.info = p.ask(json!({
            "op": "setup",
            "lm_dir": lm_dir,
            "mask_id": mask_id,
            "config": cfg,
            "search_shapes": shapes,
            "device": device,
        }))?;
        Ok(p)
    }

    fn ask(&mut self, msg: Value) -> Result<Value> {
        let op = msg["op"].as_str().unwrap_or("?").to_string();
        let what = msg["kernel"]
            .as_str()
            .map(|k| format!(" `{k}`"))
            .unwrap_or_default();
        let mut line = msg.to_string();
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .and_then(|_| self.stdin.flush())
            .map_err(|e| {
                Error::Msg(format!(
                    "the PyTorch peer stopped listening ({op}{what}): {e}"
                ))
            })?;
        let mut reply = String::new();
        let n = self.stdout.read_line(&mut reply).map_err(|e| {
            Error::Msg(format!(
                "reading the PyTorch peer's answer to {op}{what}: {e}"
            ))
        })?;
        if n == 0 {
            return Err(Error::Msg(format!(
                "the PyTorch peer exited during {op}{what} (its error is above)"
            )));
        }
        let v: Value = serde_json::from_str(&reply).map_err(|e| {
            Error::Msg(format!(
                "the PyTorch peer's answer to {op}{what} is not JSON: {e}"
            ))
        })?;
        if let Some(e) = v.get("error") {
            return Err(Error::Msg(format!(
                "the PyTorch peer failed {op}{what}: {e}"
            )));
        }
        Ok(v)
    }

    /// Seconds per call of the peer's `kernel`: one untimed call, then calls for `budget_s`.
    pub fn time(
        &mut self,
        kernel: &str,
        budget_s: f64,
        min_reps: usize,
        max_reps: usize,
    ) -> Result<Vec<f64>> {
        let v = self.ask(json!({"op": "time", "kernel": kernel, "budget_s": budget_s, "min_reps": min_reps, "max_reps": max_reps}))?;
        serde_json::from_value(v["times"].clone())
            .map_err(|e| Error::Msg(format!("peer times of `{kernel}`: {e}")))
    }

    /// The peer's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `steps` training steps of the set-up configuration at batch `batch` on the peer's
    /// device (one untimed step first, every step ended by a device sync; stops early once
    /// `budget_s` has passed with two steps timed): `None` when the batch does not fit in the
    /// device's memory.
    pub fn time_step(
        &mut self,
        batch: usize,
        steps: usize,
        budget_s: f64,
    ) -> Result<Option<PeerStepTimes>> {
        let v = self.ask(
            json!({"op": "time_step", "batch": batch, "steps": steps, "budget_s": budget_s}),
        )?;
        if v["oom"].as_bool() == Some(true) {
            return Ok(None);
        }
        serde_json::from_value(v)
            .map(Some)
            .map_err(|e| Error::Msg(format!("peer times of a batch-{batch} step: {e}")))
    }

    pub fn search_ids(&mut self, kernel: &str) -> Result<Vec<u32>> {
        let v = self.ask(json!({"op": "search_ids", "kernel": kernel}))?;
        serde_json::from_value(v["ids"].clone())
            .map_err(|e| Error::Msg(format!("peer ids of `{kernel}`: {e}")))
    }

    /// Losses and code ids of `steps` training steps from the weights, `images` and `mask<i>`
    /// in `file`.
    /// Also the global gradient norm of each step (before its update).
    pub fn train_check(&mut self, file: &Path, steps: usize) -> Result<TrainCheck> {
        let v = self.ask(json!({"op": "train_check", "file": file, "steps": steps}))?;
        let field = |k: &str| v[k].clone();
        let losses =
            serde_json::from_value(field("losses")).map_err(|e| Error::Msg(e.to_string()))?;
        let ids = serde_json::from_value(field("ids")).map_err(|e| Error::Msg(e.to_string()))?;
        let norms =
            serde_json::from_value(field("grad_norms")).map_err(|e| Error::Msg(e.to_string()))?;
        Ok((losses, ids, norms))
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kernels the peer has (by our name); `search/..` also runs as `search-cdist/..` there.
pub fn peer_has(kernel: &str) -> bool {
    [
        "sgemm/",
        "search/",
        "lm-forward/",
        "vit-block/",
        "train-step/",
        "inception-fid/",
    ]
    .iter()
    .any(|p| kernel.starts_with(p))
}

fn agreement(a: &[u32], b: &[u32]) -> f64 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64
}

/// What the same-work checks found.
#[derive(Debug, Clone, Serialize)]
pub struct Checks {
    /// Kernel -> share of tokens given the same code by both.
    pub search_agreement: Vec<(String, f64)>,
    /// Our and the peer's loss of each of two training steps, and the share of equal codes.
    pub train_losses: Vec<(f64, f64)>,
    /// Our and the peer's global gradient norm of each step (the first AdamW update is
    /// nearly `sign(g)`, so the second loss alone would not see a mis-scaled gradient).
    pub train_grad_norms: Vec<(f64, f64)>,
    pub train_code_agreement: f64,
}

/// The peer must compute what we compute: the same codes (at least 99.9% of tokens: a
/// near-tie may fall either way in float) and losses within 0.1% over two training steps.
pub fn check_same_work(
    peer: &mut Peer,
    kernels: &[Kernel],
    device: &candle_core::Device,
    work: &Path,
) -> Result<Checks> {
    let mut search_agreement = Vec::new();
    for k in kernels.iter().filter(|k| k.name.starts_with("search/")) {
        let parts: Vec<&str> = k.name.split('/').collect();
        let (_, v, d) = super::SEARCH_SHAPES
            .iter()
            .find(|s| s.0 == parts[1])
            .copied()
            .ok_or_else(|| Error::Msg(format!("no search shape `{}`", parts[1])))?;
        let n: usize = parts[2]
            .parse()
            .map_err(|_| Error::Msg(format!("bad kernel name {}", k.name)))?;
        let (q, x) = super::search_inputs(v, d, n, device)?;
        let ours: Vec<u32> = q.nearest(&x)?.to_vec1()?;
        let theirs = peer.search_ids(&k.name)?;
        let a = agreement(&ours, &theirs);
        if a < 0.999 {
            return Err(Error::Msg(format!(
                "the PyTorch peer's `{}` gives the same code for only {:.2}% of tokens: it does not compute the same search",
                k.name,
                100.0 * a
            )));
        }
        search_agreement.push((k.name.clone(), a));
    }
    let (mut train_losses, mut train_grad_norms, mut train_code_agreement) =
        (Vec::new(), Vec::new(), 1.0);
    if kernels.iter().any(|k| k.name.starts_with("train-step/")) {
        let cfg = super::lqae_small()?;
        let a = train_same_work(peer, &cfg, cfg.train.batch_size, device, work)?;
        (train_losses, train_grad_norms, train_code_agreement) =
            (a.losses, a.grad_norms, a.code_agreement);
    }
    Ok(Checks {
        search_agreement,
        train_losses,
        train_grad_norms,
        train_code_agreement,
    })
}

/// Two training steps of `cfg` at batch `b` on both sides from the same weights (ours, seeded),
/// images and masks: our and the peer's losses and gradient norms per step (each within 0.1%,
/// else an error) and the share of tokens given the same code. The peer must have been set up
/// with `cfg`.
pub fn train_same_work(
    peer: &mut Peer,
    cfg: &RunConfig,
    b: usize,
    device: &candle_core::Device,
    work: &Path,
) -> Result<TrainAgreement> {
    let name = &cfg.name;
    let mut ts = crate::train::Step::new(cfg, device)?;
    let t = cfg.tokens_per_image();
    let images = super::images(cfg, b, 9, device)?;
    let mut tensors: HashMap<String, candle_core::Tensor> = ts
        .params
        .named_vars()
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().clone()))
        .collect();
    tensors.insert("images".into(), images.clone());
    const STEPS: usize = 2;
    for i in 0..STEPS {
        let mut r = crate::rng::Rng::derive(cfg.train.seed, "mask", i as u64);
        tensors.insert(
            format!("mask{i}"),
            crate::model::Lqae::sample_mask(b, t, cfg.model.mask_ratio, &mut r, device)?,
        );
    }
    std::fs::create_dir_all(work).map_err(|e| Error::file(work, e.to_string()))?;
    let file = work.join("train_check.safetensors");
    candle_core::safetensors::save(&tensors, &file)?;
    drop(tensors);
    let mut ours = Vec::new();
    let mut our_ids = Vec::new();
    let mut our_norms = Vec::new();
    for _ in 0..STEPS {
        let (loss, ids, norm) = super::step_record(&ts.run(&images)?)?;
        ours.push(loss);
        our_ids.extend(ids);
        our_norms.push(norm);
    }
    drop(ts);
    let (theirs, their_ids, their_norms) = peer.train_check(&file, STEPS)?;
    let _ = std::fs::remove_file(&file);
    let code_agreement = agreement(&our_ids, &their_ids.concat());
    let mut losses = Vec::new();
    for (i, (&a, &b)) in ours.iter().zip(&theirs).enumerate() {
        let rel = (a - b).abs() / a.abs().max(1e-12);
        if rel > 1e-3 {
            return Err(Error::Msg(format!(
                "{name} training step {i}: our loss {a:.6} and the PyTorch peer's {b:.6} differ by {:.3}% (codes agree on {:.1}%): the peer does not compute the same step",
                100.0 * rel,
                100.0 * code_agreement
            )));
        }
        losses.push((a, b));
    }
    let mut norms = Vec::new();
    for (i, (&a, &b)) in our_norms.iter().zip(&their_norms).enumerate() {
        let rel = (a - b).abs() / a.abs().max(1e-12);
        if rel > 1e-3 {
            return Err(Error::Msg(format!(
                "{name} training step {i}: our gradient norm {a:.6} and the PyTorch peer's {b:.6} differ by {:.3}%: the peer does not compute the same gradients",
                100.0 * rel
            )));
        }
        norms.push((a, b));
    }
    Ok(TrainAgreement {
        losses,
        grad_norms: norms,
        code_agreement,
    })
}

/// What [`train_same_work`] found: our and the peer's loss and global gradient norm of each
/// step, and the share of tokens given the same code.
#[derive(Debug, Clone, Serialize)]
pub struct TrainAgreement {
    pub losses: Vec<(f64, f64)>,
    pub grad_norms: Vec<(f64, f64)>,
    pub code_agreement: f64,
}

/// One kernel's figures from a side-by-side run.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub kernel: String,
    pub what: String,
    pub unit: String,
    pub items: f64,
    pub flop: Option<f64>,
    /// Median over rounds of each round's median, seconds per call.
    pub ours_s: f64,
    pub peer_s: Option<f64>,
    /// `search-cdist/..` on the peer, for the search kernels.
    pub peer_cdist_s: Option<f64>,
    /// Median over rounds of ours/theirs time ratios (below 1: we are faster).
    pub ratio: Option<f64>,
    pub ratio_range: Option<[f64; 2]>,
    /// With a BLAS loaded: our kernel on the gemm crate instead, timed in the same rounds, and
    /// that time over the peer's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ours_gemm_crate_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gemm_crate_ratio: Option<f64>,
    pub ours_gflops: Option<f64>,
    pub peer_gflops: Option<f64>,
    /// Our GFLOP/s over our sgemm rate; the peer's over torch's sgemm rate.
    pub ours_sgemm_share: Option<f64>,
    pub peer_sgemm_share: Option<f64>,
    pub rounds: usize,
}

/// Time every kernel on both sides, `rounds` times, alternating.
pub fn side_by_side(
    kernels: &mut [Kernel],
    mut peer: Option<&mut Peer>,
    rounds: usize,
    budget_s: f64,
    progress: bool,
) -> Result<Vec<Row>> {
    let mut ours: Vec<Vec<f64>> = vec![Vec::new(); kernels.len()];
    let mut ours_gemm: Vec<Vec<f64>> = vec![Vec::new(); kernels.len()];
    let mut theirs: Vec<Vec<f64>> = vec![Vec::new(); kernels.len()];
    let mut cdist: Vec<Vec<f64>> = vec![Vec::new(); kernels.len()];
    // With a BLAS loaded, our kernels are also timed on the gemm crate, in the same rounds.
    let both =
        crate::kernels::blas::active().is_some() && kernels.iter().all(|k| k.device.is_cpu());
    for r in 0..rounds {
        for (i, k) in kernels.iter_mut().enumerate() {
            let t = median(&k.time_for(budget_s, 1, 50)?);
            ours[i].push(t);
            let mut line = format!(
                "round {}/{rounds} {:<28} ours {:>9.3} ms",
                r + 1,
                k.name,
                t * 1e3
            );
            if let Some(report) = crate::kernels::blas::profile_report() {
                eprintln!("{} (round {}):\n{report}", k.name, r + 1);
            }
            if both {
                crate::kernels::blas::set_enabled(false);
                let g = k.time_for(budget_s, 1, 50);
                let report = crate::kernels::blas::profile_report();
                crate::kernels::blas::set_enabled(true);
                let g = median(&g?);
                if let Some(report) = report {
                    eprintln!("{} (round {}):\n{report}", k.name, r + 1);
                }
                ours_gemm[i].push(g);
                line.push_str(&format!("  gemm crate {:>9.3} ms", g * 1e3));
            }
            if let Some(p) = peer.as_deref_mut() {
                if peer_has(&k.name) {
                    let pt = median(&p.time(&k.name, budget_s, 1, 50)?);
                    theirs[i].push(pt);
                    line.push_str(&format!("  peer {:>9.3} ms", pt * 1e3));
                    if let Some(rest) = k.name.strip_prefix("search/") {
                        let ct =
                            median(&p.time(&format!("search-cdist/{rest}"), budget_s, 1, 50)?);
                        cdist[i].push(ct);
                        line.push_str(&format!("  peer cdist {:>9.3} ms", ct * 1e3));
                    }
                }
            }
            if progress {
                eprintln!("{line}");
            }
        }
    }
    let sgemm_i = kernels.iter().position(|k| k.name.starts_with("sgemm/"));
    let rate = |times: &[f64], k: &Kernel| {
        k.flop
            .filter(|_| !times.is_empty())
            .map(|f| f / median(times) / 1e9)
    };
    let our_sgemm = sgemm_i.and_then(|i| rate(&ours[i], &kernels[i]));
    let peer_sgemm = sgemm_i.and_then(|i| rate(&theirs[i], &kernels[i]));
    let mut rows = Vec::new();
    for (i, k) in kernels.iter().enumerate() {
        let ratios: Vec<f64> = ours[i].iter().zip(&theirs[i]).map(|(a, b)| a / b).collect();
        let g_ratios: Vec<f64> = ours_gemm[i]
            .iter()
            .zip(&theirs[i])
            .map(|(a, b)| a / b)
            .collect();
        let og = rate(&ours[i], k);
        let pg = rate(&theirs[i], k);
        rows.push(Row {
            kernel: k.name.clone(),
            what: k.what.clone(),
            unit: k.unit.into(),
            items: k.items,
            flop: k.flop,
            ours_s: median(&ours[i]),
            peer_s: (!theirs[i].is_empty()).then(|| median(&theirs[i])),
            peer_cdist_s: (!cdist[i].is_empty()).then(|| median(&cdist[i])),
            ratio: (!ratios.is_empty()).then(|| median(&ratios)),
            ratio_range: (!ratios.is_empty()).then(|| {
                [
                    ratios.iter().cloned().fold(f64::INFINITY, f64::min),
                    ratios.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
                ]
            }),
            ours_gemm_crate_s: (!ours_gemm[i].is_empty()).then(|| median(&ours_gemm[i])),
            gemm_crate_ratio: (!g_ratios.is_empty()).then(|| median(&g_ratios)),
            ours_gflops: og,
            peer_gflops: pg,
            ours_sgemm_share: og.zip(our_sgemm).map(|(a, s)| a / s),
            peer_sgemm_share: pg.zip(peer_sgemm).map(|(a, s)| a / s),
            rounds,
        });
    }
    Ok(rows)
}

fn ms(s: Option<f64>) -> String {
    s.map(|s| format!("{:.2}", s * 1e3))
        .unwrap_or_else(|| "-".into())
}

fn pct(x: Option<f64>) -> String {
    x.map(|x| format!("{:.0}%", 100.0 * x))
        .unwrap_or_else(|| "-".into())
}

/// The Markdown table of a side-by-side run.
pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::from(
        "| kernel | ours ms | PyTorch ms | ours/PyTorch (range) | ours GFLOP/s | share of our sgemm | PyTorch GFLOP/s | PyTorch share of its sgemm | PyTorch cdist ms | ours on the gemm crate ms (/PyTorch) |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let ratio = match (r.ratio, r.ratio_range) {
            (Some(x), Some([lo, hi])) => format!("{x:.2} ({lo:.2}-{hi:.2})"),
            _ => "-".into(),
        };
        let g = |x: Option<f64>| x.map(|x| format!("{x:.0}")).unwrap_or_else(|| "-".into());
        let on_gemm = match (r.ours_gemm_crate_s, r.gemm_crate_ratio) {
            (Some(t), Some(x)) => format!("{} ({x:.2})", ms(Some(t))),
            (Some(t), None) => ms(Some(t)),
            _ => "-".into(),
        };
        s.push_str(&format!(
            "| {} | {} | {} | {ratio} | {} | {} | {} | {} | {} | {on_gemm} |\n",
            r.kernel,
            ms(Some(r.ours_s)),
            ms(r.peer_s),
            g(r.ours_gflops),
            pct(r.ours_sgemm_share),
            g(r.peer_gflops),
            pct(r.peer_sgemm_share),
            ms(r.peer_cdist_s),
        ));
    }
    s
}
