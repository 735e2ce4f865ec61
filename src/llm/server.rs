//! The embedded LLM: llama.cpp's `llama-server` built by `scripts/build-llama-server.sh`
//! (compiled into this binary) serving one of the judges' GGUF assets (`super::judges`), both
//! cached outside the repository, started on a free loopback port and stopped when dropped. The server dies
//! with the process that started it, even on SIGKILL (`PR_SET_PDEATHSIG`).

use super::judges::Judge;
use crate::assets;
use crate::error::{Error, Result};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BUILD_SCRIPT: &str = include_str!("../../scripts/build-llama-server.sh");
/// The source the server is built from, as the script's marker file records it.
/// (`build N` changes with the script's build options; a server built otherwise is rebuilt.)
pub const SERVER_SOURCE: &str = "llama-cpp-python==0.3.36 build 2";

/// `<cache>/llama-server/llama-server`, built once (about 13 minutes on 2 cores).
pub fn ensure_llama_server(cache: &Path) -> Result<PathBuf> {
    let dir = cache.join("llama-server");
    let bin = dir.join("llama-server");
    let ready = || {
        bin.is_file()
            && std::fs::read_to_string(dir.join("SOURCE"))
                .is_ok_and(|s| s.starts_with(&format!("{SERVER_SOURCE} ")))
    };
    if ready() {
        return Ok(bin);
    }
    std::fs::create_dir_all(cache).map_err(|e| Error::file(cache, e.to_string()))?;
    let lock_path = cache.join(".llama-server.lock");
    let lock =
        std::fs::File::create(&lock_path).map_err(|e| Error::file(&lock_path, e.to_string()))?;
    if lock.try_lock().is_err() {
        eprintln!(
            "another process is building llama-server into {}; waiting for it",
            dir.display()
        );
        lock.lock()
            .map_err(|e| Error::file(&lock_path, format!("cannot lock: {e}")))?;
    }
    if ready() {
        return Ok(bin);
    }
    eprintln!(
        "building llama-server from {SERVER_SOURCE} into {} (once; about 13 minutes on 2 cores)",
        dir.display()
    );
    let status = Command::new("bash")
        .arg("-c")
        .arg(BUILD_SCRIPT)
        .arg("build-llama-server")
        .arg(cache)
        .stdin(Stdio::null())
        .status()
        .map_err(|e| Error::Asset {
            name: "llama-server".into(),
            msg: format!("cannot run bash for the build script: {e}"),
        })?;
    if !status.success() || !ready() {
        return Err(Error::Asset {
            name: "llama-server".into(),
            msg: format!("the build failed ({status}); its output is above. It needs gcc/g++, python3 with pip and venv; run `bash scripts/build-llama-server.sh {}` to retry", cache.display()),
        });
    }
    Ok(bin)
}

#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub context: usize,
    pub threads: usize,
    pub alias: String,
}

/// The response cache's name for an embedded server: everything an answer depends on besides
/// the request body (which names the model alias, prompt, sampling and seed): the server's
/// source and build, the model file and its hash, the context and the thread count.
pub fn identity(source: &str, file: &str, sha256: &str, opts: &ServerOptions) -> String {
    format!(
        "embedded llama-server ({source}) model {file} sha256 {} alias {} ctx {} threads {}",
        &sha256[..16.min(sha256.len())],
        opts.alias,
        opts.context,
        opts.threads
    )
}

/// A running llama-server; stopped on drop.
pub struct EmbeddedServer {
    pub base_url: String,
    /// Stable name for the response cache: binary source + model hash + options.
    pub identity: String,
    pub options: ServerOptions,
    pub model_file: PathBuf,
    pub log: PathBuf,
    stop: Option<std::sync::mpsc::Sender<()>>,
    keeper: Option<std::thread::JoinHandle<()>>,
}

impl EmbeddedServer {
    /// Build or find the server, fetch the judge's model, start it and wait for `/health`.
    pub fn start(judge: &Judge, opts: &ServerOptions) -> Result<Self> {
        let cache = assets::cache_dir();
        let bin = ensure_llama_server(&cache)?;
        let model_dir = assets::ensure(judge.asset)?;
        let model = model_dir.join(judge.file());
        let logs = cache.join("llm").join("logs");
        std::fs::create_dir_all(&logs).map_err(|e| Error::file(&logs, e.to_string()))?;
        let port = free_port()?;
        let log = logs.join(format!("llama-server-{port}.log"));
        let log_file = std::fs::File::create(&log).map_err(|e| Error::file(&log, e.to_string()))?;
        let mut cmd = Command::new(&bin);
        cmd.arg("-m")
            .arg(&model)
            .args(["--alias", &opts.alias, "--host", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .args([
                "-c",
                &opts.context.to_string(),
                "-t",
                &opts.threads.to_string(),
            ])
            // One slot; no host-RAM prompt cache (`--cache-ram`, 8 GiB by default: it grew
            // by about 5 MB per request over a 2,000-request run, while requests never reuse a
            // prompt, `cache_prompt: false`, so answers do not depend on it).
            .args(["-np", "1", "--cache-ram", "0", "--no-webui"])
            .stdin(Stdio::null())
            .stdout(
                log_file
                    .try_clone()
                    .map_err(|e| Error::file(&log, e.to_string()))?,
            )
            .stderr(log_file);
        // The child must not outlive us, even when we are SIGKILLed. PDEATHSIG fires when the
        // *thread* that forked exits, so a keeper thread that lives as long as the server forks.
        let (tx_child, rx_child) = std::sync::mpsc::channel::<std::io::Result<u32>>();
        let (tx_stop, rx_stop) = std::sync::mpsc::channel::<()>();
        let keeper = std::thread::Builder::new()
            .name("llama-server-keeper".into())
            .spawn(move || {
                use std::os::unix::process::CommandExt;
                // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
                unsafe {
                    cmd.pre_exec(|| {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                        Ok(())
                    });
                }
                let mut child: Child = match cmd.spawn() {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx_child.send(Err(e));
                        return;
                    }
                };
                let _ = tx_child.send(Ok(child.id()));
                let _ = rx_stop.recv();
                let _ = child.kill();
                let _ = child.wait();
            })
            .map_err(|e| Error::Msg(format!("cannot start a thread: {e}")))?;
        let pid = rx_child
            .recv()
            .map_err(|e| Error::Msg(e.to_string()))?
            .map_err(|e| Error::file(&bin, format!("cannot start llama-server: {e}")))?;
        let server = EmbeddedServer {
            base_url: format!("http://127.0.0.1:{port}"),
            identity: identity(SERVER_SOURCE, judge.file(), judge.sha256(), opts),
            options: opts.clone(),
            model_file: model,
            log: log.clone(),
            stop: Some(tx_stop),
            keeper: Some(keeper),
        };
        let t0 = Instant::now();
        loop {
            if http_get(port, "/health").is_some_and(|(code, _)| code == 200) {
                return Ok(server);
            }
            // Still alive? /proc/<pid> vanishes (or turns zombie) when it exits.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.contains(") Z ") {
                return Err(Error::file(
                    &log,
                    format!(
                        "llama-server exited during start-up; its log ends:\n{}",
                        tail(&log, 15)
                    ),
                ));
            }
            if t0.elapsed() > Duration::from_secs(120) {
                return Err(Error::file(
                    &log,
                    format!(
                        "llama-server did not answer /health within 120 s; its log ends:\n{}",
                        tail(&log, 15)
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for EmbeddedServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(k) = self.keeper.take() {
            let _ = k.join();
        }
    }
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::Msg(format!("cannot find a free loopback port: {e}")))?;
    Ok(l.local_addr()
        .map_err(|e| Error::Msg(e.to_string()))?
        .port())
}

/// A minimal blocking `GET` on loopback: `(status, body)`.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = String::new();
    // Bounded: a health or props reply is a few kilobytes.
    s.take(1 << 20).read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    Some((code, body))
}

fn tail(path: &Path, n: usize) -> String {
    let t = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = t.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
