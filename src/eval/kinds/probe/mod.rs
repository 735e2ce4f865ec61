//! The linear-probe suite: features from the frozen LM over an image's tokens (mean-pooled
//! per layer, layers concatenated), standardised with train statistics, and a multinomial
//! logistic regression (linfa-logistic) whose L2 strength is chosen on a held-out part of the
//! train split. Scored on the test split beside baselines on identical splits: raw pixels,
//! the VQ-VAE's codes through the same LM, and an untrained LQAE encoder.

pub mod features;
pub mod fit;
pub mod spec;

pub use crate::eval::zoo::Features;
pub use features::{
    code_to_token_map, file_features, lqae_features, pixel_features, vqvae_features,
};
pub use fit::{fit_probe, score, ProbeOutcome};
pub use spec::{
    Baseline, CheckedProbe, LayerSel, Layers, LinearProbeSpec, ProbeSettings, ProbeTokens,
};

use crate::data::{input_hashes, subset, LabelledImages, Split};
use crate::error::Result;
use crate::eval::results::{Measured, Sample};
use crate::eval::suite_kind::{Ctx, Outcome, SuiteKind};
use crate::eval::zoo::Trained;
use crate::model::{Autoencoder, Lqae};
use crate::util::fsx::sha256_hex;
use std::collections::BTreeMap;
use std::time::Instant;

pub struct LinearProbe;

impl SuiteKind for LinearProbe {
    const NAME: &'static str = "linear-probe";
    const HEADLINE: &'static [&'static str] = &["top1", "top5", "balanced"];
    type Spec = LinearProbeSpec;
    type Checked = CheckedProbe;
    fn check(spec: LinearProbeSpec) -> std::result::Result<CheckedProbe, Vec<String>> {
        spec.check()
    }
    fn run(spec: &CheckedProbe, cx: &Ctx) -> Result<Outcome> {
        run(spec, cx)
    }
}

/// The two splits, their seeded subsets and the hashes that identify them.
struct Splits {
    train: LabelledImages,
    test: LabelledImages,
    tr: Vec<usize>,
    te: Vec<usize>,
    tr_y: Vec<u32>,
    te_y: Vec<u32>,
    te_hash: Vec<String>,
    data_sha: String,
}

fn splits(spec: &CheckedProbe) -> Result<Splits> {
    let train = spec.data.load(Split::Train)?;
    let test = spec.data.load(Split::Test)?;
    let seed = spec.probe.seed;
    let tr = subset(train.len(), spec.data.train_limit, seed, "probe-train");
    let te = subset(test.len(), spec.data.test_limit, seed, "probe-test");
    let tr_y = tr.iter().map(|&i| train.labels[i]).collect();
    let te_y = te.iter().map(|&i| test.labels[i]).collect();
    let te_hash = input_hashes(&test, &te)?;
    let tr_hash = input_hashes(&train, &tr)?;
    let data_sha = sha256_hex(format!("{}|{}", tr_hash.join(","), te_hash.join(",")).as_bytes());
    Ok(Splits {
        train,
        test,
        tr,
        te,
        tr_y,
        te_y,
        te_hash,
        data_sha,
    })
}

/// The generation of the probe's feature numerics: raise it with any change that moves the
/// features' numbers (the LM or encoder forward, the pooling, the kernels), so that features
/// cached by older code are computed again rather than mixed with new results.
/// 3: the code search settles near ties in f64 (`quantizer::SEARCH_RULE`).
pub const FEATURES_NUMERICS: u32 = 3;

/// The feature cache's key: the representation, what computed it (a model's sha256, a tokens
/// file's, an untrained model's [`init_tag`]), the images (their hashes), the layers, the input
/// size, and the numerics generations of training and of the features.
fn feature_key(rep: &str, what: &str, data_sha: &str, layers: &str, size: u32) -> String {
    sha256_hex(
        format!(
            "{rep}|{what}|{data_sha}|{layers}|{size}|train-numerics-{}|features-{FEATURES_NUMERICS}",
            crate::train::NUMERICS
        )
        .as_bytes(),
    )
}

/// What an untrained LQAE is made of: its model configuration and seed.
fn init_tag(model_config_json: &str, seed: u64) -> String {
    format!(
        "init|{}|seed-{seed}",
        sha256_hex(model_config_json.as_bytes())
    )
}

/// Train and test features of one representation, from the zoo's feature cache.
fn features_of(
    rep: Baseline,
    spec: &CheckedProbe,
    cx: &Ctx,
    lqae: &Trained,
    d: &Splits,
    key: &dyn Fn(&str) -> String,
    inputs: &mut BTreeMap<String, String>,
) -> Result<(Features, Features)> {
    let size = lqae.state.config.model.image_size as u32;
    let (zoo, device, layers) = (cx.zoo, cx.device, &spec.layers);
    let lqae_pair = |m: &Lqae, tag: &str| -> Result<(Features, Features)> {
        Ok((
            zoo.features(&key(&format!("train|{tag}")), || {
                lqae_features(m, &d.train, &d.tr, size, layers, device)
            })?,
            zoo.features(&key(&format!("test|{tag}")), || {
                lqae_features(m, &d.test, &d.te, size, layers, device)
            })?,
        ))
    };
    match rep {
        Baseline::Pixels => Ok((
            zoo.features(&key("train"), || pixel_features(&d.train, &d.tr, size))?,
            zoo.features(&key("test"), || pixel_features(&d.test, &d.te, size))?,
        )),
        Baseline::RandomEncoder => {
            let cfg = &lqae.state.config;
            let (m, _) = Autoencoder::build(&cfg.model, cfg.train.seed, device)?;
            let Autoencoder::Lqae(m) = &m else {
                unreachable!("built from an LQAE config")
            };
            // The untrained model is a function of its configuration and seed: both in the key
            // (a key of "init" alone let features of older code and other models stand).
            let tag = init_tag(&serde_json::to_string(&cfg.model)?, cfg.train.seed);
            lqae_pair(m, &tag)
        }
        Baseline::Vqvae => {
            let name = spec.vqvae.as_deref().expect("checked: vqvae is set");
            let t = zoo.load_for(name, &spec.data, "vqvae")?;
            inputs.insert("vqvae".to_string(), t.sha256.clone());
            let vq = t.vqvae("vqvae")?;
            let lm = lqae.lqae("model", "")?.lm();
            let sha = &t.sha256;
            Ok((
                zoo.features(&key(&format!("train|{sha}")), || {
                    vqvae_features(vq, lm, &d.train, &d.tr, size, layers, device)
                })?,
                zoo.features(&key(&format!("test|{sha}")), || {
                    vqvae_features(vq, lm, &d.test, &d.te, size, layers, device)
                })?,
            ))
        }
    }
}

/// Run a linear-probe suite: the LQAE, then each baseline, on identical splits.
fn run(spec: &CheckedProbe, cx: &Ctx) -> Result<Outcome> {
    let d = splits(spec)?;
    let seed = spec.probe.seed;
    let n_classes = d.train.class_names.len();
    let lqae = cx.zoo.load_for(&spec.model, &spec.data, "model")?;
    let lqae_m = lqae.lqae("model", "")?;
    let size = lqae.state.config.model.image_size as u32;
    let layers_key = serde_json::to_string(&spec.probe.layers).unwrap_or_default();
    let mut inputs = BTreeMap::new();
    inputs.insert("data".to_string(), d.data_sha.clone());
    inputs.insert("lqae".to_string(), lqae.sha256.clone());
    let file = spec
        .tokens
        .as_ref()
        .map(|t| {
            crate::eval::tokens_file::open(
                &t.file,
                t.file_tokens.as_deref(),
                &lqae.state.config.model.lm_name(),
                lqae_m.lm().vocab().len(),
                cx.progress,
                "lqae: ",
            )
        })
        .transpose()?;
    if let Some((p, _)) = &file {
        inputs.insert("tokens_file".to_string(), p.sha256.clone());
    }

    let mut reps: Vec<Option<Baseline>> = vec![None];
    reps.extend(spec.baseline_reps.iter().copied().map(Some));
    let mut metrics = BTreeMap::new();
    let mut samples = Vec::new();
    let mut extra = serde_json::Map::new();
    for rep in reps {
        let name = rep.map_or("lqae", Baseline::name);
        let t_rep = Instant::now();
        cx.progress.line(&format!(
            "  {name}: features for {} train + {} test images, then the probe",
            d.tr.len(),
            d.te.len()
        ));
        let data_sha = &d.data_sha;
        let key = |what: &str| feature_key(name, what, data_sha, &layers_key, size);
        let (ftr, fte) = match (rep, &file) {
            (None, Some((p, field))) => {
                let what = format!("{}|{}", p.sha256, field.name());
                let lm = lqae_m.lm();
                let feats = |split: Split, set: &LabelledImages, idx: &[usize]| {
                    let tag = if split == Split::Train {
                        "train"
                    } else {
                        "test"
                    };
                    cx.zoo.features(&key(&format!("{tag}|tokens|{what}")), || {
                        file_features(lm, p, *field, set, split, idx, &spec.layers, cx.device)
                    })
                };
                (
                    feats(Split::Train, &d.train, &d.tr)?,
                    feats(Split::Test, &d.test, &d.te)?,
                )
            }
            (None, None) => {
                let sha = &lqae.sha256;
                (
                    cx.zoo.features(&key(&format!("train|{sha}")), || {
                        lqae_features(lqae_m, &d.train, &d.tr, size, &spec.layers, cx.device)
                    })?,
                    cx.zoo.features(&key(&format!("test|{sha}")), || {
                        lqae_features(lqae_m, &d.test, &d.te, size, &spec.layers, cx.device)
                    })?,
                )
            }
            (Some(b), _) => features_of(b, spec, cx, &lqae, &d, &key, &mut inputs)?,
        };
        let out = fit_probe(&ftr, &d.tr_y, &fte, &spec.probe)?;
        cx.progress.line(&format!(
            "  {name}: {} features, L2 {}, {:.0} s",
            ftr.d,
            out.alpha,
            t_rep.elapsed().as_secs_f64()
        ));
        for (k, v) in score(&d.te_y, &out, n_classes, spec.tolerance, seed) {
            metrics.insert(format!("{name}/{k}"), v);
        }
        extra.insert(name.to_string(), serde_json::json!({"features": ftr.d, "l2": out.alpha, "val_accuracy": out.val_accuracy}));
        for (j, &i) in d.te.iter().enumerate() {
            samples.push(Sample {
                rep: name.to_string(),
                index: i,
                input_sha256: d.te_hash[j].clone(),
                label: d.te_y[j],
                pred: out.pred[j],
                correct: out.pred[j] == d.te_y[j],
                top5: out.top5[j].contains(&d.te_y[j]),
            });
        }
    }
    let mut seeds = BTreeMap::new();
    seeds.insert("probe".to_string(), seed);
    seeds.insert("lqae_train".to_string(), lqae.state.config.train.seed);
    if let Some((p, f)) = &file {
        extra.insert("tokens_file".into(), p.record(*f));
    }
    extra.insert("train_n".into(), d.tr.len().into());
    extra.insert("test_n".into(), d.te.len().into());
    extra.insert("classes".into(), d.train.class_names.clone().into());
    let mut outcome = Outcome::new(Measured {
        seeds,
        inputs_sha256: inputs,
        samples_sha256: sha256_hex(d.te_hash.join(",").as_bytes()),
        metrics,
        extra,
    });
    outcome.samples = samples;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every input of a cached feature matrix is in its key: changing any one of them misses
    /// the cache (the untrained encoder's configuration and seed included: their absence let a
    /// stale random-encoder baseline stand).
    #[test]
    fn every_input_of_the_features_is_in_their_key() {
        let base = (
            "random-encoder",
            init_tag("{\"dim\":64}", 0),
            "data",
            "[-1]",
            32u32,
        );
        let key = |k: &(&str, String, &str, &str, u32)| feature_key(k.0, &k.1, k.2, k.3, k.4);
        let variants = [
            base.clone(),
            ("lqae", base.1.clone(), base.2, base.3, base.4),
            (base.0, init_tag("{\"dim\":96}", 0), base.2, base.3, base.4),
            (base.0, init_tag("{\"dim\":64}", 1), base.2, base.3, base.4),
            (base.0, base.1.clone(), "other data", base.3, base.4),
            (base.0, base.1.clone(), base.2, "[-2]", base.4),
            (base.0, base.1.clone(), base.2, base.3, 28),
        ];
        let keys: std::collections::BTreeSet<String> = variants.iter().map(key).collect();
        assert_eq!(keys.len(), variants.len());
        // The numerics generations are in it too (a key from before them cannot be hit).
        let old = sha256_hex(b"random-encoder|init|data|[-1]|32");
        assert!(!keys.contains(&old));
        assert_eq!(key(&base), key(&base.clone()), "deterministic");
    }
}
