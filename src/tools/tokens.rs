//! `lqae-eval tokens`: Fashion-MNIST test images turned into text tokens of the frozen LM by an
//! untrained (seeded random) patch projection, the demonstration that predates a trained LQAE.
//! A trained model's tokens come from `lqae-eval encode`.

use crate::data::{self, ImageSource, Split, FASHION_MNIST_CLASSES};
use crate::error::{Error, Result};
use crate::lm::FrozenLm;
use crate::quantizer::{Quantizer, QuantizerConfig};
use crate::rng::Rng;
use candle_core::{Device, Tensor};
use std::path::Path;

/// What `tokens` found: a header, one line per image, and the distinct token count.
pub struct TokensReport {
    pub header: Vec<String>,
    pub lines: Vec<String>,
    pub distinct: usize,
}

/// Deterministic N(0, 1) numbers: SplitMix64 from the raw seed, then Box-Muller.
pub fn gaussian(seed: u64, n: usize) -> Vec<f32> {
    Rng::from_state(seed).normal_vec(n, 1.0)
}

/// The first `n` test images, `patch` x `patch` patches through a random projection (seed
/// `seed`), nearest LM rows; at most 24 tokens shown per image.
pub fn tokens(
    n: usize,
    lm_dir: &Path,
    data_dir: &Path,
    patch: usize,
    seed: u64,
    device: &Device,
) -> Result<TokensReport> {
    let lm = FrozenLm::load(lm_dir, device)?;
    let test = data::load_mnist_like(data_dir, Split::Test, &FASHION_MNIST_CLASSES)?;
    let ImageSource::Grey(im) = &test.source else {
        return Err(Error::Msg("Fashion-MNIST is loaded as grey images".into()));
    };
    if patch == 0 || im.rows % patch != 0 || im.cols % patch != 0 {
        return Err(Error::setting(
            "--patch",
            format!("{patch} does not divide the {}x{} images", im.rows, im.cols),
        ));
    }
    let n = n.min(im.n);
    let (gh, gw, pd, h) = (
        im.rows / patch,
        im.cols / patch,
        patch * patch,
        lm.hidden_size(),
    );
    let header = vec![
        format!(
            "LM {} ({:?}, {} layers, width {h}, vocab {}), device {}, {n} Fashion-MNIST test images -> {}x{} = {} tokens each",
            lm_dir.display(),
            lm.family(),
            lm.config().num_hidden_layers,
            lm.config().vocab_size,
            crate::device::device_name(device),
            gh,
            gw,
            gh * gw
        ),
        format!("encoder: untrained random patch projection (seed {seed}); a trained LQAE encoder replaces it"),
    ];
    let proj = Tensor::from_vec(gaussian(seed, pd * h), (pd, h), device)?;
    let bias = Tensor::from_vec(gaussian(seed ^ 0xB1A5, h), h, device)?;
    let quantizer = Quantizer::new(lm.word_embeddings(), QuantizerConfig::default())?;
    let mut distinct = std::collections::BTreeSet::new();
    let mut lines = Vec::new();
    for i in 0..n {
        let img = im.image(i);
        let mut patches = Vec::with_capacity(gh * gw * pd);
        for gy in 0..gh {
            for gx in 0..gw {
                for y in 0..patch {
                    for x in 0..patch {
                        patches
                            .push(img[(gy * patch + y) * im.cols + gx * patch + x] as f32 / 255.0);
                    }
                }
            }
        }
        let x = Tensor::from_vec(patches, (gh * gw, pd), device)?;
        let z = x.matmul(&proj)?.broadcast_add(&bias)?;
        let ids: Vec<u32> = quantizer.nearest(&z)?.to_vec1()?;
        distinct.extend(ids.iter().copied());
        let text: Vec<String> = ids
            .iter()
            .take(24)
            .map(|&t| lm.vocab().token_text(t).text)
            .collect();
        lines.push(format!(
            "#{i:<3} {:12} {}{}",
            test.class_name(i),
            text.join(" "),
            if ids.len() > 24 { " ..." } else { "" }
        ));
    }
    Ok(TokensReport {
        header,
        lines,
        distinct: distinct.len(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn gaussian_is_splitmix_box_muller_from_the_raw_seed() {
        // The command's original generator, written out: the same bits.
        let mut s = 42u64;
        let mut next = move || {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        };
        let want: Vec<f32> = (0..9)
            .map(|_| {
                let (u1, u2) = (next().max(1e-300), next());
                ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
            })
            .collect();
        assert_eq!(super::gaussian(42, 9), want);
    }
}
