//! Fault injection for the LLM client: the one place a test double is right, because a real
//! server cannot be made to answer 429, drop a connection or send a malformed body on cue.
//! A raw-HTTP server on loopback plays a script of behaviours, one per request; each test
//! checks that the fault is retried or reported as the client promises, that nothing faulty
//! reaches the response cache, and that the API key goes out only in the Authorization header.

use lqae::llm::{ClientSettings, LlmClient, ResponseCache, Secret};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Clone, Debug)]
enum Act {
    /// Status, extra headers, body.
    Reply(u16, Vec<(&'static str, String)>, String),
    /// Read the request, then never answer.
    Hang,
    /// Read the request, then close the connection without a byte.
    Drop,
    /// A good answer after 150 ms.
    SlowOk,
}

#[derive(Default)]
struct Seen {
    requests: Vec<(String, String)>, // (head, body)
    in_flight: usize,
    max_in_flight: usize,
}

struct Fake {
    url: String,
    seen: Arc<Mutex<Seen>>,
}

fn ok_body(text: &str) -> String {
    json!({
        "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8}
    })
    .to_string()
}

fn ok() -> Act {
    Act::Reply(200, vec![], ok_body(" Bag"))
}

async fn fake(script: Vec<Act>) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let script = Arc::new(Mutex::new(VecDeque::from(script)));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let script = script.clone();
            let seen = seen2.clone();
            tokio::spawn(async move {
                // One request per connection (`Connection: close`).
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                let head_end = loop {
                    let n = sock.read(&mut tmp).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break p + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    let n = sock.read(&mut tmp).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                }
                let body = String::from_utf8_lossy(&buf[head_end..]).to_string();
                {
                    let mut s = seen.lock().unwrap();
                    s.requests.push((head, body));
                    s.in_flight += 1;
                    s.max_in_flight = s.max_in_flight.max(s.in_flight);
                }
                let mut act = script.lock().unwrap().pop_front().unwrap_or_else(ok);
                if let Act::SlowOk = act {
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    act = ok();
                }
                seen.lock().unwrap().in_flight -= 1;
                match act {
                    Act::Reply(status, headers, body) => {
                        let mut r = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                            body.len()
                        );
                        for (k, v) in headers {
                            r.push_str(&format!("{k}: {v}\r\n"));
                        }
                        r.push_str("\r\n");
                        r.push_str(&body);
                        let _ = sock.write_all(r.as_bytes()).await;
                        let _ = sock.shutdown().await;
                    }
                    Act::Hang => tokio::time::sleep(Duration::from_secs(3600)).await,
                    Act::Drop => drop(sock),
                    Act::SlowOk => unreachable!(),
                }
            });
        }
    });
    Fake { url, seen }
}

fn settings(url: &str) -> ClientSettings {
    let mut s = ClientSettings::new(url);
    s.timeout = Duration::from_millis(800);
    s.max_retries = 3;
    s.backoff_base = Duration::from_millis(20);
    s.backoff_max = Duration::from_millis(200);
    s
}

fn accept_all(_: &Value) -> Result<(), String> {
    Ok(())
}

fn body() -> Value {
    json!({"model": "m", "prompt": "Context: a b c\nClassification:", "max_tokens": 4})
}

fn tmp_cache() -> (tempfile::TempDir, Arc<ResponseCache>) {
    let d = tempfile::tempdir().unwrap();
    let c = Arc::new(ResponseCache::open(&d.path().join("responses.jsonl")).unwrap());
    (d, c)
}

#[tokio::test]
async fn a_429_waits_for_retry_after_then_succeeds() {
    let f = fake(vec![
        Act::Reply(
            429,
            vec![("retry-after", "1".into())],
            "{\"error\":\"slow down\"}".into(),
        ),
        Act::Reply(429, vec![("retry-after-ms", "300".into())], "{}".into()),
        ok(),
    ])
    .await;
    let (_d, cache) = tmp_cache();
    let c = LlmClient::new(settings(&f.url), Some(cache.clone())).unwrap();
    let t = Instant::now();
    let r = c
        .post("/v1/completions", &body(), &accept_all)
        .await
        .unwrap();
    let waited = t.elapsed();
    assert_eq!(r.attempts, 3);
    assert!(!r.cached);
    // Retry-After: 1 s and retry-after-ms: 300 ms are honoured, not the 20 ms back-off.
    assert!(
        waited >= Duration::from_millis(1300),
        "waited only {waited:?}"
    );
    assert_eq!(c.stats().retries.get("429"), Some(&2));
    assert_eq!(cache.len(), 1, "the answer, and only it, is cached");
}

#[tokio::test]
async fn a_500_then_success_is_retried_with_backoff() {
    let f = fake(vec![
        Act::Reply(500, vec![], "boom".into()),
        Act::Reply(503, vec![], "".into()),
        ok(),
    ])
    .await;
    let c = LlmClient::new(settings(&f.url), None).unwrap();
    let r = c
        .post("/v1/completions", &body(), &accept_all)
        .await
        .unwrap();
    assert_eq!(r.attempts, 3);
    assert_eq!(r.body["choices"][0]["text"], " Bag");
    let s = c.stats();
    assert_eq!(
        (s.retries.get("500"), s.retries.get("503")),
        (Some(&1), Some(&1))
    );
    assert_eq!(f.seen.lock().unwrap().requests.len(), 3);
}

#[tokio::test]
async fn a_hang_past_the_timeout_is_retried() {
    let f = fake(vec![Act::Hang, ok()]).await;
    let c = LlmClient::new(settings(&f.url), None).unwrap();
    let t = Instant::now();
    let r = c
        .post("/v1/completions", &body(), &accept_all)
        .await
        .unwrap();
    assert_eq!(r.attempts, 2);
    assert!(
        t.elapsed() >= Duration::from_millis(800),
        "the timeout was not waited for"
    );
    assert_eq!(
        c.stats().retries.get("timeout"),
        Some(&1),
        "{:?}",
        c.stats().retries
    );
}

#[tokio::test]
async fn a_dropped_connection_is_retried() {
    let f = fake(vec![Act::Drop, Act::Drop, ok()]).await;
    let c = LlmClient::new(settings(&f.url), None).unwrap();
    let r = c
        .post("/v1/completions", &body(), &accept_all)
        .await
        .unwrap();
    assert_eq!(r.attempts, 3);
    let s = c.stats();
    let transport: u64 = s
        .retries
        .iter()
        .filter(|(k, _)| *k != "429")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(transport, 2, "{:?}", s.retries);
}

#[tokio::test]
async fn a_malformed_body_is_retried_and_never_cached() {
    let f = fake(vec![
        Act::Reply(200, vec![], "{\"choices\": [".into()),
        ok(),
    ])
    .await;
    let (_d, cache) = tmp_cache();
    let c = LlmClient::new(settings(&f.url), Some(cache.clone())).unwrap();
    let r = c
        .post("/v1/completions", &body(), &accept_all)
        .await
        .unwrap();
    assert_eq!(r.attempts, 2);
    assert_eq!(c.stats().retries.get("malformed-body"), Some(&1));
    assert_eq!(cache.len(), 1);

    // Malformed every time: an error after max_retries, naming the cause; nothing cached.
    let f = fake(vec![Act::Reply(200, vec![], "<html>".into()); 10]).await;
    let (_d2, cache) = tmp_cache();
    let c = LlmClient::new(settings(&f.url), Some(cache.clone())).unwrap();
    let e = c
        .post("/v1/completions", &body(), &accept_all)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("gave up after 4 attempts") && e.contains("not JSON"),
        "{e}"
    );
    assert!(e.contains(&f.url), "the error names the server: {e}");
    assert_eq!(cache.len(), 0);
}

#[tokio::test]
async fn other_4xx_are_not_retried() {
    let f = fake(vec![
        Act::Reply(401, vec![], "{\"error\":\"bad key\"}".into()),
        ok(),
    ])
    .await;
    let c = LlmClient::new(settings(&f.url), None).unwrap();
    let e = c
        .post("/v1/completions", &body(), &accept_all)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("HTTP 401") && e.contains("not retried"), "{e}");
    assert_eq!(f.seen.lock().unwrap().requests.len(), 1);
}

#[tokio::test]
async fn a_body_without_logprobs_is_reported_not_scored_nor_cached() {
    // `first-token` needs the answer's top log-probabilities; a server that leaves them out
    // stops the run with that reason (it is never read as a wrong answer).
    let f = fake(vec![ok(), ok()]).await;
    let (_d, cache) = tmp_cache();
    let c = LlmClient::new(settings(&f.url), Some(cache.clone())).unwrap();
    let needs_logprobs = |v: &Value| -> Result<(), String> {
        let c = lqae::llm::response::parse(v)?;
        c.logprobs
            .map(|_| ())
            .ok_or_else(|| "the body has no `logprobs`".to_string())
    };
    let e = c
        .post("/v1/completions", &body(), &needs_logprobs)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no `logprobs`") && e.contains("not retried"),
        "{e}"
    );
    assert_eq!(f.seen.lock().unwrap().requests.len(), 1, "not retried");
    assert_eq!(
        cache.len(),
        0,
        "not cached: a rerun against a better server asks again"
    );
}

#[tokio::test]
async fn the_key_goes_only_in_the_authorization_header_and_answers_are_cached() {
    let f = fake(vec![ok()]).await;
    let (d, cache) = tmp_cache();
    let mut s = settings(&f.url);
    let key = format!("sk-test-{:x}", std::process::id() as u64 * 0x9E37_79B9);
    s.api_key = Some(Secret::new(key.clone()));
    let c = LlmClient::new(s.clone(), Some(cache.clone())).unwrap();
    c.post("/v1/completions", &body(), &accept_all)
        .await
        .unwrap();
    {
        let seen = f.seen.lock().unwrap();
        let (head, req_body) = &seen.requests[0];
        assert!(
            head.lines()
                .any(|l| l.eq_ignore_ascii_case(&format!("authorization: Bearer {key}"))),
            "{head}"
        );
        assert!(!req_body.contains(&key));
    }
    // A second client over the same cache file answers from it, without a request.
    let c2 = LlmClient::new(
        s,
        Some(Arc::new(ResponseCache::open(cache.path()).unwrap())),
    )
    .unwrap();
    let r = c2
        .post("/v1/completions", &body(), &accept_all)
        .await
        .unwrap();
    assert!(r.cached);
    assert_eq!(f.seen.lock().unwrap().requests.len(), 1);
    let on_disk = std::fs::read_to_string(d.path().join("responses.jsonl")).unwrap();
    assert!(!on_disk.contains(&key), "the key is in the cache file");
    // The key is also not part of the cache key: another key reads the same answers.
    assert!(!on_disk.is_empty());
}

#[tokio::test]
async fn concurrency_is_limited() {
    let f = fake(vec![Act::SlowOk; 6]).await;
    let mut s = settings(&f.url);
    s.concurrency = 2;
    let c = Arc::new(LlmClient::new(s, None).unwrap());
    let mut set = tokio::task::JoinSet::new();
    for i in 0..6 {
        let c = c.clone();
        set.spawn(async move {
            let b = json!({"model": "m", "prompt": format!("p{i}")});
            c.post("/v1/completions", &b, &accept_all).await.unwrap()
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    assert_eq!(c.stats().http_requests, 6);
    let max = f.seen.lock().unwrap().max_in_flight;
    assert_eq!(
        max, 2,
        "at most `concurrency` requests at once, and that many were used"
    );
}

#[tokio::test]
async fn a_request_answered_while_waiting_for_a_slot_is_not_sent_again() {
    // Two identical bodies at once with one slot: the second finds the first's answer in the
    // cache when its turn comes (the same holds for another run sharing the cache file).
    let f = fake(vec![Act::SlowOk, Act::SlowOk]).await;
    let (_d, cache) = tmp_cache();
    let c = Arc::new(LlmClient::new(settings(&f.url), Some(cache.clone())).unwrap());
    let b1 = body();
    let (a, b) = tokio::join!(
        c.post("/v1/completions", &b1, &accept_all),
        c.post("/v1/completions", &b1, &accept_all)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        a.cached as u8 + b.cached as u8,
        1,
        "one answered by the server, one by the cache"
    );
    assert_eq!(f.seen.lock().unwrap().requests.len(), 1);
    assert_eq!(cache.len(), 1);
}
