//! An async client for any OpenAI-compatible server (`/v1/completions`,
//! `/v1/chat/completions`): a concurrency limit, a per-request timeout, retries with
//! exponential back-off and jitter on 408/409/429/5xx, connection errors, timeouts and
//! unreadable bodies (honouring `retry-after-ms` and `Retry-After`), no retry on other 4xx,
//! and the response cache in front, so an answered request is never sent twice.
//!
//! The API key is held in a [`Secret`]: it is sent as a bearer token and appears nowhere
//! else (not in `Debug`, errors, the cache key, logs or results).

use super::cache::{self, ResponseCache};
use crate::error::{Error, Result};
use crate::util::untrusted;
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A value that must not be printed.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Self {
        Secret(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// `http://host:port` or `http://host:port/v1`; endpoints are appended.
    pub base_url: String,
    /// What the cache key calls the server: the base URL for a remote server, a name pinned to
    /// the binary and model for the embedded one (whose port changes from run to run).
    pub identity: String,
    pub api_key: Option<Secret>,
    pub timeout: Duration,
    pub max_retries: u32,
    pub concurrency: usize,
    pub backoff_base: Duration,
    /// Cap of the computed back-off (not of a server's `Retry-After`).
    pub backoff_max: Duration,
    /// Longest `Retry-After` / `retry-after-ms` honoured as given; a longer one is waited
    /// for this long.
    pub retry_after_max: Duration,
    /// Longest successful reply body read (`llm.max_reply_bytes`); error bodies are read to
    /// [`ERROR_BODY_BYTES`] at most.
    pub max_reply_bytes: usize,
}

/// What is read of an error reply (its start is quoted in the error; the rest is dropped).
pub const ERROR_BODY_BYTES: usize = 64 << 10;

impl ClientSettings {
    pub fn new(base_url: &str) -> Self {
        ClientSettings {
            base_url: base_url.trim_end_matches('/').to_string(),
            identity: base_url.trim_end_matches('/').to_string(),
            api_key: None,
            timeout: Duration::from_secs(120),
            max_retries: 6,
            concurrency: 1,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            retry_after_max: Duration::from_secs(600),
            max_reply_bytes: crate::llm::settings::DEFAULT_MAX_REPLY_BYTES,
        }
    }
}

/// A successful answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub body: Value,
    pub cached: bool,
    /// HTTP attempts made for this answer (0 when cached).
    pub attempts: u32,
    /// Wall time of the successful attempt, request sent to body parsed (0 when cached).
    pub request_ms: f64,
}

/// Counters over a client's life, for the result file.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ClientStats {
    pub answered: u64,
    pub cache_hits: u64,
    /// HTTP requests sent, retries included.
    pub http_requests: u64,
    /// Retries by reason (`429`, `500`, `timeout`, `connection`, `malformed-body`, ...).
    pub retries: std::collections::BTreeMap<String, u64>,
    /// Summed wall time of the successful attempts.
    pub request_ms: f64,
}

pub struct LlmClient {
    http: reqwest::Client,
    pub settings: ClientSettings,
    sem: tokio::sync::Semaphore,
    cache: Option<Arc<ResponseCache>>,
    stats: Mutex<ClientStats>,
    jitter: AtomicU64,
}

/// Why an attempt failed, and whether to try again.
enum Attempt {
    Retry {
        reason: String,
        wait: Option<Duration>,
    },
    Fatal(String),
}

impl LlmClient {
    pub fn new(settings: ClientSettings, cache: Option<Arc<ResponseCache>>) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .build()
            .map_err(|e| Error::Msg(format!("cannot build the HTTP client: {e}")))?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Ok(LlmClient {
            http,
            sem: tokio::sync::Semaphore::new(settings.concurrency.max(1)),
            settings,
            cache,
            stats: Mutex::new(ClientStats::default()),
            jitter: AtomicU64::new(seed),
        })
    }

    pub fn stats(&self) -> ClientStats {
        self.stats.lock().unwrap().clone()
    }

    pub fn url(&self, endpoint: &str) -> String {
        let base = &self.settings.base_url;
        let ep = endpoint.trim_start_matches('/');
        if base.ends_with("/v1") {
            format!("{base}/{}", ep.trim_start_matches("v1/"))
        } else {
            format!("{base}/{ep}")
        }
    }

    /// POST `body` to `endpoint` (e.g. `/v1/completions`), from the cache when answered before.
    /// `check` inspects a parsed body before it is cached: a body it rejects (e.g. without the
    /// log-probabilities a scorer needs) is an error, never retried and never cached.
    /// The response cache this client reads and writes, if any.
    pub fn cache(&self) -> Option<&Arc<ResponseCache>> {
        self.cache.as_ref()
    }

    pub async fn post(
        &self,
        endpoint: &str,
        body: &Value,
        check: &(dyn Fn(&Value) -> std::result::Result<(), String> + Sync),
    ) -> Result<Reply> {
        let request = cache::request(&self.settings.identity, endpoint, body);
        let key = cache::key_of(&request);
        if let Some(r) = self.cached_reply(&key, check)? {
            return Ok(r);
        }
        let _permit = self
            .sem
            .acquire()
            .await
            .map_err(|e| Error::Msg(e.to_string()))?;
        // Asked again once our turn comes: while we waited, another task of this run (the
        // same body twice) or another run sharing the file may have answered it.
        if let Some(r) = self.cached_reply(&key, check)? {
            return Ok(r);
        }
        // One sender per key across every run sharing the cache: hold its claim, and ask the
        // cache once more, since whoever held it before may have answered.
        let _claim = match &self.cache {
            Some(c) => {
                let claim = c.claim(&key).await?;
                if let Some(r) = self.cached_reply(&key, check)? {
                    return Ok(r);
                }
                Some(claim)
            }
            None => None,
        };
        let url = self.url(endpoint);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.stats.lock().unwrap().http_requests += 1;
            let t0 = Instant::now();
            let outcome = self.attempt(&url, body, check).await;
            match outcome {
                Ok(v) => {
                    let ms = t0.elapsed().as_secs_f64() * 1e3;
                    if let Some(c) = &self.cache {
                        c.put(&request, &v)?;
                    }
                    let mut s = self.stats.lock().unwrap();
                    s.answered += 1;
                    s.request_ms += ms;
                    return Ok(Reply {
                        body: v,
                        cached: false,
                        attempts: attempt,
                        request_ms: ms,
                    });
                }
                Err(Attempt::Fatal(msg)) => {
                    return Err(Error::Llm {
                        url,
                        msg: format!("{msg} (not retried)"),
                    })
                }
                Err(Attempt::Retry { reason, wait }) => {
                    if attempt > self.settings.max_retries {
                        return Err(Error::Llm {
                            url,
                            msg: format!(
                                "gave up after {attempt} attempts; last: {reason}. Raise `llm.max_retries` or `llm.timeout_s`, or check the server"
                            ),
                        });
                    }
                    let key = reason.split(':').next().unwrap_or("other").to_string();
                    *self.stats.lock().unwrap().retries.entry(key).or_default() += 1;
                    let wait = wait
                        .map(|w| w.min(self.settings.retry_after_max))
                        .unwrap_or_else(|| self.backoff(attempt));
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// A cached answer that `check` accepts (one it rejects, e.g. written by another tool
    /// without the log-probabilities now needed, counts as a miss and is asked again).
    fn cached_reply(
        &self,
        key: &str,
        check: &(dyn Fn(&Value) -> std::result::Result<(), String> + Sync),
    ) -> Result<Option<Reply>> {
        let Some(c) = &self.cache else {
            return Ok(None);
        };
        match c.get(key)? {
            Some(v) if check(&v).is_ok() => {
                let mut s = self.stats.lock().unwrap();
                s.cache_hits += 1;
                s.answered += 1;
                Ok(Some(Reply {
                    body: v,
                    cached: true,
                    attempts: 0,
                    request_ms: 0.0,
                }))
            }
            _ => Ok(None),
        }
    }

    async fn attempt(
        &self,
        url: &str,
        body: &Value,
        check: &(dyn Fn(&Value) -> std::result::Result<(), String> + Sync),
    ) -> std::result::Result<Value, Attempt> {
        let mut req = self.http.post(url).json(body);
        if let Some(k) = &self.settings.api_key {
            req = req.bearer_auth(k.expose());
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Err(transport(&e)),
        };
        let status = resp.status().as_u16();
        let wait = retry_after(resp.headers());
        let bytes = if (200..300).contains(&status) {
            let limit = self.settings.max_reply_bytes;
            match untrusted::read_body(resp, limit).await {
                Ok(Some(b)) => b,
                Ok(None) => {
                    return Err(Attempt::Fatal(format!(
                        "the reply is longer than {limit} bytes (`llm.max_reply_bytes`); it was not read further and nothing was cached. Raise the setting if the server's replies are really that long"
                    )))
                }
                Err(e) => return Err(transport(&e)),
            }
        } else {
            untrusted::read_body_prefix(resp, ERROR_BODY_BYTES).await
        };
        let snippet = || {
            let t = String::from_utf8_lossy(&bytes);
            let t: String = t.chars().take(300).collect();
            t.replace('\n', " ")
        };
        if status == 408 || status == 409 || status == 429 || status >= 500 {
            return Err(Attempt::Retry {
                reason: format!("{status}: {}", snippet()),
                wait,
            });
        }
        if !(200..300).contains(&status) {
            return Err(Attempt::Fatal(format!("HTTP {status}: {}", snippet())));
        }
        let v: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                return Err(Attempt::Retry {
                    reason: format!("malformed-body: not JSON ({e}): {}", snippet()),
                    wait: None,
                })
            }
        };
        check(&v).map_err(Attempt::Fatal)?;
        Ok(v)
    }

    /// Exponential back-off with jitter: base * 2^(attempt-1), capped, times U(0.5, 1).
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .settings
            .backoff_base
            .saturating_mul(1u32 << (attempt - 1).min(20));
        let capped = exp.min(self.settings.backoff_max);
        let r = self
            .jitter
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        let u = crate::rng::Rng::new(r).uniform();
        capped.mul_f64(0.5 + 0.5 * u)
    }
}

fn transport(e: &reqwest::Error) -> Attempt {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "transport"
    };
    // reqwest's message names the URL; walk the sources for the cause.
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    Attempt::Retry {
        reason: format!("{kind}: {msg}"),
        wait: None,
    }
}

/// `retry-after-ms` (milliseconds), else `Retry-After` (seconds or an HTTP date).
pub fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    let get = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).map(str::trim);
    // try_from: an absurd value (`inf`, `1e30`) is no wait hint rather than a panic.
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return Duration::try_from_secs_f64(ms / 1e3).ok();
    }
    let v = get("retry-after")?;
    if let Ok(s) = v.parse::<f64>() {
        return Duration::try_from_secs_f64(s).ok();
    }
    let at = http_date(v)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs() as i64;
    Some(Duration::from_secs((at - now).max(0) as u64))
}

/// Unix seconds of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn http_date(s: &str) -> Option<i64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, mon, year, hms, "GMT"] = parts.as_slice() else {
        return None;
    };
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = months.iter().position(|x| x == mon)? as i64 + 1;
    let (d, y): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let t: Vec<i64> = hms.split(':').filter_map(|x| x.parse().ok()).collect();
    let [hh, mm, ss] = t.as_slice() else {
        return None;
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days * 86400 + hh * 3600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_and_retry_headers() {
        assert_eq!(http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784111777));
        assert_eq!(http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(http_date("yesterday"), None);
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", "250".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            "retry-after",
            "Thu, 01 Jan 1970 00:00:00 GMT".parse().unwrap(),
        );
        assert_eq!(
            retry_after(&h),
            Some(Duration::ZERO),
            "a date in the past: no wait"
        );
    }

    #[test]
    fn secrets_do_not_print_and_urls_join() {
        let mut s = ClientSettings::new("http://127.0.0.1:9/v1/");
        s.api_key = Some(Secret::new("sk-very-secret".into()));
        assert!(!format!("{s:?}").contains("very-secret"));
        let c = LlmClient::new(s, None).unwrap();
        assert_eq!(
            c.url("/v1/completions"),
            "http://127.0.0.1:9/v1/completions"
        );
        let c = LlmClient::new(ClientSettings::new("http://h:1"), None).unwrap();
        assert_eq!(
            c.url("/v1/chat/completions"),
            "http://h:1/v1/chat/completions"
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut s = ClientSettings::new("http://h:1");
        s.backoff_base = Duration::from_millis(100);
        s.backoff_max = Duration::from_millis(1000);
        let c = LlmClient::new(s, None).unwrap();
        for a in 1..=8u32 {
            let full = Duration::from_millis((100u64 << (a - 1)).min(1000));
            let w = c.backoff(a);
            assert!(w <= full && w >= full / 2, "attempt {a}: {w:?} vs {full:?}");
        }
    }
}
