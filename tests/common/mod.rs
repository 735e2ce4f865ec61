//! Shared test helpers: the real MiniLM assets, and a tiny random RoBERTa-layout checkpoint.
#![allow(dead_code)]

pub mod browser;

use candle_core::{Device, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The real MiniLM folder, fetched by the project's own asset code (never skipped: a failure to
/// fetch fails the test with the fetcher's message).
pub fn minilm_dir() -> PathBuf {
    lqae::assets::ensure(&lqae::assets::MINILM)
        .unwrap_or_else(|e| panic!("fetching MiniLM for the tests failed: {e}"))
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

pub fn randn(rng: &mut StdRng, shape: &[usize], std: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| {
            let (u1, u2): (f32, f32) = (rng.random::<f32>().max(1e-7), rng.random());
            std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Shape of the tiny RoBERTa: byte-level BPE vocab of 4 specials + 256 bytes + 3 merges + <mask>.
pub const TINY_VOCAB: usize = 264;
pub const TINY_HIDDEN: usize = 32;
pub const TINY_MAX_TOKENS: usize = 16;

pub struct TinyRoberta {
    pub config: serde_json::Value,
    pub tensors: HashMap<String, Tensor>,
    pub tokenizer: serde_json::Value,
}

/// GPT-2's printable char for each byte.
fn byte_char(b: u8) -> char {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    if printable(b as u32) {
        return char::from(b);
    }
    let k = (0u32..b as u32).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + k).unwrap()
}

impl TinyRoberta {
    pub fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let (v, h, i, layers) = (TINY_VOCAB, TINY_HIDDEN, 64, 2);
        let max_pos = TINY_MAX_TOKENS + 2;
        let config = serde_json::json!({
            "architectures": ["RobertaForMaskedLM"], "model_type": "roberta",
            "vocab_size": v, "hidden_size": h, "num_hidden_layers": layers, "num_attention_heads": 4,
            "intermediate_size": i, "hidden_act": "gelu", "max_position_embeddings": max_pos,
            "type_vocab_size": 1, "layer_norm_eps": 1e-5, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
            "position_embedding_type": "absolute"
        });
        let mut t = HashMap::new();
        let mut put = |name: &str, shape: &[usize], std: f32, rng: &mut StdRng| {
            t.insert(format!("roberta.{name}"), randn(rng, shape, std));
        };
        put("embeddings.word_embeddings.weight", &[v, h], 0.5, &mut rng);
        put(
            "embeddings.position_embeddings.weight",
            &[max_pos, h],
            0.5,
            &mut rng,
        );
        put(
            "embeddings.token_type_embeddings.weight",
            &[1, h],
            0.5,
            &mut rng,
        );
        put("embeddings.LayerNorm.weight", &[h], 0.1, &mut rng);
        put("embeddings.LayerNorm.bias", &[h], 0.1, &mut rng);
        for l in 0..layers {
            let p = format!("encoder.layer.{l}.");
            for n in [
                "attention.self.query",
                "attention.self.key",
                "attention.self.value",
                "attention.output.dense",
            ] {
                put(&format!("{p}{n}.weight"), &[h, h], 0.2, &mut rng);
                put(&format!("{p}{n}.bias"), &[h], 0.1, &mut rng);
            }
            put(
                &format!("{p}intermediate.dense.weight"),
                &[i, h],
                0.2,
                &mut rng,
            );
            put(&format!("{p}intermediate.dense.bias"), &[i], 0.1, &mut rng);
            put(&format!("{p}output.dense.weight"), &[h, i], 0.2, &mut rng);
            put(&format!("{p}output.dense.bias"), &[h], 0.1, &mut rng);
            for n in ["attention.output.LayerNorm", "output.LayerNorm"] {
                put(&format!("{p}{n}.weight"), &[h], 0.1, &mut rng);
                put(&format!("{p}{n}.bias"), &[h], 0.1, &mut rng);
            }
        }
        // Shift LayerNorm gains around 1.
        for (k, w) in t.iter_mut() {
            if k.ends_with("LayerNorm.weight") {
                *w = (&*w + 1.0).unwrap();
            }
        }
        // A checkpoint usually carries its MLM head too; the encoder must ignore it.
        t.insert(
            "lm_head.bias".into(),
            Tensor::zeros(v, candle_core::DType::F32, &Device::Cpu).unwrap(),
        );

        let mut vocab = serde_json::Map::new();
        for (id, s) in ["<s>", "<pad>", "</s>", "<unk>"].iter().enumerate() {
            vocab.insert(s.to_string(), id.into());
        }
        for b in 0..=255u8 {
            vocab.insert(byte_char(b).to_string(), (4 + b as usize).into());
        }
        for (k, s) in ["Ġt", "Ġth", "Ġthe"].iter().enumerate() {
            vocab.insert(s.to_string(), (260 + k).into());
        }
        vocab.insert("<mask>".into(), 263.into());
        let special = |id: usize, content: &str| {
            serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": content == "<mask>",
                "rstrip": false, "normalized": false, "special": true})
        };
        let tokenizer = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": [special(0, "<s>"), special(1, "<pad>"), special(2, "</s>"), special(3, "<unk>"), special(263, "<mask>")],
            "normalizer": null,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
            "post_processor": {"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 0], "trim_offsets": true, "add_prefix_space": false},
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "", "end_of_word_suffix": "",
                "fuse_unk": false, "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": ["Ġ t", "Ġt h", "Ġth e"]}
        });
        Self {
            config,
            tensors: t,
            tokenizer,
        }
    }

    pub fn tensor(&self, name: &str) -> &Tensor {
        &self.tensors[&format!("roberta.{name}")]
    }

    pub fn write(&self, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_string_pretty(&self.config).unwrap(),
        )
        .unwrap();
        std::fs::write(
            dir.join("tokenizer.json"),
            serde_json::to_string(&self.tokenizer).unwrap(),
        )
        .unwrap();
        candle_core::safetensors::save(&self.tensors, dir.join("model.safetensors")).unwrap();
    }
}

/// Write `{train,t10k}-{images-idx3,labels-idx1}-ubyte` (uncompressed) with `n` images of
/// `size x size`: a bright rectangle at a seeded place on a dark background, label = quadrant.
pub fn write_idx_fixture(dir: &Path, n: usize, size: usize, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    for stem in ["train", "t10k"] {
        let mut img = vec![0u8, 0, 8, 3];
        for d in [n as u32, size as u32, size as u32] {
            img.extend_from_slice(&d.to_be_bytes());
        }
        let mut lab = vec![0u8, 0, 8, 1];
        lab.extend_from_slice(&(n as u32).to_be_bytes());
        for _ in 0..n {
            let (x0, y0) = (rng.random_range(0..size / 2), rng.random_range(0..size / 2));
            let (w, h) = (rng.random_range(2..size / 2), rng.random_range(2..size / 2));
            for y in 0..size {
                for x in 0..size {
                    let inside = (x0..x0 + w).contains(&x) && (y0..y0 + h).contains(&y);
                    img.push(if inside { 220 } else { 20 });
                }
            }
            lab.push(u8::from(x0 >= size / 4) + 2 * u8::from(y0 >= size / 4));
        }
        std::fs::write(dir.join(format!("{stem}-images-idx3-ubyte")), img).unwrap();
        std::fs::write(dir.join(format!("{stem}-labels-idx1-ubyte")), lab).unwrap();
    }
}

/// A tiny LQAE run configuration on the tiny RoBERTa and an IDX fixture, both written under `dir`.
/// Train the tiny LQAE of [`tiny_lqae_config`] for `steps` steps into `dir/run` (LM and IDX
/// fixture in `dir`); returns the run folder.
pub fn train_tiny_lqae(dir: &Path, steps: usize) -> PathBuf {
    let text = tiny_lqae_config(dir, steps, steps);
    let cfg = lqae::model::RunConfig::from_toml_str(&text, &dir.join("tiny.toml"), &[]).unwrap();
    let run = dir.join("run");
    lqae::train::train(
        &cfg,
        &run,
        &Device::Cpu,
        &lqae::train::TrainOptions {
            resume: false,
            stop_at: None,
            progress: false,
        },
    )
    .unwrap();
    run
}

pub fn tiny_lqae_config(dir: &Path, steps: usize, ckpt_every: usize) -> String {
    TinyRoberta::new(11).write(&dir.join("lm"));
    write_idx_fixture(&dir.join("data"), 64, 16, 5);
    format!(
        r#"name = "tiny"
[model]
kind = "lqae"
image_size = 16
patch_size = 4
width = 16
enc_depth = 1
dec_depth = 1
heads = 2
mlp_dim = 32
lm = "{lm}"
mask_ratio = 0.5
commitment = 0.01
mlm = "tied"
[data]
dataset = "idx"
path = "{data}"
augment = true
[train]
batch_size = 4
steps = {steps}
warmup_steps = 2
lr = 3e-3
log_every = 1
ckpt_every = {ckpt_every}
"#,
        lm = dir.join("lm").display(),
        data = dir.join("data").display()
    )
}

/// Compare autograd's `grad` with central finite differences of `loss_of` around `x0` (both
/// `(b, t, d)`) at the coordinates `at`: |fd - autograd| must stay under `rel * max(|autograd|, floor)`.
pub fn check_gradient(
    loss_of: &dyn Fn(&Tensor) -> Tensor,
    x0: &Tensor,
    grad: &Tensor,
    at: &[(usize, usize, usize)],
    eps: f32,
    rel: f32,
    floor: f32,
) {
    let (nb, nt, nd) = x0.dims3().unwrap();
    for &(b, t, d) in at {
        let mut bump = vec![0f32; nb * nt * nd];
        bump[(b * nt + t) * nd + d] = eps;
        let bump = Tensor::from_vec(bump, (nb, nt, nd), x0.device()).unwrap();
        let lp = loss_of(&(x0 + &bump).unwrap()).to_scalar::<f32>().unwrap();
        let lm = loss_of(&(x0 - &bump).unwrap()).to_scalar::<f32>().unwrap();
        let fd = (lp - lm) / (2.0 * eps);
        let an = grad
            .get(b)
            .unwrap()
            .get(t)
            .unwrap()
            .get(d)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            (fd - an).abs() < rel * an.abs().max(floor),
            "x[{b},{t},{d}]: autograd {an}, finite difference {fd}"
        );
    }
}

/// The keys of a response cache file's answers, in file order (a torn line left out).
pub fn cache_keys(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["key"].as_str().unwrap().to_string())
        .collect()
}

/// A result of the current schema with the given identity, configuration and metrics (no
/// extra; provenance fixed), for tests of the pages and reports.
pub fn result_file(
    suite: &str,
    kind: &str,
    run_id: &str,
    config: serde_json::Value,
    metrics: std::collections::BTreeMap<String, lqae::eval::results::Metric>,
) -> lqae::eval::results::ResultFile {
    lqae::eval::results::ResultFile {
        schema: lqae::eval::results::SCHEMA.into(),
        suite: suite.into(),
        kind: kind.into(),
        run_id: run_id.into(),
        created_unix: 1_796_000_000,
        config,
        seeds: Default::default(),
        crate_version: "0".into(),
        git_commit: "0123456789abcdef".into(),
        device: "cpu".into(),
        blas: String::new(),
        wall_time_s: 1.0,
        inputs_sha256: Default::default(),
        samples_sha256: format!("samples-of-{run_id}"),
        metrics,
        extra: serde_json::json!({}),
    }
}

/// Floats as their bits, for comparisons that must be exact.
pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// `n` floats in [-1, 1) from a xorshift stream of `seed` (the BLAS tests' operands).
pub fn fill(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}
