//! The hostile-input corpus: inputs that come from others (tokens files, image folders, result
//! folders, LLM replies, a response cache), each run through the CLI. Every case asserts its
//! named error (or that it was passed over and said so), that no file appeared anywhere under
//! the test's temporary root except in the case's own work folder (the tree is listed before
//! and after, links not followed), and a peak memory: the child's maximum resident set from
//! `wait4`, under [`PEAK_BOUND_KIB`] for every case, and for the oversized replies within
//! [`REPLY_SLACK_KIB`] of the same run against a small reply (so it does not grow with the
//! 300 MB the server sends).
//!
//! The LLM server here is a test double (a raw HTTP server on loopback): no real server can
//! be made to answer with 300 MB, the wrong shape or invalid UTF-8 on cue.

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_lqae-eval");

/// Any case's peak resident set (debug build, the shipped model and its LM loaded).
const PEAK_BOUND_KIB: i64 = 2 << 20;
/// How much more an oversized reply may cost than a small one: the 16 MiB reply limit, the
/// client's buffers and allocator slack.
const REPLY_SLACK_KIB: i64 = 64 << 10;

struct Ran {
    ok: bool,
    out: String,
    peak_kib: i64,
}

/// Run the CLI with `args`, its output to files outside `root`, and its peak RSS from wait4.
fn run(args: &[String], logs: &Path) -> Ran {
    let (o, e) = (logs.join("stdout"), logs.join("stderr"));
    // Reaped by wait4 below, which also gives its resource usage (`Child::wait` does not).
    #[allow(clippy::zombie_processes)]
    let child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&o).unwrap())
        .stderr(std::fs::File::create(&e).unwrap())
        .spawn()
        .unwrap();
    let mut status = 0i32;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4");
    let status = std::process::ExitStatus::from_raw(status);
    assert!(
        status.code().is_some(),
        "lqae-eval {args:?} was killed by a signal ({status}): a crash, not a named error"
    );
    let out = std::fs::read_to_string(&o).unwrap() + &std::fs::read_to_string(&e).unwrap();
    assert!(
        !out.contains("panicked at"),
        "lqae-eval {args:?} panicked:\n{out}"
    );
    Ran {
        ok: status.success(),
        out,
        peak_kib: usage.ru_maxrss,
    }
}

/// Every folder, file and link under `root` (links listed, not followed).
fn tree(root: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
            out.insert(e.path());
        }
    }
    out
}

struct Corpus {
    root: tempfile::TempDir,
    logs: tempfile::TempDir,
    cases: usize,
}

impl Corpus {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("outside")).unwrap();
        Corpus {
            root,
            logs: tempfile::tempdir().unwrap(),
            cases: 0,
        }
    }
    fn root(&self) -> &Path {
        self.root.path()
    }
    /// A fresh folder for one case's inputs, and its work folder (where it may write).
    fn case(&self, name: &str) -> (PathBuf, PathBuf) {
        let dir = self.root().join("cases").join(name);
        std::fs::create_dir_all(dir.join("work")).unwrap();
        (dir.clone(), dir.join("work"))
    }
    /// Run one case: `args` must fail (or succeed, with `ok`) with `want` in its output, write
    /// nothing outside `work`, and stay under the peak bound. Returns the run.
    fn check(&mut self, name: &str, work: &Path, args: Vec<String>, ok: bool, want: &str) -> Ran {
        let before = tree(self.root());
        let r = run(&args, self.logs.path());
        let after = tree(self.root());
        let new: Vec<_> = after
            .difference(&before)
            .filter(|p| !p.starts_with(work))
            .collect();
        assert!(
            new.is_empty(),
            "case {name}: files appeared outside its work folder: {new:?}"
        );
        assert_eq!(r.ok, ok, "case {name}: exit status; output:\n{}", r.out);
        assert!(
            r.out.contains(want),
            "case {name}: `{want}` not in the output:\n{}",
            r.out
        );
        assert!(
            r.peak_kib < PEAK_BOUND_KIB,
            "case {name}: peak RSS {} KiB",
            r.peak_kib
        );
        eprintln!("case {name}: ok (peak {} MiB)", r.peak_kib >> 10);
        self.cases += 1;
        r
    }
}

fn s(x: impl AsRef<std::ffi::OsStr>) -> String {
    x.as_ref().to_string_lossy().into_owned()
}

/// Two real image lines of lqae-fmnist's tokens file (header, first line, second line).
fn real_tokens(c: &Corpus) -> (Value, Value, Value) {
    let p = c.logs.path().join("real.jsonl");
    let r = run(
        &[
            "encode",
            "--model",
            "lqae-fmnist",
            "--data",
            "fashion-mnist",
            "--shard",
            "1/5000",
            "--out",
        ]
        .iter()
        .map(|x| x.to_string())
        .chain([s(&p)])
        .collect::<Vec<_>>(),
        c.logs.path(),
    );
    assert!(r.ok, "{}", r.out);
    let text = std::fs::read_to_string(&p).unwrap();
    let v: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(v.len(), 3);
    (v[0].clone(), v[1].clone(), v[2].clone())
}

fn decode_args(tokens: &Path, out: &Path) -> Vec<String> {
    vec![
        "decode".into(),
        s(tokens),
        "--model".into(),
        "lqae-fmnist".into(),
        "--out".into(),
        s(out),
    ]
}

fn tokens_cases(c: &mut Corpus) {
    let (header, a, b) = real_tokens(c);
    let outside = c.root().join("outside");
    let with_ids = |ids: &[&str]| -> Vec<u8> {
        let mut t = header.to_string() + "\n";
        for (i, id) in ids.iter().enumerate() {
            let mut l = if i % 2 == 0 { a.clone() } else { b.clone() };
            l["id"] = json!(id);
            t += &(l.to_string() + "\n");
        }
        t.into_bytes()
    };
    let abs = format!("{}/abs", outside.display());
    let long = "a".repeat(2000);
    let id_cases: Vec<(&str, Vec<&str>, &str)> = vec![
        ("id-parent", vec!["../../escape"], "holds `..`"),
        ("id-absolute", vec![abs.as_str()], "absolute path"),
        (
            "id-inner-parent",
            vec!["x", "a/../../../escape"],
            "holds `..`",
        ),
        ("id-nul", vec!["a\0b"], "U+0000"),
        ("id-backslash", vec!["..\\..\\escape"], "backslash"),
        ("id-escape-sequence", vec!["a\u{1b}[2J"], "U+001B"),
        ("id-newline", vec!["a\nb"], "U+000A"),
        ("id-empty-folder", vec!["a//b"], "empty folder name"),
        ("id-too-long", vec![long.as_str()], "more than the 1024"),
        (
            "id-same-file",
            vec!["x.jpg", "x.png"],
            "would both be written",
        ),
        (
            "id-file-and-folder",
            vec!["x", "x.png/y"],
            "both a file and a folder",
        ),
    ];
    for (name, ids, want) in id_cases {
        let (dir, work) = c.case(name);
        let f = dir.join("t.jsonl");
        std::fs::write(&f, with_ids(&ids)).unwrap();
        c.check(name, &work, decode_args(&f, &work.join("out")), false, want);
    }
    // A link planted in the output folder is not followed out of it.
    {
        let (dir, work) = c.case("out-link");
        let out = work.join("out");
        std::fs::create_dir_all(&out).unwrap();
        std::os::unix::fs::symlink(&outside, out.join("link")).unwrap();
        let f = dir.join("t.jsonl");
        std::fs::write(&f, with_ids(&["link/x"])).unwrap();
        c.check(
            "out-link",
            &work,
            decode_args(&f, &out),
            false,
            "symbolic link",
        );
    }
    // Hostile lines of valid syntax and invalid bytes.
    let mut huge_ids = a.clone();
    huge_ids["ids"] = json!(vec![29375u32; 1_000_000]);
    let mut huge_text = a.clone();
    huge_text["text"] = json!("z".repeat(10 << 20));
    let mut bad_token = a.clone();
    bad_token["ids"][0] = json!(4_000_000_000u32);
    let mut string_ids = a.clone();
    string_ids["ids"] = json!(["1", "2"]);
    let mut few = a.clone();
    few["ids"] = json!([1, 2, 3]);
    let h = header.to_string();
    let line_cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "million-token-line",
            format!("{h}\n{huge_ids}\n").into_bytes(),
            "longer than 4194304 bytes",
        ),
        (
            "ten-megabyte-string",
            format!("{h}\n{huge_text}\n").into_bytes(),
            "longer than 4194304 bytes",
        ),
        (
            "token-out-of-range",
            format!("{h}\n{bad_token}\n").into_bytes(),
            "the model has 30522 codes",
        ),
        (
            "ids-wrong-type",
            format!("{h}\n{string_ids}\n").into_bytes(),
            "line 2",
        ),
        (
            "ids-wrong-count",
            format!("{h}\n{few}\n").into_bytes(),
            "the model takes 64",
        ),
        (
            "header-wrong-shape",
            format!("[1, 2]\n{a}\n").into_bytes(),
            "line 1",
        ),
        (
            "invalid-utf8",
            [format!("{h}\n").as_bytes(), b"{\"id\": \"\xff\xfe\"}\n"].concat(),
            "line 2",
        ),
        (
            "torn-json",
            format!("{h}\n{{\"id\": \"x\", \"ids\": [1, 2\n").into_bytes(),
            "line 2",
        ),
    ];
    for (name, bytes, want) in line_cases {
        let (dir, work) = c.case(name);
        let f = dir.join("t.jsonl");
        std::fs::write(&f, bytes).unwrap();
        c.check(name, &work, decode_args(&f, &work.join("out")), false, want);
    }
}

fn png(path: &Path) {
    image::RgbImage::from_fn(28, 28, |x, y| {
        image::Rgb([(x * 9) as u8, (y * 9) as u8, 99])
    })
    .save_with_format(path, image::ImageFormat::Png)
    .unwrap();
}

fn encode_args(images: &Path, work: &Path) -> Vec<String> {
    vec![
        "encode".into(),
        "--model".into(),
        "lqae-fmnist".into(),
        "--images".into(),
        s(images),
        "--out".into(),
        s(work.join("t.jsonl")),
    ]
}

fn folder_cases(c: &mut Corpus) {
    // A mini-ImageNet table naming a file outside its images/ folder.
    {
        let (dir, work) = c.case("table-escape");
        let data = dir.join("mini");
        std::fs::create_dir_all(data.join("images")).unwrap();
        png(&data.join("images/a.png"));
        png(&c.root().join("outside/private.png"));
        std::fs::write(
            data.join("test.csv"),
            "filename,label\na.png,n01532829\n../../../../outside/private.png,n01532829\n",
        )
        .unwrap();
        let args = vec![
            "encode".into(),
            "--model".into(),
            "lqae-fmnist".into(),
            "--data".into(),
            "mini-imagenet".into(),
            "--data-path".into(),
            s(&data),
            "--out".into(),
            s(work.join("t.jsonl")),
        ];
        c.check("table-escape", &work, args, false, "line 3: the file name");
    }
    let secret = c.root().join("outside/secret.png");
    png(&secret);
    {
        let (dir, work) = c.case("image-link-out");
        let imgs = dir.join("imgs");
        std::fs::create_dir_all(&imgs).unwrap();
        png(&imgs.join("a.png"));
        std::os::unix::fs::symlink(&secret, imgs.join("b.png")).unwrap();
        c.check(
            "image-link-out",
            &work,
            encode_args(&imgs, &work),
            false,
            "is a symbolic link",
        );
    }
    {
        let (dir, work) = c.case("folder-link-loop");
        let imgs = dir.join("imgs");
        std::fs::create_dir_all(imgs.join("sub")).unwrap();
        png(&imgs.join("a.png"));
        std::os::unix::fs::symlink(&imgs, imgs.join("sub/loop")).unwrap();
        c.check(
            "folder-link-loop",
            &work,
            encode_args(&imgs, &work),
            false,
            "is a symbolic link",
        );
    }
    {
        let (dir, work) = c.case("image-name-control");
        let imgs = dir.join("imgs");
        std::fs::create_dir_all(&imgs).unwrap();
        png(&imgs.join("a\u{7}b.png"));
        c.check(
            "image-name-control",
            &work,
            encode_args(&imgs, &work),
            false,
            "cannot be an image id",
        );
    }
}

/// A result file `report` and `board` accept, as JSON.
fn good_result(suite: &str, run: &str) -> Value {
    let mut m = std::collections::BTreeMap::new();
    m.insert(
        "acc".to_string(),
        lqae::eval::stats::proportion(60, 100, 0.05),
    );
    serde_json::to_value(common::result_file(suite, "probe", run, json!({}), m)).unwrap()
}

fn write_run(root: &Path, suite: &str, run: &str, result: &[u8]) -> PathBuf {
    let d = root.join(suite).join(run);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("result.json"), result).unwrap();
    d
}

fn results_cases(c: &mut Corpus) {
    let good = good_result("s", "base");
    let forged = |f: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        f(&mut v);
        v.to_string().into_bytes()
    };
    // Not JSON numbers, written where the metric's value is (a sentinel found once).
    let literal = |x: &str| {
        let t = String::from_utf8(forged(&|v| {
            v["metrics"]["acc"]["value"] = json!(0.123456789)
        }))
        .unwrap();
        assert_eq!(t.matches("0.123456789").count(), 1);
        t.replace("0.123456789", x).into_bytes()
    };
    let (nan, overflow) = (literal("NaN"), literal("1e400"));
    let mut padded = good.to_string().into_bytes();
    padded.extend(std::iter::repeat_n(b' ', 70 << 20));
    let invalid_utf8 = [b"{\"schema\": \"".as_slice(), b"\xff\xfe", b"\"}"].concat();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("result-nan", nan, "not a lqae-result/1 result"),
        ("result-1e400", overflow, "not a lqae-result/1 result"),
        (
            "result-1e308",
            forged(&|v| v["metrics"]["acc"]["value"] = json!(1e308)),
            "not finite or larger than",
        ),
        (
            "result-ci-huge",
            forged(&|v| v["metrics"]["acc"]["ci95"] = json!([-1e300, 1e300])),
            "not finite or larger than",
        ),
        ("result-70-megabytes", padded, "larger than 16777216 bytes"),
        (
            "result-wrong-shape",
            b"[1, 2, 3]".to_vec(),
            "not a lqae-result/1 result",
        ),
        (
            "result-invalid-utf8",
            invalid_utf8,
            "not a lqae-result/1 result",
        ),
        (
            "result-10mb-string",
            forged(&|v| v["git_commit"] = json!("c".repeat(10 << 20))),
            "git_commit is 10485760 bytes long",
        ),
        (
            "result-metric-type",
            forged(&|v| v["metrics"]["acc"]["value"] = json!("high")),
            "not a lqae-result/1 result",
        ),
    ];
    for (name, bytes, want) in cases {
        let (dir, work) = c.case(name);
        let base = write_run(&dir.join("base"), "s", "base", good.to_string().as_bytes());
        let cur = write_run(&dir.join("cur"), "s", "cur", &bytes);
        let args = vec![
            "report".into(),
            "--baseline".into(),
            s(&base),
            "--current".into(),
            s(&cur),
            "--out".into(),
            s(work.join("report.md")),
        ];
        c.check(name, &work, args, false, want);
    }
    // A commit of multibyte characters (cut by characters, not bytes, in the report's
    // provenance lines): compared, not a crash.
    {
        let (dir, work) = c.case("result-multibyte-commit");
        let mut odd = good.clone();
        odd["git_commit"] = json!(format!("a{}", "\u{e9}".repeat(10)));
        let base = write_run(&dir.join("base"), "s", "base", good.to_string().as_bytes());
        let cur = write_run(&dir.join("cur"), "s", "cur", odd.to_string().as_bytes());
        let args = vec![
            "report".into(),
            "--baseline".into(),
            s(&base),
            "--current".into(),
            s(&cur),
        ];
        c.check("result-multibyte-commit", &work, args, true, "code differs");
    }
    {
        let (dir, work) = c.case("samples-bad-line");
        let base = write_run(&dir.join("base"), "s", "base", good.to_string().as_bytes());
        let cur = write_run(&dir.join("cur"), "s", "cur", good.to_string().as_bytes());
        std::fs::write(cur.join("samples.jsonl"), "{\"rep\": 1}\n").unwrap();
        let args = vec![
            "report".into(),
            "--baseline".into(),
            s(&base),
            "--current".into(),
            s(&cur),
        ];
        c.check("samples-bad-line", &work, args, false, "line 1");
    }
    {
        let (dir, work) = c.case("samples-link-out");
        let base = write_run(&dir.join("base"), "s", "base", good.to_string().as_bytes());
        let cur = write_run(&dir.join("cur"), "s", "cur", good.to_string().as_bytes());
        let far = c.root().join("outside/samples.jsonl");
        std::fs::write(&far, "").unwrap();
        std::os::unix::fs::symlink(&far, cur.join("samples.jsonl")).unwrap();
        let args = vec![
            "report".into(),
            "--baseline".into(),
            s(&base),
            "--current".into(),
            s(&cur),
        ];
        c.check("samples-link-out", &work, args, false, "is a symbolic link");
    }
    // A FIFO where an interrupted run's partial.json would be: the board does not wait on it.
    {
        let (dir, work) = c.case("board-fifo");
        let results = dir.join("results");
        let run = results.join("s/r1");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join("samples.jsonl"), "").unwrap();
        let fifo = std::ffi::CString::new(s(run.join("partial.json"))).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        let args = vec![
            "board".into(),
            s(&results),
            "--out".into(),
            s(work.join("board.html")),
        ];
        c.check("board-fifo", &work, args, true, "");
        let md = std::fs::read_to_string(work.join("board.md")).unwrap();
        assert!(md.contains("interrupted"), "{md}");
    }
    // The board scans a results folder without following links out of it (or round a loop),
    // and reads no result.json that is a link.
    {
        let (dir, work) = c.case("board-links");
        let results = dir.join("results");
        // Real runs of the repository: a probe run inside, a reconstruction run outside.
        let copy = |from: &str, to: &Path| {
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(from);
            let run = std::fs::read_dir(&src)
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .find(|p| p.join("result.json").is_file())
                .unwrap();
            std::fs::create_dir_all(to).unwrap();
            std::fs::copy(run.join("result.json"), to.join("result.json")).unwrap();
            to.to_path_buf()
        };
        copy(
            "results/linear-fashionmnist",
            &results.join("linear-fashionmnist/r1"),
        );
        let far = copy(
            "results/recon-fashionmnist",
            &c.root().join("outside/far/recon-fashionmnist/r9"),
        );
        std::os::unix::fs::symlink(far.parent().unwrap(), results.join("recon-fashionmnist"))
            .unwrap();
        std::os::unix::fs::symlink(&results, results.join("linear-fashionmnist/loop")).unwrap();
        let linked = results.join("linked/r2");
        std::fs::create_dir_all(&linked).unwrap();
        std::os::unix::fs::symlink(far.join("result.json"), linked.join("result.json")).unwrap();
        let args = vec![
            "board".into(),
            s(&results),
            "--out".into(),
            s(work.join("board.html")),
        ];
        c.check("board-links", &work, args, true, "");
        let md = std::fs::read_to_string(work.join("board.md")).unwrap();
        assert!(md.contains("linear-fashionmnist"), "{md}");
        assert!(
            !md.contains("recon-fashionmnist"),
            "a link was followed:\n{md}"
        );
        c.cases += 2; // the loop and the linked result.json, checked by the same run
    }
}

/// What the fake server does with a completion request.
#[derive(Clone, Copy, PartialEq)]
enum Reply {
    Good,
    /// A correct answer padded to 300 MB, without / with a Content-Length.
    Huge {
        length_header: bool,
    },
    /// HTTP 400 with a 300 MB body.
    HugeError,
    WrongShape,
    InvalidUtf8,
}

struct Server {
    url: String,
    reply: Arc<Mutex<Reply>>,
    huge_tokenize: Arc<Mutex<bool>>,
}

fn server() -> Server {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let reply = Arc::new(Mutex::new(Reply::Good));
    let huge_tokenize = Arc::new(Mutex::new(false));
    let (r2, t2) = (reply.clone(), huge_tokenize.clone());
    std::thread::spawn(move || {
        for sock in l.incoming().flatten() {
            let (r, t) = (*r2.lock().unwrap(), *t2.lock().unwrap());
            std::thread::spawn(move || serve(sock, r, t));
        }
    });
    Server {
        url,
        reply,
        huge_tokenize,
    }
}

fn serve(mut sock: std::net::TcpStream, reply: Reply, huge_tokenize: bool) {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 65536];
    let head_end = loop {
        let n = sock.read(&mut tmp).unwrap_or(0);
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
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = sock.read(&mut tmp).unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
    let answer = json!({"choices": [{"index": 0, "text": " Bag", "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8}});
    let send = |sock: &mut std::net::TcpStream, status: &str, extra: &str, body: &[u8]| {
        let _ = write!(sock, "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nConnection: close\r\n{extra}\r\n");
        let _ = sock.write_all(body);
    };
    // 300 MB: the start of a valid body, then padding in 1 MiB writes, then its end.
    let huge = |sock: &mut std::net::TcpStream,
                status: &str,
                length_header: bool,
                start: &str,
                end: &str| {
        let pad = 300usize << 20;
        let extra = if length_header {
            format!("Content-Length: {}\r\n", start.len() + pad + end.len())
        } else {
            String::new()
        };
        let _ = write!(sock, "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nConnection: close\r\n{extra}\r\n{start}");
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..300 {
            if sock.write_all(&chunk).is_err() {
                return; // the client stopped reading: as it should
            }
        }
        let _ = sock.write_all(end.as_bytes());
    };
    if path.ends_with("/tokenize") {
        if huge_tokenize {
            huge(
                &mut sock,
                "200 OK",
                false,
                "{\"tokens\": [1, 2, 3], \"pad\": \"",
                "\"}",
            );
        } else {
            send(&mut sock, "404 Not Found", "", b"{}");
        }
        return;
    }
    let start = answer.to_string();
    let start = &start[..start.len() - 1]; // without its closing brace
    match reply {
        Reply::Good => send(&mut sock, "200 OK", "", answer.to_string().as_bytes()),
        Reply::Huge { length_header } => huge(
            &mut sock,
            "200 OK",
            length_header,
            &format!("{start}, \"pad\": \""),
            "\"}",
        ),
        Reply::HugeError => huge(&mut sock, "400 Bad Request", false, "{\"error\": \"", "\"}"),
        Reply::WrongShape => send(&mut sock, "200 OK", "", b"{\"choices\": \"Bag\"}"),
        Reply::InvalidUtf8 => send(
            &mut sock,
            "200 OK",
            "",
            b"{\"choices\": [{\"text\": \"\xff\xfe\"}]}",
        ),
    }
}

fn suite_file(dir: &Path, url: &str, cache: &Path) -> PathBuf {
    let p = dir.join("hostile.toml");
    std::fs::write(
        &p,
        format!(
            r#"kind = "fewshot"
description = "a hostile endpoint"
model = "lqae-fmnist"
[data]
dataset = "fashion-mnist"
test_limit = 40
[llm]
url = "{url}/v1"
model = "m"
context = 4096
max_retries = 0
timeout_s = 60
cache = "{cache}"
[tokens]
per_image = 8
calibration = []
[episodes]
ways = [2]
columns = [{{ induction = true, shots = 1 }}]
count = 1
seed = 3
"#,
            cache = cache.display()
        ),
    )
    .unwrap();
    p
}

fn llm_cases(c: &mut Corpus) {
    let srv = server();
    let suite_args = |suite: &Path, work: &Path| {
        vec![
            "--suite".into(),
            s(suite),
            "--results".into(),
            s(work.join("results")),
        ]
    };
    let case =
        |c: &mut Corpus, name: &str, reply: Reply, huge_tokenize: bool, ok: bool, want: &str| {
            *srv.reply.lock().unwrap() = reply;
            *srv.huge_tokenize.lock().unwrap() = huge_tokenize;
            let (dir, work) = c.case(name);
            let cache = work.join("responses.jsonl");
            let suite = suite_file(&dir, &srv.url, &cache);
            let r = c.check(name, &work, suite_args(&suite, &work), ok, want);
            let cached = std::fs::read_to_string(&cache).unwrap_or_default();
            (r, cached)
        };
    let (small, _) = case(
        c,
        "reply-wrong-shape",
        Reply::WrongShape,
        false,
        false,
        "not retried",
    );
    for (name, length_header) in [("reply-300mb", false), ("reply-300mb-content-length", true)] {
        let (r, cached) = case(
            c,
            name,
            Reply::Huge { length_header },
            false,
            false,
            "`llm.max_reply_bytes`",
        );
        assert!(
            cached.is_empty(),
            "case {name}: the oversized reply was cached"
        );
        assert!(
            r.peak_kib <= small.peak_kib + REPLY_SLACK_KIB,
            "case {name}: peak {} KiB against {} KiB with a small reply",
            r.peak_kib,
            small.peak_kib
        );
    }
    let (r, _) = case(
        c,
        "error-body-300mb",
        Reply::HugeError,
        false,
        false,
        "HTTP 400",
    );
    assert!(
        r.peak_kib <= small.peak_kib + REPLY_SLACK_KIB,
        "error body: peak {} KiB",
        r.peak_kib
    );
    case(
        c,
        "reply-invalid-utf8",
        Reply::InvalidUtf8,
        false,
        false,
        "malformed-body",
    );
    let (r, cached) = case(c, "tokenize-300mb", Reply::Good, true, true, "results in");
    let results = tree(&c.root().join("cases/tokenize-300mb/work/results"));
    let result = results.iter().find(|p| p.ends_with("result.json")).unwrap();
    assert!(
        std::fs::read_to_string(result)
            .unwrap()
            .contains("estimate (bytes / 3)"),
        "an oversized /tokenize reply must fall back to the estimate"
    );
    assert!(
        r.peak_kib <= small.peak_kib + REPLY_SLACK_KIB,
        "tokenize: peak {} KiB",
        r.peak_kib
    );
    assert_eq!(cached.lines().count(), 1, "the good answer is cached");

    // A response cache handed over with a line filed under this request's key but holding
    // another request, and a line over the line bound: both passed over and said so, and the
    // request is asked of the server.
    {
        *srv.reply.lock().unwrap() = Reply::Good;
        *srv.huge_tokenize.lock().unwrap() = false;
        let (dir, work) = c.case("cache-forged-lines");
        let cache = work.join("responses.jsonl");
        let suite = suite_file(&dir, &srv.url, &cache);
        let good_cache =
            std::fs::read_to_string(c.root().join("cases/tokenize-300mb/work/responses.jsonl"))
                .unwrap();
        let mut line: Value = serde_json::from_str(good_cache.lines().next().unwrap()).unwrap();
        let key = line["key"].clone();
        line["request"]["body"]["prompt"] = json!("another prompt");
        line["response"]["choices"][0]["text"] = json!(" Forged");
        let huge = format!(
            "{{\"key\": {key}, \"response\": \"{}\"}}",
            "z".repeat(21 << 20)
        );
        std::fs::write(&cache, format!("{line}\n{huge}\n")).unwrap();
        let r = c.check(
            "cache-forged-lines",
            &work,
            suite_args(&suite, &work),
            true,
            "2 unreadable, oversized or forged line(s) passed over",
        );
        assert!(
            r.out.contains("(0 from the cache, 1 HTTP requests)"),
            "the request was not asked again:\n{}",
            r.out
        );
    }
    // A line written before lines recorded their request (key and response only) is still
    // an answer: nothing is sent.
    {
        let (dir, work) = c.case("cache-line-without-request");
        let cache = work.join("responses.jsonl");
        let suite = suite_file(&dir, &srv.url, &cache);
        let good_cache =
            std::fs::read_to_string(c.root().join("cases/tokenize-300mb/work/responses.jsonl"))
                .unwrap();
        let mut line: Value = serde_json::from_str(good_cache.lines().next().unwrap()).unwrap();
        line.as_object_mut().unwrap().remove("request");
        std::fs::write(&cache, format!("{line}\n")).unwrap();
        c.check(
            "cache-line-without-request",
            &work,
            suite_args(&suite, &work),
            true,
            "(1 from the cache, 0 HTTP requests)",
        );
    }
}

#[test]
fn hostile_inputs_are_refused_by_name_stay_in_their_folder_and_in_memory() {
    let mut c = Corpus::new();
    tokens_cases(&mut c);
    folder_cases(&mut c);
    results_cases(&mut c);
    llm_cases(&mut c);
    assert!(c.cases >= 30, "only {} cases", c.cases);
    eprintln!("{} hostile inputs", c.cases);
}
