//! One regression report over every suite (`report --baselines DIR --current DIR`): one exit
//! code, the combined Markdown, JUnit XML read back by a real consumer (junitparser, from
//! PyPI through `scripts/ci-tools-venv.sh`), a job summary with the regressions first; and the
//! example CI files, validated against the GitHub Actions and GitLab CI schemas
//! (check-jsonschema's vendored copies), calling the same single report as `.ci/run`.

mod common;

use lqae::eval::stats::proportion;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_lqae-eval");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tools() -> PathBuf {
    let o = Command::new("bash")
        .arg(root().join("scripts/ci-tools-venv.sh"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    PathBuf::from(String::from_utf8(o.stdout).unwrap().lines().last().unwrap())
}

/// A run folder `dir/<suite>/<run>/result.json` with proportion metrics `(name, k of n)`.
fn run(dir: &Path, suite: &str, run: &str, metrics: &[(&str, usize, usize)]) {
    let m: BTreeMap<_, _> = metrics
        .iter()
        .map(|(name, k, n)| (name.to_string(), proportion(*k, *n, 0.02)))
        .collect();
    let r = common::result_file(suite, "probe", run, serde_json::json!({}), m);
    let d = dir.join(suite).join(run);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("result.json"),
        serde_json::to_vec_pretty(&r).unwrap(),
    )
    .unwrap();
}

/// A metric name from somebody's result file: markup and a control character.
const ODD: &str = "odd<b>&\"name\"\u{1}";

#[test]
fn one_report_over_every_suite_with_junit_and_a_summary() {
    let d = tempfile::tempdir().unwrap();
    let (base, cur) = (d.path().join("baselines"), d.path().join("current"));
    // alpha regresses (900 -> 600 of 1000, a two-proportion z-test); beta holds, but lost a
    // metric; gamma has a baseline and no current run; delta is new (no baseline: not gated).
    run(
        &base,
        "alpha",
        "b",
        &[("acc", 900, 1000), ("top5", 990, 1000)],
    );
    run(
        &cur,
        "alpha",
        "c",
        &[("acc", 600, 1000), ("top5", 990, 1000)],
    );
    run(
        &base,
        "beta",
        "b",
        &[("acc", 500, 1000), ("gone", 500, 1000), (ODD, 10, 20)],
    );
    run(&cur, "beta", "c", &[("acc", 510, 1000), (ODD, 10, 20)]);
    run(&base, "gamma", "b", &[("acc", 500, 1000)]);
    run(&cur, "delta", "c", &[("acc", 500, 1000)]);
    let (junit, summary, md) = (
        d.path().join("junit.xml"),
        d.path().join("summary.md"),
        d.path().join("report.md"),
    );
    let report = |extra: &[&str]| {
        Command::new(BIN)
            .arg("report")
            .arg("--baselines")
            .arg(&base)
            .arg("--current")
            .arg(&cur)
            .arg("--junit")
            .arg(&junit)
            .arg("--summary")
            .arg(&summary)
            .arg("--out")
            .arg(&md)
            .args(extra)
            .output()
            .unwrap()
    };
    let o = report(&[]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(1), "{err}");
    for want in [
        "alpha: acc (REGRESSION)",
        "beta: gone (MISSING)",
        "gamma: no run of suite `gamma`",
    ] {
        assert!(err.contains(want), "`{want}` not in: {err}");
    }
    assert!(!err.contains("top5") && !err.contains("delta"), "{err}");
    let text = std::fs::read_to_string(&md).unwrap();
    assert!(
        text.contains("| alpha | FAIL (1 regressed, 0 missing) |"),
        "{text}"
    );
    assert!(
        text.contains("| beta | FAIL (0 regressed, 1 missing) |"),
        "{text}"
    );
    assert!(text.contains("| gamma | ERROR |"), "{text}");

    // The JUnit file as a CI reads it: junitparser's view, against what the runs say.
    let script = r#"
import json, sys
from junitparser import JUnitXml, Failure, Error
xml = JUnitXml.fromfile(sys.argv[1])
out = {"tests": xml.tests, "failures": xml.failures, "errors": xml.errors, "suites": {}}
for s in xml:
    cases = {}
    for c in s:
        kinds = [type(r).__name__ for r in c.result]
        cases[c.name] = kinds[0] if kinds else "pass"
    out["suites"][s.name] = {"tests": s.tests, "failures": s.failures, "errors": s.errors, "cases": cases}
print(json.dumps(out))
"#;
    let py = tools().join("python");
    let o = Command::new(&py)
        .args(["-c", script])
        .arg(&junit)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "junitparser: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (
            v["tests"].as_u64(),
            v["failures"].as_u64(),
            v["errors"].as_u64()
        ),
        (Some(6), Some(2), Some(1)),
        "{v}"
    );
    let s = &v["suites"];
    assert_eq!(s["alpha"]["cases"]["acc"], "Failure", "{v}");
    assert_eq!(s["alpha"]["cases"]["top5"], "pass", "{v}");
    assert_eq!(s["beta"]["cases"]["gone"], "Failure", "{v}");
    assert_eq!(s["beta"]["cases"]["acc"], "pass", "{v}");
    // The odd name survives as text (its control character replaced).
    assert_eq!(s["beta"]["cases"]["odd<b>&\"name\"\u{FFFD}"], "pass", "{v}");
    assert_eq!(s["gamma"]["cases"]["result"], "Error", "{v}");
    assert!(s.get("delta").is_none_or(|x| x.is_null()), "{v}");

    // The summary: the failures first, then the board's table of the current runs.
    let sm = std::fs::read_to_string(&summary).unwrap();
    assert!(
        sm.starts_with("# lqae regression report: 3 failure(s) in 3 suites"),
        "{sm}"
    );
    let (fail_at, board_at) = (
        sm.find("| alpha | acc |").unwrap(),
        sm.find("# Results board").unwrap(),
    );
    assert!(fail_at < board_at, "{sm}");
    assert!(
        sm[fail_at..board_at].contains("REGRESSION") && sm.contains("| beta | gone |"),
        "{sm}"
    );

    // --allow-missing lets the lost metric pass; the regression and the missing suite still fail.
    let o = report(&["--allow-missing"]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(!err.contains("gone") && err.contains("alpha: acc"), "{err}");

    // Everything passes against itself: exit 0, no failures in the JUnit file.
    std::fs::remove_dir_all(&cur).unwrap();
    for (suite, metrics) in [
        ("alpha", vec![("acc", 900, 1000)]),
        ("beta", vec![("acc", 500, 1000)]),
        ("gamma", vec![("acc", 500, 1000)]),
    ] {
        std::fs::remove_dir_all(base.join(suite)).unwrap();
        run(&base, suite, "b", &metrics);
        run(&cur, suite, "c", &metrics);
    }
    let o = report(&[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let x = std::fs::read_to_string(&junit).unwrap();
    assert!(x.contains("tests=\"3\" failures=\"0\" errors=\"0\""), "{x}");
}

#[test]
fn the_example_ci_files_validate_and_call_the_single_report() {
    let check = tools().join("check-jsonschema");
    let d = tempfile::tempdir().unwrap();
    for (file, schema) in [
        (".github/workflows/ci.yml", "vendor.github-workflows"),
        (".gitlab-ci.yml", "vendor.gitlab-ci"),
    ] {
        let path = root().join(file);
        let o = Command::new(&check)
            .args(["--builtin-schema", schema])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{file}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        // The check can fail: the same file with its job's steps/script key misspelled.
        let text = std::fs::read_to_string(&path).unwrap();
        let broken =
            text.replacen("    steps:", "    stepz:", 1)
                .replacen("  script:", "  scripts:", 1);
        assert_ne!(broken, text);
        let bad = d.path().join(path.file_name().unwrap());
        std::fs::write(&bad, broken).unwrap();
        let o = Command::new(&check)
            .args(["--builtin-schema", schema])
            .arg(&bad)
            .output()
            .unwrap();
        assert!(!o.status.success(), "{file}: a broken copy validated");
        assert!(text.contains("bash .ci/run"), "{file} does not run .ci/run");
    }
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    let reports: Vec<&str> = ci
        .lines()
        .filter(|l| l.contains("lqae-eval report"))
        .collect();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(
        reports[0].contains("--baselines results/baselines --current results/ci"),
        "{reports:?}"
    );
    assert!(
        ci.contains("--junit results/ci-junit.xml")
            && ci.contains("--summary results/ci-summary.md")
    );
}
