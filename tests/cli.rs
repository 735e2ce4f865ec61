//! `lqae-eval` as a user runs it: help, suite listing, unknown names, exit codes, and the
//! main job (real MiniLM + real Fashion-MNIST images -> text tokens).

mod common;

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lqae-eval"))
}

#[test]
fn help_lists_the_commands() {
    let out = bin().arg("--help").output().unwrap();
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    for c in ["ls", "fetch", "tokens", "--suite"] {
        assert!(s.contains(c), "help lacks {c}: {s}");
    }
    let out = bin().arg("--no-such-flag").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
}

#[test]
fn ls_lists_suite_files_and_unknown_suite_suggests() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("linear-fashionmnist.toml"),
        "description = \"Linear probe on Fashion-MNIST\"\n",
    )
    .unwrap();
    std::fs::write(
        d.path().join("recon-fashionmnist.toml"),
        "description = \"Reconstruction\"\n",
    )
    .unwrap();
    let out = bin()
        .arg("ls")
        .env("LQAE_SUITES", d.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("linear-fashionmnist") && s.contains("Linear probe on Fashion-MNIST"),
        "{s}"
    );
    assert!(s.find("linear").unwrap() < s.find("recon").unwrap());

    let out = bin()
        .args(["--suite", "linear-fashion"])
        .env("LQAE_SUITES", d.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("no suite named `linear-fashion`")
            && e.contains("did you mean `linear-fashionmnist`"),
        "{e}"
    );

    let empty = tempfile::tempdir().unwrap();
    let out = bin()
        .arg("ls")
        .env("LQAE_SUITES", empty.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("no suites"));
}

#[test]
fn tokens_turns_real_images_into_minilm_text() {
    common::minilm_dir();
    let out = bin().args(["tokens", "--n", "3"]).output().unwrap();
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{so}\n{se}");
    // The first three Fashion-MNIST test images are an ankle boot, a pullover and a trouser.
    assert!(
        so.contains("#0   Ankle boot")
            && so.contains("#1   Pullover")
            && so.contains("#2   Trouser"),
        "{so}"
    );
    assert!(so.contains("7x7 = 49 tokens"), "{so}");
    let out = bin()
        .args(["tokens", "--n", "1", "--device", "cuda:0"])
        .output()
        .unwrap();
    if !cfg!(feature = "cuda") {
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("--features cuda"));
    }
    let out = bin().args(["tokens", "--patch", "5"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--patch"));
}

#[test]
fn fetch_quiet_prints_the_cached_folders() {
    let out = bin().args(["fetch", "--quiet", "minilm"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        std::path::Path::new(&dir)
            .join("model.safetensors")
            .is_file(),
        "{dir}"
    );
    let out = bin().args(["fetch", "imagenet"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown asset `imagenet`"));
}
