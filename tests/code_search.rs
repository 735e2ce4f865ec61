//! Code ids that do not depend on the machine's arithmetic: real Fashion-MNIST test images
//! through the shipped `lqae-fmnist` and through the untrained LQAE the random-encoder probe
//! builds (its configuration and seed), searched over the whole MiniLM vocabulary under every
//! BLAS backend (`LQAE_BLAS=off`, `openblas`, `mkl`), one and two threads, and three tilings of
//! the product, each in its own process (the backend is chosen once per process). For the same
//! encoder outputs the ids must be the same everywhere (the search's promise); end to end (each
//! process also runs the encoder under its own backend, whose outputs differ in their last bits)
//! the differing ids are counted and bounded at 1%. The f32 search without the
//! f64 re-scoring (`tie_margin = 0`) is run beside it and how often it disagrees is printed.
//! One test per binary: the children re-run this binary.

use candle_core::{Device, Tensor};
use lqae::data::select::{load, DataConfig};
use lqae::data::Split;
use lqae::model::{Autoencoder, Lqae};
use lqae::quantizer::{Quantizer, QuantizerConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const CHILD: &str = "LQAE_CODE_SEARCH_CHILD";
const IMAGES: usize = 32;
const TILINGS: [usize; 3] = [1 << 22, 1 << 16, 5_000];

/// The shipped model and the untrained one of the same configuration and seed.
fn models() -> Vec<(&'static str, Lqae)> {
    let zoo = lqae::eval::Zoo::new(&Device::Cpu, false);
    let t = zoo
        .load("lqae-fmnist")
        .expect("the shipped lqae-fmnist loads");
    let cfg = t.state.config.clone();
    let Autoencoder::Lqae(shipped) = t.model else {
        panic!("lqae-fmnist is an LQAE")
    };
    let (init, _) = Autoencoder::build(&cfg.model, cfg.train.seed, &Device::Cpu).unwrap();
    let Autoencoder::Lqae(init) = init else {
        panic!("built from an LQAE config")
    };
    vec![("lqae-fmnist", shipped), ("random-encoder", init)]
}

fn images() -> Tensor {
    let d = DataConfig {
        dataset: "fashion-mnist".into(),
        path: None,
        limit: None,
        augment: false,
    };
    let set = load(&d, Split::Test).unwrap();
    let idx: Vec<usize> = (0..IMAGES).map(|i| i * 97 % set.len()).collect();
    lqae::data::batch::make_batch(&set, &idx, 32, None, &Device::Cpu).unwrap()
}

fn search(m: &Lqae, z: &Tensor, cfg: QuantizerConfig) -> Vec<u32> {
    Quantizer::new(m.lm().word_embeddings(), cfg)
        .unwrap()
        .nearest(z)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn f32_file(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// One process's figures: per model, the end-to-end ids, the ids for the parent's encoder
/// outputs under each tiling, the same without re-scoring, and whether its encoder outputs were
/// bit-identical to the parent's.
fn child(dir: &Path, tag: &str) {
    let x = images();
    let mut out = serde_json::Map::new();
    for (name, m) in models() {
        let (z_own, _) = m.encode_continuous(&x).unwrap();
        let dims = z_own.dims().to_vec();
        let z =
            Tensor::from_vec(f32_file(&dir.join(format!("{name}.z"))), dims, &Device::Cpu).unwrap();
        let same_z = z_own.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            == z.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let tiled: Vec<Vec<u32>> = TILINGS
            .iter()
            .map(|&b| {
                let cfg = QuantizerConfig {
                    max_block_elems: b,
                    ..Default::default()
                };
                search(&m, &z, cfg)
            })
            .collect();
        let plain = search(
            &m,
            &z,
            QuantizerConfig {
                tie_margin: 0.0,
                ..Default::default()
            },
        );
        out.insert(
            name.into(),
            serde_json::json!({
                "end_to_end": search(&m, &z_own, QuantizerConfig::default()),
                "tiled": tiled,
                "plain": plain,
                "same_z": same_z,
                "backend": lqae::kernels::blas::backend_name(),
            }),
        );
    }
    std::fs::write(
        dir.join(format!("{tag}.json")),
        serde_json::to_vec(&out).unwrap(),
    )
    .unwrap();
}

#[test]
fn ids_are_the_same_under_every_backend_thread_count_and_tiling() {
    if let Ok(spec) = std::env::var(CHILD) {
        let (dir, tag) = spec.split_once('|').expect("dir|tag");
        child(Path::new(dir), tag);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let x = images();
    for (name, m) in models() {
        let (z, _) = m.encode_continuous(&x).unwrap();
        let bytes: Vec<u8> = z
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        std::fs::write(dir.path().join(format!("{name}.z")), bytes).unwrap();
    }
    let exe = std::env::current_exe().unwrap();
    let mut runs: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for backend in ["off", "openblas", "mkl"] {
        for threads in ["1", "2"] {
            let tag = format!("{backend}-{threads}t");
            let spec = format!("{}|{tag}", dir.path().display());
            let st = Command::new(&exe)
                .args([
                    "ids_are_the_same_under_every_backend_thread_count_and_tiling",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD, spec)
                .env("LQAE_BLAS", backend)
                .env("RAYON_NUM_THREADS", threads)
                // The child's own "test result" line would count as a test of this run.
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(st.success(), "child {tag} failed");
            let p: PathBuf = dir.path().join(format!("{tag}.json"));
            runs.insert(
                tag,
                serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap(),
            );
        }
    }
    for name in ["lqae-fmnist", "random-encoder"] {
        let (first_tag, first) = runs.iter().next().unwrap();
        let want = &first[name]["tiled"][0];
        let tokens = want.as_array().unwrap().len();
        assert_eq!(tokens, IMAGES * 64, "{name}: 64 tokens per image");
        let ids = |v: &serde_json::Value| -> Vec<u64> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_u64().unwrap())
                .collect()
        };
        let (want_ids, first_e2e) = (ids(want), ids(&first[name]["end_to_end"]));
        for (tag, r) in &runs {
            let r = &r[name];
            assert!(
                r["backend"].as_str().unwrap().starts_with(
                    tag.split('-')
                        .next()
                        .unwrap()
                        .replace("off", "gemm")
                        .as_str()
                ),
                "{tag} ran {}",
                r["backend"]
            );
            for (k, t) in r["tiled"].as_array().unwrap().iter().enumerate() {
                let got = ids(t);
                let differ = got.iter().zip(&want_ids).filter(|(a, b)| a != b).count();
                assert_eq!(
                    differ, 0,
                    "{name}: {differ} of {tokens} ids differ between {tag} (tiling {}) and {first_tag} for the same encoder outputs",
                    TILINGS[k]
                );
            }
            let e2e = ids(&r["end_to_end"]);
            let differ = e2e.iter().zip(&first_e2e).filter(|(a, b)| a != b).count();
            let plain = ids(&r["plain"]);
            let plain_differ = plain.iter().zip(&want_ids).filter(|(a, b)| a != b).count();
            eprintln!(
                "{name} {tag}: encoder outputs {} the parent's; end-to-end ids differ from {first_tag} in {differ} of {tokens}; the f32 search alone differs from the settled ids in {plain_differ}",
                if r["same_z"].as_bool().unwrap() { "equal" } else { "differ from" }
            );
            // The encoders' own outputs differ in their last bits between backends, so equal
            // ids end to end are a property of these images, not a promise of the rule (it was
            // 0 of 2048 for both models when this test was written): a bound, not equality.
            assert!(
                differ * 100 <= tokens,
                "{name}: {differ} of {tokens} end-to-end ids differ between {tag} and {first_tag}"
            );
        }
    }
}
