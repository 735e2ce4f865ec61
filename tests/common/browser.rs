//! Headless Chromium for the page tests: found on the PATH (or `LQAE_CHROMIUM`), installed
//! by the project's `scripts/install-chromium.sh` when missing; a page loaded from a local file
//! is screenshotted, or its DOM dumped after its scripts ran.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("LQAE_CHROMIUM").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = find_chromium() {
        return p;
    }
    // Like the assets, the browser comes from the project's own set-up script.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install-chromium.sh");
    eprintln!("chromium not found: running {script}");
    let out = Command::new("bash").arg(script).output();
    if let Some(p) = find_chromium() {
        return p;
    }
    let why = match out {
        Ok(o) => format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => e.to_string(),
    };
    panic!(
        "headless Chromium is needed to check the reconstruction page and none was found; \
         `scripts/install-chromium.sh` (Debian package `chromium`, as root) did not install it:\n{why}\n\
         Install it by hand or point LQAE_CHROMIUM at a Chromium binary"
    );
}

fn find_chromium() -> Option<PathBuf> {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(out) = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {name}"))
            .output()
        {
            let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && !p.is_empty() {
                return Some(PathBuf::from(p));
            }
        }
    }
    None
}

/// Screenshot `page` (a local file) into `png` with a fresh profile; kills Chromium after 90 s.
pub fn screenshot(page: &Path, png: &Path, size: (u32, u32)) {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--window-size={},{}", size.0, size.1))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start Chromium ({e}); see scripts/install-chromium.sh"));
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut s) = child.stderr.take() {
                use std::io::Read;
                let _ = s.read_to_string(&mut err);
            }
            assert!(
                status.success() && png.is_file(),
                "Chromium failed ({status}): {err}"
            );
            return;
        }
        if t0.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("Chromium did not finish the screenshot in 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The DOM of `url` (a `file://` address, with a `#fragment` if wanted) after its scripts ran.
pub fn dump_dom(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=2000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot start Chromium ({e}); see scripts/install-chromium.sh"));
    assert!(
        out.status.success(),
        "Chromium --dump-dom failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Colours of a screenshot: (distinct colours, image).
pub fn colours(png: &Path) -> (std::collections::HashSet<[u8; 3]>, image::RgbImage) {
    let img = image::open(png).unwrap().to_rgb8();
    let set = img.pixels().map(|p| p.0).collect();
    (set, img)
}
