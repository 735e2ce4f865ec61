//! Our kernels and the PyTorch peer's (`benches/peer/peer.py`) timed side by side in one run:
//! `lqae-eval bench --peer`. The peer is one long-lived Python process speaking JSON lines
//! (this module: its process and protocol); before timing it is checked to do the same work
//! ([`checks`]); then each round times every kernel on our side and then on the peer's, so
//! both see the same machine state, and the ratio ours/theirs is taken per round ([`rounds`];
//! these machines are noisy: only ratios from one run mean anything).

pub mod checks;
pub mod rounds;

pub use checks::{check_same_work, train_same_work, Checks, TrainAgreement};
pub use rounds::{markdown, side_by_side, KernelFigures};

use crate::error::{Error, Result};
use crate::model::RunConfig;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// The peer script, embedded so that the binary needs no checkout to run it.
pub const PEER_PY: &str = include_str!("../../../benches/peer/peer.py");

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
        let shapes: Vec<Value> = crate::bench::SEARCH_SHAPES
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
