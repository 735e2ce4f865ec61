//! The response cache: one JSON line per answered request, keyed by everything that affects
//! the answer (the server's identity, the endpoint and the full request body; never the API
//! key). Lines are appended under an exclusive file lock in one write and fsync'd before the
//! answer is used, so a run killed at any instant loses at most a request in flight and never
//! repeats one that was answered. Two runs may share the file: a miss re-reads what the other
//! run appended since. A torn last line (a kill mid-write) is skipped and closed off.
//!
//! **Claims** keep two runs sharing the file from paying for one request twice: before sending,
//! a client takes [`ResponseCache::claim`] on the request's key, an exclusive `flock` on the
//! file `<cache>.claims/<key>`, and asks the cache again once it holds it. A second run (or task)
//! wanting the same key waits on the lock and then finds the answer. The kernel drops the lock
//! when its holder exits or is killed, so nothing waits on a dead run. (An OS lock per key
//! rather than a database: the JSONL stays the one store and its write-ahead log, and what
//! needs guarding, "one sender per key at a time", is exactly what `flock` gives. The claim
//! files, empty, stay: removing one while another run waits on it would let a third run lock a
//! new file of the same name.)

use crate::error::{Error, Result};
use crate::util::untrusted;
use serde_json::Value;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub struct ResponseCache {
    path: PathBuf,
    inner: Mutex<Inner>,
}

struct Inner {
    entries: HashMap<String, Value>,
    /// Bytes of the file already read (always at a line boundary).
    read_to: u64,
    skipped: usize,
}

/// A held claim on one request key (see [`ResponseCache::claim`]); released on drop, or by the
/// kernel when the process ends.
pub struct Claim {
    _file: File,
}

/// The cache key of a request.
pub fn key(identity: &str, endpoint: &str, body: &Value) -> String {
    key_of(&request(identity, endpoint, body))
}

/// What the key is the hash of; stored in each line, so a line whose answer was filed under
/// another request's key is found out and skipped.
pub fn request(identity: &str, endpoint: &str, body: &Value) -> Value {
    serde_json::json!({"server": identity, "endpoint": endpoint, "body": body})
}

/// The key of a request as [`request`] builds it.
pub fn key_of(request: &Value) -> String {
    crate::util::fsx::sha256_hex(request.to_string().as_bytes())
}

/// Longest cache line read: an answer within the largest `llm.max_reply_bytes` allowed
/// ([`crate::llm::settings::MAX_REPLY_BYTES_LIMIT`]) with its request. A longer line is
/// skipped (and counted), never held whole.
pub const MAX_LINE_BYTES: usize = 20 << 20;

impl ResponseCache {
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::file(dir, format!("cannot create the response-cache folder: {e}"))
            })?;
        }
        let c = ResponseCache {
            path: path.to_path_buf(),
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                read_to: 0,
                skipped: 0,
            }),
        };
        c.refresh(&mut c.inner.lock().unwrap())?;
        Ok(c)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lines that could not be read (torn by a kill, longer than [`MAX_LINE_BYTES`], or
    /// holding a request whose hash is not their key); they are ignored.
    pub fn skipped_lines(&self) -> usize {
        self.inner.lock().unwrap().skipped
    }

    pub fn get(&self, key: &str) -> Result<Option<Value>> {
        let mut inner = self.inner.lock().unwrap();
        if let Some(v) = inner.entries.get(key) {
            return Ok(Some(v.clone()));
        }
        // Another run sharing the file may have answered it since.
        self.refresh(&mut inner)?;
        Ok(inner.entries.get(key).cloned())
    }

    /// Append the answer to `request` (as [`request`] builds it); returns once it is on disk.
    pub fn put(&self, request: &Value, response: &Value) -> Result<()> {
        let key = key_of(request);
        let key = key.as_str();
        let line = serde_json::json!({"key": key, "request": request, "response": response})
            .to_string()
            + "\n";
        let err = |e: std::io::Error| Error::file(&self.path, format!("response cache: {e}"));
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&self.path)
            .map_err(err)?;
        f.lock().map_err(err)?;
        let len = f.metadata().map_err(err)?.len();
        let mut out = Vec::with_capacity(line.len() + 1);
        if len > 0 {
            // Close off a line torn by a process killed mid-write.
            let mut last = [0u8; 1];
            f.seek(SeekFrom::Start(len - 1)).map_err(err)?;
            f.read_exact(&mut last).map_err(err)?;
            if last[0] != b'\n' {
                out.push(b'\n');
            }
        }
        out.extend_from_slice(line.as_bytes());
        f.write_all(&out).map_err(err)?;
        f.sync_data().map_err(err)?;
        drop(f);
        self.inner
            .lock()
            .unwrap()
            .entries
            .insert(key.to_string(), response.clone());
        Ok(())
    }

    /// Wait until this process holds the claim on `key` (polling a non-blocking `flock` every
    /// 20 ms, so an async caller's thread is never blocked). Ask the cache again once it is
    /// held: another run may have answered while this one waited.
    pub async fn claim(&self, key: &str) -> Result<Claim> {
        let dir = PathBuf::from(format!("{}.claims", self.path.display()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::file(&dir, format!("cannot create the claims folder: {e}")))?;
        let p = dir.join(key);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| Error::file(&p, format!("response cache claim: {e}")))?;
        loop {
            match f.try_lock() {
                Ok(()) => return Ok(Claim { _file: f }),
                Err(std::fs::TryLockError::WouldBlock) => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(Error::file(&p, format!("response cache claim: {e}")))
                }
            }
        }
    }

    fn refresh(&self, inner: &mut Inner) -> Result<()> {
        let f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::file(&self.path, format!("response cache: {e}"))),
        };
        let err = |e: std::io::Error| Error::file(&self.path, format!("response cache: {e}"));
        let mut r = std::io::BufReader::with_capacity(1 << 20, f);
        r.seek(SeekFrom::Start(inner.read_to)).map_err(err)?;
        let mut line = Vec::new();
        loop {
            // One line at a time, at most MAX_LINE_BYTES of it held; only whole lines (a line
            // still being written is read next time).
            line.clear();
            let (n, whole, too_long) =
                untrusted::read_line_bounded(&mut r, &mut line, MAX_LINE_BYTES).map_err(err)?;
            if !whole {
                return Ok(());
            }
            inner.read_to += n as u64;
            match (!too_long).then(|| parse_line(&line)).flatten() {
                Some((k, v)) => {
                    inner.entries.entry(k).or_insert(v);
                }
                None if line.iter().all(|b| b.is_ascii_whitespace()) && !too_long => {}
                None => inner.skipped += 1,
            }
        }
    }
}

/// A cache line's key and answer: the line must hold both, and a line that records its
/// request must hash to its key.
fn parse_line(line: &[u8]) -> Option<(String, Value)> {
    let mut v = serde_json::from_slice::<Value>(line).ok()?;
    let k = v.get("key")?.as_str()?.to_string();
    if let Some(req) = v.get("request") {
        if key_of(req) != k {
            return None;
        }
    }
    Some((k, v.get_mut("response")?.take()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A claim held by one cache handle (another run: its own open file) makes a second wait
    /// until it is dropped; a claim held by a killed process is free at once.
    #[tokio::test]
    async fn claims_exclude_other_holders_until_released_or_dead() {
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.jsonl");
        let (a, b) = (
            ResponseCache::open(&p).unwrap(),
            ResponseCache::open(&p).unwrap(),
        );
        let k = key("srv", "/v1/completions", &json!({"prompt": "z"}));
        let held = a.claim(&k).await.unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(200), b.claim(&k)).await;
        assert!(waited.is_err(), "a second holder got a held claim");
        // Another key is free.
        let other = key("srv", "/v1/completions", &json!({"prompt": "w"}));
        b.claim(&other).await.unwrap();
        drop(held);
        tokio::time::timeout(Duration::from_secs(2), b.claim(&k))
            .await
            .expect("released claim")
            .unwrap();
        // A process that holds the claim and is SIGKILLed releases it.
        let claim_file = PathBuf::from(format!("{}.claims", p.display())).join(&k);
        let mut child = std::process::Command::new("python3")
            .args([
                "-c",
                "import fcntl, sys, time\nf = open(sys.argv[1], 'a')\nfcntl.flock(f, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(30)",
            ])
            .arg(&claim_file)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "held");
        let c = ResponseCache::open(&p).unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(200), c.claim(&k))
                .await
                .is_err()
        );
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        child.wait().unwrap();
        tokio::time::timeout(Duration::from_secs(5), c.claim(&k))
            .await
            .expect("a dead holder's claim is free")
            .unwrap();
    }

    #[test]
    fn survives_a_torn_line_and_sees_other_writers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.jsonl");
        let a = ResponseCache::open(&p).unwrap();
        let r1 = request("srv", "/v1/completions", &json!({"prompt": "x"}));
        let k1 = key("srv", "/v1/completions", &json!({"prompt": "x"}));
        a.put(&r1, &json!({"choices": [{"text": "1"}]})).unwrap();
        // A run killed mid-write leaves half a line.
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"key\": \"dead").unwrap();
        drop(f);
        // A second run sharing the file appends after closing the torn line.
        let b = ResponseCache::open(&p).unwrap();
        assert_eq!(b.len(), 1);
        let k2 = key("srv", "/v1/completions", &json!({"prompt": "y"}));
        b.put(
            &request("srv", "/v1/completions", &json!({"prompt": "y"})),
            &json!({"choices": [{"text": "2"}]}),
        )
        .unwrap();
        // The first run finds the second run's answer on a miss.
        assert_eq!(
            a.get(&k2).unwrap().unwrap()["choices"][0]["text"],
            json!("2")
        );
        let c = ResponseCache::open(&p).unwrap();
        assert_eq!((c.len(), c.skipped_lines()), (2, 1));
        // Keys differ by server identity, endpoint and body, and the embedded server's
        // identity by each of its inputs (source build, model file, its hash, options).
        let opts = crate::llm::server::ServerOptions {
            context: 4096,
            threads: 2,
            alias: "judge".into(),
        };
        let id = |src: &str, file: &str, sha: &str, o: &crate::llm::server::ServerOptions| {
            key(
                &crate::llm::server::identity(src, file, sha, o),
                "/v1/completions",
                &json!({"prompt": "x"}),
            )
        };
        let base = id("src 1", "m.gguf", "cc324af0aaaaaaaa", &opts);
        let with = |f: &dyn Fn(&mut crate::llm::server::ServerOptions)| {
            let mut o = opts.clone();
            f(&mut o);
            id("src 1", "m.gguf", "cc324af0aaaaaaaa", &o)
        };
        for other in [
            id("src 2", "m.gguf", "cc324af0aaaaaaaa", &opts),
            id("src 1", "n.gguf", "cc324af0aaaaaaaa", &opts),
            id("src 1", "m.gguf", "dd324af0aaaaaaaa", &opts),
            with(&|o| o.context = 2048),
            with(&|o| o.threads = 1),
            with(&|o| o.alias = "other".into()),
        ] {
            assert_ne!(base, other);
        }
        assert_ne!(k1, key("other", "/v1/completions", &json!({"prompt": "x"})));
        assert_ne!(
            k1,
            key("srv", "/v1/chat/completions", &json!({"prompt": "x"}))
        );
    }

    /// A line filed under another request's key, and a line longer than the bound, are
    /// skipped and counted; the lines around them are read.
    #[test]
    fn forged_and_oversized_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.jsonl");
        let a = ResponseCache::open(&p).unwrap();
        let rx = request("srv", "/v1/completions", &json!({"prompt": "x"}));
        let ry = request("srv", "/v1/completions", &json!({"prompt": "y"}));
        a.put(&rx, &json!({"choices": [{"text": "x"}]})).unwrap();
        let forged = json!({"key": key_of(&rx), "request": ry, "response": {"choices": [{"text": "forged"}]}});
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        writeln!(f, "{forged}").unwrap();
        let huge = format!(
            "{{\"key\": \"{}\", \"response\": \"{}\"}}",
            key_of(&ry),
            "z".repeat(MAX_LINE_BYTES)
        );
        writeln!(f, "{huge}").unwrap();
        drop(f);
        a.put(&ry, &json!({"choices": [{"text": "y"}]})).unwrap();
        let c = ResponseCache::open(&p).unwrap();
        assert_eq!((c.len(), c.skipped_lines()), (2, 2));
        assert_eq!(
            c.get(&key_of(&rx)).unwrap().unwrap()["choices"][0]["text"],
            json!("x")
        );
        assert_eq!(
            c.get(&key_of(&ry)).unwrap().unwrap()["choices"][0]["text"],
            json!("y")
        );
    }
}
