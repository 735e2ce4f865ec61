//! `fetch`, and the spinner every command shows while an asset is checked or fetched.

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use lqae::assets;
use std::path::PathBuf;

fn spinner(msg: String) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}").unwrap());
    pb.enable_steady_tick(std::time::Duration::from_millis(200));
    pb.set_message(msg);
    pb
}

/// An asset's folder, fetched and verified if needed (a spinner unless `quiet`).
pub fn ensure(asset: &assets::Asset, quiet: bool) -> Result<PathBuf> {
    let pb = if quiet {
        ProgressBar::hidden()
    } else {
        spinner(format!("{}: checking", asset.name))
    };
    let dir = assets::ensure_in(asset, &assets::cache_dir(), &mut |m| {
        pb.set_message(format!("{}: {m}", asset.name))
    })?;
    pb.finish_and_clear();
    Ok(dir)
}

pub fn fetch(a: FetchArgs) -> Result<()> {
    let (names, quiet) = (&a.names, a.quiet);
    let server = names.is_empty() || names.iter().any(|n| n == "llama-server");
    let list: Vec<&assets::Asset> = if names.is_empty() {
        assets::ALL.to_vec()
    } else {
        names
            .iter()
            .filter(|n| *n != "llama-server")
            .map(|n| assets::by_name(n))
            .collect::<lqae::Result<_>>()?
    };
    if server {
        let bin = lqae::llm::server::ensure_llama_server(&assets::cache_dir())?;
        if quiet {
            println!("{}", bin.display());
        } else {
            println!(
                "{:14} {}  (llama.cpp server built from {})",
                "llama-server",
                bin.display(),
                lqae::llm::server::SERVER_SOURCE
            );
        }
    }
    for a in list {
        let dir = ensure(a, quiet)?;
        if quiet {
            println!("{}", dir.display());
        } else {
            println!("{:14} {}  ({})", a.name, dir.display(), a.description);
        }
    }
    Ok(())
}

/// The arguments of `fetch`.
#[derive(clap::Args)]
pub struct FetchArgs {
    pub names: Vec<String>,
    /// Print only the asset folders, one per line.
    #[arg(long)]
    pub quiet: bool,
}
