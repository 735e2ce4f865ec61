//! The reconstruction suite: how well trained autoencoders rebuild held-out images, and what
//! their tokens look like.
//!
//! For each model (a configuration under `configs/`, trained once and cached, or a run
//! folder) the test images go through the evaluation transform at the model's image size,
//! the model (no masking), and the reconstruction is clamped to [0, 1]. Per image: MSE, PSNR,
//! SSIM (`crate::metrics`, scikit-image conventions) and LPIPS (`crate::lpips`); each metric is
//! reported as the mean over images with a Student-t 95% interval, and the per-image values go
//! to `per_image.jsonl` so that `report` can run a paired t-test against a baseline. Token
//! statistics (codes used, perplexity, per-image entropy, most used tokens with their text,
//! special / sub-word share) go to `extra.tokens`. The run folder also gets `grid.png`
//! (originals, reconstructions, per-pixel error) and `index.html` (grid + tables).

pub mod grid;
pub mod page;
pub mod score;
pub mod spec;

pub use grid::{error_colour, grid_png, write_grid, GridRow};
pub use page::{page_html, write_page};
pub use spec::{
    conventions, conventions_with, lpips_setting, CheckedRecon, ReconSettings, ReconSpec,
    ReconTolerance,
};

use crate::data::{input_hashes, subset, Split};
use crate::error::{Error, Result};
use crate::eval::results::{ImageScore, Measured};
use crate::eval::stats::mean_t_interval;
use crate::eval::stats::Metric;
use crate::eval::suite_kind::{Ctx, Outcome, SuiteKind};
use crate::lpips::Lpips;
use crate::util::fsx::sha256_hex;
use score::{score_model, token_summary, ModelRun};
use std::collections::BTreeMap;
use std::time::Instant;

pub struct Reconstruction;

impl SuiteKind for Reconstruction {
    const NAME: &'static str = "reconstruction";
    const HEADLINE: &'static [&'static str] = &["psnr", "ssim", "lpips_alex", "rfid", "kid"];
    type Spec = ReconSpec;
    type Checked = CheckedRecon;
    fn check(spec: ReconSpec) -> std::result::Result<CheckedRecon, Vec<String>> {
        spec.check()
    }
    fn run(spec: &CheckedRecon, cx: &Ctx) -> Result<Outcome> {
        run(spec, cx)
    }
}

/// The grid: originals (again whenever the image size changes), then per model its
/// reconstructions and their error.
fn grid_rows(runs: &[ModelRun], error_scale: f64) -> Vec<GridRow> {
    let mut rows: Vec<GridRow> = Vec::new();
    let mut shown_size = None;
    for run in runs {
        if shown_size != Some(run.size) {
            rows.push(GridRow::Images {
                label: format!("originals ({}x{})", run.size, run.size),
                size: run.size,
                images: run.grid_originals.clone(),
            });
            shown_size = Some(run.size);
        }
        rows.push(GridRow::Images {
            label: format!("{}: reconstruction", run.rep),
            size: run.size,
            images: run.grid_recons.clone(),
        });
        rows.push(GridRow::Error {
            label: format!("{}: per-pixel error", run.rep),
            size: run.size,
            originals: run.grid_originals.clone(),
            recons: run.grid_recons.clone(),
            scale: error_scale as f32,
        });
    }
    rows
}

/// What the per-model loop gathers.
#[derive(Default)]
struct Gathered {
    inputs: BTreeMap<String, String>,
    seeds: BTreeMap<String, u64>,
    metrics: BTreeMap<String, Metric>,
    per_image: Vec<ImageScore>,
    tokens: serde_json::Map<String, serde_json::Value>,
    model_info: serde_json::Map<String, serde_json::Value>,
    runs: Vec<ModelRun>,
    reps: Vec<String>,
}

/// rFID and KID of one model's reconstructions against their inputs: the metrics (with a
/// bootstrap interval over image pairs) and what `extra.fid` records.
fn rfid(
    f: &crate::fid::FeatureNet,
    rep: &str,
    run: &ModelRun,
    spec: &CheckedRecon,
    cx: &Ctx,
) -> Result<(BTreeMap<String, Metric>, serde_json::Value)> {
    let total = 2 * run.fid_inputs.len();
    let tell = |off: usize| {
        move |done: usize, _n: usize| {
            cx.progress.partial(&format!(
                "  {rep}: Inception features {}/{total}",
                off + done
            ))
        }
    };
    let fa = f.of(&run.fid_inputs, &mut tell(0))?;
    let fb = f.of(&run.fid_recons, &mut tell(run.fid_inputs.len()))?;
    cx.progress.line("");
    let kid = crate::fid::KidSettings {
        subsets: spec.recon.kid_subsets,
        subset_size: spec.recon.kid_subset_size,
        seed: spec.recon.seed,
    };
    let r = crate::fid::report(&fa, &fb, kid, f.weights_sha256())?;
    let (boot_fid, boot_kid) =
        crate::fid::bootstrap_pairs(&fa, &fb, spec.recon.fid_bootstrap, spec.recon.seed)?;
    let metric = |value: f64, boot: &[f64], tolerance: f64| {
        let sd = crate::eval::stats::sample_var(boot).sqrt();
        Metric {
            value,
            se: sd,
            ci95: [value - 1.96 * sd, value + 1.96 * sd],
            n: fa.len(),
            tolerance,
            higher_is_better: false,
        }
    };
    let metrics = BTreeMap::from([
        (
            format!("{rep}/rfid"),
            metric(r.fid, &boot_fid, spec.tolerance.rfid),
        ),
        (
            format!("{rep}/kid"),
            metric(r.kid, &boot_kid, spec.tolerance.kid),
        ),
    ]);
    let info = serde_json::json!({
        "rfid": r.fid, "kid": r.kid, "kid_std": r.kid_std, "n": r.n_a,
        "kid_subsets": r.kid_subsets,
        "kid_subset_size": r.kid_subset_size,
        "bootstrap_resamples": spec.recon.fid_bootstrap,
        "weights_sha256": f.weights_sha256(),
    });
    Ok((metrics, info))
}

/// What every model is scored on: the test images, the subset, the networks.
struct Bench<'a> {
    spec: &'a CheckedRecon,
    cx: &'a Ctx<'a>,
    test_set: crate::data::LabelledImages,
    idx: Vec<usize>,
    hashes: Vec<String>,
    lpips: Option<Lpips>,
    fid: Option<crate::fid::FeatureNet>,
}

impl Bench<'_> {
    /// Score model `name` into `g` (and its rFID/KID record into `fid_extra`).
    fn score(
        &self,
        name: &str,
        g: &mut Gathered,
        fid_extra: &mut serde_json::Map<String, serde_json::Value>,
    ) -> Result<()> {
        let (spec, cx, net) = (self.spec, self.cx, self.spec.net);
        let t = cx.zoo.load_for(name, &spec.data, "models")?;
        let mut rep = t.state.config.name.clone();
        if g.reps.contains(&rep) {
            rep = format!("{rep}-{}", g.reps.len());
        }
        g.reps.push(rep.clone());
        g.inputs.insert(rep.clone(), t.sha256.clone());
        g.seeds
            .insert(format!("{rep}_train"), t.state.config.train.seed);
        let size = t.state.config.model.image_size;
        if let Some(n) = net.filter(|n| size < n.min_side()) {
            return Err(Error::setting(
                "recon.lpips",
                format!(
                    "model `{name}` works at {size}x{size} but LPIPS {} needs at least {m}x{m}; use vgg16 (16x16) or none",
                    n.name(),
                    m = n.min_side()
                ),
            ));
        }
        cx.progress.line(&format!(
            "  {rep}: {} test images at {size}x{size}",
            self.idx.len()
        ));
        let t_score = Instant::now();
        let run = score_model(
            &rep,
            &t.model,
            size,
            &self.test_set,
            &self.idx,
            self.lpips.as_ref(),
            &spec.recon,
            &spec.conventions,
            cx.device,
            cx.progress,
        )?;
        for (m, vals) in &run.values {
            let (tol, higher) = match *m {
                "mse" => (spec.tolerance.mse, false),
                p if p.starts_with("psnr") => (spec.tolerance.psnr, true),
                s if s.starts_with("ssim") => (spec.tolerance.ssim, true),
                _ => (spec.tolerance.lpips, false),
            };
            g.metrics
                .insert(format!("{rep}/{m}"), mean_t_interval(vals, tol, higher));
        }
        for (j, &i) in self.idx.iter().enumerate() {
            let mut values: BTreeMap<String, f64> = run
                .values
                .iter()
                .map(|(m, v)| (m.to_string(), v[j]))
                .collect();
            values.insert("token_entropy".into(), run.token_entropy[j]);
            g.per_image.push(ImageScore {
                rep: rep.clone(),
                index: i,
                input_sha256: self.hashes[j].clone(),
                values,
            });
        }
        if let Some(f) = &self.fid {
            let t_fid = Instant::now();
            let (metrics, info) = rfid(f, &rep, &run, spec, cx)?;
            g.metrics.extend(metrics);
            fid_extra.insert(rep.clone(), info);
            cx.progress.line(&format!(
                "  {rep}: rFID and KID in {:.0} s",
                t_fid.elapsed().as_secs_f64()
            ));
        }
        g.tokens.insert(
            rep.clone(),
            token_summary(&t.model, &run, spec.recon.top_tokens),
        );
        g.model_info.insert(
            rep.clone(),
            serde_json::json!({"spec": name, "run": t.run_dir.display().to_string(), "step": t.state.step, "image_size": size, "kind": format!("{:?}", t.state.config.model.kind), "scoring_s": t_score.elapsed().as_secs_f64()}),
        );
        g.runs.push(run);
        Ok(())
    }
}

/// Run a reconstruction suite: every model over the same seeded test subset.
fn run(spec: &CheckedRecon, cx: &Ctx) -> Result<Outcome> {
    let net = spec.net;
    let test_set = spec.data.load(Split::Test)?;
    let seed = spec.recon.seed;
    let idx = subset(test_set.len(), spec.data.test_limit, seed, "recon-test");
    let hashes = input_hashes(&test_set, &idx)?;
    let samples_sha256 = sha256_hex(hashes.join(",").as_bytes());
    let mut g = Gathered::default();
    g.inputs.insert("data".to_string(), samples_sha256.clone());
    if let Some(n) = net {
        let f = crate::assets::ensure(&crate::assets::LPIPS)?.join(n.file_name());
        g.inputs.insert(
            format!("lpips_{}", n.name()),
            crate::util::fsx::sha256_file(&f)?,
        );
    }
    g.seeds.insert("subset".to_string(), seed);
    let fid = if spec.recon.fid {
        let f = crate::fid::FeatureNet::load(cx.device, true)?;
        g.inputs
            .insert("inception_fid".to_string(), f.weights_sha256().to_string());
        Some(f)
    } else {
        None
    };
    let bench = Bench {
        spec,
        cx,
        lpips: net.map(|n| Lpips::load(n, cx.device)).transpose()?,
        fid,
        test_set,
        idx,
        hashes,
    };
    let mut fid_extra = serde_json::Map::new();
    for name in &spec.models {
        bench.score(name, &mut g, &mut fid_extra)?;
    }
    let rows = grid_rows(&g.runs, spec.recon.error_scale);
    let extra = extra_of(spec, &bench, &g, fid_extra, &rows)?;
    let png = grid_png(&rows, spec.recon.grid_scale).map_err(Error::Msg)?;
    let mut outcome = Outcome::new(Measured {
        seeds: g.seeds,
        inputs_sha256: g.inputs,
        samples_sha256,
        metrics: g.metrics,
        extra,
    });
    outcome.per_image = g.per_image;
    outcome.files.push(("grid.png".into(), png));
    outcome
        .pages
        .push(("index.html".into(), Box::new(page_html)));
    Ok(outcome)
}

/// `extra` of a reconstruction result: the models, the data, the conventions, rFID, tokens
/// and the grid's layout.
fn extra_of(
    spec: &CheckedRecon,
    b: &Bench,
    g: &Gathered,
    fid_extra: serde_json::Map<String, serde_json::Value>,
    rows: &[GridRow],
) -> Result<serde_json::Map<String, serde_json::Value>> {
    let net = spec.net;
    let mut extra = serde_json::Map::new();
    extra.insert("models".into(), g.reps.clone().into());
    extra.insert("model_runs".into(), g.model_info.clone().into());
    extra.insert("dataset".into(), spec.data.dataset.clone().into());
    extra.insert("test_n".into(), b.idx.len().into());
    extra.insert("test_total".into(), b.test_set.len().into());
    extra.insert(
        "lpips_net".into(),
        net.map(|n| n.name()).unwrap_or("none").into(),
    );
    extra.insert(
        "conventions".into(),
        serde_json::to_value(conventions_with(net, spec.recon.fid, &spec.conventions))?,
    );
    if spec.recon.fid {
        extra.insert("fid".into(), fid_extra.into());
    }
    extra.insert("tokens".into(), g.tokens.clone().into());
    extra.insert(
        "grid".into(),
        serde_json::json!({
            "file": "grid.png",
            "rows": rows.iter().map(|r| r.label().to_string()).collect::<Vec<_>>(),
            "images": g.runs.first().map_or(0, |r| r.grid_originals.len()),
            "test_indices": b.idx.iter().take(spec.recon.grid_images).collect::<Vec<_>>(),
            "scale": spec.recon.grid_scale,
            "error_scale": spec.recon.error_scale,
        }),
    );
    Ok(extra)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::results::ResultFile;

    #[test]
    fn error_colours_run_black_red_yellow_white() {
        assert_eq!(error_colour(0.0), [0, 0, 0]);
        assert_eq!(error_colour(1.0 / 3.0), [255, 0, 0]);
        assert_eq!(error_colour(2.0 / 3.0), [255, 255, 0]);
        assert_eq!(error_colour(5.0), [255, 255, 255]);
    }

    #[test]
    fn page_escapes_token_text() {
        let r = ResultFile {
            schema: crate::eval::results::SCHEMA.into(),
            suite: "s".into(),
            kind: "reconstruction".into(),
            run_id: "1".into(),
            created_unix: 0,
            config: serde_json::json!({"description": "a <b> & c"}),
            seeds: BTreeMap::new(),
            crate_version: "0".into(),
            git_commit: "abc".into(),
            device: "cpu".into(),
            blas: String::new(),
            wall_time_s: 1.0,
            inputs_sha256: BTreeMap::new(),
            samples_sha256: "x".into(),
            metrics: BTreeMap::from([(
                "m/psnr".to_string(),
                crate::eval::stats::mean_t_interval(&[20.0, 22.0], 0.5, true),
            )]),
            extra: serde_json::json!({"models": ["m"], "tokens": {"m": {"top": [{"text": "<s>", "share": 0.5}]}}}),
        };
        let h = page_html(&r);
        assert!(
            h.contains("a &lt;b&gt; &amp; c") && h.contains("<code>&lt;s&gt;</code> 50.0%"),
            "{h}"
        );
        assert!(h.contains("21.00") && !h.contains("LPIPS"), "{h}");
    }
}
