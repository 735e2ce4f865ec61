//! The linear-probe suite: features from the frozen LM over an image's tokens (mean-pooled
//! per layer, layers concatenated), standardised with train statistics, and a multinomial
//! logistic regression (linfa-logistic) whose L2 strength is chosen on a held-out part of the
//! train split. Scored on the test split beside baselines on identical splits: raw pixels,
//! the VQ-VAE's codes through the same LM, and an untrained LQAE encoder.

use crate::data::batch::make_batch;
use crate::data::{ImageSource, LabelledImages, Split};
use crate::error::{Error, Result};
use crate::lm::FrozenLm;
use crate::model::{Autoencoder, DataConfig, Lqae, RunConfig, Vqvae};
use crate::results::{self, Metric, ResultFile, Sample};
use crate::rng::Rng;
use crate::suites::{Layers, LinearProbeSpec, ProbeSettings, Suite};
use candle_core::{Device, Tensor};
use linfa::prelude::*;
use linfa_logistic::MultiLogisticRegression;
use ndarray::{Array1, Array2};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

const BATCH: usize = 64;

/// Row-major `n x d` features with their labels.
#[derive(Debug, Clone)]
pub struct Features {
    pub x: Vec<f32>,
    pub n: usize,
    pub d: usize,
}

/// sha256 of each image's stored bytes (pixels or file content).
pub fn input_hashes(set: &LabelledImages, idx: &[usize]) -> Result<Vec<String>> {
    idx.iter()
        .map(|&i| match &set.source {
            ImageSource::Grey(g) => Ok(results::sha256_hex(g.image(i))),
            ImageSource::Files(f) => std::fs::read(&f[i])
                .map(|b| results::sha256_hex(&b))
                .map_err(|e| Error::file(&f[i], e.to_string())),
        })
        .collect()
}

fn mean_tokens(h: &Tensor) -> candle_core::Result<Tensor> {
    h.mean(1)
}

fn select(lm_states: &[Tensor], enc_states: &[Tensor], layers: &Layers) -> Result<Vec<Tensor>> {
    Ok(match layers {
        Layers::Named(n) => match n.as_str() {
            "last" => vec![lm_states.last().expect("states").clone()],
            "all" => lm_states.to_vec(),
            "encoder" => enc_states.to_vec(),
            "everything" => enc_states.iter().chain(lm_states).cloned().collect(),
            other => {
                return Err(Error::setting(
                    "probe.layers",
                    format!(
                    "`{other}`: use last, all, encoder, everything or a list of LM layer indices"
                ),
                ))
            }
        },
        Layers::List(ix) => ix
            .iter()
            .map(|&i| {
                lm_states.get(i).cloned().ok_or_else(|| {
                    Error::setting(
                        "probe.layers",
                        format!("LM layer {i} does not exist (0..{})", lm_states.len() - 1),
                    )
                })
            })
            .collect::<Result<_>>()?,
    })
}

fn pooled(states: Vec<Tensor>) -> Result<Vec<Vec<f32>>> {
    let pooled: Vec<Tensor> = states
        .iter()
        .map(mean_tokens)
        .collect::<candle_core::Result<_>>()?;
    Ok(Tensor::cat(&pooled, 1)?.to_vec2()?)
}

fn batches(n: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..n).step_by(BATCH).map(move |s| s..(s + BATCH).min(n))
}

fn collect(rows: Vec<Vec<f32>>, n: usize) -> Features {
    let d = rows.first().map_or(0, Vec::len);
    Features {
        x: rows.into_iter().flatten().collect(),
        n,
        d,
    }
}

/// Run `per_batch` over batches of `idx` (eval transform at `size`) and collect its rows.
fn by_batch(
    set: &LabelledImages,
    idx: &[usize],
    size: u32,
    device: &Device,
    mut per_batch: impl FnMut(&Tensor) -> Result<Vec<Vec<f32>>>,
) -> Result<Features> {
    let mut rows = Vec::new();
    for r in batches(idx.len()) {
        rows.extend(per_batch(&make_batch(set, &idx[r], size, None, device)?)?);
    }
    Ok(collect(rows, idx.len()))
}

/// LQAE features: encoder -> quantize (no masking) -> frozen LM -> mean-pooled layers.
pub fn lqae_features(
    m: &Lqae,
    set: &LabelledImages,
    idx: &[usize],
    size: u32,
    layers: &Layers,
    device: &Device,
) -> Result<Features> {
    by_batch(set, idx, size, device, |images| {
        let (z, enc) = m.encode_continuous(images)?;
        let codes = m.quantizer().lookup(&m.quantizer().nearest(&z)?)?;
        let lm_states = m.lm().forward_embeds(&codes, None)?;
        pooled(select(&lm_states, &enc, layers)?)
    })
}

/// LM token ids standing in for learned VQ codes: the first `k` whole-word, non-special
/// vocabulary entries (an arbitrary but fixed assignment, no alignment with language).
pub fn code_to_token_map(lm: &FrozenLm, k: usize) -> Result<Vec<u32>> {
    let v = lm.vocab();
    let ids: Vec<u32> = (0..v.len() as u32)
        .filter(|&i| {
            let t = v.token_text(i);
            !t.special
                && t.starts_word
                && t.text.chars().all(|c| c.is_alphabetic())
                && !t.text.is_empty()
        })
        .take(k)
        .collect();
    if ids.len() < k {
        return Err(Error::Msg(format!(
            "the LM vocabulary has only {} whole-word tokens for {k} VQ codes",
            ids.len()
        )));
    }
    Ok(ids)
}

/// VQ-VAE baseline: its code ids mapped to LM tokens, through the same frozen LM.
pub fn vqvae_features(
    m: &Vqvae,
    lm: &FrozenLm,
    set: &LabelledImages,
    idx: &[usize],
    size: u32,
    layers: &Layers,
    device: &Device,
) -> Result<Features> {
    let map = code_to_token_map(lm, m.codebook_size())?;
    let map_t = Tensor::new(map.as_slice(), device)?;
    by_batch(set, idx, size, device, |images| {
        let (z, enc) = m.encode_continuous(images)?;
        let ids = m.nearest(&z)?;
        let (b, t) = ids.dims2()?;
        let tok = map_t
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t))?;
        let lm_states = lm.forward_ids(&tok, None)?;
        pooled(select(&lm_states, &enc, layers)?)
    })
}

/// Raw pixels (first channel; the data sets here are grey or treated channel-wise the same).
pub fn pixel_features(set: &LabelledImages, idx: &[usize], size: u32) -> Result<Features> {
    by_batch(set, idx, size, &Device::Cpu, |images| {
        let (b, _c, h, w) = images.dims4()?;
        Ok(images
            .narrow(1, 0, 1)?
            .reshape((b, h * w))?
            .to_vec2::<f32>()?)
    })
}

/// Probe outcome on the test split.
pub struct ProbeOutcome {
    pub alpha: f64,
    pub val_accuracy: BTreeMap<String, f64>,
    pub pred: Vec<u32>,
    /// The five most probable classes of each test example.
    pub top5: Vec<Vec<u32>>,
}

// Flat row-major indexing reads clearer here than iterator chains.
#[allow(clippy::needless_range_loop)]
fn standardise(train: &Features, others: &mut [&mut Features]) -> Features {
    let (n, d) = (train.n, train.d);
    let mut mean = vec![0f64; d];
    let mut var = vec![0f64; d];
    for i in 0..n {
        for j in 0..d {
            mean[j] += train.x[i * d + j] as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n.max(1) as f64);
    for i in 0..n {
        for j in 0..d {
            var[j] += (train.x[i * d + j] as f64 - mean[j]).powi(2);
        }
    }
    let std: Vec<f64> = var
        .iter()
        .map(|v| (v / n.max(1) as f64).sqrt().max(1e-6))
        .collect();
    let apply = |f: &mut Features| {
        for i in 0..f.n {
            for j in 0..d {
                f.x[i * d + j] = ((f.x[i * d + j] as f64 - mean[j]) / std[j]) as f32;
            }
        }
    };
    let mut t = train.clone();
    apply(&mut t);
    for o in others.iter_mut() {
        apply(o);
    }
    t
}

fn to_array(f: &Features, rows: &[usize]) -> Array2<f64> {
    Array2::from_shape_fn((rows.len(), f.d), |(i, j)| f.x[rows[i] * f.d + j] as f64)
}

fn fit(
    x: Array2<f64>,
    y: &[u32],
    alpha: f64,
    iters: u64,
) -> Result<linfa_logistic::MultiFittedLogisticRegression<f64, usize>> {
    let ds = Dataset::new(x, Array1::from_iter(y.iter().map(|&l| l as usize)));
    MultiLogisticRegression::default()
        .alpha(alpha)
        .max_iterations(iters)
        .fit(&ds)
        .map_err(|e| Error::Msg(format!("logistic regression (alpha {alpha}) failed: {e}")))
}

/// Standardise with train statistics, pick the L2 strength on a held-out part of train, refit
/// on all of train, predict test.
pub fn fit_probe(
    train: &Features,
    train_y: &[u32],
    test: &Features,
    s: &ProbeSettings,
) -> Result<ProbeOutcome> {
    if train.d != test.d {
        return Err(Error::Msg(format!(
            "train features have {} dims, test {}",
            train.d, test.d
        )));
    }
    let mut test = test.clone();
    let train = standardise(train, &mut [&mut test]);
    let perm = Rng::derive(s.seed, "probe-val", 0).permutation(train.n);
    let n_val = ((train.n as f64 * s.val_fraction).round() as usize)
        .clamp(1, train.n.saturating_sub(1).max(1));
    let (val_rows, fit_rows) = perm.split_at(n_val);
    let mut val_accuracy = BTreeMap::new();
    let mut best = (f64::NEG_INFINITY, s.l2_grid.first().copied().unwrap_or(1.0));
    for &alpha in &s.l2_grid {
        let y: Vec<u32> = fit_rows.iter().map(|&i| train_y[i]).collect();
        let model = fit(to_array(&train, fit_rows), &y, alpha, s.max_iterations)?;
        let pred = model.predict(&to_array(&train, val_rows));
        let acc = val_rows
            .iter()
            .zip(pred.iter())
            .filter(|(&i, &p)| train_y[i] as usize == p)
            .count() as f64
            / val_rows.len() as f64;
        val_accuracy.insert(format!("{alpha:e}"), acc);
        if acc > best.0 {
            best = (acc, alpha);
        }
    }
    let all: Vec<usize> = (0..train.n).collect();
    let model = fit(to_array(&train, &all), train_y, best.1, s.max_iterations)?;
    let rows: Vec<usize> = (0..test.n).collect();
    let xt = to_array(&test, &rows);
    let probs = model.predict_probabilities(&xt);
    let classes: Vec<u32> = model.classes().iter().map(|&c| c as u32).collect();
    let mut pred = Vec::with_capacity(test.n);
    let mut top5 = Vec::with_capacity(test.n);
    for row in probs.rows() {
        let mut order: Vec<usize> = (0..row.len()).collect();
        // Highest probability first; ties to the lower class id.
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        pred.push(classes[order[0]]);
        top5.push(order.iter().take(5).map(|&k| classes[k]).collect());
    }
    Ok(ProbeOutcome {
        alpha: best.1,
        val_accuracy,
        pred,
        top5,
    })
}

/// Top-1, top-5 (more than 5 classes) and balanced accuracy, with intervals.
pub fn score(
    labels: &[u32],
    out: &ProbeOutcome,
    n_classes: usize,
    tolerance: f64,
    seed: u64,
) -> BTreeMap<String, Metric> {
    let n = labels.len();
    let correct: Vec<bool> = labels.iter().zip(&out.pred).map(|(l, p)| l == p).collect();
    let mut m = BTreeMap::new();
    m.insert(
        "top1".to_string(),
        results::proportion(correct.iter().filter(|&&c| c).count(), n, tolerance),
    );
    if n_classes > 5 {
        let k = labels
            .iter()
            .zip(&out.top5)
            .filter(|(l, t)| t.contains(l))
            .count();
        m.insert("top5".to_string(), results::proportion(k, n, tolerance));
    }
    let balanced = |rows: &[usize]| {
        let mut hit = vec![0usize; n_classes];
        let mut tot = vec![0usize; n_classes];
        for &i in rows {
            tot[labels[i] as usize] += 1;
            hit[labels[i] as usize] += usize::from(correct[i]);
        }
        let present: Vec<f64> = (0..n_classes)
            .filter(|&c| tot[c] > 0)
            .map(|c| hit[c] as f64 / tot[c] as f64)
            .collect();
        present.iter().sum::<f64>() / present.len().max(1) as f64
    };
    let all: Vec<usize> = (0..n).collect();
    let value = balanced(&all);
    // Bootstrap (1000 seeded resamples) for the standard error and percentile interval.
    let mut rng = Rng::derive(seed, "bootstrap", 0);
    let mut boots: Vec<f64> = (0..1000)
        .map(|_| balanced(&(0..n).map(|_| rng.below(n)).collect::<Vec<_>>()))
        .collect();
    boots.sort_by(f64::total_cmp);
    let mean = boots.iter().sum::<f64>() / boots.len() as f64;
    let se =
        (boots.iter().map(|b| (b - mean).powi(2)).sum::<f64>() / (boots.len() - 1) as f64).sqrt();
    m.insert(
        "balanced".to_string(),
        Metric {
            value,
            se,
            ci95: [boots[25], boots[974]],
            n,
            tolerance,
            higher_is_better: true,
        },
    );
    m
}

/// A seeded subset of `n` indices of `set` (all when `limit` is None), in sorted order.
pub fn subset(len: usize, limit: Option<usize>, seed: u64, name: &str) -> Vec<usize> {
    let mut idx = match limit {
        Some(k) if k < len => Rng::derive(seed, name, 0)
            .permutation(len)
            .into_iter()
            .take(k)
            .collect(),
        _ => (0..len).collect::<Vec<_>>(),
    };
    idx.sort();
    idx
}

/// The run folder of a model named in a suite: a configs/<name>.toml is trained once into
/// `$LQAE_CACHE/runs/<name>-<config hash>` (resumed if interrupted); anything else is a run folder.
pub fn ensure_trained(spec: &str, device: &Device, progress: bool) -> Result<PathBuf> {
    let cfg_path = crate::suites::suites_dir()
        .parent()
        .map(|p| p.join("configs").join(format!("{spec}.toml")));
    let cfg_path = cfg_path.filter(|p| p.is_file()).unwrap_or_else(|| {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/configs")).join(format!("{spec}.toml"))
    });
    if !cfg_path.is_file() {
        let p = PathBuf::from(spec);
        return if crate::train::latest_checkpoint(&p)?.is_some() {
            Ok(p)
        } else {
            Err(Error::setting("model", format!("`{spec}` is neither a configuration under configs/ nor a run folder with a checkpoint")))
        };
    }
    let cfg = RunConfig::from_file(&cfg_path, &[])?;
    // The numerics generation is part of the key: a change that moves training's float
    // rounding (e.g. fused kernels) gives a different, equally valid model, and cached models
    // from older code must not be mixed with baselines made by newer code.
    let hash = results::sha256_hex(
        format!(
            "{}\nnumerics {}",
            serde_json::to_string(&cfg).map_err(|e| Error::Msg(e.to_string()))?,
            crate::train::NUMERICS
        )
        .as_bytes(),
    );
    let out = crate::assets::cache_dir()
        .join("runs")
        .join(format!("{}-{}", cfg.name, &hash[..12]));
    let is_done = || -> Result<bool> {
        Ok(crate::train::latest_checkpoint(&out)?
            .and_then(|ck| std::fs::read(ck.join("state.json")).ok())
            .and_then(|b| serde_json::from_slice::<crate::train::CheckpointState>(&b).ok())
            .is_some_and(|s| s.step >= cfg.train.steps))
    };
    if is_done()? {
        return Ok(out);
    }
    // One trainer per run folder: suites started together wait for the first one.
    let runs = out.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(runs).map_err(|e| Error::file(runs, e.to_string()))?;
    let lock_path = runs.join(format!(".{}-{}.lock", cfg.name, &hash[..12]));
    let lock =
        std::fs::File::create(&lock_path).map_err(|e| Error::file(&lock_path, e.to_string()))?;
    lock.lock()
        .map_err(|e| Error::file(&lock_path, format!("cannot lock: {e}")))?;
    if !is_done()? {
        eprintln!(
            "training {} once into {} (cached by its configuration hash)",
            cfg.name,
            out.display()
        );
        crate::train::train(
            &cfg,
            &out,
            device,
            &crate::train::TrainOptions {
                resume: true,
                stop_at: None,
                progress,
            },
        )?;
    }
    Ok(out)
}

pub(crate) fn checkpoint_sha(run: &Path) -> Result<String> {
    let ck =
        crate::train::latest_checkpoint(run)?.ok_or_else(|| Error::file(run, "no checkpoint"))?;
    crate::assets::sha256_file(&ck.join("model.safetensors"))
}

fn cached<F: FnOnce() -> Result<Features>>(key: &str, make: F) -> Result<Features> {
    let dir = crate::assets::cache_dir().join("features");
    let path = dir.join(format!("{key}.f32"));
    if let Ok(bytes) = std::fs::read(&path) {
        if bytes.len() >= 16 {
            let n = u64::from_le_bytes(bytes[0..8].try_into().unwrap()) as usize;
            let d = u64::from_le_bytes(bytes[8..16].try_into().unwrap()) as usize;
            if bytes.len() == 16 + 4 * n * d {
                let x = bytes[16..]
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                return Ok(Features { x, n, d });
            }
        }
    }
    let f = make()?;
    std::fs::create_dir_all(&dir).map_err(|e| Error::file(&dir, e.to_string()))?;
    let mut bytes = Vec::with_capacity(16 + 4 * f.x.len());
    bytes.extend((f.n as u64).to_le_bytes());
    bytes.extend((f.d as u64).to_le_bytes());
    for v in &f.x {
        bytes.extend(v.to_le_bytes());
    }
    crate::assets::write_atomic(&path, &bytes)?;
    Ok(f)
}

/// Run a linear-probe suite and write its result files under `results_root`.
pub fn run(
    suite: &Suite,
    spec: &LinearProbeSpec,
    device: &Device,
    results_root: &Path,
    progress: bool,
) -> Result<(PathBuf, ResultFile)> {
    let t0 = Instant::now();
    let dc = DataConfig {
        dataset: spec.data.dataset.clone(),
        path: spec.data.path.clone(),
        limit: None,
        augment: false,
    };
    let train_set = crate::train::load_data(&dc, Split::Train)?;
    let test_set = crate::train::load_data(&dc, Split::Test)?;
    let seed = spec.probe.seed;
    let tr = subset(train_set.len(), spec.data.train_limit, seed, "probe-train");
    let te = subset(test_set.len(), spec.data.test_limit, seed, "probe-test");
    let tr_y: Vec<u32> = tr.iter().map(|&i| train_set.labels[i]).collect();
    let te_y: Vec<u32> = te.iter().map(|&i| test_set.labels[i]).collect();
    let te_hash = input_hashes(&test_set, &te)?;
    let tr_hash = input_hashes(&train_set, &tr)?;
    let data_sha =
        results::sha256_hex(format!("{}|{}", tr_hash.join(","), te_hash.join(",")).as_bytes());
    let n_classes = train_set.class_names.len();

    let lqae_run = ensure_trained(&spec.model, device, progress)?;
    let (lqae_model, _, lqae_state) = crate::train::load_model(&lqae_run, device)?;
    let Autoencoder::Lqae(lqae) = &lqae_model else {
        return Err(Error::setting(
            "model",
            format!("`{}` is not an LQAE", spec.model),
        ));
    };
    let size = lqae_state.config.model.image_size as u32;
    let layers_key = serde_json::to_string(&spec.probe.layers).unwrap_or_default();
    let mut inputs = BTreeMap::new();
    inputs.insert("data".to_string(), data_sha.clone());
    let lqae_sha = checkpoint_sha(&lqae_run)?;
    inputs.insert("lqae".to_string(), lqae_sha.clone());

    let mut reps: Vec<String> = vec!["lqae".into()];
    reps.extend(spec.baselines.iter().cloned());
    let mut metrics = BTreeMap::new();
    let mut samples = Vec::new();
    let mut extra = serde_json::Map::new();
    for rep in &reps {
        let t_rep = Instant::now();
        if progress {
            eprintln!(
                "  {rep}: features for {} train + {} test images, then the probe",
                tr.len(),
                te.len()
            );
        }
        let key = |what: &str| {
            results::sha256_hex(format!("{rep}|{what}|{data_sha}|{layers_key}|{size}").as_bytes())
        };
        let (ftr, fte) = match rep.as_str() {
            "lqae" => (
                cached(&key(&format!("train|{lqae_sha}")), || {
                    lqae_features(lqae, &train_set, &tr, size, &spec.probe.layers, device)
                })?,
                cached(&key(&format!("test|{lqae_sha}")), || {
                    lqae_features(lqae, &test_set, &te, size, &spec.probe.layers, device)
                })?,
            ),
            "pixels" => (
                cached(&key("train"), || pixel_features(&train_set, &tr, size))?,
                cached(&key("test"), || pixel_features(&test_set, &te, size))?,
            ),
            "random-encoder" => {
                let (m, _) = Autoencoder::build(
                    &lqae_state.config.model,
                    lqae_state.config.train.seed,
                    device,
                )?;
                let Autoencoder::Lqae(m) = &m else {
                    unreachable!("built from an LQAE config")
                };
                (
                    cached(&key("train|init"), || {
                        lqae_features(m, &train_set, &tr, size, &spec.probe.layers, device)
                    })?,
                    cached(&key("test|init"), || {
                        lqae_features(m, &test_set, &te, size, &spec.probe.layers, device)
                    })?,
                )
            }
            "vqvae" => {
                let name = spec.vqvae.as_deref().ok_or_else(|| {
                    Error::setting(
                        "vqvae",
                        "baseline `vqvae` needs `vqvae = \"<config or run folder>\"`",
                    )
                })?;
                let run = ensure_trained(name, device, progress)?;
                let sha = checkpoint_sha(&run)?;
                inputs.insert("vqvae".to_string(), sha.clone());
                let (m, _, _) = crate::train::load_model(&run, device)?;
                let Autoencoder::Vqvae(vq) = &m else {
                    return Err(Error::setting("vqvae", format!("`{name}` is not a VQ-VAE")));
                };
                (
                    cached(&key(&format!("train|{sha}")), || {
                        vqvae_features(
                            vq,
                            lqae.lm(),
                            &train_set,
                            &tr,
                            size,
                            &spec.probe.layers,
                            device,
                        )
                    })?,
                    cached(&key(&format!("test|{sha}")), || {
                        vqvae_features(
                            vq,
                            lqae.lm(),
                            &test_set,
                            &te,
                            size,
                            &spec.probe.layers,
                            device,
                        )
                    })?,
                )
            }
            other => {
                return Err(Error::setting(
                    "baselines",
                    format!("unknown baseline `{other}`; known: pixels, vqvae, random-encoder"),
                ))
            }
        };
        let out = fit_probe(&ftr, &tr_y, &fte, &spec.probe)?;
        if progress {
            eprintln!(
                "  {rep}: {} features, L2 {}, {:.0} s",
                ftr.d,
                out.alpha,
                t_rep.elapsed().as_secs_f64()
            );
        }
        for (k, v) in score(&te_y, &out, n_classes, spec.tolerance, seed) {
            metrics.insert(format!("{rep}/{k}"), v);
        }
        extra.insert(rep.clone(), serde_json::json!({"features": ftr.d, "l2": out.alpha, "val_accuracy": out.val_accuracy}));
        for (j, &i) in te.iter().enumerate() {
            samples.push(Sample {
                rep: rep.clone(),
                index: i,
                input_sha256: te_hash[j].clone(),
                label: te_y[j],
                pred: out.pred[j],
                correct: out.pred[j] == te_y[j],
                top5: out.top5[j].contains(&te_y[j]),
            });
        }
    }
    let mut seeds = BTreeMap::new();
    seeds.insert("probe".to_string(), seed);
    seeds.insert("lqae_train".to_string(), lqae_state.config.train.seed);
    let samples_sha256 = results::sha256_hex(te_hash.join(",").as_bytes());
    extra.insert("train_n".into(), tr.len().into());
    extra.insert("test_n".into(), te.len().into());
    extra.insert("classes".into(), train_set.class_names.clone().into());
    let result = ResultFile::finish(
        suite,
        device,
        t0,
        results::Measured {
            seeds,
            inputs_sha256: inputs,
            samples_sha256,
            metrics,
            extra,
        },
    )?;
    let dir = results::write_run(results_root, &result, &samples)?;
    Ok((dir, result))
}
